"""The Lightning run plumbing every training experiment shares (``ex_stage1`` / ``ex_stage2``, ``ex_downstream``).

A run: a folder ``<trainer.default_root_dir>/<wandb.project>/<name>_<time>_<pid>/`` (kept when resuming from its
``checkpoints/last.ckpt``; shared by DDP processes through ``T4_RUN_DIR``), the ``trainer.*`` keys passed to
``pl.Trainer`` (mixed precision falls back to float32 on the CPU), checkpoints (best by a monitored metric,
``last.ckpt`` after every validation and at resume points), fit → load the best weights → test, and
``results.json`` with the metrics. The experiments own only their data, system and callbacks.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from data_util.atomic import atomic_write_text
from helpers.training.resume_points import ResumePoints
from helpers.training.safe_resume import SafeCheckpointIO
from models.checkpoints import safe_load

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last"
RESULTS_FILE = "results.json"  # the test metrics and best checkpoint of a run, next to checkpoints/
RUN_DIR_ENV = "T4_RUN_DIR"  # shared by the DDP processes of one run
CPU_PRECISION = "32"


def plain_config(value):
    """A Sacred config (``ReadOnlyDict`` / ``ReadOnlyList``) as plain dicts, lists and tuples (a deep copy)."""
    if isinstance(value, Mapping):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain_config(v) for v in value)
    if isinstance(value, list):
        return [plain_config(v) for v in value]
    return copy.deepcopy(value)


def loader_kwargs(num_workers: int, seed: int = 0) -> dict:
    """DataLoader options. Each loader draws its workers' base seed from its own generator, not from torch's
    global RNG, so creating a loader (every epoch, after a resume, for validation) never shifts the
    augmentation draws of the training steps."""
    return {"num_workers": num_workers, "persistent_workers": num_workers > 0, "pin_memory": torch.cuda.is_available(),
            "generator": torch.Generator().manual_seed(seed)}


def trainer_kwargs(config: Mapping) -> dict:
    """``trainer.*`` config keys for ``pl.Trainer``; mixed precision falls back to float32 without CUDA."""
    kwargs = dict(config["trainer"])
    accelerator = kwargs.get("accelerator", "auto")  # an open trainer key: absent means Lightning's own default
    on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
    if on_cpu and str(kwargs["precision"]) in ("16-mixed", "16", "16-true", "bf16-true"):
        log.warning("trainer.precision=%s needs a GPU; using %s on the CPU", kwargs["precision"], CPU_PRECISION)
        kwargs["precision"] = CPU_PRECISION
    if on_cpu and kwargs.get("benchmark"):
        kwargs["benchmark"] = False  # cudnn only
    return kwargs


def make_run_dir(config: Mapping, resume_from: str | None, default_name: str | None = None) -> Path:
    """The run folder (shared by all DDP processes through ``T4_RUN_DIR``); a resumed run keeps its folder.
    ``default_name``: the run name when ``wandb.name`` is None (default ``<arch>_stage``)."""
    if resume_from:
        checkpoint = Path(resume_from).resolve()
        if checkpoint.parent.name == "checkpoints":
            return checkpoint.parent.parent
    if os.environ.get(RUN_DIR_ENV) and int(os.environ.get("LOCAL_RANK", "0")) > 0:  # a DDP child process
        return Path(os.environ[RUN_DIR_ENV])
    root = Path(config["trainer"]["default_root_dir"])
    project = config["wandb"]["project"]
    name = config["wandb"]["name"] or default_name or f"{config['arch']}_stage"
    run_dir = (root / project / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}").resolve()
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir


def csv_version(resume_from: str | None) -> str:
    """The CSV logger's version folder: a resumed run writes its metrics next to the first part's (not over them)."""
    return f"resumed_{time.strftime('%Y%m%d-%H%M%S')}" if resume_from else ""


def checkpoint_callbacks(checkpoint_dir: Path, monitor: str, every_n_steps: int | None, mode: str = "max") -> list:
    """Best checkpoint by ``monitor``, ``last.ckpt`` after every validation / epoch, and mid-epoch resume points."""
    return [
        ModelCheckpoint(dirpath=str(checkpoint_dir), filename="best-{epoch}-{step}", monitor=monitor, mode=mode,
                        save_top_k=1),
        # last.ckpt after every validation / epoch: Lightning 2.6's save_last=True only rewrites it when a
        # top-k checkpoint was saved in the same step, which leaves a stale last.ckpt to resume from
        ModelCheckpoint(dirpath=str(checkpoint_dir), filename=LAST_CHECKPOINT, monitor=None, save_top_k=1,
                        enable_version_counter=False),
        ResumePoints(checkpoint_dir / f"{LAST_CHECKPOINT}.ckpt", every_n_steps),
    ]


def build_trainer(config: Mapping, run_dir: Path, loggers: list, callbacks: list,
                  checkpoint_io: SafeCheckpointIO | None = None, *, unused_parameters: bool = False) -> pl.Trainer:
    """``pl.Trainer`` from the ``trainer.*`` keys; every checkpoint it loads goes through ``safe_load``
    (``checkpoint_io``). ``unused_parameters``: some trained parameters take no part in the forward pass (whole
    backbones: ATST's mask token, BEATs' predictor), so ``trainer.strategy=ddp`` must look for them. The
    experiments' data modules shard their training data themselves (``use_distributed_sampler=False``)."""
    kwargs = trainer_kwargs(config)
    kwargs.setdefault("default_root_dir", str(run_dir))
    if unused_parameters and kwargs.get("strategy") == "ddp":
        kwargs["strategy"] = "ddp_find_unused_parameters_true"
    kwargs["plugins"] = [*(kwargs.get("plugins") or []), checkpoint_io or SafeCheckpointIO()]
    return pl.Trainer(**kwargs, logger=loggers, callbacks=callbacks, use_distributed_sampler=False)


def float_metrics(metrics: Mapping) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(("test/", "val/"))}


def fit_and_test(trainer: pl.Trainer, system: pl.LightningModule, data: pl.LightningDataModule, run_dir: Path,
                 resume_from: str | None, evaluate: Callable[[], Mapping] | None = None) -> dict:
    """Fit (resuming from ``resume_from``), load the best checkpoint's weights (else ``last.ckpt``, else the final
    ones), test; returns the last validation's and the test's metrics plus ``best_model_path`` and ``run_dir``.
    ``evaluate``: what replaces ``trainer.test`` on the best weights (returns its metrics)."""
    with warnings.catch_warnings():
        # the data modules restore a sampler's mid-epoch position themselves where they have one
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch")
        trainer.fit(system, datamodule=data, ckpt_path=resume_from, weights_only=True)
    fit_metrics = float_metrics(trainer.callback_metrics)  # the last validation (test replaces them)
    last = run_dir / "checkpoints" / f"{LAST_CHECKPOINT}.ckpt"
    best = trainer.checkpoint_callback.best_model_path or (str(last) if last.is_file() else "")
    if best:
        system.load_state_dict(safe_load(best)["state_dict"])
    else:
        log.warning("no checkpoint was written: testing the final weights")
    if evaluate is None:
        trainer.test(system, datamodule=data)
        tested = float_metrics(trainer.callback_metrics)
    else:
        tested = dict(evaluate())
    return {**fit_metrics, **tested, "best_model_path": str(best), "run_dir": str(run_dir)}


def write_results(run_dir: Path, result: Mapping) -> None:
    """``<run_dir>/results.json``: the command's result (test metrics, best checkpoint), written by rank 0."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        atomic_write_text(run_dir / RESULTS_FILE, json.dumps(dict(result), indent=1, sort_keys=True) + "\n")


__all__ = ["plain_config", "loader_kwargs", "trainer_kwargs", "make_run_dir", "csv_version", "checkpoint_callbacks",
           "build_trainer", "float_metrics",
           "fit_and_test", "write_results", "RESULTS_FILE", "RUN_DIR_ENV",
           "LAST_CHECKPOINT"]
