"""Lazy, quiet access to TensorFlow and tf-keras (imported only by commands that need them)."""

import logging
import os


def tf():
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf_mod

    tf_mod.get_logger().setLevel(logging.ERROR)
    return tf_mod


def keras():
    tf()
    import tf_keras

    return tf_keras
