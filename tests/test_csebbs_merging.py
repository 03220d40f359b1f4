"""cSEBBs segment merging on hand-made change points, against sebbs' own ``_merge_segments`` (merlresearch/sebbs,
the library the tuner re-implements in vectorised form): a series of exactly two candidate events (the smallest
that sebbs merges), a ratio exactly at the relative threshold, and the change-point entry's guards."""
from __future__ import annotations

import numpy as np
import pytest
from sebbs.csebbs import _merge_segments as sebbs_merge_segments

from helpers.evaluation import csebbs
from helpers.evaluation.csebbs import Boxes, ChangePoints, boxes_to_arrays, detect_change_points, merge_segments


def _one_series(bounds, mean, low, high) -> ChangePoints:
    bounds, mean, low, high = (np.asarray(a, dtype=np.float64) for a in (bounds, mean, low, high))
    return ChangePoints(bounds=bounds, mean=mean, min=low, max=high, b0=np.array([0, len(bounds)]),
                        g0=np.array([0, len(mean)]), clip=np.array([0]), cls=np.array([0]))


def _both(bounds, mean, low, high, t_abs, t_rel):
    ours = merge_segments(_one_series(bounds, mean, low, high), np.array([t_abs]), np.array([t_rel]))
    onsets, offsets, scores = sebbs_merge_segments(np.asarray(bounds, float), np.asarray(mean, float),
                                                   np.asarray(low, float), np.asarray(high, float),
                                                   threshold_abs=t_abs, threshold_rel=t_rel)
    return ours, (onsets, offsets, scores)


@pytest.mark.parametrize("t_rel", [1.5, 3.0])
def test_two_events_merge_like_sebbs(t_rel):
    # background, event, shallow gap, event, background: 6 bounds, the smallest series sebbs merges
    bounds = [0.0, 1.0, 1.25, 1.5, 2.0, 10.0]  # merged, the box is exactly 1.0 s long
    mean, low, high = [0.1, 0.8, 0.5, 0.7, 0.1], [0.05, 0.6, 0.4, 0.5, 0.05], [0.2, 0.9, 0.6, 0.8, 0.2]
    ours, (onsets, offsets, scores) = _both(bounds, mean, low, high, 1.0, t_rel)
    closed = (0.9 + 1e-3) / (0.4 + 1e-3) < t_rel
    assert len(onsets) == (1 if closed else 2)  # the case: 1.5 keeps the gap, 3.0 closes it
    np.testing.assert_array_equal(ours.onset, onsets)
    np.testing.assert_array_equal(ours.offset, offsets)
    np.testing.assert_allclose(ours.confidence, scores, rtol=0, atol=1e-15)


@pytest.mark.parametrize("kind", ["relative", "absolute"])
@pytest.mark.parametrize("at_threshold", ["before", "after"])
def test_score_exactly_at_a_threshold_keeps_the_gap(kind, at_threshold):
    # 0.499 + 1e-3 and 0.249 + 1e-3 are exactly 0.5 and 0.25 in float64: ratio 2.0, difference 0.25. "Less than"
    # the threshold fails for that event, so no merge, even though the other event is below the threshold.
    assert (0.499 + 1e-3) / (0.249 + 1e-3) == 2.0 and (0.499 + 1e-3) - (0.249 + 1e-3) == 0.25
    t_abs, t_rel = (1.0, 2.0) if kind == "relative" else (0.25, 10.0)
    bounds = [0.0, 1.0, 2.0, 3.0, 4.0, 10.0]
    peaks = [0.499, 0.45] if at_threshold == "before" else [0.45, 0.499]
    mean, low = [0.1, 0.4, 0.3, 0.4, 0.1], [0.05, 0.3, 0.249, 0.3, 0.05]
    high = [0.2, peaks[0], 0.3, peaks[1], 0.2]
    ours, (onsets, offsets, _) = _both(bounds, mean, low, high, t_abs, t_rel)
    assert len(onsets) == 2
    np.testing.assert_array_equal(ours.onset, onsets)
    np.testing.assert_array_equal(ours.offset, offsets)


def test_boxes_to_arrays_without_durations():
    # clip 0: one box [2, 3) of class 0; clip 1: no box (one frame of fill value, 1 ms, as sebbs lays it out)
    boxes = Boxes(clip=np.array([0]), cls=np.array([0]), onset=np.array([2.0]), offset=np.array([3.0]),
                  confidence=np.array([0.7]))
    (bounds0, scores0), (bounds1, scores1) = boxes_to_arrays(boxes, 2, 2)
    np.testing.assert_array_equal(bounds0, [0.0, 2.0, 3.0])
    np.testing.assert_array_equal(scores0, [[-np.inf, -np.inf], [0.7, -np.inf]])
    np.testing.assert_array_equal(bounds1, [0.0, 0.001])
    np.testing.assert_array_equal(scores1, [[-np.inf, -np.inf]])


def test_change_points_of_one_clip_and_of_none():
    scores = np.zeros((20, 2))
    scores[5:12, 0] = 0.9
    stamps = np.arange(21) * 0.1
    cp = detect_change_points([scores], [stamps], 0.3)
    assert list(cp.clip) == [0, 0] and list(cp.cls) == [0, 1]
    with pytest.raises(ValueError, match="needs at least one clip"):
        detect_change_points([], [], 0.3)


def test_run_sums_equal_numpys_own_sum_bit_for_bit():
    """``_sequential_sums`` sums runs of up to 7 values left to right and longer ones with ``ndarray.sum``: numpy's
    own rounding for every length (numpy switches to pairwise summation at 8 elements)."""
    rng = np.random.default_rng(0)
    values = rng.random(4000) * 10.0 ** rng.integers(-8, 8, 4000)
    counts = np.tile(np.arange(1, 13), 25)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    expected = np.array([values[s: s + c].sum() for s, c in zip(starts, counts)])
    sums = csebbs._sequential_sums(values, starts, counts)
    assert np.array_equal(sums, expected)
    sequential = np.array([sum(values[s: s + c].tolist()) for s, c in zip(starts, counts)])
    assert not np.array_equal(sequential[counts == 8], expected[counts == 8])  # why the cut-off matters


def test_cross_validation_defaults_are_five_folds_with_seed_zero():
    """The evaluation's cross-validated cSEBBs number uses 5 folds drawn with seed 0 (docs/EVALUATION.md)."""
    ids = [f"clip{i:02d}" for i in range(23)]
    folds = csebbs.make_folds(ids)
    assert len(folds) == 5 and sorted(sum(folds, [])) == ids and {len(f) for f in folds} == {4, 5}
    order = np.random.default_rng(0).permutation(len(ids))
    assert folds[0] == sorted(ids[i] for i in order[0::5])
