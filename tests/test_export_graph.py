"""The export graph (pools rewritten), XNNPACK's share recorded per TFLite file, and the ONNX
int8 recipe per target CPU. Small untrained models: no session fixture needed."""

from __future__ import annotations

import numpy as np
import pytest

from skinscan_edge.core.errors import SkinscanError


@pytest.mark.parametrize("h, w, pool, expected", [
    # corners see 4 of 9 cells, edges 6, the inside 9: p*q / valid
    (4, 4, (3, 3), [[2.25, 1.5, 1.5, 2.25], [1.5, 1, 1, 1.5], [1.5, 1, 1, 1.5], [2.25, 1.5, 1.5, 2.25]]),
    (1, 3, (3, 3), [[4.5, 3, 4.5]]),
    # even windows pad one less before than after (TensorFlow's "same")
    (3, 3, (2, 2), [[1, 1, 2], [1, 1, 2], [2, 2, 4]]),
])
def test_same_pool_multiplier(h, w, pool, expected):
    from skinscan_edge.exporters.graph import same_pool_multiplier

    np.testing.assert_allclose(same_pool_multiplier(h, w, pool)[0, :, :, 0], expected)


def _small_model(k, pool_size=(3, 3)):
    """Rescaling, convs and two stride-1 "same" average pools, like an InceptionV3 branch."""
    inp = k.Input((12, 12, 3), name="image")
    x = k.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = k.layers.AveragePooling2D(pool_size, strides=1, padding="same")(x)
    x = k.layers.Conv2D(8, 1, activation="relu")(x)
    x = k.layers.AveragePooling2D((3, 3), strides=1, padding="same")(x)
    x = k.layers.MaxPooling2D(2)(x)  # not rewritten
    x = k.layers.Flatten()(x)
    return k.Model(inp, k.layers.Dense(5, activation="softmax", name="probs")(x))


def _images(n=6, size=12):
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def test_export_model_swaps_only_the_pools_and_copies_weights():
    from skinscan_edge.core.tf import keras
    from skinscan_edge.exporters.graph import export_model

    k = keras()
    model = _small_model(k, pool_size=(2, 2))
    exported = export_model(model)
    kinds = [type(layer).__name__ for layer in exported.layers]
    assert kinds.count("PoolAsDepthwiseConv") == 2 and "AveragePooling2D" not in kinds and "MaxPooling2D" in kinds
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), exported.get_weights()))
    np.testing.assert_allclose(exported(_images()).numpy(), model(_images()).numpy(), atol=1e-6)
    plain = k.Model(model.input, model.layers[2].output)  # no pool: the model itself comes back
    assert export_model(plain) is plain


def test_inception_export_graph_equals_keras_within_1e_5():
    """All nine InceptionV3 pools rewritten; the base's last block is unchanged to 1e-5 (relative)."""
    from skinscan_edge.core.tf import keras
    from skinscan_edge.exporters.graph import export_model
    from skinscan_edge.training.model import build_model

    k = keras()
    model = build_model(4, 75, weights="none")
    exported = export_model(model)
    assert sum(type(layer).__name__ == "PoolAsDepthwiseConv" for layer in exported.layers) == 9
    x = _images(2, 75)
    # mixed10 rather than the softmax: an untrained head's probabilities are near-uniform
    a = k.Model(model.input, model.get_layer("mixed10").output)(x).numpy()
    b = k.Model(exported.input, exported.get_layer("mixed10").output)(x).numpy()
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def _tflite(model, precision, tmp_path, rewrite=True):
    from skinscan_edge.exporters import tflite

    serving = tflite.save_serving_model(model, tmp_path / f"sm_{precision}_{rewrite}", rewrite_pools=rewrite)
    path = tmp_path / f"m_{precision}_{rewrite}.tflite"
    path.write_bytes(tflite.convert(serving, precision, lambda: iter(_images(16))))
    return path


def test_fp32_tflite_of_the_export_graph_equals_keras(tmp_path):
    from skinscan_edge.core.tf import keras
    from skinscan_edge.runtimes.interface import TFLiteRuntime

    k = keras()
    model = _small_model(k)
    # logits, not probabilities: the comparison then sees every value the pools produce
    logits = k.Model(model.input, k.layers.Dense(5, name="probs")(model.layers[-2].output))
    logits.layers[-1].set_weights([w * 5 for w in model.layers[-1].get_weights()])
    path = _tflite(logits, "fp32", tmp_path)
    x = _images()
    got, want = TFLiteRuntime(path, num_threads=1).predict(x), logits(x).numpy()
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_manifest_fields_name_xnnpack_partitions_and_builtin_ops(tmp_path):
    """describe() (what the manifest records per TFLite file): the int8 export graph is one
    XNNPACK partition; Keras' pools would have cut it and stayed on builtin kernels."""
    from skinscan_edge.core.tf import keras
    from skinscan_edge.exporters import tflite

    model = _small_model(keras())
    rewritten = tflite.describe(_tflite(model, "int8", tmp_path))
    assert rewritten["xnnpack_partitions"] == 1
    assert set(rewritten["builtin_ops"]) <= {"QUANTIZE", "SOFTMAX"}
    assert 0 < rewritten["xnnpack_ops"] < rewritten["ops_total"]
    pools = tflite.describe(_tflite(model, "int8", tmp_path, rewrite=False))
    assert pools["xnnpack_partitions"] > 1 and "AVERAGE_POOL_2D" in pools["builtin_ops"]


# --- the ONNX int8 recipe ------------------------------------------------------------------
@pytest.mark.parametrize("machine, flags, target", [
    ("x86_64", {"avx2", "fma"}, "x86-avx2"),
    ("x86_64", {"avx2", "avx512f", "avx512bw"}, "x86-avx2"),  # AVX-512 without VNNI saturates too
    ("x86_64", {"avx2", "avx_vnni"}, "x86-vnni"),
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "x86-vnni"),
    ("x86_64", {"avx2", "avx512f", "amx_int8"}, "x86-vnni"),
    ("aarch64", {"asimd", "asimddp"}, "arm"),
    ("arm64", set(), "arm"),
])
def test_auto_target_from_cpu_flags(machine, flags, target):
    from skinscan_edge.core.formats import choose_target

    assert choose_target(machine, flags) == target


@pytest.mark.parametrize("target, act, weight, reduce_range", [
    ("x86-avx2", "QUInt8", "QInt8", True),
    ("x86-vnni", "QUInt8", "QInt8", False),
    ("arm", "QInt8", "QInt8", False),
])
def test_explicit_target_sets_quantize_static_arguments(target, act, weight, reduce_range, tmp_path, monkeypatch):
    """The arguments onnxruntime receives, and the notes, come from the one table."""
    import onnxruntime.quantization as q
    import onnxruntime.quantization.shape_inference as si

    from skinscan_edge.core.formats import int8_settings
    from skinscan_edge.core.host import resolve_target
    from skinscan_edge.exporters import onnx as onnx_export

    seen = {}
    monkeypatch.setattr(si, "quant_pre_process", lambda src, dst, **kw: open(dst, "wb").close())
    monkeypatch.setattr(q, "quantize_static", lambda src, dst, reader, **kw: (seen.update(kw), open(dst, "wb").close()))
    onnx_export.quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", [], resolve_target(target))
    assert (seen["activation_type"], seen["weight_type"]) == (q.QuantType[act], q.QuantType[weight])
    assert seen["reduce_range"] is reduce_range
    assert seen["quant_format"] == q.QuantFormat.QDQ and seen["per_channel"] is True
    settings = int8_settings(target)
    assert settings["target"] == target and settings["reduce_range"] is reduce_range
    assert ("reduce_range" in onnx_export.int8_notes(target)) is reduce_range


def test_unknown_target_lists_the_valid_ones():
    from skinscan_edge.exporters.run import ExportConfig

    with pytest.raises(SkinscanError, match="x86-vnni"):
        ExportConfig(onnx_target="x86-vnn").validate()
    ExportConfig(onnx_target="arm").validate()


# --- the QAT file: the same rewrite, annotated as the pool ----------------------------------
def _qat_model_with_bn(k):
    """``_small_model`` with Conv + BatchNorm + ReLU blocks, as InceptionV3's (tfmot folds them)."""
    inp = k.Input((12, 12, 3), name="image")
    x = k.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inp)
    for i, pool in enumerate(((3, 3), (2, 2))):
        x = k.layers.Conv2D(8, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = k.layers.BatchNormalization(name=f"bn{i}")(x)
        x = k.layers.ReLU(name=f"relu{i}")(x)
        x = k.layers.AveragePooling2D(pool, strides=1, padding="same", name=f"pool{i}")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inp, k.layers.Dense(5, activation="softmax", name="probs")(x))


def _qat(model, images, rewrite_pools):
    from skinscan_edge.exporters.qat import annotate, calibrate_ranges

    qat_model, _ = annotate(model, rewrite_pools=rewrite_pools)
    calibrate_ranges(qat_model, images)
    return qat_model


def test_qat_pool_rewrite_leaves_the_fake_quant_model_and_its_float_twin_unchanged():
    """Annotated as the export graph's depthwise conv + multiply with the pool's own QuantizeConfig,
    the QAT model computes what it computed with Keras' pools, fake-quant on and off (1e-5)."""
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    from skinscan_edge.core.tf import keras
    from skinscan_edge.exporters.qat import _fake_quant_off, check_twin, float_twin

    k = keras()
    k.utils.set_random_seed(0)
    model = _qat_model_with_bn(k)
    model.layers[-1].set_weights([w * 20 for w in model.layers[-1].get_weights()])  # not near-uniform
    images = _images(16)
    rewritten, pools = _qat(model, images, True), _qat(model, images, False)
    inner = [type(l.layer).__name__ for l in rewritten.layers if isinstance(l, QuantizeWrapper)]
    assert inner.count("PoolAsDepthwiseConv") == 2 and "AveragePooling2D" not in inner
    ranges = lambda m: sorted((v.name, float(v.numpy())) for v in m.variables if "output_m" in v.name)  # noqa: E731
    np.testing.assert_allclose([r for _, r in ranges(rewritten)], [r for _, r in ranges(pools)], atol=1e-5)
    x = _images(8)
    with_fq = rewritten(x, training=False).numpy()
    assert np.abs(with_fq - pools(x, training=False).numpy()).max() <= 1e-5
    with _fake_quant_off():
        without_fq = rewritten(x, training=False).numpy()
        assert np.abs(without_fq - pools(x, training=False).numpy()).max() <= 1e-5
    assert np.abs(with_fq - without_fq).max() > 1e-3  # fake-quant really was on and off
    twin = float_twin(model, rewritten)
    assert [type(l).__name__ for l in twin.layers] == [type(l).__name__ for l in model.layers]  # Keras' pools
    np.testing.assert_allclose(twin(x).numpy(), float_twin(model, pools)(x).numpy(), atol=1e-5)
    check_twin(twin, rewritten, x)


def test_qat_tflite_is_one_xnnpack_partition(tmp_path):
    """What the manifest records for the QAT file: one partition with the rewrite; Keras'
    pools (tfmot's, before the rewrite) cut it at the builtin AVERAGE_POOL_2D kernels."""
    from skinscan_edge.core.tf import keras
    from skinscan_edge.exporters import tflite

    model = _qat_model_with_bn(keras())
    images = _images(16)
    found = {}
    for rewrite in (True, False):
        serving = tflite.save_serving_model(_qat(model, images, rewrite), tmp_path / f"qat_{rewrite}")
        path = tmp_path / f"qat_{rewrite}.tflite"
        path.write_bytes(tflite.convert(serving, "int8", lambda: iter(images)))
        found[rewrite] = tflite.describe(path)
    assert found[True]["xnnpack_partitions"] == 1, found[True]
    assert set(found[True]["builtin_ops"]) <= {"QUANTIZE", "SOFTMAX"}, found[True]
    assert found[False]["xnnpack_partitions"] > 1 and "AVERAGE_POOL_2D" in found[False]["builtin_ops"]
