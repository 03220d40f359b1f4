"""Evaluate stored predictions: the reference's ``eval_predictions`` console block, a JSON report, the
private-eval submission folders and plots.

What it computes (reference: CPJKU/cpjku_dcase24 ``ex_stage2.eval_predictions``):
- sigmoid of the stored logits -> score tables, no median filter;
- cSEBBs tuned on the devtest clips with events, DESED classes, PSDS1 criteria, classwise, 128 candidates;
  applied to every set (DESED classes get boxes, MAESTRO classes 1 s segment boxes, uncovered frames 0);
- devtest / eval_public PSDS1 raw and with cSEBBs; MAESTRO-real dev mpAUC raw and with cSEBBs;
- eval_private: one tsv per clip (``onset offset <27 classes>``) into ``<system>.output/`` (cSEBBs) and
  ``<system>_unprocessed.output/``.
Added: PSDS2, F1 scores, per-class PSDS, the cross-validated cSEBBs devtest PSDS1 (the honest number: the
reference tunes and reports on devtest), PSD-ROC and per-class plots, timings. Every file is written
atomically. Sets whose prediction or label files are missing are skipped with a one-line notice.
``log_to_active_wandb`` sends the plots and headline numbers to a wandb run when one is already active.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from data_util.classes import CLASSES, DESED_CLASSES
from data_util.layout import SETS, resolve
from helpers.evaluation import csebbs
from data_util.atomic import atomic_path, atomic_write_text
from helpers.evaluation.maestro import (
    EVAL_CLASSES, infer_chunk_hop, mpauc, recording_ground_truth, recording_scores_from_probabilities, recording_scores_from_tables,
)
from helpers.evaluation.metrics import PSDS1, desed_metrics_and_psds1, events_only
from data_util.prediction_files import PredictionFile
from helpers.evaluation.scores import read_durations, read_ground_truth, scores_from_probabilities, select_classes, sigmoid

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_NAME = "Schmid_CPJKU_task4_X_runX"  # the reference's submission folder name
DESED_EVAL_SETS = ("devtest", "eval_public")
MAESTRO_SET = "maestro_real_dev"
PRIVATE_SET = "eval_private"
TUNING_SET = "devtest"
REPORT_NAME = "eval_report.json"
PLOTS_DIR = "plots"
WANDB_PREFIX = "eval"  # wandb keys: eval/<plot stem> (images), eval/<set>/<metric> (numbers)


@dataclass
class CSEBBsConfig:
    """The ``eval_predictions`` cSEBBs settings (reference keys and defaults) plus our additions."""

    classwise: bool = True
    step_filter_lengths: tuple = csebbs.STEP_FILTER_LENGTHS
    merge_thresholds_rel: tuple = csebbs.MERGE_THRESHOLDS_REL
    merge_thresholds_abs: tuple = csebbs.MERGE_THRESHOLDS_ABS
    cross_validation_folds: int = csebbs.DEFAULT_FOLDS  # 0 or 1: no cross-validated number
    fold_seed: int = csebbs.DEFAULT_FOLD_SEED
    num_jobs: int | None = None  # worker processes for tuning; None: all cores

    def grid(self) -> csebbs.CSEBBsGrid:
        return csebbs.CSEBBsGrid(
            tuple(self.step_filter_lengths), tuple(self.merge_thresholds_abs), tuple(self.merge_thresholds_rel),
            self.classwise,
        )


@dataclass
class _Set:
    name: str
    filenames: list[str]
    probabilities: np.ndarray  # [N, 156, 27]
    ground_truth: dict | None = None
    durations: dict | None = None
    extra: dict = field(default_factory=dict)


def _replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written folder into place, replacing an older one."""
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old.{os.getpid()}")
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def table_to_tsv(table) -> str:
    """The text ``DataFrame.to_csv(sep="\\t", index=False)`` writes for a float table, with -inf as 0.

    Floats are written as Python's shortest round-trip repr, as pandas does; several times faster than
    ``to_csv`` for our small tables (tested to give the same text).
    """
    values = np.where(np.isneginf(table.to_numpy(np.float64)), 0.0, table.to_numpy(np.float64))
    lines = ["\t".join(map(str, table.columns))]
    lines.extend("\t".join(map(repr, row)) for row in values.tolist())
    return "\n".join(lines) + "\n"


def write_submission_folder(tables: dict, final_dir: Path) -> None:
    """One ``<clip>.tsv`` per clip (columns ``onset offset <classes>``, -inf written as 0), atomically."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", dir=final_dir.parent))
    try:
        for clip_id, table in tables.items():
            (tmp_dir / f"{clip_id}.tsv").write_text(table_to_tsv(table))
        _replace_dir(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _load_predictions(preds_dir: Path, name: str, notices: list[str]) -> tuple[list[str], np.ndarray] | None:
    path = preds_dir / f"{name}.hdf5"
    if not path.is_file():
        notices.append(f"{name}: skipped (no prediction file {path})")
        return None
    with PredictionFile(path) as predictions:
        filenames, logits = predictions.filenames, predictions.all_logits()
    return filenames, sigmoid(logits)


def _label_paths(name: str, dataset_root: Path, resources_dir: Path):
    spec = SETS[name]
    labels = resolve(spec.labels, dataset_root, resources_dir, spec.labels_in_resources) if spec.labels else None
    durations = resolve(spec.durations, dataset_root, resources_dir, spec.labels_in_resources) if spec.durations else None
    return labels, durations


def _missing(paths, name: str, notices: list[str]) -> bool:
    absent = [str(p) for p in paths if p is None or not Path(p).is_file()]
    if absent:
        notices.append(f"{name}: skipped (missing {', '.join(absent)})")
    return bool(absent)


def _plot_psd_roc(path: Path, curves: dict, title: str) -> None:
    import matplotlib  # lazy: matplotlib is slow to import and only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib above

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (tpr, efpr, value) in curves.items():
        ax.step(efpr, tpr, where="post", label=f"{label} (PSDS {value:.4f})")
    ax.set_xlabel("eFPR per hour")
    ax.set_ylabel("eTPR")
    ax.set_xlim(0, PSDS1.max_efpr)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save_figure(fig, path)


def _plot_per_class(path: Path, per_class: dict, title: str) -> None:
    import matplotlib  # lazy: matplotlib is slow to import and only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib above

    labels = list(next(iter(per_class.values())).keys())
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(per_class))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (name, values) in enumerate(per_class.items()):
        ax.bar(x + i * width, [values[c] for c in labels], width, label=name)
    ax.set_xticks(x + width * (len(per_class) - 1) / 2, labels, rotation=45, ha="right")
    ax.set_ylabel("single-class PSDS1")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt  # lazy: as matplotlib above

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def _load_sets(preds_dir: Path, dataset_root: Path, resources_dir: Path,
               notices: list[str]) -> tuple[dict[str, _Set], tuple | None]:
    """(The evaluated sets whose predictions and labels exist, the private-eval predictions or None)."""
    sets: dict[str, _Set] = {}
    for name in (MAESTRO_SET, *DESED_EVAL_SETS):
        labels, durations = _label_paths(name, dataset_root, resources_dir)
        loaded = _load_predictions(preds_dir, name, notices)
        if loaded is None or _missing([labels, durations], name, notices):
            continue
        if name == MAESTRO_SET:
            gt = recording_ground_truth(labels)
            dur = read_durations(durations)
            sets[name] = _Set(name, *loaded, ground_truth=gt, durations=dur)
        else:
            gt, dur = events_only(read_ground_truth(labels), read_durations(durations))
            absent = [c for c in gt if c not in set(loaded[0])]
            if absent:
                raise KeyError(f"{preds_dir / (name + '.hdf5')} lacks {len(absent)} annotated clips, e.g. {absent[:3]}")
            sets[name] = _Set(name, *loaded, ground_truth=gt, durations=dur)
    return sets, _load_predictions(preds_dir, PRIVATE_SET, notices)


def _tune_csebbs(sets: Mapping[str, _Set], cfg: CSEBBsConfig, report: dict, notices: list[str]):
    """The cSEBBs predictor tuned on devtest (None without devtest); its parameters go into ``report``."""
    if TUNING_SET not in sets:
        notices.append("cSEBBs: skipped (devtest predictions or labels missing: nothing to tune on)")
        return None
    t0 = time.perf_counter()
    dev = sets[TUNING_SET]
    dev_scores = scores_from_probabilities(dev.filenames, dev.probabilities[:, :, : len(DESED_CLASSES)],
                                           DESED_CLASSES)
    dev.extra["scores"] = dev_scores
    kwargs = dict(classes=list(DESED_CLASSES), grid=cfg.grid(), settings=PSDS1, num_jobs=cfg.num_jobs)
    if cfg.cross_validation_folds >= 2:
        cv = csebbs.cross_validation(dev_scores, dev.ground_truth, dev.durations,
                                     num_folds=cfg.cross_validation_folds, seed=cfg.fold_seed, **kwargs)
        tuned = cv.full
        report["csebbs_cross_validated"] = {
            "devtest_psds1_csebbs_cross_validated": cv.psds1, "folds": cfg.cross_validation_folds,
            "seed": cfg.fold_seed,
            "note": "tuned on k-1 folds of devtest, applied to the held-out fold (honest estimate)",
        }
    else:
        tuned = csebbs.tune(dev_scores, dev.ground_truth, dev.durations, **kwargs)
    predictor = tuned.predictor
    report["csebbs_parameters"] = {
        "step_filter_length": predictor.step_filter_length,
        "merge_threshold_abs": {k: (None if np.isinf(v) else v) for k, v in predictor.merge_threshold_abs.items()},
        "merge_threshold_rel": {k: (None if np.isinf(v) else v) for k, v in predictor.merge_threshold_rel.items()},
        "tuning_best_single_class_psds1": tuned.best_values,
        "note": "tuned on devtest and reported on devtest (optimistic, as the reference)",
    }
    report["timings_s"]["csebbs_tuning"] = time.perf_counter() - t0
    return predictor


def _evaluate_maestro(m: _Set, predictor, lines: list[str], num_jobs: int) -> dict:
    """MAESTRO dev: chunks overlap-added into recordings, segment mpAUC (raw and after cSEBBs)."""
    eval_cols = [CLASSES.index(c) for c in EVAL_CLASSES]
    raw = recording_scores_from_probabilities(m.filenames, m.probabilities[:, :, eval_cols], m.durations,
                                              EVAL_CLASSES)
    raw_auc = mpauc(raw, m.ground_truth, m.durations, num_jobs=num_jobs)
    entry = {"mpauc": raw_auc["mean"], "mpauc_per_class": raw_auc, "chunks": len(m.filenames),
             "recordings": len(m.ground_truth), "chunk_hop_s": infer_chunk_hop(m.filenames)}
    lines.append(f"{MAESTRO_SET} mpAUC: {raw_auc['mean']}")
    if predictor is not None:
        tables = csebbs.apply_to_predictions(predictor, m.filenames, m.probabilities)
        processed = recording_scores_from_tables(tables, m.durations, EVAL_CLASSES)
        entry["mpauc_csebbs"] = mpauc(processed, m.ground_truth, m.durations, num_jobs=num_jobs)["mean"]
        lines.append(f"{MAESTRO_SET} mpAUC_csebbs (should be the same): {entry['mpauc_csebbs']}")
    return entry


def _evaluate_desed(s: _Set, predictor, lines: list[str], num_jobs: int) -> tuple[dict, dict, dict]:
    """A DESED set: (report entry, PSD-ROC curves, per-class PSDS1) raw and after cSEBBs."""
    scores = s.extra.get("scores") or scores_from_probabilities(
        s.filenames, s.probabilities[:, :, : len(DESED_CLASSES)], DESED_CLASSES)
    metrics, raw_psds = desed_metrics_and_psds1(scores, s.ground_truth, s.durations, num_jobs=num_jobs)
    entry = {"clips_with_events": len(s.ground_truth), "raw": metrics}
    lines.append(f"{s.name} psds1: {metrics['psds1']}")
    curves = {"raw": (raw_psds.roc[0], raw_psds.roc[1], raw_psds.value)}
    per_class = {"raw": raw_psds.per_class}
    if predictor is not None:
        tables = csebbs.apply_to_predictions(predictor, s.filenames, s.probabilities)
        processed = select_classes(tables, DESED_CLASSES, s.ground_truth.keys())
        entry["csebbs"], csebbs_psds = desed_metrics_and_psds1(processed, s.ground_truth, s.durations,
                                                               num_jobs=num_jobs, include_segment=False)
        lines.append(f"{s.name} psds1_csebbs: {entry['csebbs']['psds1']}")
        curves["cSEBBs"] = (csebbs_psds.roc[0], csebbs_psds.roc[1], csebbs_psds.value)
        per_class["cSEBBs"] = csebbs_psds.per_class
    return entry, curves, per_class


def _write_submission(private: tuple, predictor, preds_dir: Path, system_name: str) -> dict:
    """The private-eval submission folders (unprocessed, and cSEBBs when tuned)."""
    filenames, probabilities = private
    write_submission_folder(scores_from_probabilities(filenames, probabilities, CLASSES),
                            preds_dir / f"{system_name}_unprocessed.output")
    if predictor is not None:
        write_submission_folder(csebbs.apply_to_predictions(predictor, filenames, probabilities),
                                preds_dir / f"{system_name}.output")
    return {"clips": len(filenames), "submission": str(preds_dir / f"{system_name}.output")}


def _write_plots(preds_dir: Path, curves: Mapping, per_class: Mapping) -> list[str]:
    paths = []
    for name, set_curves in curves.items():
        roc_path = preds_dir / PLOTS_DIR / f"{name}_psd_roc.png"
        per_class_path = preds_dir / PLOTS_DIR / f"{name}_per_class_psds1.png"
        _plot_psd_roc(roc_path, set_curves, f"{name}: PSD-ROC (PSDS1)")
        _plot_per_class(per_class_path, per_class[name], f"{name}: single-class PSDS1")
        paths += [str(roc_path), str(per_class_path)]
    return paths


def evaluate_predictions(
    preds_dir: str | os.PathLike,
    dataset_root: str | os.PathLike,
    resources_dir: str | os.PathLike,
    csebbs_cfg: CSEBBsConfig | None = None,
    *,
    system_name: str = DEFAULT_SYSTEM_NAME,
    plots: bool = True,
    echo: Callable[[str], None] | None = None,
    num_jobs: int = 1,
) -> dict:
    """Evaluate the prediction files in ``preds_dir`` (``<set>.hdf5``) and write report, submission, plots.

    Stages: load the sets that exist → tune cSEBBs on devtest → MAESTRO mpAUC → DESED PSDS → private-eval
    submission → plots and ``eval_report.json``. ``echo`` receives the console lines (the reference's block, then
    notices); default: the logger. ``num_jobs`` is passed to sed_scores_eval for the plain metrics.
    Returns the report dict.
    """
    started = time.perf_counter()
    cfg = csebbs_cfg or CSEBBsConfig()
    shown_dir = str(preds_dir)
    preds_dir, dataset_root, resources_dir = Path(preds_dir), Path(dataset_root), Path(resources_dir)
    echo = echo or log.info
    notices: list[str] = []
    lines: list[str] = []
    report: dict = {
        "predictions": str(preds_dir), "dataset_root": str(dataset_root),
        "csebbs_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "psds1_settings": asdict(PSDS1), "sets": {}, "timings_s": {},
    }
    timings = report["timings_s"]

    sets, private = _load_sets(preds_dir, dataset_root, resources_dir, notices)
    predictor = _tune_csebbs(sets, cfg, report, notices)
    if MAESTRO_SET in sets:
        t0 = time.perf_counter()
        report["sets"][MAESTRO_SET] = _evaluate_maestro(sets[MAESTRO_SET], predictor, lines, num_jobs)
        timings[MAESTRO_SET] = time.perf_counter() - t0
    curves: dict = {}
    per_class_plot: dict = {}
    for name in DESED_EVAL_SETS:
        if name in sets:
            t0 = time.perf_counter()
            report["sets"][name], curves[name], per_class_plot[name] = _evaluate_desed(sets[name], predictor, lines,
                                                                                         num_jobs)
            timings[name] = time.perf_counter() - t0
    if private is not None:
        t0 = time.perf_counter()
        lines.append(f"Storing predictions to {shown_dir}.")
        report["sets"][PRIVATE_SET] = _write_submission(private, predictor, preds_dir, system_name)
        timings[PRIVATE_SET] = time.perf_counter() - t0

    report["plots"] = _write_plots(preds_dir, curves, per_class_plot) if plots else []
    timings["total"] = time.perf_counter() - started
    report["console"] = lines
    report["notices"] = notices
    atomic_write_text(preds_dir / REPORT_NAME, json.dumps(report, indent=2, default=_json_default) + "\n")
    for line in lines + notices:
        echo(line)
    return report


def log_to_active_wandb(plots: Sequence[str | os.PathLike], metrics: Mapping[str, float],
                        prefix: str = WANDB_PREFIX) -> bool:
    """Log the PNG ``plots`` (as ``wandb.Image`` under ``<prefix>/<file stem>``) and ``metrics`` (under
    ``<prefix>/<key>``, also written to the run summary) to the wandb run that is active, if any.

    Never starts a run: without ``wandb`` installed or with ``wandb.run is None`` nothing happens. A failure
    while logging is a warning, never an error: the evaluation's files are already written. Returns whether
    anything was logged.
    """
    try:
        import wandb  # lazy: only when a wandb run is active
    except ImportError:
        return False
    except Exception as error:  # a broken installation must not break the evaluation
        log.warning("wandb could not be imported, the evaluation is not logged to wandb: %s", error)
        return False
    run = getattr(wandb, "run", None)
    if run is None:
        return False
    try:
        numbers = {f"{prefix}/{key}": float(value) for key, value in metrics.items()}
        images = {f"{prefix}/{Path(path).stem}": wandb.Image(str(path)) for path in plots}
        wandb.log({**images, **numbers})
        summary = getattr(run, "summary", None)
        if summary is not None:
            summary.update(numbers)
    except Exception as error:
        log.warning("logging the evaluation to the active wandb run failed (the files are written): %s", error)
        return False
    return True


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")
