"""HEAR's scoring: post-processing (median filter, threshold, minimum duration) and sed_eval metrics, by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from helpers.evaluation.hear import PostProcessing, events_from_frames, format_table, sed_eval_scores

HOP_MS = 40.0


def _centres(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) * HOP_MS


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_events_run_from_first_to_last_active_frame_centre():
    probabilities = np.full((20, 2), 0.1)
    probabilities[3:10, 0] = 0.9  # 7 frames: centres 140 .. 380 ms
    probabilities[15:17, 1] = 0.9  # 2 frames: 620 .. 660 ms, 40 ms long: dropped by the 125 ms minimum
    logits = np.log(probabilities / (1 - probabilities))
    post = PostProcessing(median_filter_ms=0, min_duration_ms=125)
    assert events_from_frames(logits, _centres(20), ["a", "b"], post) == [{"label": "a", "start": 140.0, "end": 380.0}]
    keep_short = PostProcessing(median_filter_ms=0, min_duration_ms=40)
    assert events_from_frames(logits, _centres(20), ["a", "b"], keep_short)[1] == \
        {"label": "b", "start": 620.0, "end": 660.0}


def test_median_filter_of_250_ms_removes_gaps_and_blips():
    # 250 ms / 40 ms = 6.25 -> a 6-frame median (HEAR: int(round(...)))
    p = np.full((40, 1), 0.1)
    p[5:25, 0] = 0.9
    p[14:16, 0] = 0.1  # a 2-frame gap inside the event: filled
    p[32, 0] = 0.9  # a 1-frame blip: removed
    events = events_from_frames(np.log(p / (1 - p)), _centres(40), ["a"], PostProcessing(min_duration_ms=0))
    # scipy's 6-frame median at frame i takes frames i-3 .. i+2 and is high when 3 of them are: frames 5 .. 25
    assert events == [{"label": "a", "start": _centres(40)[5], "end": _centres(40)[25]}]
    unfiltered = events_from_frames(np.log(p / (1 - p)), _centres(40), ["a"],
                                    PostProcessing(median_filter_ms=0, min_duration_ms=0))
    assert len(unfiltered) == 3


def test_threshold_on_probabilities_or_on_logits():
    # frames at probability 0.55: active with HEAR's 0.5 on probabilities, not with PretrainedSED's 0.5 on logits
    # (probability 0.62); 0.7 is active with both
    logits = np.array([[_logit(0.3)]] * 4 + [[_logit(0.55)]] * 10 + [[_logit(0.7)]] * 10 + [[_logit(0.3)]] * 4)
    on_probability = PostProcessing(median_filter_ms=0, min_duration_ms=0)
    on_logit = PostProcessing(median_filter_ms=0, min_duration_ms=0, threshold_on="logit")
    assert events_from_frames(logits, _centres(28), ["a"], on_probability) == \
        [{"label": "a", "start": _centres(28)[4], "end": _centres(28)[23]}]
    assert events_from_frames(logits, _centres(28), ["a"], on_logit) == \
        [{"label": "a", "start": _centres(28)[14], "end": _centres(28)[23]}]
    with pytest.raises(ValueError, match="threshold_on"):
        PostProcessing(threshold_on="decibel")


def test_sed_eval_scores_match_a_hand_count():
    reference = {"a.wav": [{"label": "A", "start": 1000, "end": 2000}, {"label": "A", "start": 3000, "end": 3500},
                           {"label": "B", "start": 5000, "end": 6000}]}
    predicted = {"a.wav": [{"label": "A", "start": 1100, "end": 1500},  # onset 100 ms late: a hit at 200 ms only
                           {"label": "A", "start": 3030, "end": 3600},  # 30 ms late: a hit at both collars
                           {"label": "B", "start": 5500, "end": 6000},  # 500 ms late: a miss and an insertion
                           {"label": "A", "start": 7000, "end": 7200}]}  # an insertion
    scores = sed_eval_scores(predicted, reference, ["A", "B"])
    # 200 ms: 2 hits of 4 predictions and 3 references: P 1/2, R 2/3, F 4/7
    assert scores["event_onset_200ms_precision"] == pytest.approx(0.5)
    assert scores["event_onset_200ms_recall"] == pytest.approx(2 / 3)
    assert scores["event_onset_200ms_fms"] == pytest.approx(4 / 7)
    # 50 ms: 1 hit: P 1/4, R 1/3, F 2/7
    assert scores["event_onset_50ms_fms"] == pytest.approx(2 / 7)
    # 1 s segments: references active in 3 (A in 1 and 3, B in 5); the prediction adds A in segment 7: ER 1/3
    assert scores["segment_1s_er"] == pytest.approx(1 / 3)


def test_segment_error_rate_and_no_prediction():
    reference = {"b.wav": [{"label": "A", "start": 0, "end": 2000}]}
    shifted = {"b.wav": [{"label": "A", "start": 1000, "end": 3000}]}
    # segment 0: a deletion, segment 2: an insertion, 2 reference segments -> ER 1
    assert sed_eval_scores(shifted, reference, ["A"])["segment_1s_er"] == pytest.approx(1.0)
    nothing = sed_eval_scores({"b.wav": []}, reference, ["A"])
    assert nothing["event_onset_200ms_fms"] == 0.0 and nothing["event_onset_200ms_precision"] == 0.0
    assert nothing["segment_1s_er"] == pytest.approx(1.0)


def test_table_rows():
    table = format_table({"valid": {"event_onset_200ms_fms": 0.5, "segment_1s_er": 0.25}})
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["split", "onset", "F1", "200"]
    assert lines[2].split() == ["valid", "0.500", "-", "-", "-", "0.250"]
