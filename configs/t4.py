"""The config schema of the DCASE 2024 Task 4 experiments (``ex_stage1``, ``ex_stage2``).

Keys and defaults are the reference's (CPJKU/cpjku_dcase24 ``ex_stage1.py`` / ``ex_stage2.py``), so its README
commands run verbatim; the keys we added or removed are listed in docs/DIFFERENCES.md. A block whose defaults
differ between the stages has a stage-2 subclass that overrides exactly those defaults. docs/CONFIG.md's key
table is generated from these classes (``python -m configs --markdown``; a test keeps them equal).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

from configs.schema import Block, block, key
from data_util.classes import MEDIAN_WINDOWS, NUM_CLASSES

SAMPLE_RATE = 16_000
NUM_LOSS_WEIGHTS = 6  # (maestro strong, DESED real strong, synth strong, weak, SSL, pseudo-label)
NUM_SUB_BATCHES = 5  # (MAESTRO real, DESED real strong + external strong, synth, weak, unlabeled)
ARCHS = ("atst_frame", "fpasst", "beats")  # the built-in architectures (models.registry may register more)
DEFAULT_MODEL = "atst_stage2"  # the reference's model when no name is given (store/eval_predictions, inference)
PROBABILITY = {"min": 0.0, "max": 1.0}


def _trainer_argument(name: str) -> bool:

    import pytorch_lightning as pl  # lazy: only needed for keys beyond the typed ones

    return name in inspect.signature(pl.Trainer.__init__).parameters and name != "self"


# ------------------------------------------------------------------------------------------------ trainer
@dataclass
class Trainer(Block):
    open_keys = staticmethod(_trainer_argument)
    open_keys_doc = "any other argument of pytorch_lightning.Trainer (e.g. trainer.num_nodes=2, trainer.strategy=ddp)"
    max_epochs: int = key(200, "training epochs", min=1)
    devices: int | str | list[int] = key(1, "devices per node (Lightning)")
    benchmark: bool = key(True, "cudnn.benchmark")
    num_sanity_val_steps: int = key(0, "validation batches before training", min=-1)
    precision: str | int = key("16-mixed", "Lightning precision: 32, 16-mixed, bf16-mixed")
    default_root_dir: str = key("./outputs", "runs are written below it")
    accumulate_grad_batches: int = key(1, "gradient accumulation", min=1)
    check_val_every_n_epoch: int | None = key(10, "validate every N epochs", min=1)


@dataclass
class Trainer2(Trainer):
    max_epochs: int = key(250, "training epochs", min=1)


# ------------------------------------------------------------------------------------------------ optimizer
@dataclass
class _Schedule(Block):
    pt_lr: float = key(0.0, "transformer learning rate", min=0)
    pt_lr_scale: float = key(1.0, "layer-wise learning-rate decay of the transformer", gt=0)
    adamw: bool = key(True, "AdamW (else Adam)")
    weight_decay: float = key(1e-2, "weight decay", min=0)
    betas: tuple[float, float] = key((0.9, 0.999), "Adam betas", min=0, max=1)
    schedule_mode: Literal["cos", "exp", "linear"] = key("cos", "learning-rate schedule after warm-up")
    num_warmup_steps: int = key(4000, "linear warm-up (optimizer steps)", min=0)
    gamma: float = key(0.999996, "decay per step of schedule_mode='exp'", gt=0)
    lr_end: float = key(1e-7, "final learning rate of schedule_mode='linear'", min=0)


@dataclass
class Optimizer1(_Schedule):
    crnn_lr: float = key(0.001, "learning rate of the CNN, RNN and heads", min=0)
    pt_trainable_layers: int | Literal["all"] = key(0, "trainable transformer blocks from the top (stage 1: frozen)",
                                                    min=0)


@dataclass
class Optimizer2(_Schedule):
    cnn_lr: float = key(0.0001, "learning rate of the CNN branch", min=0)
    rnn_lr: float = key(0.001, "learning rate of the RNN and heads", min=0)
    pt_lr: float = key(0.0001, "transformer learning rate", min=0)
    pt_trainable_layers: int | Literal["all"] = key("all", "trainable transformer blocks from the top", min=0)
    adamw: bool = key(False, "AdamW (else Adam)")
    weight_decay: float = key(1e-4, "weight decay", min=0)
    num_warmup_steps: int = key(270, "linear warm-up (optimizer steps)", min=0)


# ------------------------------------------------------------------------------------------------ front-ends
@dataclass
class Mel(Block):
    n_mels: int = key(128, "CNN-branch mel bands", min=1)
    n_fft: int = key(2048, "", min=1)
    hop_length: int = key(256, "", min=1)
    win_length: int = key(2048, "", min=1)
    sample_rate: int = key(SAMPLE_RATE, "", min=1)
    f_min: float = key(0, "", min=0)
    f_max: float = key(8000, "", gt=0)
    window_fn: Literal["hamming", "hann"] = key("hamming", "")
    wkwargs: dict = key({"periodic": False}, "window keyword arguments")
    power: float = key(1, "magnitude power (1: amplitude)", gt=0)


@dataclass
class PasstMel(Block):
    n_mels: int = key(128, "fPaSST front-end mel bands", min=1)
    sr: int = key(16_000, "", min=1)
    win_length: int = key(400, "", min=1)
    hopsize: int = key(160, "", min=1)
    n_fft: int = key(512, "", min=1)
    freqm: int = key(0, "frequency masking (unused: 0)", min=0)
    timem: int = key(0, "time masking (unused: 0)", min=0)
    htk: bool = key(False, "")
    fmin: float = key(0.0, "", min=0)
    fmax: float | None = key(None, "None: sr / 2")
    norm: int = key(1, "")
    fmin_aug_range: int = key(1, "random fmin shift in training (mel bins)", min=1)
    fmax_aug_range: int = key(1, "random fmax shift in training (Hz)", min=1)
    fast_norm: bool = key(True, "")
    preamp: bool = key(True, "pre-emphasis")
    trainable: bool = key(False, "")
    padding: Literal["center", "none"] = key("center", "")
    periodic_window: bool = key(True, "")


@dataclass
class PasstMel2(PasstMel):
    fmin_aug_range: int = key(10, "random fmin shift in training (mel bins)", min=1)
    fmax_aug_range: int = key(1000, "random fmax shift in training (Hz)", min=1)


# ------------------------------------------------------------------------------------------------ backbones
@dataclass
class _Backbone(Block):
    embed_dim: int = key(768, "transformer width (tiny variants: 64)", min=1)
    depth: int = key(12, "transformer blocks", min=1)
    num_heads: int = key(12, "attention heads", min=1)
    mlp_ratio: float = key(4.0, "MLP width / embed_dim", gt=0)
    drop_top_layers: int = key(0, "remove the top N blocks", min=0)


@dataclass
class FPaSST(_Backbone):
    arch: Literal["passt_deit_bd_p16_384"] = key("passt_deit_bd_p16_384", "PaSST variant")
    n_classes: int = key(527, "AudioSet head of the backbone (unused by the SED model)", min=1)
    sample_rate: int = key(16_000, "", min=1)
    pos_embed_length: int = key(250, "frame positional embeddings", min=1)
    frame_patchout: int = key(0, "frames dropped in training", min=0)
    in_channels: int = key(16, "frequency patches (128 mels / 8)", min=1)
    pretrained_name: str | None = key("passt_as_strong", "backbone weights to start from (file or name)")


@dataclass
class ATSTFrame(_Backbone):
    pretrained_name: str | None = key("atst_as_strong", "backbone weights to start from (file or name)")
    per_sample_top_db: bool = key(False, "80 dB floor per clip instead of across the batch")


@dataclass
class BEATs(_Backbone):
    pretrained_name: str | None = key(None, "backbone weights to start from (file or name)")
    pool_frequency: bool = key(False, "average each time step's 8 frequency-patch tokens (the demo; reference: off)")


# ------------------------------------------------------------------------------------------------ SED model
@dataclass
class Encoder(Block):
    audio_len: float = key(10, "seconds", gt=0)
    frame_len: int = key(2048, "", min=1)
    frame_hop: int = key(256, "", min=1)
    net_pooling: int = key(4, "", min=1)
    fs: int = key(SAMPLE_RATE, "", min=1)


@dataclass
class T4Wrapper(Block):
    audioset_classes: int = key(527, "", min=1)
    no_wrapper: bool = key(False, "use the transformer's tokens directly (BEATs: True)")
    n_in_channel: int = key(1, "", min=1)
    nclass: int = key(NUM_CLASSES, "output classes", min=1)
    activation: Literal["cg", "glu", "relu", "leakyrelu"] = key("cg", "CNN activation (cg: context gating)")
    dropout: float = key(0.3, "CNN dropout", **PROBABILITY)
    attention: bool = key(True, "attention pooling for the weak head")
    n_RNN_cell: int = key(256, "BiGRU units", min=1)
    n_layers_RNN: int = key(2, "BiGRU layers", min=1)
    dropout_recurrent: float = key(0, "", **PROBABILITY)
    embedding_size: int = key(768, "transformer token size", min=1)
    model_init_id: str | None = key(None, "checkpoint (name or path) the run starts from")
    model_init_mode: Literal["student", "teacher"] = key("student", "checkpoint entry the teacher starts from")
    kernel_size: list[int] = key([3] * 7, "", min=1)
    padding: list[int] = key([1] * 7, "", min=0)
    stride: list[int] = key([1] * 7, "", min=1)
    nb_filters: list[int] = key([16, 32, 64, 128, 128, 128, 128], "CNN channels per block", min=1)
    pooling: list[list[int]] = key([[2, 2], [2, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]], "", min=1)
    embed_pool: Literal["aap", "int", "conv"] = key("aap", "how tokens are brought to 156 frames")
    interpolation_mode: str = key("nearest", "torch interpolate mode of embed_pool='int'")
    dropstep_recurrent: float = key(0.0, "", **PROBABILITY)
    dropstep_recurrent_len: int = key(16, "", min=1)


@dataclass
class T4Wrapper2(T4Wrapper):
    dropout: float = key(0.5, "CNN dropout", **PROBABILITY)
    model_init_mode: Literal["student", "teacher"] = key("teacher", "checkpoint entry the teacher starts from")


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Training(Block):
    sample_rate: int = key(SAMPLE_RATE, "", min=1)
    audio_length: float = key(10.0, "seconds", gt=0)
    include_external_strong: bool = key(True, "AudioSet-strong clips of the DESED classes")
    exclude_overlapping: bool = key(True, "drop external clips that overlap the evaluation sets")
    dir_p: float = key(0.0, "probability of a room impulse response", **PROBABILITY)
    dir_desed_strong: bool = key(True, "")
    dir_weak: bool = key(True, "")
    dir_unlabeled: bool = key(True, "")
    dir_maestro: bool = key(True, "")
    wavmix_p: float = key(0.5, "probability of waveform mixing", **PROBABILITY)
    wavmix_target: Literal["strong", "labeled", "all"] = key("strong", "which rows are mixed")
    use_desed_maestro_alias: bool = key(True, "label aliases between DESED and MAESTRO classes")
    use_pseudo_labels: bool = key(True, "")
    batch_sizes: tuple[int, ...] = key((12, 10, 10, 20, 20), "(MAESTRO, DESED strong + external, synth, weak, "
                                       "unlabeled)", min=1, length=NUM_SUB_BATCHES)
    num_workers: int = key(16, "data-loading processes", min=0)
    weak_split: float = key(0.9, "weak train share", gt=0, max=1)
    maestro_split: float = key(0.9, "MAESTRO train share", gt=0, max=1)
    seed: int = key(42, "data split and sampling seed")
    skip_unreadable: bool = key(False, "replace unreadable clips instead of stopping")
    checkpoint_every_n_steps: int | None = key(None, "also write last.ckpt every N optimizer steps", min=1)


@dataclass
class Training2(Training):
    dir_p: float = key(0.5, "probability of a room impulse response", **PROBABILITY)
    batch_sizes: tuple[int, ...] = key((7, 5, 5, 9, 9), "(MAESTRO, DESED strong + external, synth, weak, unlabeled)",
                                       min=1, length=NUM_SUB_BATCHES)


@dataclass
class Validation(Block):
    sample_rate: int = key(SAMPLE_RATE, "", min=1)
    audio_length: float = key(10.0, "", gt=0)
    batch_size: int = key(20, "", min=1)
    num_workers: int = key(16, "", min=0)
    weak_split: float = key(0.9, "", gt=0, max=1)
    maestro_split: float = key(0.9, "", gt=0, max=1)
    seed: int = key(42, "")


@dataclass
class Test(Block):
    sample_rate: int = key(SAMPLE_RATE, "", min=1)
    audio_length: float = key(10.0, "", gt=0)
    batch_size: int = key(20, "", min=1)
    num_workers: int = key(16, "", min=0)


# ------------------------------------------------------------------------------------------------ augmentation
@dataclass
class FilterAugment(Block):
    apply: bool = key(1, "")
    p: float = key(0.8, "", **PROBABILITY)
    n_transform: int = key(2, "", min=0)
    filter_db_range: tuple[float, float] = key((-6, 6), "")
    filter_bands: tuple[int, int] = key((3, 6), "", min=1)
    filter_minimum_bandwidth: int = key(6, "", min=1)


@dataclass
class FilterAugment2(FilterAugment):
    n_transform: int = key(1, "", min=0)


@dataclass
class TimeAugment(Block):
    apply_mask: bool = key(False, "")
    apply_shift: bool = key(False, "")
    mask_target: Literal["desed_strong", "strong", "all"] = key("desed_strong", "")
    shift_range: float = key(0.075, "", min=0)
    shift_target: Literal["desed", "all"] = key("desed", "")
    min_mask_ratio: float = key(0.05, "", **PROBABILITY)
    max_mask_ratio: float = key(0.3, "", **PROBABILITY)


@dataclass
class TimeAugment2(TimeAugment):
    apply_mask: bool = key(True, "")


@dataclass
class MixAugment(Block):
    apply_mixup: bool = key(True, "")
    apply_mixstyle: bool = key(True, "")
    mixup_p: float = key(0.5, "", **PROBABILITY)
    mixstyle_p: float = key(0.5, "", **PROBABILITY)
    mixstyle_alpha: float = key(0.3, "", gt=0)
    mixup_unlabeled: bool = key(True, "")
    mixup_desed_strong: bool = key(True, "")
    mixup_maestro: bool = key(True, "")
    mixup_weak: bool = key(True, "")
    mixup_max_coef: bool = key(True, "")
    mixup_desed_maestro: bool = key(True, "")
    mixstyle_desed_strong: bool = key(True, "")
    mixstyle_maestro: bool = key(True, "")
    mixstyle_unlabeled: bool = key(True, "")
    mixstyle_weak: bool = key(True, "")
    mixstyle_desed_maestro: bool = key(True, "")


@dataclass
class FreqWarp(Block):
    apply: bool = key(1, "")
    p: float = key(0.5, "", **PROBABILITY)
    include_maestro: bool = key(False, "")


LossType = Literal["BCELoss", "MSELoss", "both"]


@dataclass
class Loss(Block):
    maestro_type: LossType = key("BCELoss", "")
    pseudo_type: LossType = key("BCELoss", "")
    selfsup_type: LossType = key("MSELoss", "")
    harden_labels_maestro_p: float = key(0.0, "", **PROBABILITY)
    harden_pseudo_labels_p: float = key(0.0, "", **PROBABILITY)


@dataclass
class Scaler(Block):
    statistic: Literal["instance"] = key("instance", "")
    normtype: Literal["minmax", "standard", "mean"] = key("minmax", "")
    dims: tuple[int, ...] = key((2, 3), "")


@dataclass
class Wandb(Block):
    name: str | None = key(None, "run name")
    project: str = key("dcase24_task4", "")
    offline: bool = key(False, "force offline mode")
    tags: list[str] = key([], "")


# ------------------------------------------------------------------------------------------------ experiments
@dataclass
class _T4(Block):
    """The keys both stages share (stage-1 defaults)."""

    arch: str | None = key(None, "required: atst_frame | fpasst | beats")
    base_path: str | None = key(None, "dataset root; None: $T4_DATASET_PATH, else ./data")
    resources_path: str | None = key(None, "external_strong_split/, exclude/, dirs/; None: the repository's resources/")
    pseudo_labels: str | None = key(None, "folder or name (in preds_path) of pseudo-label files; "
                                          "None: resources/pseudo-labels")
    model_path: str | None = key(None, "where checkpoint names are looked up; None: resources/pretrained_models")
    ckpt_path: str | None = key(None, "training: a last.ckpt to resume; test: the checkpoint")
    audio_len: float = key(10, "", gt=0)
    sample_rate: int = key(SAMPLE_RATE, "", min=1)
    gain_augment: float = key(0, "", min=0)
    ema_factor: float = key(0.999, "mean-teacher EMA", **PROBABILITY)
    val_thresholds: list[float] = key([0.5], "", **PROBABILITY)
    test_n_thresholds: int = key(50, "", min=1)
    atst_checkpoint: str | None = key("atst_as.ckpt", "ATST-Frame SSL weights of the reference's model code")
    beats_checkpoint: str | None = key("beats_as.pt", "BEATs weights (file or name) the backbone starts from")
    compile: bool = key(False, "torch.compile of the SED model (training: student and teacher; store_predictions); "
                               "a compilation failure falls back to eager with one warning")
    trainer: Trainer = block(Trainer)
    optimizer: Optimizer1 = block(Optimizer1)
    mel: Mel = block(Mel)
    passt_mel: PasstMel = block(PasstMel)
    fpasst: FPaSST = block(FPaSST)
    atst_frame: ATSTFrame = block(ATSTFrame)
    beats: BEATs = block(BEATs)
    encoder: Encoder = block(Encoder)
    t4_wrapper: T4Wrapper = block(T4Wrapper)
    training: Training = block(Training)
    validation: Validation = block(Validation)
    test: Test = block(Test)
    loss_weights: tuple[float, ...] = key((0.08, 0.05, 0.08, 0.21, 0.58, 0.0), "(MAESTRO strong, DESED real strong, "
                                          "synth strong, weak, SSL, pseudo-label)", min=0, length=NUM_LOSS_WEIGHTS)
    ssl_scale_max: float = key(2.0, "", min=0)
    ssl_loss_warmup_steps: int = key(14_000, "", min=0)
    ssl_no_class_mask: bool = key(False, "")
    include_maestro_ssl: bool = key(True, "")
    exclude_maestro_weak_ssl: bool = key(False, "")
    median_window: list[int] = key(list(MEDIAN_WINDOWS), "per-class median filter (frames)", min=1,
                                   length=NUM_CLASSES)
    filter_augment: FilterAugment = block(FilterAugment)
    time_augment: TimeAugment = block(TimeAugment)
    mix_augment: MixAugment = block(MixAugment)
    loss: Loss = block(Loss)
    scaler: Scaler = block(Scaler)
    wandb: Wandb = block(Wandb)


@dataclass
class Stage1(_T4):
    """``ex_stage1``: the CRNN trained on top of a frozen transformer."""

    pseudo_strong_no_class_mask: bool = key(False, "")


@dataclass
class Stage2(_T4):
    """``ex_stage2``: transformer + CRNN fine-tuned end to end; store, ensemble and evaluate predictions."""

    trainer: Trainer2 = block(Trainer2)
    optimizer: Optimizer2 = block(Optimizer2)
    passt_mel: PasstMel2 = block(PasstMel2)
    t4_wrapper: T4Wrapper2 = block(T4Wrapper2)
    training: Training2 = block(Training2)
    loss_weights: tuple[float, ...] = key((2, 1, 1, 1, 70, 0), "(MAESTRO strong, DESED real strong, synth strong, "
                                          "weak, SSL, pseudo-label)", min=0, length=NUM_LOSS_WEIGHTS)
    ssl_scale_max: float = key(1.0, "", min=0)
    ssl_loss_warmup_steps: int = key(270, "", min=0)
    filter_augment: FilterAugment2 = block(FilterAugment2)
    time_augment: TimeAugment2 = block(TimeAugment2)
    freq_warp: FreqWarp = block(FreqWarp)
    use_ict_loss: bool = key(True, "interpolation-consistency loss")
    # store_predictions / ensemble_predictions / eval_predictions (top-level keys, as in the reference's commands)
    pretrained_name: str | None = key(None, "checkpoint or prediction folder a command works on; "
                                            "None: t4_wrapper.model_init_id, else atst_stage2")
    pretrained_names: tuple[str, ...] = key(("atst_stage2", "passt_stage2", "beats_stage2"),
                                            "ensemble_predictions: the member prediction folders")
    # checked with pretrained_names by configs.ensemble_weight_errors (the command checks it the same way)
    ensemble_weights: Any = key(None, "ensemble_predictions: one weight >= 0 per member (normalised); "
                                      "None: equal weights")
    store_sets: tuple[str, ...] | None = key(None, "store_predictions: only these sets; None: all 12")
    out_name: str | None = key(None, "output folder name of store / ensemble")
    mode: Literal["student", "teacher"] = key("student", "which model of a checkpoint store_predictions runs")
    batch_size: int = key(128, "store_predictions batch size", min=1)
    output_path: str | None = key(None, "store_predictions writes below it; None: resources/predictions")
    preds_path: str | None = key(None, "ensemble / eval / pseudo-label names are looked up in it; "
                                        "None: resources/predictions")
    overwrite: bool = key(False, "replace existing prediction folders")
    predict_precision: Literal["32", "32-true", "fp32", "bf16", "bf16-mixed", "16", "16-mixed", "fp16"] = key(
        "32", "store_predictions: float32, or bfloat16 / float16 autocast on a GPU")
    classwise: bool = key(True, "cSEBBs: tune per class")
    step_filter_lengths: tuple[float, ...] = key((0.38, 0.42, 0.46, 0.50, 0.54, 0.58, 0.62, 0.66),
                                                 "cSEBBs grid (seconds)", gt=0)
    merge_thresholds_rel: tuple[float, ...] = key((1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25), "cSEBBs grid", gt=0)
    merge_thresholds_abs: tuple[float, ...] = key((0.15, 0.175, 0.2, 0.225, 0.25, 0.275, 0.3, 0.325),
                                                  "cSEBBs grid", gt=0)
    num_jobs: int | None = key(None, "cSEBBs tuning processes; None: all cores", min=1)
    cross_validation_folds: int = key(5, "cross-validated cSEBBs figure for devtest; 0 disables it", min=0)


STAGES = {1: Stage1, 2: Stage2}
