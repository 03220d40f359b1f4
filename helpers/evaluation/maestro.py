"""MAESTRO-real evaluation: chunk frame scores -> per-recording 1 s segment scores -> mpAUC.

As the DCASE 2024 Task 4 baseline and the reference compute it:
1. the model runs on 10 s chunks named ``<recording>-<onset_cs:06d>-<offset_cs:06d>`` (any hop: the
   chunk onset is read from the name, so 1 s and 5 s hops both work);
2. each chunk's frame scores become 1 s segment scores (time-overlap-weighted mean of the frames that
   intersect the segment);
3. segment scores are added into a per-recording array of ``ceil(duration)`` rows starting at row
   ``int(onset // 1)`` and divided by the number of chunks covering each row;
4. ground truth: soft labels with confidence > 0.5, the 11 scored classes, shifted by the chunk onset,
   same-class overlapping or touching events merged;
5. mpAUC = unweighted mean over the 11 classes of the segment-based partial AUROC up to FPR 0.1
   (divided by 0.1, so a random system scores about 0.05).

Vectorised: chunks that share their frame grid (all chunks of a prediction file) are converted with one
gathered array operation whose additions run in the same order as the reference's per-chunk loop, and
the overlap-add is one ``np.add.at`` in chunk order.
"""
from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from data_util.classes import MAESTRO_EVAL_CLASSES
from data_util.maestro import parse_chunk_name  # the one chunk-name parser (re-exported for callers)
from helpers.evaluation.metrics import PARTIAL_AUROC_MAX_FPR, SEGMENT_LENGTH, segment_auroc
from helpers.evaluation.scores import (
    OFFSET, ONSET, Event, frame_timestamps, ground_truth_from_table, merge_overlapping_events,
)

log = logging.getLogger(__name__)

MIN_SOFT_LABEL_CONFIDENCE = 0.5  # a MAESTRO soft label counts as an event when confidence > 0.5
# The reference orders the scored classes alphabetically in its segment tables.
EVAL_CLASSES: tuple[str, ...] = tuple(sorted(MAESTRO_EVAL_CLASSES))


def infer_chunk_hop(chunk_ids: Sequence[str]) -> float | None:
    """The most common onset step (s) between consecutive chunks of a recording (informative only)."""
    onsets: dict[str, list[float]] = defaultdict(list)
    for name in chunk_ids:
        recording, onset, _ = parse_chunk_name(name)
        onsets[recording].append(onset)
    steps = np.concatenate([np.diff(sorted(v)) for v in onsets.values() if len(v) > 1] or [np.empty(0)])
    if len(steps) == 0:
        return None
    values, counts = np.unique(np.round(steps, 2), return_counts=True)
    return float(values[np.argmax(counts)])


def _segment_gather(timestamps: np.ndarray, clip_length: float, segment_length: float):
    """Frame indices [S, F], overlap weights [S, F] (0 = padding) and weight sums [S] of each segment.

    Segment ``j`` spans ``[j, j + 1) * segment_length``; ``S = ceil(clip_length / segment_length)``; a frame
    counts with the length of its intersection with the segment.
    """
    onsets, offsets = timestamps[:-1], timestamps[1:]
    segment_onsets = np.arange(0.0, clip_length, segment_length)
    spans = []
    for seg_onset in segment_onsets:
        seg_offset = seg_onset + segment_length
        first = int(np.searchsorted(offsets, seg_onset, side="right"))  # first frame ending after the onset
        stop = int(np.searchsorted(onsets, seg_offset, side="left"))  # first frame starting at/after the offset
        weights = np.minimum(offsets[first:stop], seg_offset) - np.maximum(onsets[first:stop], seg_onset)
        if len(weights) == 0 or weights.sum() <= 0:
            raise ValueError(f"segment [{seg_onset}, {seg_offset}) s holds no frame (frames end at {offsets[-1]} s)")
        spans.append((first, weights))
    width = max(len(w) for _, w in spans)
    index = np.zeros((len(spans), width), dtype=np.int64)
    weight = np.zeros((len(spans), width), dtype=np.float64)
    norm = np.empty(len(spans), dtype=np.float64)
    for j, (first, weights) in enumerate(spans):
        index[j, : len(weights)] = np.arange(first, first + len(weights))
        weight[j, : len(weights)] = weights
        norm[j] = weights.sum()  # same 1-d sum as the reference, so identical rounding
    return index, weight, norm


def segment_scores(
    frame_scores: np.ndarray, timestamps: np.ndarray, clip_length: float, segment_length: float = SEGMENT_LENGTH
) -> np.ndarray:
    """Segment scores [..., S, K] of frame scores [..., T, K] on the frame grid ``timestamps`` [T + 1]."""
    index, weight, norm = _segment_gather(np.asarray(timestamps, dtype=np.float64), clip_length, segment_length)
    gathered = frame_scores[..., index, :]  # [..., S, F, K]
    # summing over F of a C-ordered array adds frame by frame, as the reference's per-segment sum does
    return (weight[..., None] * gathered).sum(axis=-2) / norm[:, None]


def overlap_add(
    chunk_ids: Sequence[str],
    chunk_segments: Sequence[np.ndarray],
    durations: Mapping[str, float],
    classes: Sequence[str],
    segment_length: float = SEGMENT_LENGTH,
) -> dict[str, pd.DataFrame]:
    """Per-recording segment score tables from per-chunk segment scores ([S_i, K] each, in chunk order)."""
    recordings: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for name, seg in zip(chunk_ids, chunk_segments):
        recording, onset, _ = parse_chunk_name(name)
        recordings[recording].append((int(onset // segment_length), seg))
    tables = {}
    for recording, chunks in recordings.items():
        if recording not in durations:
            raise KeyError(f"MAESTRO recording {recording!r} has no duration in the durations tsv")
        duration = float(durations[recording])
        num_segments = math.ceil(duration / segment_length)
        rows = np.concatenate([np.arange(start, start + len(seg)) for start, seg in chunks])
        values = np.concatenate([seg for _, seg in chunks])
        inside = rows < num_segments  # a chunk reaching past the recording end is cut
        summed = np.zeros((num_segments, len(classes)), dtype=np.float64)
        counts = np.zeros(num_segments, dtype=np.float64)
        np.add.at(summed, rows[inside], values[inside])  # adds in chunk order, like the reference's loop
        np.add.at(counts, rows[inside], 1.0)
        timestamps = np.minimum(np.arange(0.0, duration + segment_length, segment_length), duration)
        if len(timestamps) != num_segments + 1:  # guard against arange's floating-point length
            timestamps = np.minimum(np.arange(num_segments + 1) * segment_length, duration)
        table = np.concatenate(
            (timestamps[:-1, None], timestamps[1:, None], summed / np.maximum(counts, 1.0)[:, None]), axis=1
        )
        tables[recording] = pd.DataFrame(table, columns=[ONSET, OFFSET, *classes])
    return tables


def recording_scores_from_probabilities(
    chunk_ids: Sequence[str],
    probabilities: np.ndarray,
    durations: Mapping[str, float],
    classes: Sequence[str],
    segment_length: float = SEGMENT_LENGTH,
) -> dict[str, pd.DataFrame]:
    """Per-recording segment tables from chunk probabilities [N, 156, K] (columns ``classes``), vectorised."""
    timestamps = frame_timestamps(probabilities.shape[1])
    clip_lengths = np.array([parse_chunk_name(n)[2] - parse_chunk_name(n)[1] for n in chunk_ids])
    segments: list[np.ndarray | None] = [None] * len(chunk_ids)
    for clip_length in np.unique(clip_lengths):
        members = np.flatnonzero(clip_lengths == clip_length)
        per_chunk = segment_scores(probabilities[members].astype(np.float64), timestamps, float(clip_length),
                                   segment_length)
        for i, seg in zip(members, per_chunk):
            segments[i] = seg
    return overlap_add(chunk_ids, segments, durations, classes, segment_length)


def recording_scores_from_tables(
    chunk_tables: Mapping[str, pd.DataFrame],
    durations: Mapping[str, float],
    classes: Sequence[str],
    segment_length: float = SEGMENT_LENGTH,
) -> dict[str, pd.DataFrame]:
    """Per-recording segment tables from chunk score tables with any frame grid (e.g. cSEBBs output)."""
    ids, segments = [], []
    for name, table in chunk_tables.items():
        _, onset, offset = parse_chunk_name(name)
        timestamps = np.concatenate((table[ONSET].to_numpy(), table[OFFSET].to_numpy()[-1:]))
        segments.append(segment_scores(table[list(classes)].to_numpy(np.float64), timestamps, offset - onset,
                                       segment_length))
        ids.append(name)
    return overlap_add(ids, segments, durations, classes, segment_length)


def recording_ground_truth(
    table: pd.DataFrame | str | os.PathLike,
    classes: Sequence[str] = EVAL_CLASSES,
    min_confidence: float = MIN_SOFT_LABEL_CONFIDENCE,
) -> dict[str, list[Event]]:
    """Recording-level events from the chunk-level soft-label tsv (``filename onset offset event_label confidence``)."""
    if not isinstance(table, pd.DataFrame):
        table = pd.read_csv(table, sep="\t")
    chunk_events = ground_truth_from_table(table, classes=classes, min_confidence=min_confidence,
                                           source="MAESTRO ground truth")
    per_recording: dict[str, list[Event]] = defaultdict(list)
    for chunk, events in chunk_events.items():
        recording, chunk_onset, _ = parse_chunk_name(chunk)
        per_recording[recording].extend((chunk_onset + on, chunk_onset + off, label) for on, off, label in events)
    return {rec: merge_overlapping_events(events) for rec, events in per_recording.items()}


def mpauc(
    recording_scores: Mapping[str, pd.DataFrame],
    ground_truth: Mapping[str, list[Event]],
    durations: Mapping[str, float],
    classes: Sequence[str] = EVAL_CLASSES,
    *,
    segment_length: float = SEGMENT_LENGTH,
    num_jobs: int = 1,
) -> dict[str, float]:
    """Segment-based partial AUROC (max FPR 0.1) per class and ``mean`` over ``classes``.

    Evaluated on the recordings of ``ground_truth``; their scores must exist. Classes without any event
    cannot be scored (sed_scores_eval refuses them): they are left out of the mean with a warning (the real
    validation set has events of all 11 classes).
    """
    missing = [r for r in ground_truth if r not in recording_scores]
    if missing:
        raise KeyError(f"no chunk scores for MAESTRO recording(s) {missing}")
    present = {label for events in ground_truth.values() for _, _, label in events}
    absent = [c for c in classes if c not in present]
    if absent:
        log.warning("MAESTRO classes without ground-truth events are not scored: %s", absent)
        classes = [c for c in classes if c in present]
    keys = [ONSET, OFFSET, *classes]
    scores = {r: recording_scores[r][keys] for r in ground_truth}
    dur = {r: float(durations[r]) for r in ground_truth}
    return segment_auroc(scores, ground_truth, dur, max_fpr=PARTIAL_AUROC_MAX_FPR, segment_length=segment_length,
                         num_jobs=num_jobs)
