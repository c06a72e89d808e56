"""The input contract shared by the Keras model and every export (NHWC, RGB, 0-255 pixels in,
softmax probabilities out), and the package version stamped into what it writes."""

__version__ = "0.1.0"
INPUT_NAME = "image"
OUTPUT_NAME = "probs"
