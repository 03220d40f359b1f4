"""AudioSet-strong evaluation: PSDS1 (pooled and macro-averaged over classes) and segment-based pAUROC.

As PretrainedSED's validation (``ex_audioset_strong.py``), with sed_scores_eval: median-filtered frame scores of
the classes present both in the training label space and in the evaluation labels (407 on the real eval set);
clips without events of those classes are left out; durations from the eval duration list (or the dataset);
PSDS1 with dtc = gtc = 0.7, alpha_ct = 0, alpha_st = 1, max_efpr = 100 per hour (``val/psds1``), the mean of the
per-class PSDS (``val/psds1_macro_averaged``: the figure of the paper's tables) and the segment-based (1 s) AUROC
up to FPR 0.1 averaged over classes (``val/pauroc``).

Memory: sed_scores_eval takes one pandas table per clip with one column per class; for the real eval set (16,935
clips x 250 frames x 407 classes, float64) that is 14 GB before any of its own work. With alpha_ct = 0 the classes
do not interact, so the classes are evaluated in chunks of ``class_chunk`` (tables of that many columns only) and
the per-class PSD-ROC curves are combined afterwards with sed_scores_eval's own function
(``multi_class_psd_roc_from_single_class_psd_rocs``): the same value as one call with every class
(tests/test_audioset_strong_eval.py checks the equality), at a bounded memory cost (``bench/audioset.py``).
Cross-trigger PSDS (alpha_ct > 0) couples the classes and is not offered (it needed > 150 GB, sed_scores_eval #5).
Scores may be logits or probabilities: PSDS and AUROC depend only on each class's ranking, which the sigmoid and
the median filter (it commutes with monotone maps) keep.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import median_filter
from sed_scores_eval.intersection_based.psds import multi_class_psd_roc_from_single_class_psd_rocs, psds_from_psd_roc

from data_util.audioset_strong import merge_overlapping
from helpers.evaluation import metrics

log = logging.getLogger(__name__)

FRAME_HOP_SECONDS = 0.04
CLIP_SECONDS = 10.0
DEFAULT_CLASS_CHUNK = 64  # classes per sed_scores_eval call: 2.2 GB of tables for the real eval set
PSDS = metrics.PSDS1  # dtc = gtc = 0.7, no cross-trigger term, alpha_st = 1, max_efpr = 100
PAUROC_MAX_FPR = metrics.PARTIAL_AUROC_MAX_FPR  # 0.1
SEGMENT_LENGTH = metrics.SEGMENT_LENGTH  # 1 s

Event = tuple[float, float, str]


@dataclass
class ASStrongResult:
    """Metrics of one evaluation (floats); ``per_class`` holds the PSDS1 of each evaluated class."""

    psds1: float
    psds1_macro_averaged: float
    pauroc: float
    num_clips: int
    num_classes: int
    per_class: dict[str, float] = field(default_factory=dict)

    def logged(self, prefix: str = "val/") -> dict[str, float]:
        values = {k: float(v) for k, v in asdict(self).items() if k != "per_class"}
        return {f"{prefix}{k}": v for k, v in values.items()}


def median_filter_scores(scores: np.ndarray, window: int) -> np.ndarray:
    """Median filter along time of scores [..., T, C] (scipy's default 'reflect' border, PretrainedSED's call)."""
    if window <= 1:
        return scores
    size = (1,) * (scores.ndim - 2) + (int(window), 1)
    return median_filter(scores, size=size)


def evaluation_classes(class_names: Sequence[str], ground_truth: Mapping[str, Sequence[Event]]) -> list[str]:
    """The model's classes that occur in the ground truth, in model order."""
    labelled = {label for events in ground_truth.values() for _, _, label in events}
    return [name for name in class_names if name in labelled]


def restrict_ground_truth(ground_truth: Mapping[str, Sequence[Event]], durations: Mapping[str, float],
                          classes: Sequence[str]) -> tuple[dict[str, list[Event]], dict[str, float]]:
    """Ground truth of ``classes`` only, overlapping or touching events of a class merged (sed_scores_eval refuses
    them); clips left without events are dropped (as PretrainedSED)."""
    keep = set(classes)
    gt = {clip: merge_overlapping(e for e in events if e[2] in keep) for clip, events in ground_truth.items()}
    gt = {clip: events for clip, events in gt.items() if events}
    missing = [clip for clip in gt if clip not in durations]
    if missing:
        raise KeyError(f"{len(missing)} evaluation clips have no duration, e.g. {missing[:5]} "
                       "(validation_strong.durations, or prepare the dataset again)")
    return gt, {clip: float(durations[clip]) for clip in gt}


def frame_timestamps(num_frames: int, frame_hop: float = FRAME_HOP_SECONDS, clip_seconds: float = CLIP_SECONDS):
    """[T + 1] frame boundaries in seconds (frame · 0.04, clipped to the 10 s clip, as PretrainedSED's encoder)."""
    return np.clip(np.arange(num_frames + 1, dtype=np.float64) * frame_hop, 0.0, clip_seconds)


def _tables(scores: np.ndarray, rows: Sequence[int], clips: Sequence[str], columns: Sequence[int],
            names: Sequence[str], timestamps: np.ndarray) -> dict[str, pd.DataFrame]:
    """sed_scores_eval score tables (onset, offset, classes) of ``clips`` (rows of ``scores``) for ``columns``."""
    T = scores.shape[1]
    tables = {}
    for clip, row in zip(clips, rows):
        table = np.empty((T, len(columns) + 2), dtype=np.float64)
        table[:, 0], table[:, 1] = timestamps[:-1], timestamps[1:]
        table[:, 2:] = scores[row][:, columns]
        tables[clip] = pd.DataFrame(table, columns=["onset", "offset", *names])
    return tables


def evaluate(scores: np.ndarray, filenames: Sequence[str], class_names: Sequence[str],
             ground_truth: Mapping[str, Sequence[Event]], durations: Mapping[str, float], *,
             class_chunk: int = DEFAULT_CLASS_CHUNK, frame_hop: float = FRAME_HOP_SECONDS,
             num_jobs: int = 1) -> ASStrongResult:
    """Metrics of frame scores [N, T, C] (already median-filtered; columns ``class_names``) of clips ``filenames``.

    ``ground_truth``: {clip: [(onset, offset, class name)]} of every evaluation clip (any classes: they are
    restricted here); ``durations``: {clip: seconds}. Every clip with events of an evaluated class needs scores.
    """
    if scores.ndim != 3 or scores.shape[0] != len(filenames) or scores.shape[2] != len(class_names):
        raise ValueError(f"scores of shape {scores.shape} for {len(filenames)} clips and {len(class_names)} classes; "
                         "expected [clips, frames, classes]")
    classes = evaluation_classes(class_names, ground_truth)
    if not classes:
        raise ValueError("no class of the model occurs in the evaluation labels: nothing to evaluate")
    gt, dur = restrict_ground_truth(ground_truth, durations, classes)
    row_of = {name: i for i, name in enumerate(filenames)}
    clips = sorted(gt)
    missing = [clip for clip in clips if clip not in row_of]
    if missing:
        raise KeyError(f"{len(missing)} labelled evaluation clips have no scores, e.g. {missing[:5]}")
    rows = [row_of[clip] for clip in clips]
    timestamps = frame_timestamps(scores.shape[1], frame_hop)
    column_of = {name: i for i, name in enumerate(class_names)}
    class_rocs, per_class, pauroc = {}, {}, {}
    for start in range(0, len(classes), class_chunk):
        chunk = classes[start:start + class_chunk]
        tables = _tables(scores, rows, clips, [column_of[c] for c in chunk], chunk, timestamps)
        chunk_gt = {clip: [e for e in gt[clip] if e[2] in chunk] for clip in clips}
        result = metrics.psds(tables, chunk_gt, dur, PSDS, num_jobs=num_jobs)
        class_rocs.update(result.class_rocs)
        per_class.update(result.per_class)
        auc = metrics.segment_auroc(tables, chunk_gt, dur, max_fpr=PAUROC_MAX_FPR, segment_length=SEGMENT_LENGTH,
                                    num_jobs=num_jobs)
        pauroc.update({c: v for c, v in auc.items() if c != "mean"})
        del tables
    tpr, efpr = multi_class_psd_roc_from_single_class_psd_rocs(class_rocs, alpha_st=PSDS.alpha_st,
                                                               max_efpr=PSDS.max_efpr)
    return ASStrongResult(
        psds1=float(psds_from_psd_roc(tpr, efpr, PSDS.max_efpr)),
        psds1_macro_averaged=float(np.mean([per_class[c] for c in classes])),
        pauroc=float(np.mean([pauroc[c] for c in classes])),
        num_clips=len(clips), num_classes=len(classes),
        per_class={c: float(per_class[c]) for c in classes},
    )


__all__ = ["ASStrongResult", "evaluate", "evaluation_classes", "restrict_ground_truth", "median_filter_scores",
           "frame_timestamps", "DEFAULT_CLASS_CHUNK"]
