"""MAESTRO segment bookkeeping on hand-computed cases: segment scores of a frame grid, the overlap-add into
recording tables (values, rows, onset/offset columns, other segment lengths), the ground-truth reader on a tsv
file, mpAUC's guards and the chunk hop reported with the metrics. The end-to-end value is pinned by
test_mpauc_oracle.py; these cases pin what mpAUC cannot see (it is invariant to a common scale of the scores)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from helpers.evaluation.maestro import (
    infer_chunk_hop, mpauc, overlap_add, recording_ground_truth, recording_scores_from_probabilities,
    recording_scores_from_tables, segment_scores,
)
from helpers.evaluation.scores import OFFSET, ONSET, frame_timestamps, scores_from_probabilities


def test_segment_scores_are_overlap_weighted_means_by_hand():
    # 4 frames of 0.3 s, 0.5 s segments: [0, .5) holds .3 of frame 0 and .2 of frame 1, and so on.
    timestamps = np.array([0.0, 0.3, 0.6, 0.9, 1.2])
    frames = np.array([[1.0], [2.0], [3.0], [4.0]])
    expected = [(0.3 * 1 + 0.2 * 2) / 0.5, (0.1 * 2 + 0.3 * 3 + 0.1 * 4) / 0.5, 4.0]
    np.testing.assert_allclose(segment_scores(frames, timestamps, 1.2, 0.5)[:, 0], expected, rtol=1e-12)
    # 1 s segments (the default) of the same grid: [0, 1) and [1, 1.2)
    np.testing.assert_allclose(segment_scores(frames, timestamps, 1.2)[:, 0], [(0.3 + 0.6 + 0.9 + 0.4) / 1.0, 4.0],
                               rtol=1e-12)


def test_overlap_add_is_the_mean_of_the_covering_chunks_by_hand():
    # Recording of 3.5 s: chunk A covers rows 0-1, B rows 1-3, C starts at row 3 and reaches past the end.
    ids = ["r-000000-000200", "r-000100-000350", "r-000300-000500"]
    segments = [np.array([[1.0], [2.0]]), np.array([[10.0], [20.0], [30.0]]), np.array([[100.0], [200.0]])]
    table = overlap_add(ids, segments, {"r": 3.5}, ["c"])["r"]
    np.testing.assert_allclose(table["c"], [1.0, (2 + 10) / 2, 20.0, (30 + 100) / 2])
    np.testing.assert_allclose(table[ONSET], [0, 1, 2, 3])
    np.testing.assert_allclose(table[OFFSET], [1, 2, 3, 3.5])  # the last segment ends with the recording


def test_overlap_add_with_half_second_segments():
    # 2.2 s -> ceil(4.4) = 5 rows; the chunk at 1.5 s starts at row 3.
    ids = ["r-000000-000150", "r-000150-000220"]
    segments = [np.array([[1.0], [2.0], [3.0]]), np.array([[5.0], [7.0]])]
    table = overlap_add(ids, segments, {"r": 2.2}, ["c"], segment_length=0.5)["r"]
    np.testing.assert_allclose(table["c"], [1.0, 2.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(table[ONSET], [0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(table[OFFSET], [0.5, 1.0, 1.5, 2.0, 2.2])


def test_overlap_add_rows_when_arange_overshoots():
    # 0.2 s in 0.1 s segments: ceil(0.2 / 0.1) = 2 rows, but np.arange(0, 0.2 + 0.1, 0.1) has 4 values (floating
    # point); the table must still have 2 rows with the right borders.
    assert len(np.arange(0.0, 0.2 + 0.1, 0.1)) == 4
    table = overlap_add(["r-000000-000020"], [np.array([[1.0], [2.0]])], {"r": 0.2}, ["c"], segment_length=0.1)["r"]
    np.testing.assert_allclose(table["c"], [1.0, 2.0])
    np.testing.assert_allclose(table[ONSET], [0.0, 0.1])
    np.testing.assert_allclose(table[OFFSET], [0.1, 0.2])


def _constant_chunks():
    """Two 10 s chunks of a 15 s recording with constant scores 0.2 (0-10 s) and 0.6 (5-15 s), one class."""
    ids = ["r-000000-001000", "r-000500-001500"]
    probs = np.stack([np.full((156, 1), 0.2), np.full((156, 1), 0.6)])
    return ids, probs


@pytest.mark.parametrize("path", ["probabilities", "tables"])
def test_recording_scores_with_half_second_segments(path):
    ids, probs = _constant_chunks()
    if path == "probabilities":
        table = recording_scores_from_probabilities(ids, probs, {"r": 15.0}, ["c"], segment_length=0.5)["r"]
    else:
        tables = scores_from_probabilities(ids, probs, ["c"])
        table = recording_scores_from_tables(tables, {"r": 15.0}, ["c"], segment_length=0.5)["r"]
    expected = [0.2] * 10 + [0.4] * 10 + [0.6] * 10  # rows of 0.5 s: A alone, both (mean), B alone
    np.testing.assert_allclose(table["c"], expected, rtol=1e-6)
    np.testing.assert_allclose(table[ONSET], np.arange(30) * 0.5)


def test_frame_grid_is_float64():
    assert frame_timestamps(156).dtype == np.float64  # the segment weights are computed on this grid


def test_mpauc_uses_the_segment_length_it_is_given():
    # One class, event in [0.5, 1.0); the score is high only in [0, 0.5). In 0.5 s segments the event's segment
    # ranks below every other: partial AUC 0. In 1 s segments the same table would put it in a high segment.
    onsets = np.arange(10) * 0.5
    scores = np.full(10, 0.3)
    scores[0], scores[1] = 1.0, 0.0
    table = pd.DataFrame({ONSET: onsets, OFFSET: onsets + 0.5, "c": scores})
    result = mpauc({"r": table}, {"r": [(0.5, 1.0, "c")]}, {"r": 5.0}, ["c"], segment_length=0.5)
    assert result["c"] == pytest.approx(0.0, abs=1e-9)


def test_mpauc_names_missing_recordings():
    table = pd.DataFrame({ONSET: [0.0], OFFSET: [1.0], "c": [0.5]})
    with pytest.raises(KeyError, match="no chunk scores for MAESTRO recording.*'q'"):
        mpauc({"r": table}, {"r": [(0.0, 1.0, "c")], "q": [(0.0, 1.0, "c")]}, {"r": 1.0, "q": 1.0}, ["c"])


def test_mpauc_leaves_classes_without_events_out_with_a_warning(caplog):
    onsets = np.arange(20.0)
    table = pd.DataFrame({ONSET: onsets, OFFSET: onsets + 1, "a": np.linspace(0, 1, 20), "b": np.linspace(1, 0, 20)})
    with caplog.at_level(logging.WARNING, logger="helpers.evaluation.maestro"):
        result = mpauc({"r": table}, {"r": [(18.0, 20.0, "a")]}, {"r": 20.0}, ["a", "b"])
    assert set(result) == {"a", "mean"} and result["a"] == pytest.approx(1.0)
    assert "['b']" in caplog.text  # the warning names exactly the classes left out
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="helpers.evaluation.maestro"):
        mpauc({"r": table}, {"r": [(18.0, 20.0, "a"), (0.0, 2.0, "b")]}, {"r": 20.0}, ["a", "b"])
    assert "not scored" not in caplog.text  # every class has events: no warning


def test_ground_truth_from_a_tsv_file(tmp_path):
    path = tmp_path / "maestro_real_validation.tsv"
    path.write_text("filename\tonset\toffset\tevent_label\tconfidence\n"
                    "r-000500-001500.wav\t1.0\t2.5\tcar\t0.9\n"
                    "r-000500-001500.wav\t3.0\t4.0\tfootsteps\t0.5\n")
    assert recording_ground_truth(path) == {"r": [(6.0, 7.5, "car")]}


def test_ground_truth_errors_name_the_maestro_table():
    table = pd.DataFrame({"filename": ["r-000000-001000.wav"], "onset": [1.0], "offset": [2.0],
                          "event_label": ["car"]})  # no confidence column
    with pytest.raises(ValueError, match="^MAESTRO ground truth: missing column"):
        recording_ground_truth(table)


def test_chunk_hop_reported_with_the_metrics():
    # two chunks per recording (the only pairs), a hop of 2.5 s
    assert infer_chunk_hop(["a-000000-001000", "a-000250-001250", "b-000000-001000", "b-000250-001250"]) == 2.5
    # the most common step wins, not the smallest: steps 1, 3, 3
    assert infer_chunk_hop(["a-000000-001000", "a-000100-001100", "a-000400-001400", "a-000700-001700"]) == 3.0
    # one chunk per recording: no hop
    assert infer_chunk_hop(["a-000000-001000", "b-000000-000930"]) is None
