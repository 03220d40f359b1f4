"""The config schema of ``ex_audioset_strong`` (AudioSet-strong pre-training of the transformers).

Two sources describe the experiment (docs/AUDIOSET_STRONG.md): the reference's ``ex_audioset_strong.py``
(CPJKU/cpjku_dcase24; its README command must run verbatim, so its keys are here: ``training_strong.*``,
``optimizer.lr`` / ``lr_pt`` / ``initial_lr`` / ``initial_lr_pt``, ``strong_wrapper.*``, the three loss weights,
``strong_augment.*``, ``atst_mel.freq_scale``, ``skip_checkpoint``, the named configs ``atst_frame_arch_16khz``
and ``audio_set_strong_pretraining``) and PretrainedSED (fschmid56/PretrainedSED, whose recipes reach the published
numbers, so its settings are the defaults: batch 256, Adam, lr 7e-5, cosine schedule with 20,000 warm-up steps,
16-mixed, validation every 5 epochs, median window 9, its augmentation probabilities; and the named configs
``teacher`` and ``kd_student`` are its README commands). Each default that differs from the reference's, and each
reference key that is accepted without an effect here, is a row of docs/DIFFERENCES.md.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Literal, Mapping

import configs
from configs import schema, t4
from configs.schema import Block, block, key

PROBABILITY = t4.PROBABILITY
ARCH_NAMED_CONFIGS = {"atst_frame_arch_16khz": "atst_frame", "passt_arch": "fpasst", "beats_arch": "beats"}
NUM_WEAK_CLASSES = 527
EXPERIMENT = "ex_audioset_strong"


# ------------------------------------------------------------------------------------------------ trainer, optimizer
@dataclass
class Trainer(t4.Trainer):
    max_epochs: int = key(30, "training epochs (PretrainedSED --n_epochs)", min=1)
    check_val_every_n_epoch: int | None = key(5, "validate every N epochs", min=1)


@dataclass
class Optimizer(Block):
    lr: float = key(7e-5, "peak learning rate of the heads and the sequence model (PretrainedSED --max_lr)", min=0)
    lr_pt: float | None = key(None, "peak learning rate of the transformer; None: lr", min=0)
    initial_lr: float | None = key(None, "lr at the start of the warm-up (linear to lr); None: 0", min=0)
    initial_lr_pt: float | None = key(None, "lr_pt at the start of the warm-up; None: 0", min=0)
    num_warmup_steps: int = key(20_000, "warm-up optimizer steps (PretrainedSED hard-coded 20,000)", min=0)
    schedule_mode: Literal["cos", "cosine", "linear", "exp"] = key("cos", "schedule after the warm-up")
    lr_end: float = key(2e-7, "final learning rate of schedule_mode='linear'", min=0)
    gamma: float = key(0.999996, "decay per step of schedule_mode='exp'", gt=0)
    adamw: bool = key(False, "AdamW (else Adam)")
    weight_decay: float = key(0.0, "weight decay of the >= 2-D parameters (AdamW only)", min=0)
    betas: tuple[float, float] = key((0.9, 0.999), "Adam betas", min=0, max=1)


# ------------------------------------------------------------------------------------------------ data
@dataclass
class TrainingStrong(Block):
    batch_size: int = key(256, "clips per batch (per device)", min=1)
    num_workers: int = key(16, "data-loading processes", min=0)
    use_balanced_sampler: bool = key(False, "draw clips with PretrainedSED's class-frame balancing weights")
    epoch_len: int = key(100_000, "clips drawn per epoch (without replacement)", min=1)
    sample_weight_offset: float = key(30, "balanced sampler: class weight 1000 / (active frames + offset)", min=0)
    wavmix_p: float = key(0.8, "probability of waveform mixing with a random clip", **PROBABILITY)
    kd_logits: str | None = key(None, "strong KD file (teacher logits, HDF5); needed when "
                                      "strong_distillation_loss_weight > 0")
    classes: str | None = key(None, "class list tsv (mid, display_name); None: the 447 AudioSet-strong "
                                    "training classes")
    seed: int = key(42, "sampling seed")


@dataclass
class TrainingWeak(Block):
    batch_size: int = key(12, "reference key of its separate weak loader; no effect here (the weak losses use the "
                              "strong batch)", min=1)
    kd_logits: str | None = key(None, "weak KD logits (.npy [clips, 527]); needed when "
                                      "weak_distillation_loss_weight > 0")
    kd_index: str | None = key(None, "YouTube id -> row of kd_logits (.pkl, read without running code, or .json)")


@dataclass
class ValidationStrong(Block):
    batch_size: int = key(256, "clips per evaluation batch", min=1)
    num_workers: int = key(16, "data-loading processes", min=0)
    durations: str | None = key(None, "eval durations csv (Y<id>,<seconds>); None: the durations in the dataset")
    class_chunk: int = key(64, "classes per sed_scores_eval call (memory: 16,900 clips x 250 frames x chunk x "
                               "8 bytes)", min=1)
    num_jobs: int = key(1, "sed_scores_eval processes for PSDS / pAUROC", min=1)


@dataclass
class ValidationWeak(Block):
    batch_size: int = key(20, "reference key of its weak validation loader; no effect here", min=1)


# ------------------------------------------------------------------------------------------------ model
@dataclass
class StrongWrapper(Block):
    seq_model_type: Literal["rnn"] | None = key(None, "rnn: a BiGRU between transformer and heads (teachers)")
    rnn_layers: int = key(2, "BiGRU layers", min=1)
    rnn_dim: int = key(2048, "BiGRU hidden units per direction", min=1)
    rnn_dropout: float = key(0.0, "dropout between BiGRU layers", **PROBABILITY)
    n_classes_weak: int | None = key(None, "weak head outputs; None: 527 if a weak loss is on, else the strong "
                                           "classes (PretrainedSED)", min=1)
    skip_audiosetwrapper: bool = key(True, "reference README key: the sequence model reads the transformer's "
                                           "tokens (True is the only layout here)")


@dataclass
class AtstMel(Block):
    freq_scale: float = key(1.0, "reference README key; the ATST front-end has no frequency scaling (only 1.0; "
                                 "frequency warping: strong_augment.freq_warp)", min=1.0, max=1.0)


@dataclass
class PasstMel(t4.PasstMel):
    fmin_aug_range: int = key(10, "random fmin shift in training (mel bins; PretrainedSED)", min=1)
    fmax_aug_range: int = key(2000, "random fmax shift in training (Hz; PretrainedSED)", min=1)


@dataclass
class ATSTFrame(t4.ATSTFrame):
    pretrained_name: str | None = key("ATST-F_weak", "weights to start from (file or name; any backbone format); "
                                                     "None: atst_checkpoint")


@dataclass
class FPaSST(t4.FPaSST):
    pretrained_name: str | None = key("fpasst_weak", "weights to start from (file or name)")


@dataclass
class BEATs(t4.BEATs):
    pretrained_name: str | None = key("BEATs_weak", "weights to start from (file or name); None: beats_checkpoint")


# ------------------------------------------------------------------------------------------------ augmentation
@dataclass
class FilterAugment(t4.FilterAugment):
    apply: bool = key(True, "")
    p: float = key(0.8, "probability per batch (PretrainedSED --filter_augment_p)", **PROBABILITY)
    n_transform: int = key(1, "views (one: there is no teacher here)", min=1, max=1)


@dataclass
class TimeAugment(Block):
    apply_mask: bool = key(False, "mask a random time span (PretrainedSED --max_time_mask_size > 0)")
    apply_shift: bool = key(True, "roll each clip in time, labels with it")
    shift_range: float = key(0.125, "shift std as a fraction of the clip (PretrainedSED --frame_shift_range)", min=0)
    min_mask_ratio: float = key(0.05, "", **PROBABILITY)
    max_mask_ratio: float = key(0.3, "", **PROBABILITY)


@dataclass
class MixAugment(Block):
    apply_mixup: bool = key(True, "")
    apply_mixstyle: bool = key(True, "")
    apply_style: bool | None = key(None, "the reference README's spelling of apply_mixstyle; when set it wins")
    mixup_p: float = key(0.3, "probability per batch (PretrainedSED --mixup_p)", **PROBABILITY)
    mixstyle_p: float = key(0.3, "probability per batch (PretrainedSED --mixstyle_p)", **PROBABILITY)
    mixstyle_alpha: float = key(0.4, "Beta parameter of mixstyle (PretrainedSED's default)", gt=0)


@dataclass
class FreqWarp(Block):
    apply: bool = key(True, "")
    p: float = key(0.8, "probability per batch (PretrainedSED --freq_warp_p)", **PROBABILITY)


@dataclass
class StrongAugment(Block):
    gain_augment: float = key(0.0, "random gain in [-G, G] dB per clip (0: off)", min=0)
    filter_augment: FilterAugment = block(FilterAugment)
    time_augment: TimeAugment = block(TimeAugment)
    mix_augment: MixAugment = block(MixAugment)
    freq_warp: FreqWarp = block(FreqWarp)


@dataclass
class Wandb(t4.Wandb):
    project: str = key("audioset_strong", "")


# ------------------------------------------------------------------------------------------------ experiment
@dataclass
class AudioSetStrong(Block):
    """``ex_audioset_strong``: AudioSet-strong pre-training, evaluation and KD-target export."""

    arch: str | None = key(None, "required: atst_frame | fpasst | beats (or a named config atst_frame_arch_16khz, "
                                 "passt_arch, beats_arch)")
    source_path: str | None = key(None, "prepare_data / check_data: folder with the PaSST HDF5 files and the strong "
                                        "tsvs; None: ./data/audioset")
    dataset_path: str | None = key(None, "the prepared dataset; None: ./data/audioset_strong")
    model_path: str | None = key(None, "where checkpoint names are looked up; None: resources/pretrained_models")
    ckpt_path: str | None = key(None, "training: a last.ckpt to resume; evaluate / store_predictions: the model")
    evaluate: bool = key(False, "validation only (PretrainedSED --evaluate): the start weights, or ckpt_path")
    median_window: int = key(9, "median filter of the strong outputs (frames of 40 ms)", min=1)
    strong_supervised_loss_weight: float = key(1.0, "BCE on the strong labels", min=0)
    strong_distillation_loss_weight: float = key(0.0, "BCE on the KD teacher's strong probabilities "
                                                      "(PretrainedSED --distillation_loss_weight)", min=0)
    weak_supervised_loss_weight: float = key(0.0, "BCE of the weak head on the 527 weak labels", min=0)
    weak_distillation_loss_weight: float = key(0.0, "BCE of the weak head on the weak KD probabilities", min=0)
    atst_checkpoint: str | None = key("atst_as.ckpt", "ATST-Frame weights used when atst_frame.pretrained_name is None")
    beats_checkpoint: str | None = key("beats_as.pt", "BEATs weights used when beats.pretrained_name is None")
    skip_checkpoint: bool = key(False, "write no Lightning checkpoints (the final .pt is still exported)")
    compile: bool = key(False, "torch.compile of the model in training and validation (eager fallback with one "
                               "warning)")
    trainer: Trainer = block(Trainer)
    optimizer: Optimizer = block(Optimizer)
    training_strong: TrainingStrong = block(TrainingStrong)
    training_weak: TrainingWeak = block(TrainingWeak)
    validation_strong: ValidationStrong = block(ValidationStrong)
    validation_weak: ValidationWeak = block(ValidationWeak)
    strong_wrapper: StrongWrapper = block(StrongWrapper)
    strong_augment: StrongAugment = block(StrongAugment)
    atst_mel: AtstMel = block(AtstMel)
    passt_mel: PasstMel = block(PasstMel)
    atst_frame: ATSTFrame = block(ATSTFrame)
    fpasst: FPaSST = block(FPaSST)
    beats: BEATs = block(BEATs)
    wandb: Wandb = block(Wandb)
    # store_predictions / ensemble_predictions
    store_splits: tuple[Literal["balanced_train", "unbalanced_train", "eval"], ...] = key(
        ("balanced_train", "unbalanced_train"), "store_predictions: the splits whose clips get KD logits")
    kd_out: str | None = key(None, "store_predictions / ensemble_predictions: the KD file written; None: "
                                   "<dataset_path>/kd_logits/<model or ensemble>.hdf5")
    ensemble_files: tuple[str, ...] = key((), "ensemble_predictions: the KD files to average")
    ensemble_weights: tuple[float, ...] | None = key(None, "ensemble_predictions: one weight >= 0 per file; None: "
                                                           "equal", min=0)
    overwrite: bool = key(False, "prepare_data / store_predictions: replace existing outputs")
    prepare_workers: int | None = key(None, "prepare_data processes; None: all cores", min=1)


# ------------------------------------------------------------------------------------------------ named configs
def default_config() -> dict:
    return schema.tree(AudioSetStrong())


def _demo() -> dict:
    demo_root = configs.DEMO_DATASET_PATH / "audioset_strong"
    tiny = dict(pretrained_name=None, **configs.TINY_BACKBONE)
    return dict(
        source_path=str(demo_root / "source"), dataset_path=str(demo_root / "dataset"),
        model_path=str(configs.DEMO_DATASET_PATH / "pretrained_models"),
        atst_checkpoint=None, beats_checkpoint=None,  # random init: no backbone file is read
        atst_frame=dict(tiny), beats=dict(tiny),
        fpasst=dict(pretrained_name=None, embed_dim=configs.TINY_BACKBONE["embed_dim"], depth=2, num_heads=2),
        strong_wrapper=dict(rnn_dim=32),
        trainer=dict(max_epochs=3, precision="32", accelerator="cpu", devices=1, check_val_every_n_epoch=1,
                     benchmark=False, default_root_dir="./outputs/demo", log_every_n_steps=5),
        optimizer=dict(lr=1e-3, num_warmup_steps=10),
        training_strong=dict(batch_size=8, num_workers=0, epoch_len=32),
        validation_strong=dict(batch_size=10, num_workers=0),
        wandb=dict(offline=True, project="audioset_strong_demo"),
    )


NAMED_CONFIGS: dict[str, dict] = {
    **{name: {"arch": arch, arch: {"pretrained_name": None}} for name, arch in ARCH_NAMED_CONFIGS.items()},
    # the reference's named config (configs.py of CPJKU/cpjku_dcase24); its strong wrapper always has a BiGRU
    "audio_set_strong_pretraining": dict(
        weak_supervised_loss_weight=0.0, weak_distillation_loss_weight=0.0, strong_supervised_loss_weight=1.0,
        training_strong=dict(batch_size=64), training_weak=dict(batch_size=64),
        validation_strong=dict(batch_size=128), validation_weak=dict(batch_size=128),
        trainer=dict(max_epochs=100, check_val_every_n_epoch=10),
        strong_wrapper=dict(seq_model_type="rnn", rnn_layers=4, rnn_dim=256),
    ),
    # PretrainedSED README: --seq_model_type=rnn --use_balanced_sampler --pretrained=weak --wavmix_p=1.0
    "teacher": dict(strong_wrapper=dict(seq_model_type="rnn"), training_strong=dict(use_balanced_sampler=True,
                                                                                  wavmix_p=1.0)),
    # PretrainedSED README: --pretrained=weak --n_epochs=120 --wavmix_p=0.5 --freq_warp_p=0 --filter_augment_p=0
    # --mixstyle_p=0 --max_lr=1e-4 --distillation_loss_weight=0.9 --pseudo_labels_file=<ensemble logits>
    "kd_student": dict(
        trainer=dict(max_epochs=120), training_strong=dict(wavmix_p=0.5), optimizer=dict(lr=1e-4),
        strong_augment=dict(freq_warp=dict(p=0.0), filter_augment=dict(p=0.0), mix_augment=dict(mixstyle_p=0.0)),
        strong_distillation_loss_weight=0.9, strong_supervised_loss_weight=0.1,
    ),
    # PretrainedSED --evaluate: PSDS of the start weights (e.g. atst_frame.pretrained_name=ATST-F_strong_1)
    "evaluate": dict(evaluate=True),
    "demo": _demo(),
}


# ------------------------------------------------------------------------------------------------ validation
# spellings that differ between the reference's code and its README: (what was written, what to write)
_RENAMED_BLOCKS = {"strong_augmentations": "strong_augment"}
_SACRED_KEYS = {"seed"}


def weak_head_classes(config: Mapping, strong_classes: int) -> int:
    """Outputs of the weak head: ``strong_wrapper.n_classes_weak``, else 527 when a weak loss is on, else the strong
    class count (PretrainedSED's default)."""
    chosen = config["strong_wrapper"]["n_classes_weak"]
    if chosen is not None:
        return int(chosen)
    weak_on = config["weak_supervised_loss_weight"] > 0 or config["weak_distillation_loss_weight"] > 0
    return NUM_WEAK_CLASSES if weak_on else strong_classes


def mixstyle_enabled(config: Mapping) -> bool:
    """``strong_augment.mix_augment.apply_style`` (the README's spelling) when set, else ``apply_mixstyle``."""
    mix = config["strong_augment"]["mix_augment"]
    return bool(mix["apply_mixstyle"] if mix["apply_style"] is None else mix["apply_style"])


def validate_config(config: Mapping, extra_arch_blocks: Mapping[str, type] | None = None) -> None:
    """Raise one ``configs.ConfigError`` naming every unknown key, malformed value and inconsistent setting."""
    root = AudioSetStrong
    extra = dict(extra_arch_blocks or {})
    if extra:
        root = dataclasses.make_dataclass("AudioSetStrongWithArchs", [(n, c, block(c)) for n, c in extra.items()],
                                          bases=(AudioSetStrong,))
    errors = []
    for old, new in _RENAMED_BLOCKS.items():
        if old in config:
            errors.append(f"{old}.* is the reference code's name of the block; write {new}.* (its README's "
                          "spelling, docs/DIFFERENCES.md)")
    errors += schema.problems({k: v for k, v in config.items() if k not in _SACRED_KEYS | set(_RENAMED_BLOCKS)}, root)
    archs = t4.ARCHS + tuple(extra)
    if config.get("arch") is not None and config["arch"] not in archs:
        errors.append(f"arch={config['arch']!r} is not one of {', '.join(archs)}")
    if not errors:
        errors += _setting_problems(config)
    if errors:
        raise configs.ConfigError(f"invalid {EXPERIMENT} config:\n  - " + "\n  - ".join(errors))


def _setting_problems(config: Mapping) -> list[str]:
    found = []
    if config["strong_distillation_loss_weight"] > 0 and not config["training_strong"]["kd_logits"]:
        found.append("strong_distillation_loss_weight > 0 needs the teacher's logits: training_strong.kd_logits="
                     "<KD file> (make one with the store_predictions command)")
    if config["weak_distillation_loss_weight"] > 0 and not (config["training_weak"]["kd_logits"]
                                                            and config["training_weak"]["kd_index"]):
        found.append("weak_distillation_loss_weight > 0 needs training_weak.kd_logits=<.npy> and "
                     "training_weak.kd_index=<.pkl or .json>")
    weak_on = config["weak_supervised_loss_weight"] > 0 or config["weak_distillation_loss_weight"] > 0
    chosen = config["strong_wrapper"]["n_classes_weak"]
    if weak_on and chosen not in (None, NUM_WEAK_CLASSES):
        found.append(f"strong_wrapper.n_classes_weak={chosen}: the weak losses need {NUM_WEAK_CLASSES} weak outputs")
    if not config["strong_wrapper"]["skip_audiosetwrapper"]:
        found.append("strong_wrapper.skip_audiosetwrapper=False (an AudioSet-weak frame head between transformer and "
                     "sequence model) is not implemented: the model follows PretrainedSED (docs/AUDIOSET_STRONG.md)")
    weights = [config[k] for k in ("strong_supervised_loss_weight", "strong_distillation_loss_weight",
                                   "weak_supervised_loss_weight", "weak_distillation_loss_weight")]
    if not config["evaluate"] and sum(weights) <= 0:
        found.append("every loss weight is 0: nothing would be trained")
    return found


def resolve_config(*updates: Mapping) -> dict:
    """The default tree updated with ``updates`` in turn (named configs, then key=value), validated."""
    config = default_config()
    for update in updates:
        configs.merge_config(config, copy.deepcopy(dict(update)))
    validate_config(config)
    return config




# ------------------------------------------------------------------------------------------------ paths
DEFAULT_SOURCE_PATH = configs.REPO_ROOT / "data" / "audioset"
DEFAULT_DATASET_PATH = configs.REPO_ROOT / "data" / "audioset_strong"


def source_dir(config: Mapping):
    """``source_path``: the PaSST HDF5 files and strong tsvs (None: ./data/audioset in the repository)."""
    return configs.folder_key(config, "source_path", DEFAULT_SOURCE_PATH)


def dataset_dir(config: Mapping):
    """``dataset_path``: the prepared dataset (None: ./data/audioset_strong in the repository)."""
    return configs.folder_key(config, "dataset_path", DEFAULT_DATASET_PATH)


__all__ = ["AudioSetStrong", "NAMED_CONFIGS", "ARCH_NAMED_CONFIGS", "default_config", "validate_config",
           "resolve_config", "weak_head_classes", "mixstyle_enabled", "source_dir", "dataset_dir"]
