"""The config schema of ``ex_downstream``: fine-tuning a pre-trained transformer on a HEAR-format event task.

Keys follow PretrainedSED's ``ex_dcase2016task2.py`` arguments (fschmid56/PretrainedSED) where it has them
(``max_lr``, ``transformer_lr``, ``lr_decay``, ``transformer_frozen``, ``wavmix_p``, ``mixup_p``, ``weight_decay``,
``schedule_mode``, ``lr_end``, ``warmup_steps`` — which PretrainedSED ignores, hard-coding 4,000; here it is used),
and its defaults; the backbone blocks are those of ``configs.t4`` without ``pretrained_name`` (the top-level
``pretrained_name`` names the checkpoint). Named configs: the README's two PretrainedSED commands and ``demo``.
docs/CONFIG.md's ``downstream`` table is generated from these classes.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Literal

import configs.t4 as t4
from configs import DEMO_DATASET_PATH, TINY_BACKBONE, ConfigError, merge_config, schema
from configs.schema import Block, block, key

PROBABILITY = t4.PROBABILITY
DEMO_TASK_PATH = DEMO_DATASET_PATH / "hear" / "demo_office_events-demo-full"
PRETRAINEDSED_URL = "https://github.com/fschmid56/PretrainedSED/releases"

# the backbone blocks of configs.t4, minus the key that the top-level pretrained_name replaces
ATSTFrame = schema.without_keys(t4.ATSTFrame, "pretrained_name")
FPaSST = schema.without_keys(t4.FPaSST, "pretrained_name")
BEATs = schema.without_keys(t4.BEATs, "pretrained_name")


@dataclass
class Trainer(t4.Trainer):
    max_epochs: int = key(300, "training epochs", min=1)


@dataclass
class Optimizer(Block):
    max_lr: float = key(1.06e-4, "peak learning rate of the head (and of the transformer unless transformer_lr)", gt=0)
    transformer_lr: float | None = key(None, "peak learning rate of the transformer's top block; None: max_lr", gt=0)
    lr_decay: float = key(1.0, "layer-wise decay: block k (0 = bottom) of depth d trains at transformer_lr * "
                               "lr_decay^(d - k)", gt=0, max=1)
    adamw: bool = key(True, "AdamW (else Adam, without weight decay)")
    weight_decay: float = key(1e-3, "AdamW weight decay (0 with adamw=False)", min=0)
    betas: tuple[float, float] = key((0.9, 0.999), "Adam betas", min=0, max=1)
    schedule_mode: Literal["cos", "linear", "exp"] = key("cos", "learning-rate schedule after warm-up")
    warmup_steps: int = key(4000, "linear warm-up of cos / linear (optimizer steps)", min=0)
    lr_end: float = key(1e-7, "final learning rate of schedule_mode='linear'", min=0)
    gamma: float = key(0.999996, "decay per step of schedule_mode='exp'", gt=0)


@dataclass
class Frames(Block):
    hop_s: float = key(0.04, "frame hop of targets and outputs (25 frames/s)", gt=0)
    window_s: float = key(10.0, "training crop and evaluation window (s), a multiple of hop_s", gt=0)
    token_pooling: Literal["time", "sequence"] = key(
        "time", "tokens -> frames: 'time' (time steps, interpolated) or 'sequence' (PretrainedSED: pool the sequence)")


@dataclass
class Training(Block):
    batch_size: int = key(256, "training crops per batch", min=1)
    num_workers: int = key(16, "data-loading processes", min=0)
    wavmix_p: float = key(0.5, "probability of waveform mixing per crop", **PROBABILITY)
    mixup_p: float = key(0.5, "probability of mixup of a batch's front-end features", **PROBABILITY)
    seed: int = key(42, "sampling seed")
    checkpoint_every_n_steps: int | None = key(None, "also write last.ckpt every N optimizer steps", min=1)


@dataclass
class Evaluation(Block):
    batch_size: int = key(64, "windows per forward pass at validation / test", min=1)
    num_workers: int = key(4, "data-loading processes", min=0)
    window_hop_s: float = key(10.0, "window start to window start (s); below frames.window_s windows overlap and "
                                    "their outputs are averaged", gt=0)
    median_filter_ms: float = key(250.0, "median filter over time", min=0)
    min_duration_ms: float = key(125.0, "shorter events are dropped", min=0)
    threshold: float = key(0.5, "a frame is active when its score > threshold")
    threshold_on: Literal["probability", "logit"] = key(
        "probability", "score the threshold applies to (HEAR: probability; PretrainedSED: logit)")


@dataclass
class Wandb(t4.Wandb):
    project: str = key("hear_downstream", "")


@dataclass
class Downstream(Block):
    """``ex_downstream``: a pre-trained transformer + a linear frame head, fine-tuned or linear-probed."""

    arch: str | None = key(None, "required: atst_frame | fpasst | beats")
    task_path: str | None = key(None, "required: the HEAR task folder (task_metadata.json, <split>.json, 16000/)")
    pretrained_name: str | None = key(None, "checkpoint the transformer starts from (name in model_path or path): "
                                            "stage, AudioSet-strong, PretrainedSED, BEATs or downstream files; "
                                            "None: random init")
    checkpoint_mode: Literal["student", "teacher"] = key("student", "which model of a stage checkpoint to take")
    model_path: str | None = key(None, "where checkpoint names are looked up; None: resources/pretrained_models")
    ckpt_path: str | None = key(None, "training: a last.ckpt to resume; test: the downstream checkpoint")
    transformer_frozen: bool = key(False, "linear probe: train only the head on the frozen transformer")
    train_splits: tuple[str, ...] = key(("train",), "splits to train on (k-fold tasks: folds)")
    valid_splits: tuple[str, ...] = key(("valid",), "splits that select the best checkpoint")
    test_splits: tuple[str, ...] = key(("test",), "splits the best checkpoint is tested on")
    atst_frame: ATSTFrame = block(ATSTFrame)
    fpasst: FPaSST = block(FPaSST)
    beats: BEATs = block(BEATs)
    passt_mel: t4.PasstMel = block(t4.PasstMel)
    frames: Frames = block(Frames)
    training: Training = block(Training)
    evaluation: Evaluation = block(Evaluation)
    optimizer: Optimizer = block(Optimizer)
    trainer: Trainer = block(Trainer)
    wandb: Wandb = block(Wandb)


def default_config() -> dict:
    return schema.tree(Downstream())


NAMED_CONFIGS: dict[str, dict] = {
    # python ex_dcase2016task2.py --task_path=... --model_name=ATST-F --pretrained=strong --lr_decay=0.95
    "pretrainedsed_atst_full": {"arch": "atst_frame", "pretrained_name": "ATST-F_strong_1",
                                "optimizer": {"lr_decay": 0.95}},
    # python ex_dcase2016task2.py --task_path=... --model_name=BEATs --pretrained=strong --transformer_frozen
    #   --max_lr=2e-1 --mixup_p=0 --wavmix_p=0 --no_adamw --weight_decay=0 --n_epochs=500
    "pretrainedsed_beats_linear": {"arch": "beats", "pretrained_name": "BEATs_strong_1", "transformer_frozen": True,
                                   "optimizer": {"max_lr": 0.2, "adamw": False, "weight_decay": 0.0},
                                   "training": {"mixup_p": 0.0, "wavmix_p": 0.0}, "trainer": {"max_epochs": 500},
                                   "frames": {"token_pooling": "sequence"}},
    # the demo HEAR task (python -m data_util.demo_hear), tiny random models on the CPU
    "demo": {"task_path": str(DEMO_TASK_PATH),
             "atst_frame": dict(TINY_BACKBONE), "beats": dict(TINY_BACKBONE),
             "fpasst": {"embed_dim": TINY_BACKBONE["embed_dim"], "depth": 2, "num_heads": 2},
             "training": {"batch_size": 4, "num_workers": 0},
             "evaluation": {"batch_size": 8, "num_workers": 0},
             "optimizer": {"max_lr": 1e-3, "warmup_steps": 4},
             "trainer": {"max_epochs": 4, "precision": "32", "accelerator": "cpu", "devices": 1,
                         "check_val_every_n_epoch": 1, "benchmark": False, "default_root_dir": "./outputs/demo",
                         "log_every_n_steps": 2},
             "wandb": {"offline": True, "project": "hear_downstream_demo"}},
}


def resolve(*updates: dict, extra_arch_blocks=None) -> dict:
    """The default tree updated with each of ``updates`` (named configs, then key=value), validated."""
    config = default_config()
    for update in updates:
        merge_config(config, copy.deepcopy(update))
    validate(config, extra_arch_blocks)
    return config


def validate(config: dict, extra_arch_blocks=None) -> None:
    """One ``ConfigError`` listing every unknown key, malformed value and inconsistent setting of ``config``.

    ``extra_arch_blocks``: architectures registered beyond the built-in three (``models.registry``), name -> block.
    """
    root = Downstream
    extra = {name: schema.without_keys(cls, "pretrained_name") if any(
        f.name == "pretrained_name" for f in dataclasses.fields(cls)) else cls
        for name, cls in dict(extra_arch_blocks or {}).items()}
    if extra:
        root = dataclasses.make_dataclass("DownstreamWithArchs", [(n, c, schema.block(c)) for n, c in extra.items()],
                                          bases=(Downstream,))
    errors = schema.problems({k: v for k, v in config.items() if k != "seed"}, root)
    archs = t4.ARCHS + tuple(extra)
    if config.get("arch") is not None and config.get("arch") not in archs:
        errors.append(f"arch={config['arch']!r} is not one of {', '.join(archs)}")
    errors += _inconsistencies(config)
    if errors:
        raise ConfigError("invalid ex_downstream config:\n  - " + "\n  - ".join(errors))


def _inconsistencies(config: dict) -> list[str]:
    """Settings that are valid alone but not together (skipped where a value itself is malformed)."""
    found = []
    try:
        optimizer, frames, evaluation = config["optimizer"], config["frames"], config["evaluation"]
        if not optimizer["adamw"] and optimizer["weight_decay"] > 0:
            found.append(f"optimizer.weight_decay={optimizer['weight_decay']} needs optimizer.adamw=True (Adam here "
                         "takes no weight decay): set optimizer.weight_decay=0 or optimizer.adamw=True")
        per_window = frames["window_s"] / frames["hop_s"]
        if abs(per_window - round(per_window)) > 1e-6:
            found.append(f"frames.window_s={frames['window_s']} must be a whole number of frames.hop_s={frames['hop_s']}")
        if evaluation["window_hop_s"] > frames["window_s"]:
            found.append(f"evaluation.window_hop_s={evaluation['window_hop_s']} must not exceed frames.window_s="
                         f"{frames['window_s']} (the windows must cover the whole file)")
    except (KeyError, TypeError, ZeroDivisionError):
        pass  # reported by schema.problems
    return found


def require_run_keys(config: dict, archs: tuple[str, ...]) -> None:
    """``arch`` and ``task_path`` are required by every command."""
    missing = []
    if config.get("arch") not in archs:
        missing.append(f"arch=<{'|'.join(archs)}>")
    if not config.get("task_path"):
        missing.append("task_path=<HEAR task folder>")
    if missing:
        raise ConfigError(f"ex_downstream needs {' and '.join(missing)}: add 'with {' '.join(missing)}' to the "
                          f"command (got arch={config.get('arch')!r}, task_path={config.get('task_path')!r})")


__all__ = ["Downstream", "NAMED_CONFIGS", "default_config", "resolve", "validate", "require_run_keys",
           "DEMO_TASK_PATH", "PRETRAINEDSED_URL"]
