"""MAESTRO mpAUC against an independent oracle: a hand-made case whose expected value is computed here from first
principles, not through the project's segment scores, overlap-add or ground-truth reader.

The definition (DCASE 2024 Task 4 baseline, as the reference evaluates MAESTRO-real):
- a chunk's 1 s segment ``[s, s + 1)`` scores the time-overlap-weighted mean of the 64 ms frames that intersect it;
- a recording's segment ``j`` (``ceil(duration)`` of them) scores the **mean** over the chunks that cover it (chunk
  onsets are whole seconds; a chunk of length L covers its ``ceil(L)`` segments, cut at the recording's end);
- a segment is active for a class when a soft-label event of that class with confidence **> 0.5** overlaps it;
- per scored class (11 of the 17 MAESTRO classes), the partial ROC AUC up to FPR 0.1 over the segments of all
  recordings, divided by 0.1 (not McClish-standardised); mpAUC is their unweighted mean.
The per-class partial AUC comes from scikit-learn's ``roc_auc_score(max_fpr=0.1)``, whose McClish standardisation
``0.5 * (1 + (A - A_min) / (A_max - A_min))`` (A_min = max_fpr² / 2, A_max = max_fpr) is undone below.

The case: four recordings of non-integer length, overlapping chunks at their edges (a short last chunk, a chunk
reaching past the end, a recording shorter than one chunk), soft labels with confidences above, at and below 0.5,
events that cross chunk borders or end on a segment border, and events of classes outside the scored set. The test
also checks that the case can tell the mean from a sum and ``> 0.5`` from ``>= 0.5``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from data_util.classes import CLASSES
from helpers.evaluation.maestro import (
    EVAL_CLASSES, mpauc, recording_ground_truth, recording_scores_from_probabilities, recording_scores_from_tables,
)
from helpers.evaluation.scores import scores_from_probabilities

MAX_FPR = 0.1
FRAMES = 156
FRAME_SECONDS = 1024 / 16000  # 64 ms
SCORED = sorted([
    "birds_singing", "brakes_squeaking", "car", "children voices", "cutlery and dishes", "footsteps",
    "large_vehicle", "metro approaching", "metro leaving", "people talking", "wind_blowing",
])
UNSCORED = ["furniture dragging", "coffee machine", "cash register beeping", "announcement", "shopping cart",
            "door opens/closes"]
# recording -> (duration in s, chunks as (onset, offset) in s, onsets on whole seconds as in the real chunk lists)
RECORDINGS = {
    "cafe_restaurant_01": (23.4, [(0, 10), (5, 15), (10, 20), (14, 23.4)]),  # last chunk 9.4 s, ends at the end
    "city_center_02": (17.75, [(0, 10), (1, 11), (7, 17), (8, 17.75)]),  # two chunks at each edge
    "metro_station_03": (9.3, [(0, 9.3)]),  # shorter than one chunk
    "residential_area_04": (31.2, [(0, 10), (10, 20), (20, 30), (25, 35)]),  # the last chunk reaches past the end
}
# Hand-placed events (recording, onset, offset, label, confidence) for the edge cases; more come from EVENT_SEED.
EDGE_EVENTS = [
    ("cafe_restaurant_01", 8.2, 11.5, "car", 0.9),  # crosses the borders of three chunks
    ("cafe_restaurant_01", 16.0, 19.0, "car", 0.5),  # exactly 0.5: not an event (and the model scores it high)
    ("city_center_02", 3.0, 5.0, "footsteps", 0.8),  # ends on a segment border: segment 5 stays inactive
    ("city_center_02", 12.3, 17.75, "wind_blowing", 0.5),  # exactly 0.5, up to the end
    ("metro_station_03", 6.6, 9.3, "metro leaving", 0.7),
    ("residential_area_04", 27.5, 31.2, "birds_singing", 0.55),  # inside the chunk that reaches past the end
    ("residential_area_04", 2.0, 30.0, "coffee machine", 1.0),  # not scored
    ("cafe_restaurant_01", 0.0, 23.4, "announcement", 0.9),  # not scored
    ("metro_station_03", 0.0, 9.3, "door opens/closes", 0.9),  # not scored
]
EVENT_SEED = 17
CONFIDENCES = (1.0, 0.8, 0.6, 0.5, 0.3)


def _events(rng) -> list[tuple[str, float, float, str, float]]:
    """EDGE_EVENTS plus two events (random place, length and confidence) per recording and class."""
    events = list(EDGE_EVENTS)
    for recording, (duration, _) in RECORDINGS.items():
        for label in SCORED + UNSCORED:
            for _ in range(2):
                onset = round(float(rng.uniform(0, duration - 0.5)), 2)
                offset = round(min(duration, onset + float(rng.uniform(0.3, 5.0))), 2)
                events.append((recording, onset, offset, label, float(rng.choice(CONFIDENCES))))
    return events


def _chunk_name(recording: str, onset: float, offset: float) -> str:
    return f"{recording}-{round(onset * 100):06d}-{round(offset * 100):06d}"


def _soft_label_table(events) -> pd.DataFrame:
    """The chunk-level tsv of MAESTRO-real: each event cut to every chunk it overlaps, in chunk time."""
    rows = []
    for recording, (_, chunks) in RECORDINGS.items():
        for chunk_on, chunk_off in chunks:
            name = _chunk_name(recording, chunk_on, chunk_off) + ".wav"
            for rec, onset, offset, label, confidence in events:
                start, stop = max(onset, chunk_on), min(offset, chunk_off)
                if rec == recording and stop > start:
                    rows.append((name, round(start - chunk_on, 6), round(stop - chunk_on, 6), label, confidence))
    return pd.DataFrame(rows, columns=["filename", "onset", "offset", "event_label", "confidence"])


def _frame_probabilities(events, rng) -> tuple[list[str], np.ndarray]:
    """Chunk ids and probabilities [N, 156, 27]: a noisy detector of every event with confidence >= 0.5 (so it is
    fooled by the 0.5 ones), evaluated at each frame's centre in recording time."""
    ids, probs = [], []
    centres = (np.arange(FRAMES) + 0.5) * FRAME_SECONDS
    for recording, (_, chunks) in RECORDINGS.items():
        for chunk_on, chunk_off in chunks:
            p = rng.uniform(0.02, 0.4, (FRAMES, len(CLASSES)))
            t = chunk_on + centres
            for rec, onset, offset, label, confidence in events:
                if rec == recording and confidence >= 0.5:
                    active = (t >= onset) & (t < offset)
                    p[active, CLASSES.index(label)] += rng.uniform(0.1, 0.55, int(active.sum()))
            ids.append(_chunk_name(recording, chunk_on, chunk_off))
            probs.append(np.minimum(p, 0.99))
    return ids, np.stack(probs)


# ----------------------------------------------------------------------------------------- first principles
def _chunk_segment_score(frame_scores: np.ndarray, segment: int) -> float:
    """Overlap-weighted mean of the frames intersecting ``[segment, segment + 1)`` s of the chunk."""
    onsets = np.arange(FRAMES) * FRAME_SECONDS
    weights = np.clip(np.minimum(onsets + FRAME_SECONDS, segment + 1) - np.maximum(onsets, segment), 0.0, None)
    return float((weights * frame_scores).sum() / weights.sum())


def _expected(ids, probs, events, *, combine=np.mean, min_confidence_inclusive=False):
    """mpAUC and per-class values by the definition in the module docstring (``combine`` / ``>=``: the mutants)."""
    y_true: dict[str, list[bool]] = {c: [] for c in SCORED}
    y_score: dict[str, list[float]] = {c: [] for c in SCORED}
    for recording, (duration, chunks) in RECORDINGS.items():
        chunk_index = [ids.index(_chunk_name(recording, on, off)) for on, off in chunks]
        for label in SCORED:
            column = CLASSES.index(label)
            kept = [(on, off) for rec, on, off, lab, conf in events if rec == recording and lab == label
                    and (conf >= 0.5 if min_confidence_inclusive else conf > 0.5)]
            for j in range(math.ceil(duration)):
                covering = [_chunk_segment_score(probs[k, :, column], j - on)
                            for k, (on, off) in zip(chunk_index, chunks) if on <= j < on + math.ceil(off - on)]
                y_score[label].append(combine(covering))
                y_true[label].append(any(on < j + 1 and off > j for on, off in kept))
    per_class = {}
    area_min, area_max = MAX_FPR ** 2 / 2, MAX_FPR
    for label in SCORED:
        assert 0 < sum(y_true[label]) < len(y_true[label]), label  # every scored class has both kinds of segment
        standardised = roc_auc_score(y_true[label], y_score[label], max_fpr=MAX_FPR)
        partial_area = area_min + (2 * standardised - 1) * (area_max - area_min)
        per_class[label] = partial_area / MAX_FPR
    return float(np.mean(list(per_class.values()))), per_class


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(EVENT_SEED)
    events = _events(rng)
    ids, probs = _frame_probabilities(events, rng)
    durations = {recording: duration for recording, (duration, _) in RECORDINGS.items()}
    return ids, probs, _soft_label_table(events), durations, events


def test_case_tells_the_definition_from_near_misses(case):
    ids, probs, _, _, events = case
    assert SCORED == sorted(EVAL_CLASSES) and set(UNSCORED).isdisjoint(EVAL_CLASSES)
    expected, _ = _expected(ids, probs, events)
    summed, _ = _expected(ids, probs, events, combine=np.sum)
    inclusive, _ = _expected(ids, probs, events, min_confidence_inclusive=True)
    assert abs(expected - summed) > 0.01 and abs(expected - inclusive) > 0.01
    assert 0.2 < expected < 0.9  # neither chance (0.05) nor perfect: the ranking matters


def test_mpauc_equals_the_first_principles_value(case):
    ids, probs, table, durations, events = case
    expected, expected_per_class = _expected(ids, probs, events)
    columns = [CLASSES.index(c) for c in EVAL_CLASSES]  # what the evaluation report passes
    scores = recording_scores_from_probabilities(ids, probs[:, :, columns], durations, EVAL_CLASSES)
    result = mpauc(scores, recording_ground_truth(table), durations)
    assert result["mean"] == pytest.approx(expected, abs=1e-9)
    assert set(result) == set(SCORED) | {"mean"}
    for label in SCORED:
        assert result[label] == pytest.approx(expected_per_class[label], abs=1e-9), label


def test_mpauc_through_score_tables_equals_the_first_principles_value(case):
    """The cSEBBs path (chunk score tables of any frame grid) is the same evaluation."""
    ids, probs, table, durations, events = case
    expected, _ = _expected(ids, probs, events)
    columns = [CLASSES.index(c) for c in EVAL_CLASSES]
    tables = scores_from_probabilities(ids, probs[:, :, columns], EVAL_CLASSES)
    scores = recording_scores_from_tables(tables, durations, EVAL_CLASSES)
    assert mpauc(scores, recording_ground_truth(table), durations)["mean"] == pytest.approx(expected, abs=1e-9)
