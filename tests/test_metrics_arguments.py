"""The DESED metric functions (helpers/evaluation/metrics.py) pass their arguments on and return what sed_scores_eval
returns: checked against sed_scores_eval called directly on the 20 real score tables of tests/fixtures, with cases
in which a dropped argument shows (durations shorter than the tables, clips without events, a class subset, the
segment F1 that the fixed reference values of test_metrics.py do not include)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sed_scores_eval import segment_based

from data_util.classes import DESED_CLASSES
from helpers.evaluation.metrics import (
    PSDS1, desed_metrics, desed_metrics_and_psds1, events_only, psds, segment_auroc, segment_best_f1,
)
from helpers.evaluation.scores import read_durations, read_ground_truth

SEBBS = Path(__file__).parent / "fixtures" / "sebbs_dcase2023task4a"


@pytest.fixture(scope="module")
def real():
    scores = {tsv.stem: pd.read_csv(tsv, sep="\t") for tsv in sorted((SEBBS / "scores").glob("*.tsv"))}
    gt = read_ground_truth(SEBBS / "metadata" / "ground_truth.tsv")
    dur = read_durations(SEBBS / "metadata" / "audio_durations.tsv")
    return scores, {k: gt[k] for k in scores}, {k: dur[k] for k in scores}


def _first_seconds(scores, gt, seconds=5.0):
    """The clips as if they lasted ``seconds``: events cut there, durations ``seconds``, the tables still 10 s."""
    cut = {k: [(on, min(off, seconds), c) for on, off, c in events if on < seconds] for k, events in gt.items()}
    cut = {k: events for k, events in cut.items() if events}
    return {k: scores[k] for k in cut}, cut, {k: seconds for k in cut}


def test_segment_metrics_use_the_given_durations_and_segment_length(real):
    scores, gt, dur = _first_seconds(*real[:2])
    ten = {k: 10.0 for k in dur}
    direct = segment_based.auroc(scores, gt, dur, segment_length=1.0, max_fpr=0.1)[0]["mean"]
    f1 = segment_based.best_fscore(scores, gt, dur, segment_length=1.0)[0]["macro_average"]
    # the case: the durations change both values (the tables reach past them)
    assert direct != pytest.approx(segment_based.auroc(scores, gt, ten, segment_length=1.0, max_fpr=0.1)[0]["mean"])
    assert f1 != pytest.approx(segment_based.best_fscore(scores, gt, ten, segment_length=1.0)[0]["macro_average"])
    assert segment_auroc(scores, gt, dur, max_fpr=0.1)["mean"] == pytest.approx(direct, abs=1e-12)
    assert segment_best_f1(scores, gt, dur)["macro_average"] == pytest.approx(f1, abs=1e-12)
    f1_half = segment_based.best_fscore(scores, gt, dur, segment_length=0.5)[0]["macro_average"]
    assert segment_best_f1(scores, gt, dur, segment_length=0.5)["macro_average"] == pytest.approx(f1_half, abs=1e-12)


def test_desed_metrics_keys_segment_f1_and_class_subset(real):
    scores, gt, dur = real
    metrics = desed_metrics(scores, gt, dur)
    f1 = segment_based.best_fscore(scores, gt, dur, segment_length=1.0)[0]["macro_average"]
    assert metrics["segment_f1"] == pytest.approx(f1, abs=1e-12)
    assert {"segment_f1", "segment_auroc", "segment_pauroc"} <= set(metrics)  # include_segment defaults to True
    brief = desed_metrics(scores, gt, dur, include_segment=False)
    assert not {"segment_f1", "segment_auroc", "segment_pauroc"} & set(brief)
    assert brief["psds1"] == pytest.approx(metrics["psds1"], abs=1e-12)
    two = ["Speech", "Dog"]
    gt_two = {k: [e for e in events if e[2] in two] for k, events in gt.items()}
    subset = desed_metrics(scores, gt_two, dur, classes=two, include_segment=False)
    assert {k for k in subset if k.startswith("psds1/")} == {"psds1/Speech", "psds1/Dog"}


def test_clips_without_events_and_extra_scores_are_left_out(real):
    scores, gt, dur = real
    expected = desed_metrics(scores, gt, dur, include_segment=False)
    first = next(iter(scores))
    extra_scores = dict(scores, silent_clip=scores[first])  # scores of a clip without events
    extra_gt = dict(gt, silent_clip=[])
    extra_dur = dict(dur, silent_clip=10.0)
    result = desed_metrics(extra_scores, extra_gt, extra_dur, include_segment=False)
    for key in ("psds1", "psds2", "intersection_f1", "collar_f1"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key


def test_events_only():
    gt = {"a": [(0.0, 1.0, "Dog")], "b": [], "c": [(0.0, 1.0, "Dog"), (2.0, 3.0, "Cat")]}
    assert events_only(gt, {"a": 10, "b": 10, "c": 9}) == ({"a": gt["a"], "c": gt["c"]}, {"a": 10.0, "c": 9.0})
    with pytest.raises(KeyError, match="1 annotated clips have no duration"):
        events_only(gt, {"a": 10})


def test_psds_returns_the_curves(real):
    scores, gt, dur = real
    gt, dur = events_only(gt, dur)
    result = psds({k: scores[k][["onset", "offset", *DESED_CLASSES]] for k in gt}, gt, dur, PSDS1)
    tpr, efpr = result.roc
    assert len(tpr) == len(efpr) > 1 and set(result.class_rocs) == set(DESED_CLASSES)
    metrics, psds1 = desed_metrics_and_psds1(scores, gt, dur)
    assert psds1.value == pytest.approx(result.value, abs=1e-12) == pytest.approx(metrics["psds1"], abs=1e-12)
    assert "segment_pauroc" in metrics  # include_segment defaults to True here too
