"""InceptionV3 without its top, plus the Skinscan head, in one flat functional model.

The base is built on our own input tensor (``input_tensor=``) so that every layer sits in
one model: tfmot's quantize_model cannot annotate nested models, and ``--unfreeze-from``
refers to layers by name. Normalization lives inside the model: a Rescaling layer maps
RGB 0..255 to InceptionV3's [-1, 1], so every export shares one input contract.
"""

from __future__ import annotations

from pathlib import Path

from skinscan_edge.core.config import BLOCKS
from skinscan_edge.core.contract import INPUT_NAME, OUTPUT_NAME
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.tf import keras

HEAD_LAYERS = ("head_pool", "head_dropout", "head_dense", "head_dropout2", OUTPUT_NAME)
NORMALIZATION = {"scale": 1 / 127.5, "offset": -1.0, "mean": 127.5, "std": 127.5}


def resolve_weights(weights: str) -> str | None:
    """``imagenet`` | ``none`` | a path to a no-top InceptionV3 .h5 weights file."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise SkinscanError(f"--weights: expected 'imagenet', 'none' or an existing .h5 file, got '{weights}'")
    check_weights_file(path)
    return str(path)


def check_weights_file(path: Path) -> None:
    """Refuse, before any data is read, a file that is not InceptionV3 no-top weights.

    A cheap look at the HDF5 layer list (h5py, as Keras saves it): InceptionV3 names its last
    block ``mixed10``; the with-top file adds ``predictions``. Keras' own loader stays the final
    judge (layer count and shapes) when the model is built.
    """
    import h5py

    why = None
    try:
        with h5py.File(path, "r") as f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs.get("layer_names", [])]
    except OSError:
        names, why = [], "not an HDF5 file"
    if why is None and "mixed10" not in names:
        why = f"its {len(names)} layer(s) are not InceptionV3's" if names else "it lists no Keras layers"
    elif why is None and "predictions" in names:
        why = "it includes the ImageNet top; use the no-top file (..._notop.h5)"
    if why:
        raise SkinscanError(f"--weights {path} is not a valid InceptionV3 no-top weights file ({why})")


def build_model(num_classes: int, img_size: int, weights: str = "imagenet",
                dropout: float = 0.3, dense_units: int = 256):
    """Build the classifier; ``weights`` as in :func:`resolve_weights`.

    >>> # model = build_model(10, 299, weights="none")
    """
    k = keras()
    resolved = resolve_weights(weights)
    inputs = k.Input((img_size, img_size, 3), name=INPUT_NAME, dtype="float32")
    x = k.layers.Rescaling(NORMALIZATION["scale"], offset=NORMALIZATION["offset"], name="normalize")(inputs)
    try:
        base = k.applications.InceptionV3(include_top=False, weights=resolved, input_tensor=x)
    except Exception as e:  # keras raises bare Exception / ValueError / OSError here
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if resolved == "imagenet" and ("URL fetch failure" in text or "http" in text.lower()):
            raise SkinscanError(
                "cannot download the ImageNet weights (offline?); use --weights PATH with a local "
                "inception_v3 no-top .h5 file, or --weights none to train from scratch"
            ) from None
        if resolved not in (None, "imagenet") and isinstance(e, (ValueError, OSError, KeyError)):
            raise SkinscanError(
                f"--weights {weights} is not a valid InceptionV3 no-top weights file ({text[:160]})"
            ) from None
        raise
    if resolved is None:
        # From scratch the BatchNorm moving statistics must settle within a few hundred steps;
        # at Keras' default momentum (0.99) they lag so far behind that inference collapses
        # to one class. 0.9 tracks the batch statistics closely enough.
        for layer in base.layers:
            if isinstance(layer, k.layers.BatchNormalization):
                layer.momentum = 0.9
    y = k.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    y = k.layers.Dropout(dropout, name="head_dropout")(y)
    y = k.layers.Dense(dense_units, activation="relu", name="head_dense")(y)
    y = k.layers.Dropout(dropout, name="head_dropout2")(y)
    # float32 even under the mixed_float16 policy (skinscan_edge.training.precision): probabilities stay float32.
    outputs = k.layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME, dtype="float32")(y)
    return k.Model(inputs, outputs, name="skinscan_inception_v3")


def base_layers(model) -> list:
    """The InceptionV3 layers (everything between the normalize layer and the head)."""
    return [l for l in model.layers if l.name not in HEAD_LAYERS and l.name not in (INPUT_NAME, "normalize")]


def freeze_base(model) -> None:
    """Phase 1: only the head trains."""
    for layer in base_layers(model):
        layer.trainable = False


def unfreeze_from(model, block: str, keep_bn_frozen: bool = True) -> int:
    """Phase 2: train the base from ``block`` on; BatchNormalization layers stay in inference
    mode (tf-keras runs a non-trainable BN layer in inference mode) when ``keep_bn_frozen``,
    which protects pretrained statistics. Returns the number of trainable base layers."""
    k = keras()
    if block not in BLOCKS:
        raise SkinscanError("--unfreeze-from: " + did_you_mean(block, BLOCKS, "block"))
    layers = base_layers(model)
    start = 0
    if block != "input":
        names = [l.name for l in layers]
        # Unfreeze the layers *after* the named block's output, i.e. the following blocks.
        start = names.index(block) + 1
    count = 0
    for i, layer in enumerate(layers):
        train = i >= start and not (keep_bn_frozen and isinstance(layer, k.layers.BatchNormalization))
        layer.trainable = train
        count += int(train)
    return count
