"""Paths, and the config schemas of the Sacred experiments (one typed source of every key, type and default).

- ``configs.schema``: the typed-block machinery (defaults, validation, docs derive from the dataclasses);
- ``configs.t4``: the blocks of ``ex_stage1`` / ``ex_stage2``.

This package imports nothing of the project but the class contract ``data_util.classes``; everything else
imports it. Resolution rules of the paths (documented in README.md):
- the dataset root is the Sacred key ``base_path`` when given, else the environment variable
  ``T4_DATASET_PATH``, else ``DEFAULT_DATASET_PATH`` (``./data`` in the repository);
- ``resources/`` (checkpoints, predictions, pseudo-labels, impulse responses, split tsvs) is always the
  folder next to this file, whatever the working directory.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
import re
from pathlib import Path
from typing import Mapping

from configs import schema
from configs.t4 import ARCHS, DEFAULT_MODEL, NUM_LOSS_WEIGHTS, NUM_SUB_BATCHES, STAGES  # noqa: F401 (re-exported)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESOURCES_DIR = REPO_ROOT / "resources"
PRETRAINED_MODELS_DIR = RESOURCES_DIR / "pretrained_models"
PREDICTIONS_DIR = RESOURCES_DIR / "predictions"
PSEUDO_LABELS_DIR = RESOURCES_DIR / "pseudo-labels"
DEMO_DATASET_PATH = REPO_ROOT / "demo_data"

DATASET_ENV_VAR = "T4_DATASET_PATH"
DEFAULT_DATASET_PATH = REPO_ROOT / "data"
CHECKPOINT_SUFFIXES = (".ckpt", ".pt")  # tried after a checkpoint name (``atst_stage2`` -> atst_stage2.ckpt)
# Folder keys may start with this placeholder for the resolved dataset root (the demo's folders live inside it).
BASE_PATH_PLACEHOLDER = "{base_path}"
# A path given as a URL (http://, https://, s3://, file://, ...): never read or downloaded at run time.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def resolve_dataset_path(base_path: str | os.PathLike | None = None) -> Path:
    """The dataset root: ``base_path`` if set, else ``$T4_DATASET_PATH``, else ``DEFAULT_DATASET_PATH``."""
    if base_path not in (None, ""):
        return Path(base_path).expanduser().resolve()
    env = os.environ.get(DATASET_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return DEFAULT_DATASET_PATH


def is_url(value) -> bool:
    """Whether a config value names a remote file (``scheme://...``) rather than a local path or a name."""
    return isinstance(value, (str, os.PathLike)) and bool(_URL.match(str(value)))


def refuse_url(value, key: str) -> None:
    """Raise ``ConfigError`` when the value of ``key`` is a URL: nothing is downloaded at run time, because a
    downloaded checkpoint is a pickle that could run code before anything can check it."""
    if is_url(value):
        raise ConfigError(
            f"{key}={str(value)!r} is a URL: files are never downloaded at run time (a checkpoint is a pickle that "
            "could run code). Download it yourself (released files: `python download_resources.py`; others: e.g. "
            "`curl -L -o model.ckpt <url>`), then pass the local path."
        )


def resolve_resource(name_or_path: str | os.PathLike, folder: Path, suffixes: tuple[str, ...] = ()) -> Path:
    """A file given either as a path or as a name inside a resources folder (with optional suffixes tried).

    A URL is refused (``ConfigError``), never fetched."""
    refuse_url(name_or_path, "path")
    candidate = Path(name_or_path).expanduser()
    tried = []
    for base in ((candidate,) if candidate.is_absolute() else (candidate, folder / candidate)):
        for suffix in ("",) + suffixes:
            path = base.with_name(base.name + suffix) if suffix else base
            tried.append(path)
            if path.is_file():
                return path.resolve()
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a file nor a name in {folder}; looked for: "
        + ", ".join(str(p) for p in tried)
    )


def folder_key(config, key: str, default: Path) -> Path:
    """A folder key's path; a leading ``{base_path}`` stands for the resolved dataset root (``dataset_root``)."""
    value = config.get(key)
    if value in (None, ""):
        return default
    value = str(value)
    if value.startswith(BASE_PATH_PLACEHOLDER):
        value = str(dataset_root(config)) + value[len(BASE_PATH_PLACEHOLDER):]
    return Path(value).expanduser().resolve()


def dataset_root(config) -> Path:
    """``base_path`` of a resolved config (see ``resolve_dataset_path``)."""
    return resolve_dataset_path(config.get("base_path"))


def resources_dir(config) -> Path:
    """``resources_path``: the data-side resources (external-strong splits, exclude lists, impulse responses)."""
    return folder_key(config, "resources_path", RESOURCES_DIR)


def model_dir(config) -> Path:
    """``model_path``: where checkpoint names are looked up (None: ``resources/pretrained_models``)."""
    return folder_key(config, "model_path", PRETRAINED_MODELS_DIR)


def output_dir(config) -> Path:
    """``output_path``: where ``store_predictions`` writes (None: ``resources/predictions``)."""
    return folder_key(config, "output_path", PREDICTIONS_DIR)


def preds_dir(config) -> Path:
    """``preds_path``: where ensemble / eval / pseudo-label names are looked up (None: ``resources/predictions``)."""
    return folder_key(config, "preds_path", PREDICTIONS_DIR)


# --------------------------------------------------------------------------------------------------------------------
# The experiments' config trees (Sacred), derived from the typed schema of ``configs.t4``.
# --------------------------------------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """A config key or value that the experiments do not accept."""


def _stage_schema(stage: int) -> type:
    if stage not in STAGES:
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    return STAGES[stage]


def default_config(stage: int) -> dict:
    """The full default config tree of ``ex_stage{stage}`` (from ``configs.t4.Stage1`` / ``Stage2``)."""
    return schema.tree(_stage_schema(stage)())


# Small model sizes for the demo and the end-to-end tests (random init, no checkpoint download).
TINY_BACKBONE = dict(embed_dim=64, depth=2, num_heads=2, drop_top_layers=0)


def demo_config(stage: int) -> dict:
    """Named config ``demo``: the demo dataset, tiny models, CPU, a few epochs, wandb off-line.

    The demo's resources, checkpoints and predictions live inside its dataset root, so the folder keys are given
    relative to ``base_path`` (``{base_path}/resources``): ``with demo base_path=/tmp/demo`` uses that tree's."""
    return dict(
        base_path=str(DEMO_DATASET_PATH),
        resources_path=BASE_PATH_PLACEHOLDER + "/resources",
        trainer=dict(max_epochs=3 if stage == 1 else 2, precision="32", accelerator="cpu", devices=1,
                     check_val_every_n_epoch=1, benchmark=False, default_root_dir="./outputs/demo",
                     log_every_n_steps=5),
        # a barely trained demo model is dragged back by the reference's SSL weight (60-70): smaller SSL weight,
        # no pseudo-label term (iteration 1), a higher CRNN learning rate for the few demo steps
        loss_weights=(0.5, 0.25, 0.12, 0.1, 0.1, 0) if stage == 1 else (12, 3, 0.25, 1, 6, 0),
        optimizer=dict(num_warmup_steps=20, crnn_lr=2e-3) if stage == 1 else dict(num_warmup_steps=10),
        atst_checkpoint=None,  # random init: no backbone file is read
        beats_checkpoint=None,
        atst_frame=dict(pretrained_name=None, **TINY_BACKBONE),
        fpasst=dict(pretrained_name=None, embed_dim=TINY_BACKBONE["embed_dim"], depth=2, num_heads=2),
        beats=dict(pretrained_name=None, **TINY_BACKBONE),
        t4_wrapper=dict(nb_filters=[8, 16, 16, 32, 32, 32, 32], n_RNN_cell=32, embedding_size=64),
        training=dict(batch_sizes=(2, 2, 2, 2, 2), num_workers=0),
        validation=dict(batch_size=8, num_workers=0),
        test=dict(batch_size=8, num_workers=0),
        ssl_loss_warmup_steps=50,
        wandb=dict(offline=True, project="dcase24_task4_demo"),
        model_path=BASE_PATH_PLACEHOLDER + "/pretrained_models",
        **(dict(output_path=BASE_PATH_PLACEHOLDER + "/predictions", preds_path=BASE_PATH_PLACEHOLDER + "/predictions")
           if stage == 2 else {}),
    )


def merge_config(tree: dict, updates: dict) -> dict:
    """Recursively update ``tree`` in place with ``updates`` (as Sacred applies named configs); returns ``tree``."""
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            merge_config(tree[key], value)
        else:
            tree[key] = value
    return tree


def demo_defaults(stage: int) -> dict:
    """``default_config(stage)`` with the ``demo`` named config applied (what ``with demo`` resolves to)."""
    return merge_config(default_config(stage), demo_config(stage))


def resolve_config(stage: int, *updates: dict) -> dict:
    """``default_config(stage)`` updated with each of ``updates`` in turn (named configs, then key=value updates, as
    Sacred applies them), validated: the resolved tree that code outside Sacred (bench, demo, tests) runs on."""
    config = default_config(stage)
    for update in updates:
        merge_config(config, copy.deepcopy(update))
    validate_config(config, stage)
    return config


def ensemble_weight_errors(weights, pretrained_names) -> list[str]:
    """The problems of the stage-2 key ``ensemble_weights`` ([] when it is fine).

    Accepted: None (equal weights), or a list/tuple of finite non-negative numbers, one per ``pretrained_names``
    entry, with a positive sum. Shared by ``validate_config`` and ``ensemble_predictions`` (which can also be
    called without Sacred), so both give the same messages.
    """

    if weights is None:
        return []
    shown = f"ensemble_weights={weights!r}"
    if not isinstance(weights, (list, tuple)):
        return [f"{shown} must be a list of non-negative numbers, one per pretrained_names entry "
                "(e.g. ensemble_weights='(2, 1, 1)'), or None for equal weights"]
    not_numbers = [w for w in weights if isinstance(w, bool) or not isinstance(w, numbers.Real)]
    if not_numbers:
        return [f"{shown}: {not_numbers!r} are not numbers; every weight must be a non-negative number"]
    errors = []
    names = list(pretrained_names or ())
    if len(weights) != len(names):
        errors.append(f"{shown} has {len(weights)} values but pretrained_names={tuple(names)!r} has {len(names)}: "
                      "give one weight per ensemble member")
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        errors.append(f"{shown}: {bad!r} are negative or not finite; every weight must be a finite number >= 0")
    elif weights and sum(weights) <= 0:
        errors.append(f"{shown}: the weights sum to 0; at least one must be positive")
    return errors


def validate_config(config: dict, stage: int, extra_arch_blocks: Mapping[str, type] | None = None) -> None:
    """Raise one ``ConfigError`` listing every unknown key and every malformed value of ``config``.

    ``extra_arch_blocks``: architectures registered beyond the built-in three (``models.registry``), name -> config
    block class; each adds a valid ``arch`` value and a top-level block of that name.
    """
    root = _stage_schema(stage)
    extra = dict(extra_arch_blocks or {})
    if extra:
        fields = [(name, cls, schema.block(cls)) for name, cls in extra.items()]
        root = dataclasses.make_dataclass(f"{root.__name__}WithArchs", fields, bases=(root,))
    errors = schema.problems({k: v for k, v in config.items() if k not in _SACRED_KEYS}, root)
    arch = config.get("arch")
    archs = ARCHS + tuple(extra)
    if arch is not None and arch not in archs:
        errors.append(f"arch={arch!r} is not one of {', '.join(archs)}")
    if "ensemble_weights" in config:
        errors.extend(ensemble_weight_errors(config["ensemble_weights"], config.get("pretrained_names")))
    if errors:
        raise ConfigError(f"invalid ex_stage{stage} config:\n  - " + "\n  - ".join(errors))


# Keys Sacred itself adds to every config.
_SACRED_KEYS = {"seed"}


def require_arch(arch, archs: tuple[str, ...] = ARCHS) -> str:
    """``arch`` is required for every command that builds a model (``archs``: the registered architectures)."""
    if arch not in archs:
        raise ConfigError(f"arch is required: add 'with arch=<{'|'.join(archs)}>' to the command (got {arch!r})")
    return arch
