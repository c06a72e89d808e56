"""Parity metrics and the gate on small arrays whose answers were worked out by hand."""

import math

import numpy as np
import pytest

from skinscan_edge.core import metrics
from skinscan_edge.core.config import GateConfig
from skinscan_edge.core.errors import SkinscanError

P = np.array  # probabilities, one row per image


@pytest.mark.parametrize("probs, y, bins, expected", [
    # both at 0.9, one right: |0.5 - 0.9| over the whole set
    (P([[0.9, 0.1], [0.9, 0.1]]), [0, 1], 10, 0.4),
    # fully confident and always right: perfectly calibrated
    (P([[1.0, 0.0], [0.0, 1.0]]), [0, 1], 15, 0.0),
    # four bins of one image each: (0.4 + 0.8 + 0.3 + 0.05) / 4; 0.7 and 0.8 sit on bin edges
    (P([[0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.95, 0.05]]), [0, 0, 1, 0], 10, 0.3875),
    # one bin (0.5, 1]: accuracy 2/3, mean confidence 0.7
    (P([[0.6, 0.4], [0.8, 0.2], [0.3, 0.7]]), [0, 0, 0], 2, abs(2 / 3 - 0.7)),
])
def test_expected_calibration_error(probs, y, bins, expected):
    assert metrics.expected_calibration_error(np.array(y), probs, bins) == pytest.approx(expected)


@pytest.mark.parametrize("a, b, expected", [
    (P([[0.6, 0.4], [0.4, 0.6], [0.5, 0.5]]), P([[0.7, 0.3], [0.7, 0.3], [0.1, 0.9]]), 1 / 3),
    (P([[0.6, 0.4], [0.4, 0.6]]), P([[0.51, 0.49], [0.2, 0.8]]), 1.0),
    (P([[0.6, 0.4]]), P([[0.4, 0.6]]), 0.0),
])
def test_top1_agreement(a, b, expected):
    assert metrics.top1_agreement(a, b) == pytest.approx(expected)


@pytest.mark.parametrize("a, b, mean, mx", [
    (P([[0.5, 0.5], [1.0, 0.0]]), P([[0.5, 0.5], [1.0, 0.0]]), 0.0, 0.0),
    (P([[0.6, 0.4], [1.0, 0.0]]), P([[0.5, 0.5], [0.8, 0.2]]), (0.1 + 0.1 + 0.2 + 0.2) / 4, 0.2),
])
def test_prob_abs_diff(a, b, mean, mx):
    assert metrics.prob_abs_diff(a, b) == pytest.approx((mean, mx))


@pytest.mark.parametrize("y, base, model, n, expected, worst", [
    # recall base [1, .5, 1], model [.5, 1, 0]
    ([0, 0, 1, 1, 2], [0, 0, 1, 0, 2], [0, 1, 1, 1, 1], 3, [-50.0, 50.0, -100.0], (100.0, "c")),
    # class 3 has no image: it cannot be measured (NaN), and it is never the worst
    ([0, 0, 1, 2], [0, 0, 1, 2], [0, 1, 1, 2], 4, [-50.0, 0.0, 0.0, math.nan], (50.0, "a")),
    # nothing got worse
    ([0, 1], [0, 0], [0, 1], 2, [0.0, 100.0], (0.0, None)),
])
def test_recall_delta_and_worst_drop(y, base, model, n, expected, worst):
    delta = metrics.recall_delta_pp(np.array(y), np.array(base), np.array(model), n)
    np.testing.assert_allclose(delta, expected, equal_nan=True)
    assert metrics.worst_recall_drop(delta, ["a", "b", "c", "d"][:n]) == worst


def _pairs(n=400, base_acc=0.8, flips_to_wrong=20, flips_to_right=4, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    base = np.where(rng.random(n) < base_acc, y, (y + 1) % 5)
    model = base.copy()
    right, wrong = np.flatnonzero(base == y), np.flatnonzero(base != y)
    model[right[:flips_to_wrong]] = (y[right[:flips_to_wrong]] + 2) % 5
    model[wrong[:flips_to_right]] = y[wrong[:flips_to_right]]
    return y, base, model


def test_bootstrap_ci_contains_the_true_difference_and_matches_a_plain_loop():
    y, base, model = _pairs()
    true_diff = 100 * (np.mean(model == y) - np.mean(base == y))  # (4 - 20) / 400 = -4 pp
    assert true_diff == pytest.approx(-4.0)
    lo, hi = metrics.paired_bootstrap_ci(y, base, model, n_boot=2000, seed=7)
    assert lo < true_diff < hi < 0  # a real drop: the whole interval is below zero
    # the textbook loop with the same generator gives the same interval
    rng = np.random.default_rng(7)
    d = (model == y).astype(float) - (base == y).astype(float)
    means = [d[rng.integers(0, len(y), size=len(y))].mean() for _ in range(2000)]
    assert (lo, hi) == pytest.approx(tuple(100 * np.quantile(means, [0.025, 0.975])))
    # and its width is close to the normal approximation's 2 x 1.96 x sd / sqrt(n)
    assert hi - lo == pytest.approx(2 * 1.96 * 100 * d.std() / np.sqrt(len(y)), rel=0.15)


def test_bootstrap_ci_is_seeded_and_zero_for_identical_predictions():
    y, base, model = _pairs()
    first = metrics.paired_bootstrap_ci(y, base, model, n_boot=500, seed=3)
    assert metrics.paired_bootstrap_ci(y, base, model, n_boot=500, seed=3) == first
    assert metrics.paired_bootstrap_ci(y, base, model, n_boot=500, seed=4) != first
    assert metrics.paired_bootstrap_ci(y, base, base, n_boot=500, seed=3) == (0.0, 0.0)


def test_flips_name_both_answers_with_paths():
    probs_base = P([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    probs_model = P([[0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    flips = metrics.flips(["a.png", "b.png", "c.png"], np.array([0, 1, 1]), probs_base, probs_model, ["x", "y"])
    assert flips == [{"path": "b.png", "true": "y", "keras": "y", "keras_prob": 0.8,
                      "export": "x", "export_prob": 0.7}]


def test_classification_report_and_confusion_keep_absent_classes():
    y, pred = np.array([0, 0, 1]), np.array([0, 1, 1])
    report = metrics.classification_report_dict(y, pred, ["a", "b", "c"])
    assert report["a"] == {"precision": 1.0, "recall": 0.5, "f1-score": pytest.approx(2 / 3), "support": 2}
    assert report["c"]["support"] == 0 and "macro avg" in report and "weighted avg" in report
    assert metrics.confusion(y, pred, 3).tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def _results(delta_acc=-1.5, recall=None, agreement=0.97):
    recall = recall if recall is not None else {"A": 0.0, "B": -3.0, "Melanoma": -1.0}
    keras = {"name": "keras", "delta_accuracy_pp": 0.0, "top1_agreement": 1.0,
             "recall_delta_pp": {"A": 0.0, "B": 0.0, "Melanoma": 0.0}}
    export = {"name": "tflite-int8", "delta_accuracy_pp": delta_acc, "top1_agreement": agreement,
              "recall_delta_pp": recall}
    return {"labels": ["A", "B", "Melanoma"], "models": [keras, export]}


ACC = "tflite-int8: accuracy dropped 1.50 pp vs Keras (limit 1.00 pp, over by 0.50)"
REC_B = "tflite-int8: recall of B dropped 3.00 pp vs Keras (limit 2.00 pp, over by 1.00)"


@pytest.mark.parametrize("results, kwargs, expected", [
    (_results(), {}, [ACC, REC_B]),
    (_results(), {"critical_classes": ["Melanoma"]}, [ACC]),
    (_results(), {"critical_classes": ["Melanoma"], "max_recall_drop_pp": 0.5},
     [ACC, "tflite-int8: recall of Melanoma dropped 1.00 pp vs Keras (limit 0.50 pp, over by 0.50)"]),
    (_results(), {"max_accuracy_drop_pp": 2.0, "max_recall_drop_pp": 3.0}, []),
    (_results(), {"max_accuracy_drop_pp": 2.0, "max_recall_drop_pp": 3.0, "min_agreement": 0.98},
     ["tflite-int8: top-1 agreement with Keras 0.9700 is below 0.9800 (short by 0.0100)"]),
    # exactly at the limit passes, float noise included: 100 * (0.49 - 0.50) != -1.0
    (_results(delta_acc=100 * (0.49 - 0.50), recall={"A": -2.0, "B": 0.0, "Melanoma": 0.0}), {}, []),
    # a class with no image in the split (None) cannot fail
    (_results(delta_acc=0.0, recall={"A": None, "B": 0.0, "Melanoma": 0.0}), {"min_agreement": 0.9}, []),
])
def test_check_gate_lines(results, kwargs, expected):
    failures = metrics.check_gate(results, GateConfig(**kwargs))  # records, worded in one place
    assert [metrics.failure_text(f) for f in failures] == expected
    assert all(set(f) >= {"model", "metric", "limit", "value"} for f in failures)


def test_unknown_critical_class_is_one_line_with_valid_labels():
    with pytest.raises(SkinscanError) as e:
        metrics.check_gate(_results(), GateConfig(critical_classes=["melanoma"]))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == "unknown class 'melanoma'; valid labels: A, B, Melanoma (did you mean 'Melanoma'?)"
