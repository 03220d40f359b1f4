"""Entry points of ``ex_audioset_strong``: train, evaluate, export. Data module and trainer plumbing.

``train(config)`` builds the data (:class:`ASStrongDataModule`: the prepared dataset's two training splits drawn
by :class:`data_util.sampler.WeightedEpochBatchSampler`, the eval split for validation), the model (start weights
from ``<arch>.pretrained_name``, else the arch's ``atst_checkpoint`` / ``beats_checkpoint``), the
:class:`helpers.training.audioset_strong.ASStrongSystem`, and fits with Lightning like the T4 stages do
(``helpers.training.train``: ``trainer.*`` keys pass through, run folder, wandb + CSV loggers, CodeCarbon and THOP,
``best-*.ckpt`` by ``val/psds1_macro_averaged``, ``last.ckpt``, mid-epoch resume points, ``ckpt_path=`` resumes, DDP
with the sampler sharded per rank). At the end the final weights are exported in PretrainedSED's layout to
``<run>/<arch>_as_strong.pt`` (+ ``.json``), the file stage 1 starts from (``<arch>.pretrained_name=<file>``).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Mapping

import pytorch_lightning as pl
from torch.utils.data import DataLoader

import configs
import configs.audioset_strong as as_config
from data_util.audioset_strong import (
    EVAL_SPLIT,
    TRAIN_SPLITS,
    AudioSetStrongDataset,
    ClassList,
    WavMixDataset,
    cached_sample_weights,
    ground_truth,
    load_dataset_dict,
    read_durations_csv,
    train_classes,
)
from data_util.kd_logits import StrongKDLogits, WeakKDLogits
from data_util.sampler import SeededSamples, WeightedEpochBatchSampler
from helpers.training.audioset_strong import MONITOR, ASStrongSystem
from helpers.training.run_logging import ComplexityCallback, EnergyCallback, finish_loggers, make_loggers, run_metadata
from helpers.training.runner import (
    build_trainer,
    checkpoint_callbacks,
    csv_version,
    loader_kwargs,
    make_run_dir,
    plain_config,
    write_results,
)
from helpers.training.train import SamplerEpoch, SamplerStateDataModule
from models.audioset_strong import (
    ASStrongModel,
    build_as_strong_model,
    from_pretrainedsed,
    init_from_pretrained,
    lightning_model_state,
    normalise_pretrainedsed,
    save_pretrainedsed,
)
from models.checkpoints import CheckpointError, check_state_dict, safe_load
from models.loading import resolve_checkpoint
from models.registry import arch_names, arch_spec, extra_arch_blocks

log = logging.getLogger(__name__)

EXPORT_SUFFIX = "_as_strong.pt"
ENERGY_PROJECT = "AudioSet-strong pre-training"


def check_config(config: Mapping) -> None:
    """Keys, values and settings (as Sacred's config hook) and a known ``arch``, before anything is created."""
    as_config.validate_config(dict(config), extra_arch_blocks())
    configs.require_arch(config["arch"], arch_names())


def class_list(config: Mapping) -> ClassList:
    return train_classes(config["training_strong"]["classes"])


# ------------------------------------------------------------------------------------------------ data
def eval_labels(config: Mapping, dataset_dict) -> tuple[dict, dict]:
    """(ground truth, durations) of the eval split: events of every class; durations from
    ``validation_strong.durations`` when given, else the dataset's ``duration`` column."""
    rows = dataset_dict[EVAL_SPLIT]
    truth = ground_truth(rows)
    listed = config["validation_strong"]["durations"]
    if listed:
        return truth, read_durations_csv(listed)
    if "duration" not in rows.column_names:
        raise ValueError("the prepared dataset has no durations (built by another tool?): set "
                         "validation_strong.durations=<eval_durations.csv>")
    return truth, {name: float(d) for name, d in zip(truth, rows["duration"])}


class ASStrongDataModule(SamplerStateDataModule):
    """Training batches from the two training splits, validation on the eval split (first 10 s of each clip)."""

    def __init__(self, config: Mapping, classes: ClassList, dataset_dict=None):
        super().__init__()
        self.config = config
        self.classes = classes
        self.dataset_dict = dataset_dict if dataset_dict is not None else load_dataset_dict(
            as_config.dataset_dir(config))
        self._train_set = None

    def _training_rows(self):
        import datasets  # lazy: the Hugging Face stack loads only where the prepared dataset is read

        return datasets.concatenate_datasets([self.dataset_dict[split] for split in TRAIN_SPLITS])

    def _kd_readers(self) -> tuple[StrongKDLogits | None, WeakKDLogits | None]:
        cfg = self.config
        strong = StrongKDLogits(cfg["training_strong"]["kd_logits"]) \
            if cfg["strong_distillation_loss_weight"] > 0 else None
        weak = WeakKDLogits(cfg["training_weak"]["kd_logits"], cfg["training_weak"]["kd_index"],
                            as_config.NUM_WEAK_CLASSES) if cfg["weak_distillation_loss_weight"] > 0 else None
        return strong, weak

    def train_dataloader(self) -> DataLoader:
        training = self.config["training_strong"]
        if self._train_set is None:
            rows = self._training_rows()
            strong_kd, weak_kd = self._kd_readers()
            _report_kd_coverage(rows, strong_kd, weak_kd)
            dataset = AudioSetStrongDataset(rows, self.classes, training=True, strong_kd=strong_kd, weak_kd=weak_kd)
            if training["wavmix_p"] > 0:
                dataset = WavMixDataset(dataset, float(training["wavmix_p"]))
            weights = cached_sample_weights(as_config.dataset_dir(self.config),
                                            [self.dataset_dict[s] for s in TRAIN_SPLITS], self.classes,
                                            float(training["sample_weight_offset"])) \
                if training["use_balanced_sampler"] else None
            self.sampler = WeightedEpochBatchSampler(
                len(rows), int(training["batch_size"]), epoch_len=int(training["epoch_len"]),
                seed=int(training["seed"]), weights=weights, rank=self.trainer.global_rank if self.trainer else 0,
                world_size=self.trainer.world_size if self.trainer else 1)
            self._train_set = SeededSamples(dataset)
            self._restore_pending_state()
        return DataLoader(self._train_set, batch_sampler=self.sampler,
                          **loader_kwargs(int(training["num_workers"]), int(training["seed"])))

    def val_dataloader(self) -> DataLoader:
        cfg = self.config["validation_strong"]
        dataset = AudioSetStrongDataset(self.dataset_dict[EVAL_SPLIT], self.classes, training=False)
        return DataLoader(dataset, batch_size=int(cfg["batch_size"]), shuffle=False,
                          **loader_kwargs(int(cfg["num_workers"])))


def _report_kd_coverage(rows, strong_kd, weak_kd) -> None:
    """Teacher targets must exist for the training clips: warn about gaps, stop when none is covered."""
    names = list(rows["filename"])
    for reader, what in ((strong_kd, "training_strong.kd_logits"), (weak_kd, "training_weak.kd_logits")):
        if reader is None:
            continue
        missing = [n for n in names if reader.row(n) is None]
        if len(missing) == len(names):
            raise ValueError(f"{what} ({reader.path}) holds none of the {len(names)} training clips (e.g. "
                             f"{names[:3]}): is it the KD file of this dataset?")
        if missing:
            log.warning("%s: %d of %d training clips have no teacher targets (e.g. %s); their distillation terms "
                        "are left out", what, len(missing), len(names), missing[:3])


# ------------------------------------------------------------------------------------------------ model
def start_model(config: Mapping, classes: ClassList) -> ASStrongModel:
    """The model with its start weights: ``<arch>.pretrained_name``, else ``atst_checkpoint`` / ``beats_checkpoint``
    (any backbone format; heads and sequence model too when an AudioSet-strong file has them), else random."""
    arch = config["arch"]
    net = build_as_strong_model(config, len(classes), as_config.weak_head_classes(config, len(classes)))
    name = config[arch]["pretrained_name"]
    ssl_key = arch_spec(arch).ssl_checkpoint_key
    if name is None and ssl_key is not None:
        name = config.get(ssl_key)
    if name:
        init_from_pretrained(net, resolve_checkpoint(name, config["model_path"]), arch)
    else:
        log.warning("%s: no start weights configured: the transformer starts from random weights", arch)
    return net


def load_model_weights(net: ASStrongModel, path: Path, arch: str) -> None:
    """Every weight of ``net`` from a training checkpoint of this experiment or a PretrainedSED-layout file."""
    checkpoint = safe_load(path)
    state = lightning_model_state(checkpoint)
    if state is None:
        if "strong_head.weight" not in checkpoint:
            raise CheckpointError(f"{path}: not an AudioSet-strong model (no strong_head); use <arch>.pretrained_name "
                                  "for backbone-only files")
        state = from_pretrainedsed(normalise_pretrainedsed(checkpoint), arch)
    check_state_dict(net.state_dict(), state, str(path))
    net.load_state_dict(state)


def export(system_or_net, path: Path, config: Mapping, classes: ClassList, description: str) -> Path:
    net = system_or_net.net if isinstance(system_or_net, ASStrongSystem) else system_or_net
    save_pretrainedsed(path, net, arch=config["arch"], classes=classes, config=config, description=description)
    log.info("exported the model in PretrainedSED's layout to %s (stage 1: %s.pretrained_name=%s)", path,
             config["arch"], path)
    return path


# ------------------------------------------------------------------------------------------------ trainer
def _build_trainer(config: Mapping, run_dir: Path, loggers: list) -> pl.Trainer:
    """The run plumbing of the T4 stages (``helpers.training.runner``): safe checkpoint loading, best / last /
    resume-point checkpoints unless ``skip_checkpoint``; some backbone parameters take no part in the forward
    pass (e.g. ATST's mask token), so ``strategy=ddp`` looks for unused parameters."""
    callbacks: list = [SamplerEpoch(), EnergyCallback(run_dir / "codecarbon", "as_strong", ENERGY_PROJECT),
                       ComplexityCallback()]
    if config["skip_checkpoint"]:
        config = {**config, "trainer": {**config["trainer"], "enable_checkpointing": False}}
    else:
        callbacks += checkpoint_callbacks(run_dir / "checkpoints", MONITOR, None)
    return build_trainer(config, run_dir, loggers, callbacks, unused_parameters=True)


def _float_metrics(metrics: Mapping) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith("val/")}


def _setup(config: Mapping, resume_from: str | None, what: str):
    config = plain_config(config)
    check_config(config)
    pl.seed_everything(int(config.get("seed", config["training_strong"]["seed"])), workers=True)
    run_dir = make_run_dir(config, resume_from, default_name=f"{config['arch']}_{what}")
    run_info = {**run_metadata("audioset_strong"), "run_dir": str(run_dir)}
    return config, run_dir, run_info


def train(config: Mapping) -> dict:
    """Train with the resolved ``ex_audioset_strong`` config; returns the last validation's metrics, the best
    checkpoint, the exported model and the run folder (also written to ``<run>/results.json``)."""
    resume_from = config["ckpt_path"]
    config, run_dir, run_info = _setup(config, resume_from, "as_strong")
    classes = class_list(config)
    data = ASStrongDataModule(config, classes)
    truth, durations = eval_labels(config, data.dataset_dict)
    net = start_model(config, classes) if not resume_from else \
        build_as_strong_model(config, len(classes), as_config.weak_head_classes(config, len(classes)))
    system = ASStrongSystem(config, net, classes, eval_ground_truth=truth, eval_durations=durations,
                            run_info=run_info)
    loggers = make_loggers(config, run_dir, run_info, csv_version=csv_version(resume_from))
    try:
        trainer = _build_trainer(config, run_dir, loggers)
        with warnings.catch_warnings():
            # the data module restores the sampler's mid-epoch position itself (SamplerStateDataModule)
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch")
            trainer.fit(system, datamodule=data, ckpt_path=resume_from, weights_only=True)
        result = _float_metrics(trainer.callback_metrics)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        exported = run_dir / f"{config['arch']}{EXPORT_SUFFIX}"
        if trainer.global_rank == 0:
            export(system, exported, config, classes, f"final weights of {run_dir.name}")
    finally:
        finish_loggers(loggers)
    result.update(best_model_path=str(best or ""), exported_model=str(exported), run_dir=str(run_dir))
    write_results(run_dir, result)
    return result


def evaluate(config: Mapping) -> dict:
    """PSDS1 / macro PSDS1 / pAUROC on the eval split of the model in ``ckpt_path`` (every weight), else of the
    start weights (``<arch>.pretrained_name``: e.g. a released ``ATST-F_strong_1.pt``)."""
    config, run_dir, run_info = _setup(config, None, "as_strong_eval")
    classes = class_list(config)
    if config["ckpt_path"]:
        net = build_as_strong_model(config, len(classes), as_config.weak_head_classes(config, len(classes)))
        load_model_weights(net, resolve_checkpoint(config["ckpt_path"], config["model_path"]), config["arch"])
    else:
        net = start_model(config, classes)
    data = ASStrongDataModule(config, classes)
    truth, durations = eval_labels(config, data.dataset_dict)
    system = ASStrongSystem(config, net, classes, eval_ground_truth=truth, eval_durations=durations,
                            run_info=run_info)
    loggers = make_loggers(config, run_dir, run_info)
    try:
        trainer = _build_trainer({**config, "skip_checkpoint": True}, run_dir, loggers)
        trainer.validate(system, datamodule=data)
        result = _float_metrics(trainer.callback_metrics)
    finally:
        finish_loggers(loggers)
    result.update(run_dir=str(run_dir))
    write_results(run_dir, result)
    return result


def export_checkpoint(config: Mapping) -> Path:
    """``ckpt_path`` (a training checkpoint of this experiment) -> ``<same name>.pt`` + ``.json`` next to it."""
    config = plain_config(config)
    check_config(config)
    if not config["ckpt_path"]:
        raise configs.ConfigError("the export command needs ckpt_path=<training checkpoint>")
    path = resolve_checkpoint(config["ckpt_path"], config["model_path"])
    stored = safe_load(path)
    if lightning_model_state(stored) is None:
        raise CheckpointError(f"{path}: not a training checkpoint of ex_audioset_strong")
    trained_config = {**config, **{k: v for k, v in (stored.get("config") or {}).items()
                                   if k in ("arch", "strong_wrapper", config["arch"], "passt_mel")}}
    classes = ClassList.from_rows(stored["classes"]) if stored.get("classes") else class_list(config)
    net = build_as_strong_model(trained_config, len(classes),
                                as_config.weak_head_classes(trained_config, len(classes)))
    load_model_weights(net, path, trained_config["arch"])
    return export(net, path.with_suffix(".pt"), trained_config, classes, f"exported from {path.name}")


__all__ = ["train", "evaluate", "export_checkpoint", "ASStrongDataModule", "start_model", "load_model_weights",
           "eval_labels", "class_list", "check_config"]
