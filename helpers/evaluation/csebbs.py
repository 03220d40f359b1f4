"""cSEBBs post-processing (change-point based Sound Event Bounding Boxes): fast tuning and application.

cSEBBs: J. Ebbers, F. Germain, G. Wichern, J. Le Roux, "Sound Event Bounding Boxes", Interspeech 2024;
library: merlresearch/sebbs 1.0.2 (AGPL-3.0). We use its change-point detector (``sebbs.change_detection``)
and its predictor class unchanged and re-implement the steps around it that dominate the grid search:

- segment merging for all clips and classes of a candidate at once with numpy (the library loops per
  clip and class); every floating-point operation is the library's, in the library's order, so boxes and
  confidences are bit-identical (sums of up to 7 segments run sequentially as numpy does for short
  arrays; longer ones call numpy's ``sum`` on the same slice);
- boxes -> score arrays (the layout of ``sebbs.utils.sed_scores_from_sebbs``) as one vectorised fill;
- the per-clip PSDS statistics are computed with sed_scores_eval's own per-clip steps on those arrays
  (no DataFrame per clip and candidate), cached by clip content (neighbouring thresholds leave many clips
  unchanged) and re-used for the full set and for every cross-validation fold;
- candidates are evaluated in parallel processes (``num_jobs``), grouped by step-filter length so the
  change-point detection runs once per group.

Selection is the library's ``select_best_psds``: candidates in its order (step-filter lengths, then the
absolute thresholds, then the relative ones), per class the first strictly best single-class PSDS. The
reference tuned on the devtest clips with events and reported devtest (optimistic); ``cross_validation``
gives the honest number (tune on k-1 folds, apply to the held-out fold).

sebbs 1.0.2 bug worked around: its ``tune(..., classwise=True)`` crashes as soon as a clip yields no box,
because the candidate predictors carry ``sound_classes=None``; our predictors always carry their classes.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sebbs import csebbs as sebbs_csebbs
from sebbs.change_detection import change_detection
from sebbs.csebbs import CSEBBsPredictor
from sed_scores_eval import intersection_based
from sed_scores_eval.base_modules import statistics as sse_statistics
from sed_scores_eval.base_modules.cy_detection import onset_offset_curves  # the one sed_scores_eval uses
from sed_scores_eval.base_modules.ground_truth import multi_label_to_single_label_ground_truths
from sed_scores_eval.intersection_based import intermediate_statistics as intersection_statistics

from data_util.classes import CLASSES, DESED_CLASSES, MAESTRO_CLASSES, class_indices
from helpers.evaluation.maestro import segment_scores
from helpers.evaluation.metrics import PSDS1, SEGMENT_LENGTH, PSDSSettings, events_only
from helpers.evaluation.scores import OFFSET, ONSET, Event, audio_id, frame_timestamps

log = logging.getLogger(__name__)

# The reference's grid (ex_stage2.eval_predictions): 8 step-filter lengths x (8 absolute + 8 relative).
STEP_FILTER_LENGTHS: tuple[float, ...] = (0.38, 0.42, 0.46, 0.50, 0.54, 0.58, 0.62, 0.66)
MERGE_THRESHOLDS_REL: tuple[float, ...] = (1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25)
MERGE_THRESHOLDS_ABS: tuple[float, ...] = (0.15, 0.175, 0.2, 0.225, 0.25, 0.275, 0.3, 0.325)

# Constants of sebbs' segment merging (sebbs.csebbs._merge_segments / _merge_scores).
_SCORE_OFFSET = 1e-3  # added to event maxima and gap minima before comparing them
_LENGTH_EPS = 1e-6  # added to a merged segment's length before dividing
_MIN_BOUNDS_FOR_MERGING = 6  # sebbs merges only when a class has >= 2 candidate events
_SEQUENTIAL_SUM_MAX = 7  # numpy sums 1-d arrays of <= 7 elements left to right (pairwise beyond)
NO_BOX_DURATION = 0.001  # table length sebbs uses for a clip without boxes and without duration
PSDS_TIME_DECIMALS = 6  # sed_scores_eval's default, used by the reference's PSDS calls
DEFAULT_FOLDS = 5
DEFAULT_FOLD_SEED = 0


@dataclass(frozen=True)
class CSEBBsGrid:
    """The hyper-parameter grid; ``candidates()`` enumerates it in sebbs' order."""

    step_filter_lengths: tuple[float, ...] = STEP_FILTER_LENGTHS
    merge_thresholds_abs: tuple[float, ...] = MERGE_THRESHOLDS_ABS
    merge_thresholds_rel: tuple[float, ...] = MERGE_THRESHOLDS_REL
    classwise: bool = True

    def thresholds(self) -> list[tuple[float, float]]:
        """(abs, rel) pairs of one step length: either threshold alone (the other one infinite)."""
        return [(float(a), np.inf) for a in self.merge_thresholds_abs] + [
            (np.inf, float(r)) for r in self.merge_thresholds_rel
        ]

    def candidates(self) -> list[tuple[float, float, float]]:
        return [(float(s), a, r) for s in self.step_filter_lengths for a, r in self.thresholds()]


@dataclass
class TuningResult:
    predictor: CSEBBsPredictor  # classwise parameters, ``sound_classes`` set
    best_values: dict[str, float]  # single-class PSDS of the selected parameters (mean if not classwise)
    candidate_values: np.ndarray = field(repr=False)  # [candidates, classes] single-class PSDS
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------- #
# change points, merging, boxes
# --------------------------------------------------------------------------------------------- #
@dataclass
class ChangePoints:
    """Change-point detection output of many (clip, class) series, concatenated.

    Series ``s`` has ``bounds[b0[s]:b0[s+1]]`` (0, onset, offset, ..., end) and segment statistics
    ``mean/min/max[g0[s]:g0[s+1]]`` (one fewer than bounds); ``clip[s]``, ``cls[s]`` name it.
    """

    bounds: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray
    b0: np.ndarray
    g0: np.ndarray
    clip: np.ndarray
    cls: np.ndarray


def detect_change_points(
    score_arrays: Sequence[np.ndarray], timestamps: Sequence[np.ndarray], step_filter_length
) -> ChangePoints:
    """Run sebbs' change-point detection on every clip ([T, K] scores) with a scalar or per-class length."""
    if len(score_arrays) == 0:
        raise ValueError("cSEBBs change-point detection needs at least one clip")
    bounds, means, mins, maxs, clips, classes = [], [], [], [], [], []
    for i, (scores, stamps) in enumerate(zip(score_arrays, timestamps)):
        for k, (seg_bounds, mean, mn, mx) in enumerate(change_detection(scores, stamps, step_filter_length)):
            bounds.append(seg_bounds)
            means.append(mean)
            mins.append(mn)
            maxs.append(mx)
            clips.append(i)
            classes.append(k)
    b_len = np.array([len(b) for b in bounds])
    return ChangePoints(
        bounds=np.concatenate(bounds), mean=np.concatenate(means), min=np.concatenate(mins),
        max=np.concatenate(maxs), b0=np.concatenate(([0], np.cumsum(b_len))),
        g0=np.concatenate(([0], np.cumsum(b_len - 1))), clip=np.array(clips), cls=np.array(classes),
    )


@dataclass
class Boxes:
    """Flat SEBBs: clip index, class index, onset, offset, confidence (per class in onset order)."""

    clip: np.ndarray
    cls: np.ndarray
    onset: np.ndarray
    offset: np.ndarray
    confidence: np.ndarray


def _sequential_sums(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``values[s:s+c].sum()`` for each run, with numpy's own rounding (sequential up to 7 elements)."""
    sums = np.empty(len(starts), dtype=np.float64)
    short = counts <= _SEQUENTIAL_SUM_MAX
    short_starts, short_counts = starts[short], counts[short]
    acc = values[short_starts].copy()
    for j in range(1, _SEQUENTIAL_SUM_MAX):
        more = short_counts > j
        acc[more] = acc[more] + values[short_starts[more] + j]
    sums[short] = acc
    for r in np.flatnonzero(~short):  # long merged runs: rare
        sums[r] = values[starts[r]: starts[r] + counts[r]].sum()
    return sums


def merge_segments(cp: ChangePoints, threshold_abs: np.ndarray, threshold_rel: np.ndarray) -> Boxes:
    """sebbs' segment merging for all series at once; thresholds are per class ([K] arrays).

    A gap between two candidate events is closed when both events' maxima exceed the gap's minimum by
    less than ``threshold_abs`` and by a factor less than ``threshold_rel``.
    """
    n_bounds = np.diff(cp.b0)
    n_events = (n_bounds - 2) // 2
    merging = n_bounds >= _MIN_BOUNDS_FOR_MERGING  # series that go through sebbs' _merge_scores
    # events: segment 1 + 2k of their series (k = 0..m-1)
    ev_series = np.repeat(np.arange(len(n_events)), n_events)
    ev_k = np.arange(len(ev_series)) - np.repeat(np.cumsum(n_events) - n_events, n_events)
    ev_seg = cp.g0[ev_series] + 1 + 2 * ev_k  # global segment index of the event
    # gap before event k (k >= 1) is segment 2k of the series
    has_gap = ev_k >= 1
    closed = np.zeros(len(ev_series), dtype=bool)
    gi = np.flatnonzero(has_gap & merging[ev_series])
    if len(gi):
        prev_score = cp.max[ev_seg[gi] - 2] + _SCORE_OFFSET
        next_score = cp.max[ev_seg[gi]] + _SCORE_OFFSET
        gap_score = cp.min[ev_seg[gi] - 1] + _SCORE_OFFSET
        cls = cp.cls[ev_series[gi]]
        t_abs, t_rel = threshold_abs[cls], threshold_rel[cls]
        closed[gi] = (
            ((prev_score / gap_score) < t_rel)
            & ((next_score / gap_score) < t_rel)
            & ((prev_score - gap_score) < t_abs)
            & ((next_score - gap_score) < t_abs)
        )
    run_start = ~closed  # an event starts a new box unless the gap before it is closed
    first = np.flatnonzero(run_start)
    last = np.concatenate((first[1:], [len(ev_series)])) - 1
    series = ev_series[first]
    b_first = cp.b0[series] + 1 + 2 * ev_k[first]  # onset bound
    b_last = cp.b0[series] + 2 + 2 * ev_k[last]  # offset bound
    onset, offset = cp.bounds[b_first], cp.bounds[b_last]

    seg_first, seg_count = ev_seg[first], 2 * (ev_k[last] - ev_k[first]) + 1
    confidence = cp.mean[seg_first].copy()  # series with < 2 events keep the raw segment mean
    m = np.flatnonzero(merging[series])
    if len(m):
        left = _segment_to_bound_index(cp)
        seg_len = cp.bounds[left + 1] - cp.bounds[left]
        weighted = seg_len * cp.mean
        length_sum = _sequential_sums(seg_len, seg_first[m], seg_count[m])
        weighted_sum = _sequential_sums(weighted, seg_first[m], seg_count[m])
        merged_conf = np.zeros(len(m))
        nonzero = length_sum != 0.0
        merged_conf[nonzero] = weighted_sum[nonzero] / (length_sum[nonzero] + _LENGTH_EPS)
        confidence[m] = merged_conf
    return Boxes(clip=cp.clip[series], cls=cp.cls[series], onset=onset, offset=offset, confidence=confidence)


def _segment_to_bound_index(cp: ChangePoints) -> np.ndarray:
    """For every global segment index, the global index of its left bound."""
    n_segments = np.diff(cp.g0)
    series = np.repeat(np.arange(len(n_segments)), n_segments)
    local = np.arange(len(series)) - cp.g0[series]
    return cp.b0[series] + local


def boxes_to_arrays(
    boxes: Boxes, num_clips: int, num_classes: int, durations: Sequence[float] | None = None,
    fill_value: float = -np.inf,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per clip (frame bounds [R + 1], scores [R, K]) of SEBBs, as ``sed_scores_from_sebbs`` lays them out.

    Frame bounds are the union of box bounds, 0 and the clip's duration (if given); a box fills its
    class column with its confidence, everything else is ``fill_value``. One vectorised fill for all clips.
    """
    N, K = num_clips, num_classes
    order = np.lexsort((boxes.onset, boxes.clip))
    b_clip, b_on, b_off = boxes.clip[order], boxes.onset[order], boxes.offset[order]
    b_cls, b_conf = boxes.cls[order], boxes.confidence[order]
    per_clip = np.searchsorted(b_clip, np.arange(N + 1))
    change_points, row_start, row_stop = [], np.empty(len(b_on), np.int64), np.empty(len(b_on), np.int64)
    row0 = np.zeros(N + 1, np.int64)
    for i in range(N):
        lo, hi = per_clip[i], per_clip[i + 1]
        if hi == lo:  # sebbs: one frame of fill_value up to the duration (or 1 ms)
            cp = np.array([0.0, NO_BOX_DURATION if durations is None else float(durations[i])])
        else:
            extra = [0.0] if durations is None else [0.0, float(durations[i])]
            cp = np.unique(np.concatenate((b_on[lo:hi], b_off[lo:hi], extra)))
        row_start[lo:hi] = row0[i] + np.searchsorted(cp, b_on[lo:hi], side="left")
        row_stop[lo:hi] = row0[i] + np.searchsorted(cp, b_off[lo:hi], side="left")
        change_points.append(cp)
        row0[i + 1] = row0[i] + len(cp) - 1
    scores = np.full((row0[N], K), fill_value, dtype=np.float64)
    lengths = np.maximum(row_stop - row_start, 0)
    rows = np.repeat(row_start, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    scores[rows, np.repeat(b_cls, lengths)] = np.repeat(b_conf, lengths)  # boxes of a class never overlap
    return [(change_points[i], scores[row0[i]: row0[i + 1]]) for i in range(N)]


def boxes_to_score_tables(
    boxes: Boxes,
    clip_ids: Sequence[str],
    classes: Sequence[str],
    durations: Sequence[float] | None = None,
    fill_value: float = -np.inf,
) -> dict[str, pd.DataFrame]:
    """Score tables of SEBBs, equal to ``sebbs.utils.sed_scores_from_sebbs`` (see ``boxes_to_arrays``)."""
    columns = [ONSET, OFFSET, *classes]
    tables = {}
    for clip_id, (bounds, scores) in zip(clip_ids, boxes_to_arrays(boxes, len(clip_ids), len(classes), durations,
                                                                   fill_value)):
        table = np.concatenate((bounds[:-1, None], bounds[1:, None], scores), axis=1)
        tables[clip_id] = pd.DataFrame(table, columns=columns)
    return tables


def boxes_to_lists(boxes: Boxes, clip_ids: Sequence[str], classes: Sequence[str]) -> dict[str, list]:
    """``{clip: [(onset, offset, class, confidence)]}`` as ``CSEBBsPredictor.predict`` returns it."""
    out: dict[str, list] = {clip_id: [] for clip_id in clip_ids}
    order = np.lexsort((np.arange(len(boxes.clip)), boxes.cls, boxes.clip))
    for b in order:
        out[clip_ids[boxes.clip[b]]].append(
            (boxes.onset[b], boxes.offset[b], classes[boxes.cls[b]], boxes.confidence[b])
        )
    return out


def _per_class(value, classes: Sequence[str]) -> np.ndarray:
    if isinstance(value, Mapping):
        return np.array([float(value[c]) for c in classes], dtype=np.float64)
    return np.full(len(classes), float(value), dtype=np.float64)


def _arrays(scores: Mapping[str, pd.DataFrame], clip_ids: Sequence[str], classes: Sequence[str]):
    arrays, stamps = [], []
    for clip_id in clip_ids:
        table = scores[clip_id]
        arrays.append(table[list(classes)].to_numpy(np.float64))
        stamps.append(np.concatenate((table[ONSET].to_numpy(np.float64), table[OFFSET].to_numpy(np.float64)[-1:])))
    return arrays, stamps


def predict_boxes(predictor: CSEBBsPredictor, scores: Mapping[str, pd.DataFrame], classes: Sequence[str] | None = None):
    """(clip_ids, Boxes) of ``predictor`` on score tables (columns ``classes``); same as ``predictor.predict``."""
    classes = list(classes or predictor.sound_classes)
    clip_ids = list(scores.keys())
    arrays, stamps = _arrays(scores, clip_ids, classes)
    return clip_ids, predict_boxes_from_arrays(predictor, arrays, stamps, classes)


def predict_boxes_from_arrays(
    predictor: CSEBBsPredictor, arrays: Sequence[np.ndarray], stamps: Sequence[np.ndarray], classes: Sequence[str]
) -> Boxes:
    """Boxes of ``predictor`` on per-clip score arrays [T, K] (columns ``classes``) with frame bounds [T + 1]."""
    steps = predictor.step_filter_length
    steps = _per_class(steps, classes) if isinstance(steps, Mapping) else float(steps)
    cp = detect_change_points(arrays, stamps, steps)
    return merge_segments(cp, _per_class(predictor.merge_threshold_abs, classes),
                          _per_class(predictor.merge_threshold_rel, classes))


def apply_to_predictions(
    predictor: CSEBBsPredictor,
    filenames: Sequence[str],
    probabilities: np.ndarray,
    *,
    box_classes: Sequence[str] = DESED_CLASSES,
    segment_classes: Sequence[str] = MAESTRO_CLASSES,
    fill_value: float = 0.0,
) -> dict[str, pd.DataFrame]:
    """cSEBBs score tables of all 27 classes, as the reference's ``eval_predictions`` builds them.

    ``probabilities`` [N, 156, 27] (``CLASSES`` order). ``box_classes`` (DESED) get the predictor's boxes;
    ``segment_classes`` (MAESTRO) become 1 s boxes holding the segment score, so segment-based metrics
    (mpAUC) are unchanged. Frames not covered by a box hold ``fill_value`` (0, as the reference). The
    tables end at the last box offset (9.984 s for 156 frames), like ``sed_scores_from_sebbs`` without
    durations.
    """
    N, T, _ = probabilities.shape
    stamps = frame_timestamps(T)
    box_cols = class_indices(box_classes)
    seg_cols = class_indices(segment_classes)
    arrays = [np.asarray(p, dtype=np.float64) for p in probabilities[:, :, box_cols]]
    boxes = predict_boxes_from_arrays(predictor, arrays, [stamps] * N, list(box_classes))
    # 1 s segments of each clip ([0, 1), ..., [9, 9.984)) as boxes of the segment classes
    clip_length = float(stamps[-1])
    seg = segment_scores(probabilities[:, :, seg_cols].astype(np.float64), stamps, clip_length)  # [N, S, Ks]
    S, Ks = seg.shape[1], seg.shape[2]
    seg_onsets = np.arange(0.0, clip_length, SEGMENT_LENGTH)
    seg_offsets = np.concatenate((seg_onsets[1:], [clip_length]))
    all_classes = list(box_classes) + list(segment_classes)
    segment_boxes = Boxes(
        clip=np.repeat(np.arange(N), S * Ks),
        cls=np.tile(np.arange(Ks), N * S) + len(box_classes),
        onset=np.tile(np.repeat(seg_onsets, Ks), N),
        offset=np.tile(np.repeat(seg_offsets, Ks), N),
        confidence=seg.reshape(-1),  # [N * S * Ks], class fastest
    )
    merged = Boxes(*(np.concatenate((getattr(boxes, f), getattr(segment_boxes, f))) for f in
                     ("clip", "cls", "onset", "offset", "confidence")))
    ids = [audio_id(f) for f in filenames]
    tables = boxes_to_score_tables(merged, ids, all_classes, None, fill_value)
    order = [ONSET, OFFSET, *CLASSES]
    return {i: t if list(t.columns) == order else t[order] for i, t in tables.items()}


# --------------------------------------------------------------------------------------------- #
# tuning
# --------------------------------------------------------------------------------------------- #
@dataclass
class _TuningData:
    """Everything a worker needs (pickled once per task)."""

    clip_ids: list[str]
    arrays: list[np.ndarray]
    stamps: list[np.ndarray]
    durations: list[float]
    classes: list[str]
    ground_truth: dict[str, list[Event]]
    settings: dict
    fold_ids: list[list[str]]  # clip sets on which to select, besides the full set


class _ClipStatistics:
    """Per-clip intersection-based PSDS statistics ("deltas"), as sed_scores_eval computes them.

    sed_scores_eval's ``intermediate_statistics_deltas`` loops over clips and spends most of its time
    validating and indexing one DataFrame per clip. This runs the same per-clip, per-class steps
    (its ``acceleration_fn``, ``onset_offset_curves``, ``statistics_fn`` and delta extraction) on the arrays
    directly, so the deltas are identical (tests compare the selections with sebbs' own path). Results
    are cached by clip content: neighbouring thresholds leave many clips unchanged.
    """

    def __init__(self, clip_ids: Sequence[str], ground_truth: dict, classes: Sequence[str], criteria: dict):
        single_class_truth = multi_label_to_single_label_ground_truths(ground_truth, list(classes))
        self.classes = list(classes)
        self.kwargs = dict(criteria, time_decimals=PSDS_TIME_DECIMALS)
        self.truth = {}  # clip -> class -> (onsets, offsets)
        for clip_id in clip_ids:
            per_class = {}
            for name in self.classes:
                events = single_class_truth[name][clip_id]
                per_class[name] = tuple(np.array(events).T) if events else (np.empty(0), np.empty(0))
            self.truth[clip_id] = per_class
        self.cache: dict[tuple[str, bytes], dict] = {}

    def _clip(self, clip_id: str, bounds: np.ndarray, scores: np.ndarray) -> dict:
        truth = self.truth[clip_id]
        out = {}
        for k, name in enumerate(self.classes):
            others_on = {o: truth[o][0] for o in self.classes if o != name}
            others_off = {o: truth[o][1] for o in self.classes if o != name}
            candidates, cp_scores, deltas = intersection_statistics.acceleration_fn(
                scores=scores[:, k], timestamps=bounds, target_onset_times=truth[name][0],
                target_offset_times=truth[name][1], other_onset_times=others_on, other_offset_times=others_off,
                **self.kwargs,
            )
            if cp_scores is None:
                unique_scores, det_on, det_off = onset_offset_curves(scores[:, k], bounds, candidates)
                stats = intersection_statistics.statistics_fn(
                    detection_onset_times=det_on, detection_offset_times=det_off,
                    target_onset_times=truth[name][0], target_offset_times=truth[name][1],
                    other_onset_times=others_on, other_offset_times=others_off, **self.kwargs,
                )
                cp_scores, deltas = sse_statistics._deltas_from_intermediate_statistics(unique_scores, stats)
            out[name] = (cp_scores, deltas)
        return out

    def __call__(self, clip_ids: Sequence[str], arrays: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict:
        deltas = {}
        for clip_id, (bounds, scores) in zip(clip_ids, arrays):
            key = (clip_id, hashlib.blake2b(bounds.tobytes() + scores.tobytes(), digest_size=16).digest())
            if key not in self.cache:
                self.cache[key] = self._clip(clip_id, bounds, scores)
            deltas[clip_id] = self.cache[key]
        return deltas


def _evaluate_group(data: _TuningData, step: float, thresholds: list[tuple[float, float]]):
    """Single-class PSDS [1 + folds, K] of each (abs, rel) candidate at one step-filter length."""
    cp = detect_change_points(data.arrays, data.stamps, step)
    K = len(data.classes)
    settings = dict(data.settings)
    criteria = {k: settings.pop(k) for k in ("dtc_threshold", "gtc_threshold", "cttc_threshold")}
    settings.pop("alpha_st", None)  # single-class values do not depend on it
    durations = dict(zip(data.clip_ids, data.durations))
    clip_statistics = _ClipStatistics(data.clip_ids, data.ground_truth, data.classes, criteria)
    results = []
    for t_abs, t_rel in thresholds:
        boxes = merge_segments(cp, np.full(K, t_abs), np.full(K, t_rel))
        arrays = boxes_to_arrays(boxes, len(data.clip_ids), K, data.durations)
        deltas = clip_statistics(data.clip_ids, arrays)
        values = np.empty((1 + len(data.fold_ids), K))
        for f, ids in enumerate([data.clip_ids] + data.fold_ids):
            per_class = intersection_based.psds(
                scores=None, ground_truth={i: data.ground_truth[i] for i in ids},
                audio_durations={i: durations[i] for i in ids}, deltas={i: deltas[i] for i in ids},
                **criteria, **settings,
            )[1]
            values[f] = [per_class[c] for c in data.classes]
        results.append(values)
    return results


def _select(values: np.ndarray, candidates: list, classes: Sequence[str], classwise: bool):
    """sebbs' select_best_psds on precomputed values [candidates, K]: first strictly best per class."""
    best: dict[str, float] = {}
    chosen: dict[str, tuple] = {}
    for (step, t_abs, t_rel), per_class in zip(candidates, values):
        mean = float(np.mean(per_class))
        for k, name in enumerate(classes):
            value = float(per_class[k]) if classwise else mean
            if name not in best or value > best[name]:
                best[name] = value
                chosen[name] = (step, t_abs, t_rel)
    predictor = CSEBBsPredictor(
        step_filter_length={c: chosen[c][0] for c in classes},
        merge_threshold_abs={c: chosen[c][1] for c in classes},
        merge_threshold_rel={c: chosen[c][2] for c in classes},
        sound_classes=list(classes),
    )
    return predictor, best


def resolve_num_jobs(num_jobs: int | None) -> int:
    """Worker processes for ``num_jobs``: None or <= 0 means all cores."""
    return max(1, os.cpu_count() or 1) if num_jobs is None or num_jobs <= 0 else int(num_jobs)


def _tasks(grid: CSEBBsGrid, workers: int) -> list[tuple[float, list[tuple[float, float]]]]:
    """(step, thresholds) tasks covering the grid once: each step's thresholds are dealt round-robin into as many
    chunks as it takes to give every worker a task (each task repeats its step's change-point detection)."""
    thresholds = grid.thresholds()
    splits = max(1, min(len(thresholds), -(-workers // len(grid.step_filter_lengths))))
    chunks = [thresholds[i::splits] for i in range(splits)]
    return [(step, chunk) for step in grid.step_filter_lengths for chunk in chunks]


def _grid_values(data: _TuningData, grid: CSEBBsGrid, num_jobs: int | None, progress: bool) -> np.ndarray:
    """[candidates, 1 + folds, K] single-class PSDS of the whole grid, in ``grid.candidates()`` order."""
    workers = resolve_num_jobs(num_jobs)
    tasks = _tasks(grid, workers)
    index = {(float(s), a, r): i for i, (s, a, r) in enumerate(grid.candidates())}
    values = np.full((len(index), 1 + len(data.fold_ids), len(data.classes)), np.nan)
    start = time.perf_counter()

    def store(step, chunk, results):
        for (t_abs, t_rel), v in zip(chunk, results):
            values[index[(float(step), t_abs, t_rel)]] = v

    if workers == 1:
        for done, (step, chunk) in enumerate(tasks, 1):
            store(step, chunk, _evaluate_group(data, step, chunk))
            _report(progress, done, len(tasks), start)
    else:
        # fork: workers need no re-import of the caller's main module (scripts without a __main__ guard
        # work); they only run numpy / Cython code, never torch's thread pools inherited from the parent
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
            futures = {pool.submit(_evaluate_group, data, step, chunk): (step, chunk) for step, chunk in tasks}
            for done, future in enumerate(as_completed(futures), 1):
                step, chunk = futures[future]
                store(step, chunk, future.result())
                _report(progress, done, len(tasks), start)
    return values


def _report(progress: bool, done: int, total: int, start: float) -> None:
    level = logging.INFO if progress else logging.DEBUG
    log.log(level, "cSEBBs tuning: %d/%d candidate groups done (%.0f s)", done, total, time.perf_counter() - start)


def _prepare(scores, ground_truth, durations, classes, settings: PSDSSettings, fold_ids):
    gt, dur = events_only(ground_truth, durations)
    clip_ids = list(gt.keys())
    missing = [c for c in clip_ids if c not in scores]
    if missing:
        raise KeyError(f"{len(missing)} annotated clips have no scores, e.g. {missing[:5]}")
    arrays, stamps = _arrays(scores, clip_ids, classes)
    return _TuningData(
        clip_ids=clip_ids, arrays=arrays, stamps=stamps, durations=[dur[c] for c in clip_ids],
        classes=list(classes), ground_truth={c: list(gt[c]) for c in clip_ids}, settings=asdict(settings),
        fold_ids=[list(ids) for ids in fold_ids],
    )


def tune(
    scores: Mapping[str, pd.DataFrame],
    ground_truth: Mapping[str, list[Event]],
    durations: Mapping[str, float],
    *,
    classes: Sequence[str],
    grid: CSEBBsGrid = CSEBBsGrid(),
    settings: PSDSSettings = PSDS1,
    num_jobs: int | None = None,
    progress: bool = True,
) -> TuningResult:
    """Grid-search cSEBBs parameters maximising single-class PSDS on the clips with events (reference mode).

    ``num_jobs``: worker processes (None or <= 0: all cores). Selects exactly what sebbs' ``tune`` with
    ``select_best_psds`` selects.
    """
    start = time.perf_counter()
    data = _prepare(scores, ground_truth, durations, classes, settings, [])
    values = _grid_values(data, grid, num_jobs, progress)[:, 0]
    predictor, best = _select(values, grid.candidates(), classes, grid.classwise)
    return TuningResult(predictor, best, values, time.perf_counter() - start)


def make_folds(clip_ids: Sequence[str], num_folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_FOLD_SEED):
    """Random, disjoint, near-equal folds of ``clip_ids`` (deterministic for a seed)."""
    if num_folds < 2 or num_folds > len(clip_ids):
        raise ValueError(f"num_folds must be in [2, {len(clip_ids)}], got {num_folds}")
    order = np.random.default_rng(seed).permutation(len(clip_ids))
    return [sorted(clip_ids[i] for i in order[f::num_folds]) for f in range(num_folds)]


def _warn_untunable_classes(ground_truth, train_sets, classes: Sequence[str]) -> None:
    """A class without events in a fold's tuning clips scores 0 for every candidate there, so that fold keeps the
    grid's first candidate for it (sebbs' own selection stops with an assertion instead). Small sets only."""
    for f, train in enumerate(train_sets):
        present = {event[2] for clip in train for event in ground_truth[clip]}
        absent = [c for c in classes if c not in present]
        if absent:
            log.warning("cSEBBs cross-validation fold %d: no events of %s outside the fold; these classes keep "
                        "the grid's first candidate there (use fewer folds or more clips)", f, absent)


@dataclass
class CrossValidationResult:
    predictors: list[CSEBBsPredictor]  # predictor tuned without fold f, applied to fold f
    folds: list[list[str]]
    score_tables: dict[str, pd.DataFrame]  # held-out cSEBBs tables of every clip with events (-inf fill)
    psds1: float  # PSDS of the held-out tables (with ``settings``), the honest devtest number
    full: TuningResult  # tuned on all clips (what the reference applies to other sets)


def cross_validation(
    scores: Mapping[str, pd.DataFrame],
    ground_truth: Mapping[str, list[Event]],
    durations: Mapping[str, float],
    *,
    classes: Sequence[str],
    grid: CSEBBsGrid = CSEBBsGrid(),
    settings: PSDSSettings = PSDS1,
    num_folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_FOLD_SEED,
    num_jobs: int | None = None,
    progress: bool = True,
) -> CrossValidationResult:
    """k-fold cross-validated cSEBBs: for each fold, tune on the other folds and predict the fold.

    The grid is evaluated once: per-clip PSDS statistics are shared by the full-set selection and the
    k fold selections, so this costs about as much as ``tune``.
    """
    start = time.perf_counter()
    gt, dur = events_only(ground_truth, durations)
    folds = make_folds(list(gt.keys()), num_folds, seed)
    train_sets = [[c for c in gt if c not in set(fold)] for fold in folds]
    _warn_untunable_classes(gt, train_sets, classes)
    data = _prepare(scores, gt, dur, classes, settings, train_sets)
    values = _grid_values(data, grid, num_jobs, progress)
    candidates = grid.candidates()
    full_predictor, full_best = _select(values[:, 0], candidates, classes, grid.classwise)
    full = TuningResult(full_predictor, full_best, values[:, 0], time.perf_counter() - start)
    predictors, tables = [], {}
    for f, fold in enumerate(folds):
        predictor, _ = _select(values[:, 1 + f], candidates, classes, grid.classwise)
        predictors.append(predictor)
        clip_ids, boxes = predict_boxes(predictor, {c: scores[c] for c in fold}, classes)
        tables.update(boxes_to_score_tables(boxes, clip_ids, classes, [dur[c] for c in clip_ids]))
    tables = {c: tables[c] for c in gt}
    value = intersection_based.psds(
        scores=tables, ground_truth=gt, audio_durations=dur, **asdict(settings)
    )[0]
    return CrossValidationResult(predictors, folds, tables, float(value), full)


def library_tune(
    scores: Mapping[str, pd.DataFrame],
    ground_truth: Mapping[str, list[Event]],
    durations: Mapping[str, float],
    *,
    classes: Sequence[str],
    grid: CSEBBsGrid = CSEBBsGrid(),
    settings: PSDSSettings = PSDS1,
):
    """The reference's tuning done with sebbs' own single-process code (for comparisons and benchmarks).

    sebbs 1.0.2's ``tune`` builds its candidate predictors with ``sound_classes=None``; they then yield no
    box at all and ``select_best_psds`` crashes. This builds the same candidates, in the same order, with
    their classes, and hands them to sebbs' ``select_best_psds``. Returns ``(predictor, best_values)``.
    """

    gt, dur = events_only(ground_truth, durations)
    keys = [ONSET, OFFSET, *classes]
    clip_scores = {c: scores[c][keys] for c in gt}
    candidates = []
    for step in grid.step_filter_lengths:
        predictor = CSEBBsPredictor(step_filter_length=step, sound_classes=list(classes))
        change_points = predictor._run_change_detection(clip_scores)
        for t_abs, t_rel in grid.thresholds():
            candidate = predictor.copy()
            candidate.merge_threshold_abs, candidate.merge_threshold_rel = t_abs, t_rel
            candidates.append((candidate, candidate._get_sebbs_from_change_detection(change_points)))
    predictor, best = sebbs_csebbs.select_best_psds(
        candidates, gt, dur, dtc_threshold=settings.dtc_threshold, gtc_threshold=settings.gtc_threshold,
        cttc_threshold=settings.cttc_threshold, alpha_ct=settings.alpha_ct, unit_of_time=settings.unit_of_time,
        max_efpr=settings.max_efpr, classwise=grid.classwise,
    )
    predictor.sound_classes = list(classes)
    return predictor, best
