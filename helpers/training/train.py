"""Training entry points of both Sacred experiments: ``train(config, stage)`` and ``test_checkpoint(...)``.

``train`` builds the data (``T4DataModule``), the student (initialised per stage, see :func:`initialise_student`)
and the :class:`helpers.training.system.SEDSystem`, fits with Lightning (``trainer.*`` config keys pass through), keeps
the best checkpoint by ``val/obj_metric`` and ``last.ckpt``, then tests the best weights on devtest, external
strong val and MAESTRO dev and returns the metrics. ``ckpt_path`` in the config resumes from a Lightning
checkpoint (e.g. ``.../checkpoints/last.ckpt``) with optimizer, scheduler, EMA teacher, sampler position and
RNG state.

Layout of a run: ``<trainer.default_root_dir>/<wandb.project>/<run name>/`` holding ``checkpoints/``
(``best-*.ckpt``, ``last.ckpt``), ``metrics.csv``, ``codecarbon/`` and the wandb folder.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader

import configs
from data_util.datasets import (
    TRAIN_SET_NAMES,
    build_eval_set,
    build_train_sets,
)
from data_util.preflight import check_run_inputs, config_value
from data_util.prediction_files import resolve_pseudo_label_dir
from data_util.sampler import MultiSetBatchSampler
from helpers.training.run_logging import (
    ComplexityCallback,
    EnergyCallback,
    finish_loggers,
    make_loggers,
    run_metadata,
)
from helpers.training.runner import (  # noqa: F401 (RUN_DIR_ENV, trainer_kwargs, plain_config: re-exported)
    RUN_DIR_ENV,
    build_trainer,
    checkpoint_callbacks,
    csv_version,
    fit_and_test,
    float_metrics,
    loader_kwargs,
    make_run_dir,
    plain_config,
    trainer_kwargs,
    write_results,
)
from helpers.training.safe_resume import SafeCheckpointIO, check_resume_checkpoint
from helpers.training.system import SEDSystem
from helpers.training.validation import TEST_SETS, VAL_SETS, load_eval_sets
from models.checkpoints import load_pretrained_backbone
from models.factory import build_model
from models.loading import load_sed_checkpoint, resolve_checkpoint
from models.registry import arch_names, arch_spec, extra_arch_blocks

log = logging.getLogger(__name__)

MONITOR = "val/obj_metric"


def check_config(config: Mapping, stage: int) -> None:
    """Every key and value (``configs.validate_config``, registered architectures included) and a known ``arch``,
    before anything is created: the same check Sacred's config hook runs, for callers outside Sacred."""
    configs.validate_config(dict(config), stage, extra_arch_blocks())
    configs.require_arch(config["arch"], arch_names())


# ------------------------------------------------------------------------------------------------ paths
def pseudo_label_dir(config: Mapping) -> Path | None:
    """Folder of the pseudo-label files, or None when the pseudo-label loss is off (weight 0) or disabled."""
    if float(config["loss_weights"][5]) <= 0 or not config["training"]["use_pseudo_labels"]:
        return None
    return resolve_pseudo_label_dir(config)


# ------------------------------------------------------------------------------------------------ pre-flight
def start_checkpoints(config: Mapping) -> dict[str, str]:
    """``{config key: name or path}`` of the checkpoint file a run initialises its model from (see
    :func:`initialise_student`): ``t4_wrapper.model_init_id``, else the backbone file, else nothing."""
    init_id = config["t4_wrapper"]["model_init_id"]
    if init_id:
        return {"t4_wrapper.model_init_id": init_id}
    key = backbone_checkpoint_key(config)
    return {key: config_value(config, key)} if key else {}


def backbone_checkpoint_key(config: Mapping) -> str | None:
    """The config key naming the backbone file: ``<arch>.pretrained_name``, else the arch's backbone-only file
    (``atst_checkpoint`` / ``beats_checkpoint``); None when neither is set (random init)."""
    arch = config["arch"]
    if config[arch]["pretrained_name"]:
        return f"{arch}.pretrained_name"
    ssl_key = arch_spec(arch).ssl_checkpoint_key  # the reference's atst_checkpoint / beats_checkpoint
    if ssl_key is not None and config[ssl_key]:
        return ssl_key
    return None


def preflight(config: Mapping, stage: int, *, training: bool = True, ckpt_path=None):
    """Check every input of a run before anything is built or written (``data_util.preflight``): the sets it
    trains on (``training``) and evaluates, pseudo-labels, and the checkpoints it starts from or tests."""
    checkpoints = start_checkpoints(config) if training else {}
    if ckpt_path:
        checkpoints["ckpt_path"] = ckpt_path
    eval_sets = (set(VAL_SETS) | set(TEST_SETS)) if training else set(TEST_SETS)
    return check_run_inputs(config, stage, eval_sets=eval_sets, training=training, checkpoints=checkpoints)


# ------------------------------------------------------------------------------------------------ model
def initialise_student(config: Mapping, stage: int) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(student, teacher or None) for ``stage``.

    ``t4_wrapper.model_init_id`` (a name in ``resources/pretrained_models`` with or without ``.ckpt``, or a
    path): the student from the checkpoint's ``student`` entry and the teacher from its ``model_init_mode``
    entry (reference: default "student"). Otherwise the transformer (and AudioSet head) from
    ``<arch>.pretrained_name``, or, when that is None, from the arch's backbone-only file
    (``atst_checkpoint`` / ``beats_checkpoint``) if one is set; both None = random init (demo, tests).
    """
    arch = config["arch"]
    student = build_model(config)
    wrapper = config["t4_wrapper"]
    init_id = wrapper["model_init_id"]
    if init_id:
        path = resolve_checkpoint(init_id, configs.model_dir(config))
        load_sed_checkpoint(student, path, mode="student", config=config)
        teacher = build_model(config)
        load_sed_checkpoint(teacher, path, mode=wrapper["model_init_mode"])
        return student, teacher
    if stage == 2:
        log.warning("stage 2 without t4_wrapper.model_init_id: starting from the backbone weights, not from stage 1")
    key = backbone_checkpoint_key(config)
    name = config_value(config, key) if key else None
    if name:
        info = load_pretrained_backbone(student, resolve_checkpoint(name, configs.model_dir(config)), arch)
        log.info("backbone initialised from %s (%s)", name, info.source_format)
    else:
        log.warning("%s: no pretrained weights configured: the transformer starts from random weights", arch)
    return student, None


# ------------------------------------------------------------------------------------------------ data
class SamplerStateDataModule(pl.LightningDataModule):
    """A data module whose resumable batch sampler (``self.sampler``: ``state_dict`` / ``load_state_dict`` /
    ``set_epoch``) is part of the checkpoint, so a run resumed mid-epoch continues with the same batches.
    Subclasses create ``self.sampler`` in ``train_dataloader`` and call :meth:`_restore_pending_state` after."""

    def __init__(self):
        super().__init__()
        self.sampler = None
        self._pending_sampler_state: dict | None = None

    def _restore_pending_state(self) -> None:
        if self._pending_sampler_state is not None:
            self.sampler.load_state_dict(self._pending_sampler_state)
            self._pending_sampler_state = None

    def state_dict(self) -> dict:
        """The sampler's position; a finished epoch (all batches or ``limit_train_batches``) is saved as the
        start of the next one, so that resuming does not depend on when Lightning calls ``set_epoch``.

        The count is of *processed* batches: a checkpoint written in ``on_train_batch_end`` (mid-epoch resume
        points) has processed batch n but not yet marked it completed; Lightning completes it on restore."""
        if self.sampler is None:
            return {}
        state = self.sampler.state_dict()
        if self.trainer is not None:
            done = int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)
            epoch_batches = min(len(self.sampler), self.trainer.num_training_batches)
            state = self.sampler.state_dict(batches_done=min(done, len(self.sampler)))
            if done >= epoch_batches:
                state.update(epoch=state["epoch"] + 1, batches_done=0)
        return {"sampler": state, "world_size": self.sampler.world_size}

    def load_state_dict(self, state: dict) -> None:
        sampler_state = state.get("sampler")
        if sampler_state is None:
            return
        if self.sampler is not None:
            self.sampler.load_state_dict(sampler_state)
        else:
            self._pending_sampler_state = sampler_state


class T4DataModule(SamplerStateDataModule):
    """Training batches from the multi-set sampler; validation and test sets as single concatenated loaders.

    The sampler shards by the trainer's rank (Lightning's distributed sampler must be off:
    ``use_distributed_sampler=False``); its position is part of the checkpoint (``state_dict``).
    """

    def __init__(self, config: Mapping, stage: int):
        super().__init__()
        self.config = config
        self.stage = stage
        self.root, self.resources = configs.dataset_root(config), configs.resources_dir(config)
        self.batch_sizes = tuple(int(b) for b in config["training"]["batch_sizes"])
        self._train_set = None

    def sub_batch_slices(self) -> dict[str, slice]:
        bounds = [0]
        for size in self.batch_sizes:
            bounds.append(bounds[-1] + size)
        return {name: slice(a, b) for name, a, b in zip(TRAIN_SET_NAMES, bounds[:-1], bounds[1:])}

    def _eval_set(self, name: str):
        v = self.config["validation"]
        return build_eval_set(name, self.root, self.resources, weak_split=v["weak_split"],
                              maestro_split=v["maestro_split"], seed=v["seed"],
                              skip_unreadable=bool(self.config["training"]["skip_unreadable"]))

    def train_dataloader(self) -> DataLoader:
        if self._train_set is None:
            training = {k: v for k, v in self.config["training"].items() if k not in ("sample_rate", "audio_length")}
            sets = build_train_sets(self.root, self.resources, training, pseudo_label_dir(self.config))
            self._train_set, self.sampler = MultiSetBatchSampler.for_sets(
                sets, self.batch_sizes, seed=int(self.config["training"]["seed"]),
                rank=self.trainer.global_rank if self.trainer else 0,
                world_size=self.trainer.world_size if self.trainer else 1, seeded=True)
            self._restore_pending_state()
        workers = int(self.config["training"]["num_workers"])
        return DataLoader(self._train_set, batch_sampler=self.sampler,
                          **loader_kwargs(workers, int(self.config["training"]["seed"])))

    def _concat_loader(self, names, block: str) -> DataLoader:
        cfg = self.config[block]
        dataset = ConcatDataset([self._eval_set(n) for n in names])
        return DataLoader(dataset, batch_size=int(cfg["batch_size"]), shuffle=False,
                          **loader_kwargs(int(cfg["num_workers"])))

    def val_dataloader(self) -> DataLoader:
        return self._concat_loader(VAL_SETS, "validation")

    def test_dataloader(self) -> DataLoader:
        return self._concat_loader(TEST_SETS, "test")


class SamplerEpoch(pl.Callback):
    """Selects the sampler's permutations of each epoch (``set_epoch``) before its iterator is created.

    Lightning 2.6 calls ``set_epoch`` on a DataLoader's ``sampler`` only, not on a custom ``batch_sampler``:
    without this every epoch would repeat the first epoch's batches.
    """

    def on_train_epoch_start(self, trainer, pl_module):
        sampler = getattr(trainer.datamodule, "sampler", None)
        if sampler is not None:
            sampler.set_epoch(trainer.current_epoch)


# ------------------------------------------------------------------------------------------------ trainer
def _build_trainer(config: Mapping, stage: int, run_dir: Path, loggers: list,
                   checkpoint_io: SafeCheckpointIO | None = None) -> pl.Trainer:
    """The trainer of a run; every checkpoint it loads goes through ``safe_load`` (``checkpoint_io``)."""
    callbacks = [
        *checkpoint_callbacks(run_dir / "checkpoints", MONITOR, config["training"]["checkpoint_every_n_steps"]),
        SamplerEpoch(),
        EnergyCallback(run_dir / "codecarbon", stage),
        ComplexityCallback(),
    ]
    # stage 2 trains whole backbones, some of whose parameters take no part in the SED forward pass
    # (e.g. ATST's mask token, BEATs' predictor): DDP must look for unused parameters
    return build_trainer(config, run_dir, loggers, callbacks, checkpoint_io, unused_parameters=stage == 2)


def train(config: dict, stage: int) -> dict:
    """Train stage ``stage`` (1 or 2) with the resolved experiment ``config``; test the best checkpoint.

    Returns ``{metric name: value}`` of the test run (``test/student/devtest/psds1``, ...,
    ``test/student/rank_score``) plus ``best_model_path`` and ``run_dir``.
    """
    config = plain_config(config)
    check_config(config, stage)
    resume_from = config["ckpt_path"]
    # Everything the run reads is checked, and its checkpoints are loaded, before the run folder exists.
    preflight(config, stage, ckpt_path=resume_from)
    checkpoint_io = SafeCheckpointIO()
    if resume_from:
        resume_from = str(resolve_checkpoint(resume_from, configs.model_dir(config)))
        checkpoint, _ = check_resume_checkpoint(config, resume_from)
        checkpoint_io = SafeCheckpointIO(preloaded={resume_from: checkpoint})
    pl.seed_everything(int(config.get("seed", config["training"]["seed"])), workers=True)  # Sacred adds "seed"
    data = T4DataModule(config, stage)
    student, teacher = initialise_student(config, stage)
    eval_sets = load_eval_sets(config, set(VAL_SETS) | set(TEST_SETS))
    run_dir = make_run_dir(config, resume_from)
    run_info = {**run_metadata(stage), "run_dir": str(run_dir)}
    system = SEDSystem(config, stage, student, teacher=teacher, sub_batch_slices=data.sub_batch_slices(),
                       eval_sets=eval_sets, run_info=run_info)
    loggers = make_loggers(config, run_dir, run_info, csv_version=csv_version(resume_from))
    try:
        trainer = _build_trainer(config, stage, run_dir, loggers, checkpoint_io)
        result = fit_and_test(trainer, system, data, run_dir, resume_from)
    finally:
        finish_loggers(loggers)
    write_results(run_dir, result)
    return result


def test_checkpoint(config: dict, stage: int, ckpt_path: str) -> dict:
    """Test the student and teacher of a stage checkpoint (ours or the released ones) on the test sets."""
    config = plain_config(config)
    check_config(config, stage)
    preflight(config, stage, training=False, ckpt_path=ckpt_path)
    path = resolve_checkpoint(ckpt_path, configs.model_dir(config))
    student, teacher = build_model(config), build_model(config)
    load_sed_checkpoint(student, path, mode="student", config=config)
    load_sed_checkpoint(teacher, path, mode="teacher")
    eval_sets = load_eval_sets(config, TEST_SETS)
    run_dir = make_run_dir(config, None)
    run_info = {**run_metadata(stage), "run_dir": str(run_dir), "tested_checkpoint": str(path)}
    system = SEDSystem(config, stage, student, teacher=teacher, eval_sets=eval_sets, run_info=run_info)
    data = T4DataModule(config, stage)
    loggers = make_loggers(config, run_dir, run_info)
    try:
        trainer = _build_trainer(config, stage, run_dir, loggers)
        trainer.test(system, datamodule=data)
        result = float_metrics(trainer.callback_metrics)
    finally:
        finish_loggers(loggers)
    result.update(tested_checkpoint=str(path), run_dir=str(run_dir))
    write_results(run_dir, result)
    return result


__all__ = ["train", "test_checkpoint", "plain_config", "initialise_student", "T4DataModule", "SamplerStateDataModule",
           "SamplerEpoch",
           "load_eval_sets", "trainer_kwargs", "preflight", "start_checkpoints"]
