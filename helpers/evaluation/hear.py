"""HEAR's scoring of sound event detection: frame outputs → events → onset F1 and segment error rate (sed_eval).

The rules of the HEAR 2021 evaluation kit (hearbenchmark/hear-eval-kit ``heareval/predictions/task_predictions.py``
and ``heareval/score.py``), which PretrainedSED's DCASE 2016 Task 2 fine-tuning reuses:

1. **post-processing** per file, on frame outputs [T, C] at frame centres ``timestamps`` (ms): a median filter over
   time of ``round(median_filter_ms / hop_ms)`` frames (``scipy.ndimage.median_filter``, reflect borders; 250 ms),
   then a threshold (frames with score > threshold are active); each run of consecutive active frames of a label is
   an event from its first to its last frame's *centre*; events shorter than ``min_duration_ms`` (125 ms) are dropped.
   HEAR thresholds probabilities at 0.5; PretrainedSED passes logits to the same code, i.e. a threshold of 0.5 on
   logits (probability 0.62). ``threshold_on`` offers both (default "probability"; docs/DIFFERENCES.md).
2. **metrics** with ``sed_eval`` over every file: event-based onset-only F-measure with a 200 ms collar (HEAR's
   primary score ``event_onset_200ms_fms``) and 50 ms collar (``event_onset_50ms_fms``), precision and recall, and the
   segment-based error rate on 1 s segments (``segment_1s_er``).
Events are HEAR dicts ``{"label", "start", "end"}`` in milliseconds, keyed by file name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from helpers.evaluation.postprocess import median_filter

THRESHOLD_ON = ("probability", "logit")
ONSET_COLLARS_S = {"200ms": 0.2, "50ms": 0.05}
SEGMENT_S = 1.0
PRIMARY_METRIC = "event_onset_200ms_fms"  # what HEAR ranks by, and the checkpoint monitor of ex_downstream


@dataclass(frozen=True)
class PostProcessing:
    """HEAR's post-processing (the defaults are its DCASE 2016 Task 2 setting and PretrainedSED's)."""

    median_filter_ms: float = 250.0
    min_duration_ms: float = 125.0
    threshold: float = 0.5
    threshold_on: str = "probability"

    def __post_init__(self):
        if self.threshold_on not in THRESHOLD_ON:
            raise ValueError(f"threshold_on={self.threshold_on!r}; expected one of {THRESHOLD_ON}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def events_from_frames(logits: np.ndarray, timestamps_ms: np.ndarray, labels: Sequence[str],
                       post: PostProcessing = PostProcessing()) -> list[dict]:
    """Events of one file from its frame logits [T, C] at frame centres ``timestamps_ms`` [T] (sorted by start)."""
    logits = np.asarray(logits, dtype=np.float64)
    T, C = logits.shape
    if len(labels) != C or np.shape(timestamps_ms) != (T,):
        raise ValueError(f"events_from_frames: logits {logits.shape}, {len(labels)} labels, "
                         f"timestamps {np.shape(timestamps_ms)}")
    scores = logits if post.threshold_on == "logit" else _sigmoid(logits)
    hop_ms = float(np.mean(np.diff(timestamps_ms))) if T > 1 else 0.0
    width = int(round(post.median_filter_ms / hop_ms)) if hop_ms > 0 else 0
    if width > 1:
        scores = median_filter(scores, [width] * C)
    active = scores > post.threshold
    events = []
    for c, label in enumerate(labels):
        padded = np.concatenate([[False], active[:, c], [False]]).astype(np.int8)
        changes = np.flatnonzero(np.diff(padded))
        for first, stop in zip(changes[0::2], changes[1::2]):  # frames first .. stop - 1
            start, end = float(timestamps_ms[first]), float(timestamps_ms[stop - 1])
            if end - start >= post.min_duration_ms:
                events.append({"label": label, "start": start, "end": end})
    return sorted(events, key=lambda e: (e["start"], e["label"]))


def _sed_eval_events(events: Sequence[Mapping], filename: str) -> list[dict]:
    """One file's HEAR events (ms) as sed_eval's event dicts (s)."""
    return [{"event_label": str(e["label"]), "event_onset": e["start"] / 1000.0, "event_offset": e["end"] / 1000.0,
             "file": filename} for e in events]


def sed_eval_scores(predicted: Mapping[str, Sequence[Mapping]], reference: Mapping[str, Sequence[Mapping]],
                    labels: Sequence[str]) -> dict[str, float]:
    """HEAR's event-based (onset only, 200 / 50 ms collars) and segment-based (1 s) scores over every file of
    ``reference`` and ``predicted``: ``event_onset_{200ms,50ms}_{fms,precision,recall}``, ``segment_1s_er``."""
    import sed_eval  # lazy: sed_eval pulls in dcase_util (slow, pkg_resources); only scoring needs it

    files = sorted(set(reference) | set(predicted))
    event_metrics = {name: sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(labels), evaluate_onset=True, evaluate_offset=False, t_collar=collar)
        for name, collar in ONSET_COLLARS_S.items()}
    segment_metrics = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(labels),
                                                               time_resolution=SEGMENT_S)
    for filename in files:
        ref = _sed_eval_events(reference.get(filename, ()), filename)
        est = _sed_eval_events(predicted.get(filename, ()), filename)
        for metric in (*event_metrics.values(), segment_metrics):
            metric.evaluate(reference_event_list=ref, estimated_event_list=est)
    scores = {}
    for name, metric in event_metrics.items():
        overall = metric.results_overall_metrics()["f_measure"]
        for key, short in (("f_measure", "fms"), ("precision", "precision"), ("recall", "recall")):
            # sed_eval's 0/0 (no predicted event) is NaN; HEAR ranks it as 0 and so do we
            scores[f"event_onset_{name}_{short}"] = float(np.nan_to_num(overall[key], nan=0.0))
    scores["segment_1s_er"] = float(segment_metrics.results_overall_metrics()["error_rate"]["error_rate"])
    return scores


TABLE_COLUMNS = (("event_onset_200ms_fms", "onset F1 200 ms"), ("event_onset_200ms_precision", "P"),
                 ("event_onset_200ms_recall", "R"), ("event_onset_50ms_fms", "onset F1 50 ms"),
                 ("segment_1s_er", "segment ER 1 s"))


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table of HEAR scores, one row per split (``{split: scores}``)."""
    header = ["split"] + [title for _, title in TABLE_COLUMNS]
    lines = [[split] + [f"{scores[key]:.3f}" if key in scores else "-" for key, _ in TABLE_COLUMNS]
             for split, scores in rows.items()]
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    render = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header] + lines]
    return "\n".join(render[:1] + ["  ".join("-" * w for w in widths)] + render[1:])


__all__ = ["PostProcessing", "events_from_frames", "sed_eval_scores", "format_table", "PRIMARY_METRIC",
           "THRESHOLD_ON"]
