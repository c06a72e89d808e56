"""The int8 calibration sample is stratified by class with a floor (exporters/calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from skinscan_edge.exporters.calibration import stratified_pick


@pytest.mark.parametrize("n, floor, rare, expect_rare", [(40, 8, 3, 3), (40, 8, 20, 8), (40, 0, 3, None), (12, 8, 20, 4)])
def test_every_class_gets_its_floor(n, floor, rare, expect_rare):
    labels = [0] * 200 + [1] * 200 + [2] * rare  # class 2 is rare
    pick = stratified_pick(labels, n, seed=3, floor=floor)
    assert len(pick) == n and len(set(pick)) == n and pick == sorted(pick)
    counts = np.bincount(np.asarray(labels)[pick], minlength=3)
    if expect_rare is not None:  # the floor, capped by the class' size and by n // classes
        assert counts[2] >= expect_rare
        assert counts.min() >= min(floor, n // 3, rare)
    assert stratified_pick(labels, n, seed=3, floor=floor) == pick  # seeded


def test_a_plain_sample_can_miss_a_rare_class_which_the_floor_prevents():
    labels = [0] * 500 + [1] * 2
    misses = sum(1 for s in range(50) if 1 not in np.asarray(labels)[stratified_pick(labels, 20, s, 0)])
    assert misses > 40  # 2 in 502: a plain sample of 20 nearly always misses it
    assert all(1 in np.asarray(labels)[stratified_pick(labels, 20, s, 8)] for s in range(50))
