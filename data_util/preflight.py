"""Pre-flight check of a run: every input it will touch, checked before anything is built, trained or written.

A 200-epoch run that dies in ``trainer.test`` because the devtest audio is missing loses days; so training (and
``test``) first check, in one pass, everything the run will read later:

* no path-like config value is a URL (nothing is downloaded at run time: a checkpoint is a pickle);
* every data set it touches (the training sets, the validation and test sets), with the data doctor
  (``data_util.doctor``): folders, every tsv parsed by the training reader, a few audio headers, the exclude lists
  and the impulse responses when they are used;
* the pseudo-label files: a ``pseudo_labels`` name or path must exist even when the pseudo-label loss weight is 0,
  and when the loss is on, every file the training sets read must be there;
* the checkpoints it starts from (``t4_wrapper.model_init_id``, the backbone file, ``ckpt_path``) resolve to files.

All problems come as one ``PreflightError`` in the doctor's format (path, what is wrong, the fix); warnings (e.g. a
pseudo-label loss without pseudo-labels, real-data file counts) are logged. The caller creates its run folder only
after this passes (``helpers.training.train``), and reads the checkpoint contents (safe loader) before that too.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping

import configs
from data_util import doctor
from data_util.datasets import MAESTRO_REAL_VAL, WEAK_VAL, train_source_sets
from data_util.layout import SETS
from data_util.prediction_files import (
    PREDICTION_SUFFIX, PredictionCommandError, find_prediction_folder, resolve_pseudo_label_dir,
)

log = logging.getLogger(__name__)

# Evaluation sets that are splits of a training set read that set's folder and tsv.
EVAL_SOURCES = {WEAK_VAL: "weak_train", MAESTRO_REAL_VAL: "maestro_real_train"}
# Config keys holding a path (or a name looked up in a folder): none of them may be a URL. Every block's
# ``pretrained_name`` (one per architecture, registered ones included) is added by ``path_keys``.
PATH_KEYS = ("base_path", "resources_path", "model_path", "pseudo_labels", "ckpt_path", "t4_wrapper.model_init_id",
             "atst_checkpoint", "beats_checkpoint", "pretrained_name", "output_path", "preds_path")
PSEUDO_LABEL_WEIGHT_INDEX = 5  # loss_weights: (maestro, DESED strong, synth, weak, SSL, pseudo-label)
CHECKPOINT_FIX = ("give the path of the file, or its name in {folder} (model_path); the released checkpoints: "
                  "`python download_resources.py`")
PSEUDO_LABEL_FIX = ("download them (`python download_resources.py pseudo-labels`), write them (store_predictions, "
                    "then ensemble_predictions), or set training.use_pseudo_labels=False")


class PreflightError(doctor.DataCheckError):
    """Inputs of a run are missing or malformed; nothing was started. Lists every problem and its fix."""

    def __init__(self, report: doctor.Report):
        self.report = report
        problems = [f"{p.status} {p.set_name}: {p.path}: {p.message}\n    fix: {p.fix}" for p in report.errors]
        if len(problems) == 1:
            message = f"nothing was started: {problems[0]}"
        else:
            message = (f"nothing was started: {len(problems)} problems with the inputs of this run (dataset "
                       f"{report.dataset_root}, resources {report.resources_dir}):\n"
                       + "\n".join(f"  - {problem}" for problem in problems))
        RuntimeError.__init__(self, message)


def config_value(config: Mapping, dotted_key: str):
    """``config["a"]["b"]`` for ``"a.b"``; None when any part is absent."""
    value = config
    for part in dotted_key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def path_keys(config: Mapping) -> tuple[str, ...]:
    """``PATH_KEYS`` plus ``<block>.pretrained_name`` of every block of ``config`` that has one."""
    blocks = [f"{name}.pretrained_name" for name, block in config.items()
              if isinstance(block, Mapping) and "pretrained_name" in block]
    return PATH_KEYS + tuple(blocks)


def refuse_urls(config: Mapping, keys: Iterable[str] | None = None) -> None:
    """One ``ConfigError`` naming every path key (``path_keys``, or ``keys``) whose value is a URL."""
    errors = []
    for key in keys if keys is not None else path_keys(config):
        try:
            configs.refuse_url(config[key] if key in config else config_value(config, key), key)
        except configs.ConfigError as e:
            errors.append(str(e))
    if errors:
        raise configs.ConfigError("\n".join(errors))


def check_run_inputs(config: Mapping, stage: int, *, eval_sets: Iterable[str], training: bool = True,
                     checkpoints: Mapping[str, object] = {}) -> doctor.Report:
    """Check every input of a run; raise ``PreflightError`` listing all problems, else return the doctor's report.

    eval_sets: the validation / test sets the run evaluates (``data_util.datasets.EVAL_SET_NAMES``).
    training: the run trains (training sets, exclude lists, impulse responses, pseudo-labels are checked too).
    checkpoints: ``{config key: name or path}`` of the checkpoint files the run starts from.
    """
    refuse_urls(config)
    refuse_urls(checkpoints, keys=list(checkpoints))
    root, resources = configs.dataset_root(config), configs.resources_dir(config)
    training_cfg = config["training"]  # a validated config: every key is present
    used = [EVAL_SOURCES.get(name, name) for name in eval_sets]
    if training:
        used += train_source_sets(bool(training_cfg["include_external_strong"]))
    sets = [name for name in SETS if name in set(used)]
    report = doctor.check_data(
        root, resources, sets=sets, stage=stage, exact_counts=False,  # counts: training accepts any number
        require_exclude_lists=training and bool(training_cfg["exclude_overlapping"]),
        require_dirs=training and float(training_cfg["dir_p"]) > 0, sample_audio=doctor.DEFAULT_AUDIO_SAMPLES)
    if training:
        report.general.extend(_pseudo_label_problems(config))
    report.general.extend(_checkpoint_problems(config, checkpoints))
    for problem in report.warnings:
        log.warning("%s %s: %s: %s (%s)", problem.status, problem.set_name, problem.path, problem.message, problem.fix)
    if not report.ok:
        raise PreflightError(report)
    return report


def _problem(key: str, path, message: str, fix: str, status: str = doctor.MISSING,
             severity: str = doctor.ERROR) -> doctor.Problem:
    return doctor.Problem(severity, status, key, Path(str(path)), message, fix)


def _pseudo_label_problems(config: Mapping) -> list[doctor.Problem]:
    value = config["pseudo_labels"]
    training_cfg = config["training"]
    weight = float(config["loss_weights"][PSEUDO_LABEL_WEIGHT_INDEX])
    used = weight > 0 and bool(training_cfg["use_pseudo_labels"])
    preds = configs.preds_dir(config)
    if value not in (None, ""):
        try:
            find_prediction_folder(value, preds, "pseudo_labels")
        except PredictionCommandError as e:
            return [_problem("pseudo_labels", value, str(e), "name a folder of prediction files (e.g. an "
                             f"ensemble_predictions out_name in {preds}) or its path, or leave pseudo_labels unset")]
        if not used:
            return [_problem("pseudo_labels", value, f"set, but the pseudo-label loss is off (loss_weights"
                             f"[{PSEUDO_LABEL_WEIGHT_INDEX}]={weight:g}, training.use_pseudo_labels="
                             f"{training_cfg['use_pseudo_labels']}): the files are not used",
                             "give the pseudo-label loss a weight > 0 to use them", severity=doctor.WARNING)]
    if not used:
        return []
    try:
        folder = resolve_pseudo_label_dir(config)
    except PredictionCommandError as e:
        return [_problem("pseudo_labels", value, str(e), PSEUDO_LABEL_FIX)]
    if folder is None:
        return [_problem("pseudo_labels", configs.PSEUDO_LABELS_DIR, f"loss_weights[{PSEUDO_LABEL_WEIGHT_INDEX}]="
                         f"{weight:g} asks for a pseudo-label loss, but there are no pseudo-labels (pseudo_labels is "
                         "unset and this folder does not exist): the pseudo-label term is zero", PSEUDO_LABEL_FIX,
                         severity=doctor.WARNING)]
    needed = train_source_sets(bool(training_cfg["include_external_strong"]))
    missing = [f"{name}{PREDICTION_SUFFIX}" for name in needed if not (folder / f"{name}{PREDICTION_SUFFIX}").is_file()]
    if missing:
        return [_problem("pseudo_labels", folder, f"{len(missing)} pseudo-label file(s) the training sets read are "
                         f"missing: {', '.join(missing)}", PSEUDO_LABEL_FIX, status=doctor.MISSING_FILES)]
    return []


def _checkpoint_problems(config: Mapping, checkpoints: Mapping[str, object]) -> list[doctor.Problem]:
    folder = configs.model_dir(config)
    problems = []
    for key, value in checkpoints.items():
        try:
            configs.resolve_resource(value, folder, suffixes=configs.CHECKPOINT_SUFFIXES)
        except FileNotFoundError:
            problems.append(_problem(key, value, f"no such file, nor a name in {folder} (with or without "
                                     f"{' / '.join(configs.CHECKPOINT_SUFFIXES)})", CHECKPOINT_FIX.format(folder=folder)))
    return problems
