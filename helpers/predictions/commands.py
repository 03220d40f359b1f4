"""Stage-2 prediction commands: store, ensemble and evaluate frame-level predictions; pseudo-label folders.

The reference (CPJKU/cpjku_dcase24 ``ex_stage2.py``: ``store_predictions``, ``ensemble_predictions``,
``eval_predictions``) runs a trained model over 12 data sets and writes one HDF5 file of strong **logits** per
set, averages the logits of several models, and evaluates a folder of such files (PSDS1, MAESTRO mpAUC, cSEBBs,
the private-eval submission). The same files are the next iteration's pseudo-labels (``pseudo_labels=<folder>``).

Each command is a plain function of the resolved experiment config (``configs.default_config(2)`` keys);
``ex_stage2.py`` registers them as Sacred commands of the same names. What we do differently from the reference
(docs/DIFFERENCES.md): the checkpoint is read once (the reference loaded it twice); the device is CUDA when
available, else the CPU (the reference required CUDA); data loading uses ``test.num_workers`` workers; sets whose
audio folder is missing are skipped with a notice instead of crashing; existing files are replaced with
``overwrite=True``; ensembles align clips by name (not by the files' order) and are written all-or-nothing;
``eval_predictions`` needs no ``arch`` and no model. The file formats are the contract of ``data_util.prediction_files``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import configs
from data_util.datasets import build_prediction_set
from data_util.layout import PREDICTION_SETS, SETS
from data_util.prediction_files import (
    PREDICTION_SUFFIX,
    PredictionCommandError,
    file_attributes,
    find_prediction_folder,
    write_predictions,
)
from helpers.predictions.ensemble import ensemble_files
from models.compile import compile_in_place
from models.loading import CheckpointNotFoundError, load_sed_model, resolve_checkpoint
from models.registry import arch_names

log = logging.getLogger(__name__)

TEACHER_SUFFIX = "_t"  # the reference appends it to the output folder of teacher predictions
MODES = ("student", "teacher")
MIN_ENSEMBLE_MEMBERS = 2
# ``predict_precision`` values of store_predictions: float32 everywhere, or bfloat16 / float16 autocast on a GPU
# (front-ends and output heads stay float32 inside the model either way).
FLOAT32_PRECISIONS = ("32", "32-true", "fp32")
BF16_PRECISIONS = ("bf16", "bf16-mixed")
FP16_PRECISIONS = ("16", "16-mixed", "fp16")
DEFAULT_PRECISION = "32"

Echo = Callable[[str], None]


# --------------------------------------------------------------------------------------------------
# Folders and names (the folder keys resolve in ``configs``; prediction folders in ``data_util.prediction_files``)
# --------------------------------------------------------------------------------------------------
def pretrained_name(config: Mapping) -> str:
    """The model (or prediction folder) a command works on: ``pretrained_name``, else
    ``t4_wrapper.model_init_id`` (the reference README names it that way for ATST), else ``atst_stage2``."""
    name = config["pretrained_name"] or config["t4_wrapper"]["model_init_id"]
    return str(name) if name else configs.DEFAULT_MODEL


def resolve_checkpoint_file(name_or_path: str | os.PathLike, models: Path) -> Path:
    """A checkpoint given as a path, or as a name in ``models`` (``models.loading.resolve_checkpoint``)."""
    try:
        return resolve_checkpoint(name_or_path, models)
    except CheckpointNotFoundError as e:
        raise PredictionCommandError(f"{e} Set pretrained_name=<name or path> (and model_path=<folder>).") from None


# --------------------------------------------------------------------------------------------------
# store_predictions
# --------------------------------------------------------------------------------------------------
def _autocast(device: torch.device, precision: str):
    precision = str(precision)
    if precision in FLOAT32_PRECISIONS:
        return nullcontext()
    if precision not in BF16_PRECISIONS + FP16_PRECISIONS:
        raise PredictionCommandError(f"precision={precision!r} is not supported; use one of "
                                     f"{FLOAT32_PRECISIONS + BF16_PRECISIONS + FP16_PRECISIONS}")
    if device.type != "cuda":
        log.warning("precision=%s needs a GPU; predicting in float32 on the %s", precision, device.type)
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision in BF16_PRECISIONS else torch.float16)


@torch.inference_mode()
def predict_logits(model: nn.Module, dataset, *, batch_size: int, num_workers: int, device: torch.device,
                   precision: str = DEFAULT_PRECISION, desc: str = "") -> tuple[list[str], np.ndarray]:
    """(stems, float32 strong logits [N, 156, 27]) of every sample (``audio``, ``filename``) of ``dataset``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    stems: list[str] = []
    logits: list[np.ndarray] = []
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False):
        audio = batch["audio"].to(device, non_blocking=True)
        with _autocast(device, precision):
            strong_logits = model(audio)
        logits.append(strong_logits.float().cpu().numpy())
        stems.extend(batch["filename"])
    return stems, np.concatenate(logits)


def _prediction_set_folder(name: str, dataset_root: Path) -> Path:
    source = "weak_train" if name == "weak_val" else name  # weak_val: the whole weak folder, as the reference
    return dataset_root / SETS[source].audio


def store_sets(config: Mapping) -> tuple[str, ...]:
    """The sets ``store_predictions`` writes: ``store_sets`` (a subset of ``layout.PREDICTION_SETS``, in that
    order) or, with None, all of them."""
    chosen = config["store_sets"]
    if chosen is None:
        return PREDICTION_SETS
    if isinstance(chosen, str) or not all(isinstance(n, str) for n in chosen):
        raise PredictionCommandError(f"store_sets={chosen!r} must be a list of set names, e.g. "
                                     "store_sets='(\"devtest\", \"eval_public\")', or None for all")
    unknown = sorted(set(chosen) - set(PREDICTION_SETS))
    if unknown or not chosen:
        raise PredictionCommandError(f"store_sets={tuple(chosen)!r}: unknown set(s) {unknown}; "
                                     f"choose from {', '.join(PREDICTION_SETS)}")
    return tuple(n for n in PREDICTION_SETS if n in chosen)


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 of a checkpoint file: recorded in its prediction files (the same path may hold new weights later)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _refuse_other_checkpoint(paths: list[Path], attributes: Mapping[str, str]) -> None:
    """``PredictionCommandError`` when existing prediction files (kept without ``overwrite``) were written from
    another checkpoint file or mode than ``attributes`` describes."""
    others = []
    for path in paths:
        recorded = file_attributes(path)
        if "checkpoint_sha256" in recorded:
            same = recorded["checkpoint_sha256"] == attributes["checkpoint_sha256"]
        else:  # written before digests were recorded: compare the file names
            same = Path(recorded.get("checkpoint", "")) == Path(attributes["checkpoint"])
        if not same or recorded.get("mode", attributes["mode"]) != attributes["mode"]:
            others.append(f"{path.name} (from {recorded.get('checkpoint', 'an unrecorded checkpoint')}, "
                          f"{recorded.get('mode', '?')})")
    if others:
        raise PredictionCommandError(
            f"{paths[0].parent} holds predictions of another checkpoint: {', '.join(others)}; this run stores "
            f"{attributes['checkpoint']} ({attributes['mode']}). Choose another out_name, or overwrite=True to "
            "replace them.")


def store_predictions(config: Mapping, echo: Echo = print) -> dict[str, str]:
    """Write ``<output_path>/<name>[_t]/<set>.hdf5`` for every set of ``layout.PREDICTION_SETS`` (or of the
    ``store_sets`` key: e.g. only the evaluation sets, when the model's predictions are not needed as
    pseudo-labels).

    ``name``: ``out_name`` if set, else the checkpoint's name (``pretrained_name`` → ``t4_wrapper.model_init_id``
    → ``atst_stage2``; a path gives its file stem); ``_t`` is appended for ``mode=teacher``. Existing files are
    kept unless ``overwrite=True``; sets without an audio folder are skipped. The checkpoint is loaded once, on
    the first set that needs it. Returns ``{set: file}`` of the files that exist afterwards. Existing files written
    from another checkpoint (the files record its SHA-256) or mode are an error unless ``overwrite=True``.
    """
    arch = configs.require_arch(config["arch"], arch_names())
    configs.refuse_url(pretrained_name(config), "pretrained_name")
    mode = config["mode"]
    if mode not in MODES:
        raise PredictionCommandError(f"mode={mode!r} must be one of {MODES}")
    checkpoint = resolve_checkpoint_file(pretrained_name(config), configs.model_dir(config))
    folder_name = str(config["out_name"] or checkpoint.stem) + (TEACHER_SUFFIX if mode == "teacher" else "")
    out_dir = configs.output_dir(config) / folder_name
    dataset_root = configs.resolve_dataset_path(config["base_path"])
    overwrite = bool(config["overwrite"])
    loader_kwargs = dict(batch_size=int(config["batch_size"]),
                         num_workers=int(config["test"]["num_workers"]),
                         precision=str(config["predict_precision"]))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    attributes = {"checkpoint": str(checkpoint), "checkpoint_sha256": checkpoint_sha256(checkpoint), "arch": arch,
                  "mode": mode}
    description = f"checkpoint={checkpoint}; arch={arch}; mode={mode}"


    sets = store_sets(config)
    if not overwrite:
        _refuse_other_checkpoint([p for n in sets if (p := out_dir / f"{n}{PREDICTION_SUFFIX}").is_file()], attributes)
    folders = {name: _prediction_set_folder(name, dataset_root) for name in sets}
    shared_folders = {f for f in folders.values() if list(folders.values()).count(f) > 1}  # weak_train / weak_val
    computed: dict[Path, tuple[list[str], np.ndarray]] = {}  # predictions of shared folders, computed once
    model = None
    written: dict[str, str] = {}
    for name in sets:
        path, audio_folder = out_dir / f"{name}{PREDICTION_SUFFIX}", folders[name]
        if path.is_file() and not overwrite:
            echo(f"{name}: kept existing {path} (overwrite=True replaces it)")
            written[name] = str(path)
            continue
        if audio_folder not in computed:
            if not audio_folder.is_dir():
                echo(f"{name}: skipped (no audio folder {audio_folder})")
                continue
            dataset = build_prediction_set(name, dataset_root)
            if len(dataset) == 0:
                echo(f"{name}: skipped (no audio files in {audio_folder})")
                continue
            if model is None:
                model = load_sed_model(checkpoint, mode=mode, config=config).to(device)
                if config["compile"]:
                    compile_in_place(model.model, f"the {arch} SED model")
                echo(f"Storing {mode} predictions of {checkpoint} ({arch}, {device}) to {out_dir}.")
            predictions = predict_logits(model, dataset, device=device, desc=name, **loader_kwargs)
            if audio_folder in shared_folders:
                computed[audio_folder] = predictions
        else:
            predictions = computed[audio_folder]
        stems, logits = predictions
        write_predictions(path, stems, logits, model=description, extra_attrs=attributes)
        echo(f"{name}: {len(stems)} clips -> {path}")
        written[name] = str(path)
    return written


# --------------------------------------------------------------------------------------------------
# ensemble_predictions
# --------------------------------------------------------------------------------------------------
def ensemble_predictions(config: Mapping, echo: Echo = print) -> dict[str, str]:
    """Mean of the logits of the prediction folders ``pretrained_names`` (in ``preds_path``), per set, into
    ``<preds_path>/<out_name or "_".join(names)>/<set>.hdf5``; weighted by ``ensemble_weights`` (one
    non-negative number per member, normalised to sum 1; None: equal weights). The normalised weights are
    stored in each file's ``weights`` attribute.

    Clips are aligned by name. A set present in some members but not in all is an error (listed before anything
    is written); a set present in none is skipped. Existing output files are kept unless ``overwrite=True``.
    All new files are written into a temporary folder first and moved into place only when every set succeeded.
    Returns ``{set: file}`` of the ensemble's files.
    """

    names = [str(n) for n in (config["pretrained_names"] or ())]
    if len(names) < MIN_ENSEMBLE_MEMBERS:
        raise PredictionCommandError(
            f"pretrained_names needs at least {MIN_ENSEMBLE_MEMBERS} prediction folders, got {names!r}; "
            "e.g. pretrained_names='(\"atst_stage2\", \"passt_stage2\", \"beats_stage2\")'"
        )
    weights = config["ensemble_weights"]
    weight_errors = configs.ensemble_weight_errors(weights, names)
    if weight_errors:
        raise PredictionCommandError("; ".join(weight_errors))
    if weights is not None:
        weights = [float(w) for w in weights]
        description = "ensemble weighted mean of logits: " + ", ".join(
            f"{name} (weight {w:g})" for name, w in zip(names, weights))
    else:
        description = "ensemble mean of logits: " + ", ".join(names)
    root = configs.preds_dir(config)
    members = [find_prediction_folder(name, root, "prediction folder") for name in names]
    out_name = str(config["out_name"] or "_".join(Path(n).name for n in names))
    out_dir = root / out_name
    if out_dir.resolve() in members:
        raise PredictionCommandError(f"out_name={out_name!r} would overwrite the ensemble member {out_dir}")
    overwrite = bool(config["overwrite"])

    plan: dict[str, list[Path]] = {}
    incomplete, absent = [], []
    for name in PREDICTION_SETS:
        files = [member / f"{name}{PREDICTION_SUFFIX}" for member in members]
        present = [f.is_file() for f in files]
        if not any(present):
            absent.append(name)
        elif not all(present):
            incomplete.append(f"{name} (missing: {', '.join(str(f) for f, p in zip(files, present) if not p)})")
        else:
            plan[name] = files
    if incomplete:
        raise PredictionCommandError(
            "these sets are missing in some ensemble members (run store_predictions for them, or remove their "
            "files from the other members): " + "; ".join(incomplete)
        )
    if not plan:
        raise PredictionCommandError(f"no prediction files in any of {', '.join(map(str, members))}")
    if absent:
        echo(f"skipped (in none of the members): {', '.join(absent)}")

    result: dict[str, str] = {}
    todo = {}
    for name, files in plan.items():
        target = out_dir / f"{name}{PREDICTION_SUFFIX}"
        result[name] = str(target)
        if target.is_file() and not overwrite:
            echo(f"{name}: kept existing {target} (overwrite=True replaces it)")
        else:
            todo[name] = files
    if not todo:
        return result
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for name, files in todo.items():
            ensemble_files(files, staging / f"{name}{PREDICTION_SUFFIX}", weights=weights, model=description)
        what = "mean" if weights is None else "weighted mean"
        out_dir.mkdir(exist_ok=True)  # only now: a failed ensemble leaves no (empty) output folder behind
        for name in todo:
            os.replace(staging / f"{name}{PREDICTION_SUFFIX}", out_dir / f"{name}{PREDICTION_SUFFIX}")
            echo(f"{name}: {what} of {len(members)} models -> {out_dir / (name + PREDICTION_SUFFIX)}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------------
# eval_predictions
# --------------------------------------------------------------------------------------------------
def report_metrics(report: Mapping) -> dict[str, float]:
    """``{"<set>/<metric>": value}`` of the numbers the console block shows (plus the cross-validated one)."""
    metrics: dict[str, float] = {}
    for name, entry in report.get("sets", {}).items():
        for key in ("mpauc", "mpauc_csebbs"):
            if key in entry:
                metrics[f"{name}/{key}"] = float(entry[key])
        if "raw" in entry:
            metrics[f"{name}/psds1"] = float(entry["raw"]["psds1"])
        if "csebbs" in entry:
            metrics[f"{name}/psds1_csebbs"] = float(entry["csebbs"]["psds1"])
    cross_validated = report.get("csebbs_cross_validated", {})
    if "devtest_psds1_csebbs_cross_validated" in cross_validated:
        metrics["devtest/psds1_csebbs_cross_validated"] = float(
            cross_validated["devtest_psds1_csebbs_cross_validated"])
    return metrics


def eval_predictions(config: Mapping, echo: Echo = print) -> dict[str, float]:
    """Evaluate the prediction folder ``pretrained_name`` (a name in ``preds_path`` or a path).

    Prints the reference's console block (MAESTRO dev mpAUC, devtest / eval_public PSDS1, raw and with cSEBBs
    tuned on devtest), writes ``eval_report.json``, plots and the eval_private submission folders into the
    prediction folder (``helpers.evaluation.report``). When a wandb run is active (``wandb.run``; none is started
    here) the plots and the returned numbers are logged to it under ``eval/``. Returns
    ``{"<set>/<metric>": value}``.
    """
    from helpers.evaluation.report import (  # lazy: evaluation loads sebbs, sed_scores_eval and matplotlib
        DESED_EVAL_SETS,
        MAESTRO_SET,
        PRIVATE_SET,
        CSEBBsConfig,
        evaluate_predictions,
        log_to_active_wandb,
    )

    folder = find_prediction_folder(pretrained_name(config), configs.preds_dir(config), "prediction folder")
    evaluated = [f"{name}{PREDICTION_SUFFIX}" for name in (MAESTRO_SET, *DESED_EVAL_SETS, PRIVATE_SET)]
    if not any((folder / name).is_file() for name in evaluated):
        raise PredictionCommandError(
            f"no prediction files to evaluate in {folder}: expected at least one of {', '.join(evaluated)}; write "
            "them with store_predictions (or ensemble_predictions), or name another folder with pretrained_name")
    csebbs_cfg = CSEBBsConfig(
        classwise=bool(config["classwise"]),
        step_filter_lengths=tuple(config["step_filter_lengths"]),
        merge_thresholds_rel=tuple(config["merge_thresholds_rel"]),
        merge_thresholds_abs=tuple(config["merge_thresholds_abs"]),
        cross_validation_folds=int(config["cross_validation_folds"]),
        num_jobs=config["num_jobs"],
    )
    resources = configs.resources_dir(config)
    report = evaluate_predictions(folder, configs.resolve_dataset_path(config["base_path"]), resources,
                                  csebbs_cfg, echo=echo)
    if not report.get("sets"):
        raise PredictionCommandError(f"nothing was evaluated in {folder}: every set was skipped (see the lines "
                                     "above: labels or durations missing?); check the data with check_data")
    metrics = report_metrics(report)
    log_to_active_wandb(report.get("plots", []), metrics)
    return metrics


__all__ = [
    "store_predictions", "ensemble_predictions", "eval_predictions",
    "predict_logits", "resolve_checkpoint_file", "pretrained_name", "PredictionCommandError", "store_sets",
    "report_metrics",
]
