"""DESED sound event detection metrics on sed_scores_eval score tables (no Lightning, no torch).

PSDS (Bilen et al., ICASSP 2020) computed exactly with sed_scores_eval (Ebbers et al., ICASSP 2022),
with the DCASE settings the reference uses:
- PSDS1 (``PSDS1``): dtc = gtc = 0.7, no cross-trigger term, alpha_st = 1, max_efpr = 100 per hour;
- PSDS2 (``PSDS2``): dtc = gtc = 0.1, cttc = 0.3, alpha_ct = 0.5, alpha_st = 1;
- intersection-based and collar-based macro F1 at the 0.5 threshold, segment-based (1 s) F1 at the best
  threshold, AUROC and partial AUROC up to FPR 0.1.

Ground truth must not hold same-class overlapping or touching events (``helpers.evaluation.scores`` merges them) and
clips without events are left out, as sed_scores_eval requires score keys == ground-truth keys.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sed_scores_eval import collar_based, intersection_based, segment_based

from data_util.classes import DESED_CLASSES
from helpers.evaluation.scores import Event, select_classes


@dataclass(frozen=True)
class PSDSSettings:
    """Parameters of one PSDS operating scenario (names as sed_scores_eval's ``psds`` arguments)."""

    dtc_threshold: float
    gtc_threshold: float
    cttc_threshold: float | None
    alpha_ct: float
    alpha_st: float
    max_efpr: float = 100.0
    unit_of_time: str = "hour"


PSDS1 = PSDSSettings(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0)
PSDS2 = PSDSSettings(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0)

DECISION_THRESHOLD = 0.5  # for the threshold-dependent F1 scores
INTERSECTION_F1_CRITERIA = {"dtc_threshold": 0.5, "gtc_threshold": 0.5}
COLLAR_F1_CRITERIA = {"onset_collar": 0.2, "offset_collar": 0.2, "offset_collar_rate": 0.2}
SEGMENT_LENGTH = 1.0  # seconds, segment-based metrics (and MAESTRO mpAUC)
PARTIAL_AUROC_MAX_FPR = 0.1


@dataclass
class PSDSResult:
    value: float
    per_class: dict[str, float]
    roc: tuple[np.ndarray, np.ndarray]  # (effective TPR, effective FPR) of the multi-class PSD-ROC
    class_rocs: dict  # class -> (tpr, efpr, thresholds)


def events_only(ground_truth: Mapping[str, list[Event]], durations: Mapping[str, float]):
    """(ground truth, durations) restricted to clips with at least one event (sed_scores_eval's requirement)."""
    gt = {clip: events for clip, events in ground_truth.items() if len(events) > 0}
    missing = [clip for clip in gt if clip not in durations]
    if missing:
        raise KeyError(f"{len(missing)} annotated clips have no duration, e.g. {missing[:5]}")
    return gt, {clip: float(durations[clip]) for clip in gt}


def psds(
    scores: Mapping[str, pd.DataFrame],
    ground_truth: Mapping[str, list[Event]],
    durations: Mapping[str, float],
    settings: PSDSSettings = PSDS1,
    *,
    num_jobs: int = 1,
) -> PSDSResult:
    """PSDS with ``settings`` (``PSDS1`` / ``PSDS2``); scores, ground truth and durations share their keys."""
    value, per_class, roc, class_rocs = intersection_based.psds(
        scores=dict(scores), ground_truth=dict(ground_truth), audio_durations=dict(durations),
        num_jobs=num_jobs, **asdict(settings),
    )
    return PSDSResult(float(value), {k: float(v) for k, v in per_class.items()}, roc, class_rocs)


def intersection_f1(scores, ground_truth, threshold: float = DECISION_THRESHOLD, *, num_jobs: int = 1) -> dict:
    """Intersection-based F1 per class and ``macro_average`` at ``threshold`` (dtc = gtc = 0.5)."""
    f1 = intersection_based.fscore(
        dict(scores), dict(ground_truth), threshold, num_jobs=num_jobs, **INTERSECTION_F1_CRITERIA
    )[0]
    return {k: float(v) for k, v in f1.items()}


def collar_f1(scores, ground_truth, threshold: float = DECISION_THRESHOLD, *, num_jobs: int = 1) -> dict:
    """Collar-based F1 (200 ms onset collar, offset collar max(200 ms, 20 %)) per class and ``macro_average``."""
    f1 = collar_based.fscore(dict(scores), dict(ground_truth), threshold, num_jobs=num_jobs, **COLLAR_F1_CRITERIA)[0]
    return {k: float(v) for k, v in f1.items()}


def segment_auroc(
    scores, ground_truth, durations, *, max_fpr: float | None = None, segment_length: float = SEGMENT_LENGTH,
    num_jobs: int = 1,
) -> dict:
    """Segment-based (partial, if ``max_fpr``) AUROC per class and ``mean`` (partial AUROC divided by max_fpr)."""
    auc = segment_based.auroc(
        dict(scores), dict(ground_truth), dict(durations), segment_length=segment_length, max_fpr=max_fpr,
        num_jobs=num_jobs,
    )[0]
    return {k: float(v) for k, v in auc.items()}


def segment_best_f1(scores, ground_truth, durations, *, segment_length: float = SEGMENT_LENGTH, num_jobs=1) -> dict:
    """Segment-based F1 at the best threshold per class, and ``macro_average``."""
    f1 = segment_based.best_fscore(
        dict(scores), dict(ground_truth), dict(durations), segment_length=segment_length, num_jobs=num_jobs
    )[0]
    return {k: float(v) for k, v in f1.items()}


def desed_metrics(
    scores: Mapping[str, pd.DataFrame],
    ground_truth: Mapping[str, list[Event]],
    durations: Mapping[str, float],
    *,
    classes: Sequence[str] = DESED_CLASSES,
    num_jobs: int = 1,
    include_segment: bool = True,
) -> dict[str, float]:
    """All DESED metrics of one set as a flat dict of floats.

    ``scores`` may hold more clips and more columns (e.g. all 27 classes); they are restricted to the clips
    with events and to ``classes``. Keys: ``psds1``, ``psds2``, ``psds1/<class>``, ``intersection_f1``,
    ``collar_f1`` (macro at threshold 0.5), and with ``include_segment`` ``segment_f1`` (best threshold),
    ``segment_auroc``, ``segment_pauroc`` (max FPR 0.1).
    """
    return desed_metrics_and_psds1(
        scores, ground_truth, durations, classes=classes, num_jobs=num_jobs, include_segment=include_segment
    )[0]


def desed_metrics_and_psds1(
    scores: Mapping[str, pd.DataFrame],
    ground_truth: Mapping[str, list[Event]],
    durations: Mapping[str, float],
    *,
    classes: Sequence[str] = DESED_CLASSES,
    num_jobs: int = 1,
    include_segment: bool = True,
) -> tuple[dict[str, float], PSDSResult]:
    """``desed_metrics`` plus the full PSDS1 result (PSD-ROC curves for plots)."""
    gt, dur = events_only(ground_truth, durations)
    desed_scores = select_classes(scores, list(classes), gt.keys())
    psds1 = psds(desed_scores, gt, dur, PSDS1, num_jobs=num_jobs)
    psds2 = psds(desed_scores, gt, dur, PSDS2, num_jobs=num_jobs)
    result = {"psds1": psds1.value, "psds2": psds2.value}
    result.update({f"psds1/{name}": value for name, value in psds1.per_class.items()})
    result["intersection_f1"] = intersection_f1(desed_scores, gt, num_jobs=num_jobs)["macro_average"]
    result["collar_f1"] = collar_f1(desed_scores, gt, num_jobs=num_jobs)["macro_average"]
    if include_segment:
        result["segment_f1"] = segment_best_f1(desed_scores, gt, dur, num_jobs=num_jobs)["macro_average"]
        result["segment_auroc"] = segment_auroc(desed_scores, gt, dur, num_jobs=num_jobs)["mean"]
        result["segment_pauroc"] = segment_auroc(
            desed_scores, gt, dur, max_fpr=PARTIAL_AUROC_MAX_FPR, num_jobs=num_jobs
        )["mean"]
    return result, psds1
