"""Score tables, ground-truth and duration readers (helpers/evaluation/scores.py) on hand-made inputs: the
arguments that reach the reader, the defaults, the guards and their messages, the float32 sigmoid."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from data_util.classes import CLASSES
from helpers.evaluation.scores import (
    ground_truth_from_table, read_durations, read_ground_truth, scores_from_logits, scores_from_probabilities,
    select_classes, sigmoid,
)

COLUMNS = ["filename", "onset", "offset", "event_label", "confidence"]


def _soft_table() -> pd.DataFrame:
    return pd.DataFrame([("a.wav", 0.0, 1.0, "car", 0.9), ("a.wav", 2.0, 3.0, "footsteps", 0.4),
                         ("b.wav", 1.0, 2.0, "car", 0.6), ("b.wav", 3.0, 4.0, "car", 0.5),
                         ("c.wav", None, None, None, None)], columns=COLUMNS)


def test_ground_truth_defaults_drop_clips_without_events():
    table = _soft_table().drop(columns="confidence")
    assert ground_truth_from_table(table) == {"a": [(0.0, 1.0, "car"), (2.0, 3.0, "footsteps")],
                                              "b": [(1.0, 2.0, "car"), (3.0, 4.0, "car")]}
    assert ground_truth_from_table(table, keep_empty=True)["c"] == []


def test_ground_truth_guards_and_their_messages():
    table = _soft_table().drop(columns="confidence")
    with pytest.raises(ValueError, match=r"^ground truth: missing column\(s\) \['confidence'\]"):
        ground_truth_from_table(table, min_confidence=0.5)
    zero_length = pd.DataFrame([("a.wav", 1.0, 1.0, "car")], columns=COLUMNS[:4])
    with pytest.raises(ValueError, match="^ground truth: event 'car' of a.wav has offset 1.0 <= onset 1.0"):
        ground_truth_from_table(zero_length)


def test_read_ground_truth_passes_its_arguments(tmp_path):
    path = tmp_path / "soft.tsv"
    _soft_table().to_csv(path, sep="\t", index=False)
    # confidence > 0.5: the 0.4 and the 0.5 rows are not events
    assert read_ground_truth(path, classes=["car"], min_confidence=0.5) == {"a": [(0.0, 1.0, "car")],
                                                                            "b": [(1.0, 2.0, "car")]}
    assert read_ground_truth(path, classes=["footsteps"]) == {"a": [(2.0, 3.0, "footsteps")]}
    assert read_ground_truth(path, min_confidence=0.5, keep_empty=True) == {
        "a": [(0.0, 1.0, "car")], "b": [(1.0, 2.0, "car")], "c": []}
    bad = tmp_path / "bad.tsv"
    _soft_table().drop(columns="confidence").to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match=f"^{bad}: missing column"):
        read_ground_truth(bad, min_confidence=0.5)


@pytest.mark.parametrize("value", ["0.0", "-1.0", "inf", "nan"])
def test_read_durations_refuses_non_positive_or_non_finite(tmp_path, value):
    path = tmp_path / "durations.tsv"
    path.write_text(f"filename\tduration\na.wav\t0.5\nb.wav\t{value}\n")
    with pytest.raises(ValueError, match="non-positive or missing durations for \\['b'\\]"):
        read_durations(path)


def test_read_durations_keeps_short_clips(tmp_path):
    path = tmp_path / "durations.tsv"
    path.write_text("filename\tduration\na.wav\t0.5\nb\t10.0\n")
    assert read_durations(path) == {"a": 0.5, "b": 10.0}


def test_score_table_shape_guards():
    probs = np.zeros((2, 156, 3))
    with pytest.raises(ValueError, match="2 clips x 3 classes of scores but 1 filenames and 3 class names"):
        scores_from_probabilities(["a"], probs, ["x", "y", "z"])
    with pytest.raises(ValueError, match="strong_logits must be"):
        scores_from_logits(["a"], np.zeros((1, 156, len(CLASSES) - 1)))


def test_select_classes_by_ids_and_missing_ids():
    tables = scores_from_probabilities(["a", "b"], np.full((2, 4, 2), 0.5), ["x", "y"])
    assert list(select_classes(tables, ["y"])) == ["a", "b"]
    picked = select_classes(tables, ["y"], ids=["b"])
    assert list(picked) == ["b"] and list(picked["b"].columns) == ["onset", "offset", "y"]
    with pytest.raises(KeyError, match="1 clips have no scores"):
        select_classes(tables, ["y"], ids=["a", "q"])


def test_sigmoid_is_float32_like_the_reference():
    logits = np.array([0.1234567890123, -3.3333333333333, 7.77777777777], dtype=np.float64)
    result = sigmoid(logits)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).numpy())
