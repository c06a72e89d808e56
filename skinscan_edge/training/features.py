"""Phases 1 and 2 on cached activations: what is frozen runs once per image (and view).

Phase 1 (:func:`fit_head_on_features`) trains the head on the frozen base's pooled output;
phase 2 (:func:`fit_top_on_stem`) trains the layers above ``--unfreeze-from`` on the frozen
stem's output (``mixed7``: 17x17x768 at 299 px, 0.44 MB per image and view in float16, on disk).

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

from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.progress import reporter_or_silent
from skinscan_edge.core.tf import keras, tf
from skinscan_edge.data.folder import augmentation
from skinscan_edge.data.imagecache import human_bytes
from skinscan_edge.training.model import HEAD_LAYERS

#: The layer whose output is cached: the pooled base features.
FEATURE_LAYER = HEAD_LAYERS[0]


def head_model(model):
    """The full model's head layers (shared, not copied) on a feature input."""
    k = keras()
    x = inputs = k.Input(model.get_layer(FEATURE_LAYER).output_shape[1:], name="features")
    for name in HEAD_LAYERS[1:]:
        x = model.get_layer(name)(x)
    return k.Model(inputs, x, name="skinscan_head")


def feature_function(model, aug=None):
    """A tf.function: a batch of images (uint8 or float, 0..255) and a bool, whether to augment
    with ``aug`` first, -> the pooled base features (float32). Traced once for every batch size and
    both branches (InceptionV3 takes seconds to trace)."""
    return _output_function(model, FEATURE_LAYER, aug)


def _output_function(model, layer: str, aug):
    tf_, k = tf(), keras()
    extractor = k.Model(model.inputs, model.get_layer(layer).output)
    size = model.input_shape[1:]

    @tf_.function(input_signature=[tf_.TensorSpec((None, *size), tf_.uint8), tf_.TensorSpec((), tf_.bool)])
    def outputs(x, augment):
        x = tf_.cast(x, tf_.float32)
        if aug is not None:  # under a mixed policy the augmentation computes in bfloat16/float16
            x = tf_.cond(augment, lambda: tf_.cast(aug(x, training=True), tf_.float32), lambda: x)
        return tf_.cast(extractor(x, training=False), tf_.float32)  # also under a mixed policy

    return outputs


def extract_features(model, batches, augment: bool = False, reporter=None, what: str = "", fn=None,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pooled base features (float32, N x 2048) and labels of every uint8 batch of ``batches``, in
    order; ``fn`` from :func:`feature_function` (made here when not given, without augmentation)."""
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
    """Batches of (float32 features, label); ``views`` of any row shape (the stem's activations
    are float16 memmaps). Training: each view shuffled in turn, repeated forever (one
    view per epoch with ``steps_per_epoch = ceil(N / batch)``). Rows are gathered in numpy, so the
    arrays are not copied into the graph."""
    tf_ = tf()
    n, shape = len(labels), views[0].shape[1:]

    def _dataset(v: int):
        def _rows(ix):
            ix = np.sort(ix)  # a memmap then reads forward; the order within a batch changes nothing
            # float16 rows widen here, in numpy: TensorFlow's oneDNN build logs an error line for
            # float16 tensors on CPUs without AVX512_FP16 (and falls back to Eigen)
            return np.asarray(views[v][ix], np.float32), labels[ix]

        def _gather(ix):
            x, y = tf_.numpy_function(_rows, [ix], (tf_.float32, tf_.int32))
            x.set_shape((None, *shape))
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
                    verbose=0)


# --- phase 2 on the cached stem ---------------------------------------------------------------
def top_model(model, block: str):
    """The layers above ``block`` (shared with ``model``, not copied), on ``block``'s output.

    tf-keras builds a functional model from an intermediate tensor: the graph is cut there,
    and the layers (so the variables) are the full model's own, as in :func:`head_model`."""
    return keras().Model(model.get_layer(block).output, model.output, name=f"skinscan_above_{block}")


def stem_function(model, block: str, aug=None):
    """As :func:`feature_function`, for ``block``'s output (the frozen stem's activations)."""
    return _output_function(model, block, aug)


#: Phase 2's cached stem activations, in the run directory while phase 2 runs (then removed).
STEM_DIR = "stem_cache"


def stem_cache_bytes(model, block: str, images: int) -> int:
    """Disk bytes of ``images`` cached rows of ``block``'s output in float16 (0.44 MB at 299 px for mixed7)."""
    return images * int(np.prod(model.get_layer(block).output_shape[1:])) * 2


def _cache_activations(fn, batches, augment: bool, path, shape: tuple, reporter, what: str) -> np.ndarray:
    """``fn``'s output for every batch, written in order into a float16 .npy memmap of ``shape`` at ``path``."""
    if not shape[0]:  # an empty split (a zero-length file cannot be mapped)
        return np.zeros(shape, np.float16)
    say = reporter_or_silent(reporter)
    flag, at = tf().constant(bool(augment)), 0
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    total = int(batches.cardinality()) if int(batches.cardinality()) > 0 else None
    with say.bars():
        for done, (x, _) in enumerate(batches, 1):
            a = fn(x, flag).numpy().astype(np.float16)  # in numpy: see feature_dataset
            out[at:at + len(a)] = a
            at += len(a)
            say.advance(f"stem activations: {what}", done, total)
    out.flush()
    return np.load(path, mmap_mode="r")


def fit_top_on_stem(model, cfg, cache_dir, train_batches, train_labels, val_batches, val_labels, class_weight,
                    callbacks, reporter=None):
    """Phase 2 of ``train`` on the frozen stem's cached output: the layers below
    ``cfg.unfreeze_from`` stay frozen in phase 2, so, as in phase 1, their output for an image
    never changes. It is computed once per view (``cfg.stem_views`` seeded augmented views of
    each train image; epoch ``e`` trains on view ``e mod views``) and once for the val split,
    written as float16 memmaps into ``cache_dir``, and the layers above (the model's own, see
    :func:`top_model`) train on them for ``cfg.fine_tune_epochs`` epochs.

    ``train_batches``, ``val_batches``: unshuffled, unaugmented uint8 batches. Returns the
    Keras History; the caller removes ``cache_dir``.
    """
    import shutil
    from pathlib import Path

    k = keras()
    block = cfg.unfreeze_from
    views = max(1, cfg.stem_views or 1) if cfg.augment else 1
    n, n_val = len(train_labels), len(val_labels)
    need = stem_cache_bytes(model, block, n * views + n_val)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_dir).free
    if need > free:
        raise SkinscanError(f"phase 2's stem cache ({n} train x {views} view(s) + {n_val} val at "
                            f"{cfg.img_size} px) needs {human_bytes(need)} but {cache_dir} has {human_bytes(free)} "
                            "free; free some space, or pass --stem-views 0 to run the whole model every step")
    # Not phase 1's views: another seed, so phase 2 sees new augmentations.
    fn = stem_function(model, block, augmentation(cfg.seed + 10) if cfg.augment else None)
    row = tuple(model.get_layer(block).output_shape[1:])
    train = [_cache_activations(fn, train_batches, cfg.augment, cache_dir / f"train_view{v}.npy", (n, *row),
                                reporter, f"train split, view {v + 1}/{views}" + (" (augmented)" if cfg.augment else ""))
             for v in range(views)]
    val = _cache_activations(fn, val_batches, False, cache_dir / "val.npy", (n_val, *row), reporter, "val split")
    if reporter is not None:
        reporter.message(f"phase 2 on the cached output of {block}: {n} train x {views} view(s), {n_val} val, "
                         f"{human_bytes(need)} on disk (float16)")
    y, y_val = np.asarray(train_labels, np.int32), np.asarray(val_labels, np.int32)
    top = top_model(model, block)
    top.compile(k.optimizers.Adam(cfg.fine_tune_lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    steps = max(1, math.ceil(n / cfg.batch_size))
    return top.fit(feature_dataset(train, y, cfg.batch_size, seed=cfg.seed, training=True),
                   steps_per_epoch=steps, epochs=cfg.fine_tune_epochs, class_weight=class_weight,
                   callbacks=callbacks, verbose=0,
                   validation_data=feature_dataset([val], y_val, cfg.batch_size, seed=cfg.seed, training=False))
