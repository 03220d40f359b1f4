"""Downstream fine-tuning on a HEAR-format event task: a pre-trained transformer + a linear frame head.

The method of PretrainedSED's DCASE 2016 Task 2 example (fschmid56/PretrainedSED ``ex_dcase2016task2.py``; paper
arXiv 2409.09546), on this project's backbones, data and run plumbing:

- model: ``models.frame_embedder.FrameClassifier`` (front-end → transformer → frames every ``frames.hop_s`` → one
  linear layer), the transformer initialised from ``pretrained_name`` (any checkpoint ``models.loading.read_backbone``
  reads: stage, AudioSet-strong, PretrainedSED, BEATs, our downstream runs);
- data: random frame-aligned crops of ``frames.window_s`` from the training splits, waveform mixing
  (``training.wavmix_p``), mixup of the batch's front-end features (``training.mixup_p``; ``helpers.training.augment``),
  binary cross-entropy on the frame logits;
- optimizer: AdamW (or Adam) over the head at ``max_lr`` and the transformer's blocks at ``transformer_lr ·
  lr_decay^(depth - k)`` (``models.param_groups.layer_decay_groups``), a per-step schedule with ``warmup_steps``
  of linear warm-up (``helpers.training.optim``); ``transformer_frozen`` trains the head alone (linear probe) with the
  transformer in eval mode and without gradients;
- validation / test: whole files in windows of ``frames.window_s`` every ``evaluation.window_hop_s``, overlap-added,
  post-processed and scored as HEAR does (``helpers.evaluation.hear``); the best checkpoint by
  ``val/event_onset_200ms_fms`` is tested and validated again, and both rows are returned.

Run plumbing (run folder, checkpoints, resume from ``last.ckpt``, loggers, ``results.json``):
``helpers.training.runner``, shared with the DCASE Task 4 stages.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

import configs
import configs.downstream as downstream_config
from data_util.atomic import atomic_write_text
from data_util.hear import HearCropDataset, HearFileDataset, HearTask, HearWavmix, read_task
from helpers.evaluation.hear import PRIMARY_METRIC, PostProcessing, events_from_frames, sed_eval_scores
from helpers.training import augment
from helpers.training.optim import build_optimizer, build_scheduler, learning_rates
from helpers.training.resume_points import restore_rng_state, rng_state
from helpers.training.run_logging import EnergyCallback, finish_loggers, make_loggers, run_metadata
from helpers.training.runner import (
    build_trainer,
    checkpoint_callbacks,
    csv_version,
    fit_and_test,
    float_metrics,
    loader_kwargs,
    make_run_dir,
    plain_config,
    write_results,
)
from helpers.training.safe_resume import TRAINING_ENTRIES, SafeCheckpointIO
from models.checkpoints import CheckpointError, safe_load
from models.factory import build_frame_embedder
from models.frame_embedder import FrameClassifier, frame_centres_ms
from models.loading import load_backbone_weights, read_backbone, resolve_checkpoint
from models.param_groups import layer_decay_groups
from models.registry import arch_names, extra_arch_blocks

log = logging.getLogger(__name__)

MONITOR = f"val/{PRIMARY_METRIC}"
BACKBONE_PREFIX = "model.embedder.backbone."  # parameter names inside DownstreamSystem
EVENTS_FILE = "{split}_events.json"  # predicted events of the best checkpoint, HEAR format, in the run folder
STAGES = {"val": "valid_splits", "test": "test_splits"}
PATH_KEYS = ("task_path", "pretrained_name", "model_path", "ckpt_path")  # never URLs: nothing is downloaded


def check_config(config: Mapping) -> None:
    """Every key and value, and the keys every command needs (``arch``, ``task_path``), before anything is created."""
    downstream_config.validate(dict(config), extra_arch_blocks())
    downstream_config.require_run_keys(dict(config), arch_names())
    for key in PATH_KEYS:
        configs.refuse_url(config.get(key), key)


def read_config_task(config: Mapping) -> HearTask:
    splits = [*config["train_splits"], *config["valid_splits"], *config["test_splits"]]
    return read_task(config["task_path"], splits)


# ------------------------------------------------------------------------------------------------ model
def build_classifier(config: Mapping, n_classes: int) -> FrameClassifier:
    frames = config["frames"]
    embedder = build_frame_embedder(config, hop_s=frames["hop_s"], window_s=frames["window_s"],
                                    token_pooling=frames["token_pooling"])
    return FrameClassifier(embedder, n_classes)


def initialise_backbone(model: FrameClassifier, config: Mapping) -> None:
    """The transformer's weights from ``pretrained_name`` (sizes cross-checked with the config), else random."""
    name = config["pretrained_name"]
    if not name:
        log.warning("%s: pretrained_name is None: the transformer starts from random weights", config["arch"])
        return
    weights = read_backbone(name, arch=config["arch"], mode=config["checkpoint_mode"],
                            model_dir=configs.model_dir(config))
    load_backbone_weights(model.embedder.backbone, weights, config)


# ------------------------------------------------------------------------------------------------ data
class HearDataModule(pl.LightningDataModule):
    """Training crops (shuffled; sharded by rank in DDP) and whole validation / test files (one file per item; every
    rank scores every file, so metrics need no gathering)."""

    def __init__(self, config: Mapping, task: HearTask):
        super().__init__()
        self.config, self.task = config, task

    def train_dataloader(self) -> DataLoader:
        cfg, frames = self.config["training"], self.config["frames"]
        dataset = HearCropDataset(self.task.select(self.config["train_splits"]), self.task.labels,
                                  crop_s=frames["window_s"], hop_s=frames["hop_s"], sample_rate=self.task.sample_rate)
        if cfg["wavmix_p"] > 0:
            dataset = HearWavmix(dataset, cfg["wavmix_p"])
        options = loader_kwargs(int(cfg["num_workers"]), int(cfg["seed"]))
        world_size = self.trainer.world_size if self.trainer else 1
        if world_size > 1:
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=self.trainer.global_rank,
                                         shuffle=True, seed=int(cfg["seed"]))
            return DataLoader(dataset, batch_size=int(cfg["batch_size"]), sampler=sampler, **options)
        return DataLoader(dataset, batch_size=int(cfg["batch_size"]), shuffle=True, **options)

    def _files(self, stage: str) -> DataLoader:
        dataset = HearFileDataset(self.task.select(self.config[STAGES[stage]]), self.task.labels,
                                  hop_s=self.config["frames"]["hop_s"], sample_rate=self.task.sample_rate)
        return DataLoader(dataset, batch_size=None, shuffle=False,
                          **loader_kwargs(int(self.config["evaluation"]["num_workers"])))

    def val_dataloader(self) -> DataLoader:
        return self._files("val")

    def test_dataloader(self) -> DataLoader:
        return self._files("test")


# ------------------------------------------------------------------------------------------------ the system
class DownstreamSystem(pl.LightningModule):
    """Fine-tuning (or linear probing) of a ``FrameClassifier``; HEAR scores at validation and test."""

    def __init__(self, config: Mapping[str, Any], model: FrameClassifier, task: HearTask,
                 run_info: Mapping[str, Any] | None = None):
        super().__init__()
        self.config = copy.deepcopy(dict(config))
        self.model = model
        self.labels = task.labels
        self.reference = {stage: task.reference_events(self.config[key]) for stage, key in STAGES.items()}
        evaluation = self.config["evaluation"]
        self.post = PostProcessing(median_filter_ms=evaluation["median_filter_ms"],
                                   min_duration_ms=evaluation["min_duration_ms"], threshold=evaluation["threshold"],
                                   threshold_on=evaluation["threshold_on"])
        self.frozen = bool(self.config["transformer_frozen"])
        self.loss = nn.BCEWithLogitsLoss()
        self.run_info = dict(run_info or {})
        self.events: dict[str, dict[str, list[dict]]] = {}  # stage -> the last scored predictions
        self._collect()
        # what trains is fixed now, before DDP wraps the model (it registers every parameter requiring grad)
        for parameter in self.model.embedder.parameters():
            parameter.requires_grad_(not self.frozen)

    def _collect(self) -> None:
        self._logits: dict[str, np.ndarray] = {}
        self._loss_sum, self._frames = 0.0, 0

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        if self.frozen:
            self.model.embedder.eval()  # no dropout in the frozen transformer (PretrainedSED: model.eval())
        audio, targets = batch["audio"], batch["targets"].float()  # (B, S), (B, C, F)
        features = self.model.embedder.features(audio)
        if augment.should_apply(float(self.config["training"]["mixup_p"])):
            mixed = augment.mixup([features], [targets])
            features, targets = mixed.features[0], mixed.targets[0]
        with torch.set_grad_enabled(not self.frozen):
            frames = self.model.embedder.frames_from_features(features)  # (B, F, D)
        logits = self.model.head(frames)  # (B, F, C)
        loss = self.loss(logits, targets.transpose(1, 2))
        self.log("train/loss", loss, prog_bar=True, batch_size=audio.shape[0])
        self.log("train/epoch", float(self.current_epoch), batch_size=audio.shape[0])
        if self._trainer is not None and self.trainer.optimizers:
            for name, lr in learning_rates(self.trainer.optimizers[0]).items():
                if name in ("head", "pt0"):
                    self.log(f"train/{name}_lr", lr, batch_size=audio.shape[0])
        return loss

    def configure_optimizers(self):
        cfg = self.config["optimizer"]
        groups = [{"name": "head", "params": list(self.model.head.parameters()), "lr": cfg["max_lr"],
                   "weight_decay": cfg["weight_decay"]}]
        if not self.frozen:
            groups += layer_decay_groups(self.model.embedder.backbone, lr=cfg["transformer_lr"] or cfg["max_lr"],
                                         decay=cfg["lr_decay"], weight_decay=cfg["weight_decay"],
                                         prefix=BACKBONE_PREFIX)
        optimizer = build_optimizer(groups, adamw=bool(cfg["adamw"]), weight_decay=float(cfg["weight_decay"]),
                                    betas=cfg["betas"])
        steps = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, steps, schedule_mode=cfg["schedule_mode"],
                                    num_warmup_steps=int(cfg["warmup_steps"]), gamma=float(cfg["gamma"]),
                                    lr_end=float(cfg["lr_end"]))
        log.info("optimizer: %d groups, %d optimizer steps, %d warm-up steps", len(groups), steps, cfg["warmup_steps"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ validation and test
    def _score_step(self, batch: Mapping) -> None:
        evaluation = self.config["evaluation"]
        logits = self.model(batch["audio"][None].float(), window_hop_s=evaluation["window_hop_s"],
                            batch_size=int(evaluation["batch_size"]))[0]  # (T, C)
        targets = batch["targets"].float().T.to(logits.device)  # (T, C)
        self._loss_sum += float(nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum"))
        self._frames += targets.numel()
        self._logits[batch["filename"]] = logits.cpu().numpy()

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        self._score_step(batch)

    def test_step(self, batch: Mapping, batch_idx: int) -> None:
        self._score_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._collect()

    def on_test_epoch_start(self) -> None:
        self._collect()

    def _score(self, stage: str) -> None:
        hop_s = self.config["frames"]["hop_s"]
        events = {name: events_from_frames(logits, frame_centres_ms(len(logits), hop_s).numpy(), self.labels,
                                           self.post) for name, logits in self._logits.items()}
        scores = sed_eval_scores(events, self.reference[stage], self.labels)
        self.events[stage] = events
        self.log_dict({f"{stage}/{name}": value for name, value in scores.items()})
        self.log(f"{stage}/loss", self._loss_sum / max(1, self._frames))
        self._collect()

    def on_validation_epoch_end(self) -> None:
        if self._trainer is not None and self.trainer.sanity_checking:
            self._collect()
            return
        self._score("val")

    def on_test_epoch_end(self) -> None:
        self._score("test")

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["config"] = self.config  # models.loading reads the model's settings from here
        checkpoint["labels"] = list(self.labels)
        checkpoint["run_info"] = self.run_info
        checkpoint["rng_state"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_rng_state(checkpoint.get("rng_state"))


# ------------------------------------------------------------------------------------------------ entry points
def _build_trainer(config: Mapping, run_dir: Path, loggers: list,
                   checkpoint_io: SafeCheckpointIO | None = None) -> pl.Trainer:
    callbacks = [*checkpoint_callbacks(run_dir / "checkpoints", MONITOR, config["training"]["checkpoint_every_n_steps"]),
                 EnergyCallback(run_dir / "codecarbon", 0, project="HEAR downstream")]
    # a fine-tuned backbone has parameters outside the forward pass (ATST's mask token, BEATs' predictor)
    return build_trainer(config, run_dir, loggers, callbacks, checkpoint_io,
                         unused_parameters=not config["transformer_frozen"])


def read_downstream_checkpoint(path: Path, purpose: str, *, training: bool = False) -> dict:
    """A checkpoint of an ``ex_downstream`` run, read safely; ``training``: it must hold what resuming needs."""
    checkpoint = safe_load(path)
    stored = checkpoint.get("config")
    if not isinstance(stored, Mapping) or "frames" not in stored or "state_dict" not in checkpoint:
        raise CheckpointError(f"{purpose}={path} is not an ex_downstream checkpoint (no stored downstream config); "
                              "use the checkpoints/best-*.ckpt or last.ckpt of an ex_downstream run")
    absent = [entry for entry in TRAINING_ENTRIES if entry not in checkpoint]
    if training and absent:
        raise CheckpointError(f"{purpose}={path}: not a training checkpoint to resume (no {' / '.join(absent)})")
    return checkpoint


def _resume_io(config: Mapping, resume_from: str | None) -> tuple[str | None, SafeCheckpointIO]:
    """The resume file's path and a checkpoint plugin that hands Lightning the checked file (read once, safely)."""
    if not resume_from:
        return None, SafeCheckpointIO()
    path = resolve_checkpoint(resume_from, configs.model_dir(config))
    checkpoint = read_downstream_checkpoint(path, "ckpt_path", training=True)
    held = checkpoint["config"].get("arch")
    if held != config["arch"]:
        raise CheckpointError(f"ckpt_path={path} holds a {held} model, but arch={config['arch']}: resume with "
                              f"arch={held} (and the config the run was started with)")
    return str(path), SafeCheckpointIO(preloaded={str(path): checkpoint})


def _write_events(run_dir: Path, system: DownstreamSystem) -> None:
    if system.global_rank != 0:
        return
    for stage, events in system.events.items():
        atomic_write_text(run_dir / EVENTS_FILE.format(split=stage), json.dumps(events, indent=1) + "\n")


def _validate_and_test(trainer: pl.Trainer, system: DownstreamSystem, data: HearDataModule) -> dict:
    trainer.validate(system, datamodule=data)
    result = float_metrics(trainer.callback_metrics)
    trainer.test(system, datamodule=data)
    return {**result, **float_metrics(trainer.callback_metrics)}


def train(config: Mapping) -> dict:
    """Fine-tune on the task of ``config`` (resolved ``ex_downstream`` config), then validate and test the best
    checkpoint. Returns ``val/<metric>`` and ``test/<metric>`` of the best checkpoint, ``best_model_path``,
    ``run_dir``; the predicted events are in ``<run_dir>/{val,test}_events.json``."""
    config = plain_config(config)
    check_config(config)
    task = read_config_task(config)
    resume_from, checkpoint_io = _resume_io(config, config["ckpt_path"])
    pl.seed_everything(int(config.get("seed", config["training"]["seed"])), workers=True)  # Sacred adds "seed"
    model = build_classifier(config, len(task.labels))
    initialise_backbone(model, config)  # a checkpoint that does not fit fails before the run folder is named
    task_name = str(task.metadata.get("task_name", task.path.name))
    run_dir = make_run_dir(config, resume_from, default_name=f"{config['arch']}_{task_name}")
    run_info = {**run_metadata("downstream"), "run_dir": str(run_dir), "task": str(task.path)}
    system = DownstreamSystem(config, model, task, run_info)
    data = HearDataModule(config, task)
    loggers = make_loggers(config, run_dir, run_info, csv_version=csv_version(resume_from))
    try:
        trainer = _build_trainer(config, run_dir, loggers, checkpoint_io)
        # the best checkpoint is validated again and tested: the table shows both of its rows
        result = fit_and_test(trainer, system, data, run_dir, resume_from,
                              evaluate=lambda: _validate_and_test(trainer, system, data))
        _write_events(run_dir, system)
    finally:
        finish_loggers(loggers)
    write_results(run_dir, result)
    return result


def _checkpoint_settings(config: dict, checkpoint: Mapping, path: Path) -> dict:
    """``config`` with the model settings (arch, its block, front-end, frames) of a downstream checkpoint."""
    stored = checkpoint["config"]
    if config.get("arch") not in (None, stored["arch"]):
        raise CheckpointError(f"{path} holds a {stored['arch']} model, but arch={config['arch']!r}")
    config = dict(config, arch=stored["arch"])
    for block in (stored["arch"], "passt_mel", "frames"):
        config[block] = copy.deepcopy(dict(stored[block]))
    return config


def test_checkpoint(config: Mapping) -> dict:
    """Validate and test a downstream checkpoint (``ckpt_path``) on the task's splits; returns the scores."""
    config = plain_config(config)
    configs.refuse_url(config["ckpt_path"], "ckpt_path")
    path = resolve_checkpoint(config["ckpt_path"], configs.model_dir(config))
    checkpoint = read_downstream_checkpoint(path, "ckpt_path")
    config = _checkpoint_settings(config, checkpoint, path)
    check_config(config)
    task = read_config_task(config)
    if tuple(checkpoint.get("labels", ())) != task.labels:
        raise CheckpointError(f"{path} was trained on the labels {checkpoint.get('labels')}, but {task.path} has "
                              f"{list(task.labels)}: test it on the task it was trained on")
    model = build_classifier(config, len(task.labels))
    run_dir = make_run_dir(config, None, default_name=f"{config['arch']}_test")
    run_info = {**run_metadata("downstream"), "run_dir": str(run_dir), "tested_checkpoint": str(path)}
    system = DownstreamSystem(config, model, task, run_info)
    system.load_state_dict(checkpoint["state_dict"])
    data = HearDataModule(config, task)
    loggers = make_loggers(config, run_dir, run_info)
    try:
        result = _validate_and_test(_build_trainer(config, run_dir, loggers), system, data)
        _write_events(run_dir, system)
    finally:
        finish_loggers(loggers)
    result.update(tested_checkpoint=str(path), run_dir=str(run_dir))
    write_results(run_dir, result)
    return result


def score_rows(result: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{"valid": scores, "test": scores}`` of a result (for ``helpers.evaluation.hear.format_table``)."""
    rows = {}
    for stage, title in (("val", "valid"), ("test", "test")):
        scores = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith(f"{stage}/")}
        if scores:
            rows[title] = scores
    return rows


__all__ = ["train", "test_checkpoint", "DownstreamSystem", "HearDataModule", "build_classifier",
           "initialise_backbone", "score_rows", "check_config", "MONITOR"]
