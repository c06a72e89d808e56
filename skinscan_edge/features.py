"""Phase 1 on cached features: the frozen base runs once per image, the head trains on its output.

While the InceptionV3 base is frozen, its pooled output (``head_pool``, 2048 floats) for an image
never changes, so recomputing it every epoch (as fitting the whole model does) is wasted work:
an InceptionV3 forward pass costs about a thousand times more than the head. Here the base runs
once over the train split (once per augmented *view* when augmentation is on: ``feature_views``
seeded augmented copies of each image, epoch ``e`` trains on view ``e mod views``) and once over
the validation split; the head then trains on those arrays for ``epochs`` epochs.

The head model is built from the full model's own head layers (the same objects, so the same
variables): whatever it learns is the full model's head, with nothing to copy. The dropout layers
behave as in the full model (active in training only), BatchNormalization in the frozen base runs
in inference mode in both paths, so the full model's predictions equal the head's on the features.
"""

from __future__ import annotations

import math

import numpy as np

from .model import HEAD_LAYERS

#: The layer whose output is cached: the pooled base features.
FEATURE_LAYER = HEAD_LAYERS[0]


def head_model(model):
    """The full model's head layers (shared, not copied) on a feature input."""
    from ._tf import keras

    k = keras()
    x = inputs = k.Input(model.get_layer(FEATURE_LAYER).output_shape[1:], name="features")
    for name in HEAD_LAYERS[1:]:
        x = model.get_layer(name)(x)
    return k.Model(inputs, x, name="skinscan_head")


def feature_function(model, aug=None):
    """A tf.function: a batch of images (uint8 or float, 0..255) and a bool, whether to augment
    with ``aug`` first, -> the pooled base features. Traced once for every batch size and both
    branches (InceptionV3 takes seconds to trace)."""
    from ._tf import keras, tf

    tf_, k = tf(), keras()
    extractor = k.Model(model.inputs, model.get_layer(FEATURE_LAYER).output)
    size = model.input_shape[1:]

    @tf_.function(input_signature=[tf_.TensorSpec((None, *size), tf_.uint8), tf_.TensorSpec((), tf_.bool)])
    def features(x, augment):
        x = tf_.cast(x, tf_.float32)
        if aug is not None:
            x = tf_.cond(augment, lambda: aug(x, training=True), lambda: x)
        return extractor(x, training=False)

    return features


def extract_features(model, batches, augment: bool = False, reporter=None, what: str = "", fn=None,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pooled base features (float32, N x 2048) and labels of every uint8 batch of ``batches``, in
    order; ``fn`` from :func:`feature_function` (made here when not given, without augmentation)."""
    from ._tf import tf
    from .progress import reporter_or_silent

    say = reporter_or_silent(reporter)
    fn = fn or feature_function(model)
    flag = tf().constant(bool(augment))
    feats, labels = [], []
    total = int(batches.cardinality()) if int(batches.cardinality()) > 0 else None
    with say.bars():
        for done, (x, y) in enumerate(batches, 1):
            feats.append(fn(x, flag).numpy())
            labels.append(y.numpy())
            say.advance(f"base features: {what}", done, total)
    if not feats:
        return np.zeros((0, model.get_layer(FEATURE_LAYER).output_shape[-1]), np.float32), np.zeros(0, np.int32)
    return np.concatenate(feats), np.concatenate(labels)


def feature_dataset(views: list[np.ndarray], labels: np.ndarray, batch_size: int, *, seed: int, training: bool):
    """Batches of (features, label). Training: each view shuffled in turn, repeated forever (one
    view per epoch with ``steps_per_epoch = ceil(N / batch)``). Rows are gathered in numpy, so the
    arrays are not copied into the graph."""
    from ._tf import tf

    tf_ = tf()
    n, dim = len(labels), views[0].shape[1]

    def _dataset(v: int):
        def _rows(ix):
            return views[v][ix], labels[ix]

        def _gather(ix):
            x, y = tf_.numpy_function(_rows, [ix], (tf_.float32, tf_.int32))
            x.set_shape((None, dim))
            y.set_shape((None,))
            return x, y

        ds = tf_.data.Dataset.range(n)
        if training:
            ds = ds.shuffle(max(n, 1), seed=seed + v, reshuffle_each_iteration=True)
        return ds.batch(batch_size).map(_gather)

    ds = _dataset(0)
    for v in range(1, len(views)):
        ds = ds.concatenate(_dataset(v))
    return (ds.repeat() if training else ds).prefetch(2)


def fit_head_on_features(model, cfg, train_batches, val_batches, class_weight, callbacks, reporter=None):
    """Phase 1 of ``train``: features once (per view), then ``cfg.epochs`` epochs of the head.

    ``train_batches`` and ``val_batches``: unshuffled, unaugmented uint8 batches of the splits.
    The callbacks (EarlyStopping, checkpoints, CSV history, BackupAndRestore) see the head model,
    whose weights are the full model's head. Returns the Keras History.
    """
    from ._tf import keras
    from .data import augmentation

    k = keras()
    views = max(1, cfg.feature_views) if cfg.augment else 1
    fn = feature_function(model, augmentation(cfg.seed) if cfg.augment else None)
    train_views, labels = [], None
    for v in range(views):
        what = f"train split, view {v + 1}/{views}" + (" (augmented)" if cfg.augment else "")
        feats, labels = extract_features(model, train_batches, cfg.augment, reporter, what, fn)
        train_views.append(feats)
    val_x, val_y = extract_features(model, val_batches, False, reporter, "val split", fn)
    if reporter is not None:
        reporter.message(f"phase 1 on cached features: {len(labels)} train x {views} view(s), {len(val_y)} val")
    head = head_model(model)
    head.compile(k.optimizers.Adam(cfg.learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    steps = max(1, math.ceil(len(labels) / cfg.batch_size))
    return head.fit(feature_dataset(train_views, labels, cfg.batch_size, seed=cfg.seed, training=True),
                    steps_per_epoch=steps, epochs=cfg.epochs, class_weight=class_weight, callbacks=callbacks,
                    validation_data=feature_dataset([val_x], val_y, cfg.batch_size, seed=cfg.seed, training=False),
                    verbose=2)
