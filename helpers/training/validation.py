"""Validation and test of the training runs: which sets, their ground truth, the collected outputs, the metrics.

``SEDSystem`` collects the student's and teacher's probabilities of every validation / test batch in a
:class:`Collector`; at the end of the epoch :func:`validation_results` / :func:`test_results` turn them into the
reference's logged metrics (PSDS1/2 and F1 on the DESED sets, segment mpAUC/mAUC/F1 on MAESTRO, weak F1) after the
class-wise median filter (``median_window``). Metrics come from ``helpers.evaluation``.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from scipy.ndimage import median_filter
from torch import Tensor

import configs
from data_util import layout
from data_util.classes import DESED_CLASSES, class_indices
from data_util.datasets import MAESTRO_REAL_VAL, WEAK_VAL
from helpers.evaluation import metrics
from helpers.evaluation.maestro import EVAL_CLASSES as MAESTRO_SCORED
from helpers.evaluation.maestro import parse_chunk_name, recording_ground_truth, recording_scores_from_probabilities
from helpers.evaluation.scores import read_durations, read_ground_truth, scores_from_probabilities

log = logging.getLogger(__name__)

STUDENT, TEACHER = "student", "teacher"
# Validation sets (reference: synth val, external strong val, weak val, MAESTRO val split) and test sets.
VAL_SETS = ("synth_val", "external_strong_val", "weak_val", "maestro_real_val")
TEST_SETS = ("devtest", "external_strong_val", "maestro_real_dev")
WEAK_F1_THRESHOLD = 0.5
MIN_SOFT_LABEL_CONFIDENCE = 0.5  # MAESTRO validation chunks: soft labels above count as events


def median_filter_probabilities(probabilities: np.ndarray, windows) -> np.ndarray:
    """Class-wise median filter along time of [N, T, C] probabilities (the reference's ``ClassWiseMedianFilter``
    with scipy's default 'reflect' border), window ``windows[c]`` frames for class c."""
    out = np.empty_like(probabilities)
    for c, window in enumerate(windows):
        out[:, :, c] = median_filter(probabilities[:, :, c], size=(1, int(window)))
    return out


@dataclass
class EvalSet:
    """Ground truth of one validation / test set. kind: "desed" (PSDS etc.), "weak" (clip F1), "maestro_chunks"
    (segment metrics on 10 s chunks), "maestro_recordings" (overlap-add to recordings, then segment metrics)."""

    kind: str
    ground_truth: dict = field(default_factory=dict)
    durations: dict = field(default_factory=dict)


@dataclass
class _Collected:
    filenames: list = field(default_factory=list)
    strong: dict = field(default_factory=lambda: defaultdict(list))  # model -> [N, T, C] arrays
    weak: dict = field(default_factory=lambda: defaultdict(list))  # model -> [N, C]
    weak_labels: list = field(default_factory=list)


def load_eval_sets(config: Mapping, names) -> dict[str, EvalSet]:
    """Ground truth and durations of the validation / test sets ``names`` (tsvs of the dataset layout)."""
    root, resources = configs.dataset_root(config), configs.resources_dir(config)

    def path(spec_path: str, spec) -> Path:
        return layout.resolve(spec_path, root, resources, spec.labels_in_resources)

    result: dict[str, EvalSet] = {}
    for name in names:
        if name == WEAK_VAL:
            result[name] = EvalSet(kind="weak")
        elif name == MAESTRO_REAL_VAL:
            # chunks of the held-out MAESTRO train recordings, scored directly (as the reference's validation)
            spec = layout.SETS["maestro_real_train"]
            gt = read_ground_truth(path(spec.labels, spec), classes=MAESTRO_SCORED,
                                   min_confidence=MIN_SOFT_LABEL_CONFIDENCE, keep_empty=True)
            durations = {}
            for chunk in gt:
                _, onset, offset = parse_chunk_name(chunk)
                durations[chunk] = offset - onset
            result[name] = EvalSet(kind="maestro_chunks", ground_truth=gt, durations=durations)
        elif name == "maestro_real_dev":
            spec = layout.SETS[name]
            gt = recording_ground_truth(path(spec.labels, spec), classes=MAESTRO_SCORED)
            result[name] = EvalSet(kind="maestro_recordings", ground_truth=gt,
                                   durations=read_durations(path(spec.durations, spec)))
        else:
            spec = layout.SETS[name]
            result[name] = EvalSet(kind="desed", ground_truth=read_ground_truth(path(spec.labels, spec)),
                                   durations=read_durations(path(spec.durations, spec)))
    return result


class Collector:
    """The student's and teacher's outputs of one validation / test epoch, per data set."""

    def __init__(self):
        self.sets: dict[str, _Collected] = {}

    def add(self, batch: Mapping, outputs: Mapping[str, tuple[Tensor, Tensor]]) -> None:
        """``outputs``: model name -> (strong [B, C, T], weak [B, C]) probabilities of ``batch``."""
        names = list(batch["dataset"])
        for set_name in dict.fromkeys(names):
            index = [i for i, n in enumerate(names) if n == set_name]
            store = self.sets.setdefault(set_name, _Collected())
            store.filenames.extend(batch["filename"][i] for i in index)
            for model, (strong, weak) in outputs.items():
                store.strong[model].append(strong[index].transpose(1, 2).float().cpu().numpy())  # [n, T, C]
                store.weak[model].append(weak[index].float().cpu().numpy())
            store.weak_labels.append(batch["weak"][index].float().cpu().numpy())

    def set_metrics(self, set_name: str, model: str, spec: EvalSet | None, median_window, full: bool) -> dict:
        """Metrics of one collected set for ``model``; ``full`` adds the threshold-dependent and PSDS2 figures."""
        if spec is None or set_name not in self.sets:
            return {}
        store = self.sets[set_name]
        if spec.kind == "weak":
            return {"weak_f1_macro_thres05": _weak_f1(np.concatenate(store.weak[model]),
                                                      np.concatenate(store.weak_labels))}
        filenames = store.filenames
        probabilities = median_filter_probabilities(np.concatenate(store.strong[model]), median_window)
        try:
            if spec.kind == "desed":
                desed = class_indices(DESED_CLASSES)
                scores = scores_from_probabilities(filenames, probabilities[:, :, desed], DESED_CLASSES)
                return _desed_metrics(scores, spec, full)
            scored = class_indices(MAESTRO_SCORED)
            if spec.kind == "maestro_chunks":
                scores = scores_from_probabilities(filenames, probabilities[:, :, scored], MAESTRO_SCORED)
            else:
                scores = recording_scores_from_probabilities(filenames, probabilities[:, :, scored], spec.durations,
                                                             MAESTRO_SCORED)
            return _segment_metrics(scores, spec, full)
        except (ValueError, KeyError, AssertionError) as error:
            log.warning("%s metrics of %s could not be computed (%s): reported as 0", model, set_name, error)
            return {}


def validation_results(collector: Collector, eval_sets: Mapping[str, EvalSet], median_window) -> dict[str, float]:
    """``val/<model>/<metric>`` of both models and ``val/obj_metric`` (the reference's checkpoint criterion:
    student MAESTRO segment mpAUC + student PSDS1 on synth val + PSDS1 on external strong val)."""
    results = {}
    for model in (STUDENT, TEACHER):
        def metrics_of(name: str, full: bool) -> dict:
            return collector.set_metrics(name, model, eval_sets.get(name), median_window, full)

        synth = metrics_of("synth_val", full=model == STUDENT)
        external = metrics_of("external_strong_val", full=model == STUDENT)
        maestro = metrics_of("maestro_real_val", full=True)
        weak = metrics_of("weak_val", full=True)
        results.update({f"val/{model}/{k}": v for k, v in {**synth, **weak}.items()})
        results.update({f"val/{model}/{k}_real": v for k, v in external.items()})
        results.update({f"val/{model}/{k}": v for k, v in maestro.items()})
        if model == STUDENT:
            results["val/obj_metric"] = (maestro.get("segment_mpauc", 0.0) + synth.get("psds1", 0.0)
                                         + external.get("psds1", 0.0))
    return results


def test_results(collector: Collector, eval_sets: Mapping[str, EvalSet], median_window) -> dict[str, float]:
    """``test/<model>/<set>/<metric>`` of both models and ``test/<model>/rank_score`` (devtest PSDS1 + MAESTRO
    dev segment mpAUC)."""
    results = {}
    for model in (STUDENT, TEACHER):
        per_set = {name: collector.set_metrics(name, model, eval_sets.get(name), median_window, full=True)
                   for name in TEST_SETS}
        for set_name, values in per_set.items():
            results.update({f"test/{model}/{set_name}/{k}": v for k, v in values.items()})
        results[f"test/{model}/rank_score"] = (per_set["devtest"].get("psds1", 0.0)
                                               + per_set["maestro_real_dev"].get("segment_mpauc", 0.0))
    return results


def _weak_f1(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Macro F1 at 0.5 over the 10 DESED classes of clip-level predictions (weak validation split)."""
    desed = class_indices(DESED_CLASSES)
    predicted = probabilities[:, desed] > WEAK_F1_THRESHOLD
    truth = labels[:, desed] > 0.5
    tp = (predicted & truth).sum(0)
    denominator = predicted.sum(0) + truth.sum(0)
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return float(f1.mean())


def _desed_metrics(scores, spec: EvalSet, full: bool) -> dict[str, float]:
    ground_truth, durations = metrics.events_only(
        {k: v for k, v in spec.ground_truth.items() if k in scores}, spec.durations)
    if not ground_truth:
        raise ValueError("no clip with events")
    # sed_scores_eval needs events of every scored class; tiny sets (demo) may lack some: score the present ones
    present = sorted({label for events in ground_truth.values() for _, _, label in events})
    columns = ["onset", "offset"] + [c for c in DESED_CLASSES if c in present]
    if len(columns) - 2 < len(DESED_CLASSES):
        log.warning("no ground-truth events of %s: scored without them",
                    sorted(set(DESED_CLASSES) - set(present)))
    selected = {k: scores[k][columns] for k in ground_truth}
    result = {"psds1": metrics.psds(selected, ground_truth, durations, metrics.PSDS1).value}
    if full:
        result["psds2"] = metrics.psds(selected, ground_truth, durations, metrics.PSDS2).value
        result["intersection_f1_macro_thres05"] = metrics.intersection_f1(selected, ground_truth)["macro_average"]
        result["collar_f1_macro_thres05"] = metrics.collar_f1(selected, ground_truth)["macro_average"]
    return result


def _segment_metrics(scores, spec: EvalSet, full: bool) -> dict[str, float]:
    ids = [k for k in spec.ground_truth if k in scores]
    if not ids:
        raise ValueError("no scored clip has ground truth")
    ground_truth = {k: spec.ground_truth[k] for k in ids}
    durations = {k: float(spec.durations[k]) for k in ids}
    selected = {k: scores[k] for k in ids}
    result = {"segment_mpauc": metrics.segment_auroc(selected, ground_truth, durations,
                                                     max_fpr=metrics.PARTIAL_AUROC_MAX_FPR)["mean"]}
    if full:
        result["segment_mauc"] = metrics.segment_auroc(selected, ground_truth, durations)["mean"]
        result["segment_f1_macro_thresopt"] = metrics.segment_best_f1(selected, ground_truth, durations)[
            "macro_average"]
    return {k: (0.0 if not math.isfinite(v) else v) for k, v in result.items()}
