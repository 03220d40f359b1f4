"""What differs between stage 1 and stage 2 of the training, as two small named strategies.

Stage 1 (CRNN on a frozen transformer) and stage 2 (full fine-tuning) share one LightningModule
(``helpers.training.system.SEDSystem``); a :class:`StageStrategy` says what is different:

============================  ==========================================  ==========================================
                              stage 1                                     stage 2
============================  ==========================================  ==========================================
trainable                     CRNN only (``crnn_lr``); transformer and    everything: ``cnn_lr``, ``rnn_lr`` and 14
                              its front-end frozen and in eval mode       transformer groups ``pt_lr·pt_lr_scale^i``
augmentation order            mixup → mixstyle → time mask →              time mask → (teacher's un-mixed copy) →
                              FilterAugment (CNN input only, n views)     mixup → mixstyle → freq warp → FilterAugment
teacher input                 the teacher's FilterAugment view            the un-mixed copy
consistency loss              mean teacher                                ICT when mixup fired and ``use_ict_loss``,
                                                                          else mean teacher (weak term / 2)
supervised scaling            w·L summed                                  strong terms / 3, weak term / 2
total scale                   × 5 (= len(loss_weights[:-1]))              × 1
pseudo-label loss             if w5 > 0                                   if w5 > 0 (the recipes use 0)
============================  ==========================================  ==========================================

The batch augmentation pipeline itself (:func:`augment_batch`) is here too, because its order and its targets
are the main stage difference. It works on named sub-batches (``maestro``, ``desed_strong``, ``synth``,
``weak``, ``unlabeled``: the sampler's ``sub_batch_slices``), never on magic cumsum indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor, nn

from helpers.training import augment
from helpers.training.losses import (
    ICT_SSL_DIVISOR, ICT_SUM_DIVISOR, STAGE1_TOTAL_SCALE, STAGE2_MT_WEAK_DIVISOR, STAGE2_STRONG_DIVISOR,
    STAGE2_WEAK_DIVISOR,
)
from models.param_groups import param_groups

SUB_BATCHES = ("maestro", "desed_strong", "synth", "weak", "unlabeled")
# Derived row groups (contiguous runs of sub-batches, in batch order).
STRONG_GROUP = ("maestro", "desed_strong", "synth")  # every strongly labelled row
DESED_STRONG_GROUP = ("desed_strong", "synth")  # the reference's "desed_strong_mask": real strong + synthetic
DESED_GROUP = ("desed_strong", "synth", "weak", "unlabeled")
MIXUP_ALPHA = 0.2  # Beta(0.2, 0.2) mixing coefficients (reference)


@dataclass(frozen=True)
class StageStrategy:
    """The stage-specific choices of the training step (see the module docstring)."""

    stage: int
    train_transformer: bool
    mixup_before_time_mask: bool  # stage 1: mixup/mixstyle first; stage 2: time mask first
    teacher_sees_unmixed: bool  # stage 2: the teacher predicts on the features before mixup
    filter_augment_transformer: bool  # stage 2: FilterAugment also on the transformer input
    use_freq_warp: bool  # stage 2 only
    allow_ict: bool  # stage 2: ICT replaces mean teacher when mixup fired (and use_ict_loss)
    strong_divisor: float
    weak_divisor: float
    mean_teacher_weak_divisor: float
    total_scale: float
    ict_sum_divisor: float = ICT_SUM_DIVISOR
    ict_ssl_divisor: float = ICT_SSL_DIVISOR

    def param_groups(self, model: nn.Module, optimizer_cfg: Mapping) -> list[dict]:
        """Optimizer groups (and ``requires_grad``) for this stage, from the ``optimizer`` config block."""
        weight_decay = float(optimizer_cfg.get("weight_decay", 0.0))
        if self.stage == 1:
            crnn_lr = float(optimizer_cfg["crnn_lr"])
            return param_groups(model, cnn_lr=crnn_lr, rnn_lr=crnn_lr, weight_decay=weight_decay, stage=1)
        return param_groups(
            model, cnn_lr=float(optimizer_cfg["cnn_lr"]), rnn_lr=float(optimizer_cfg["rnn_lr"]),
            pt_lr=float(optimizer_cfg["pt_lr"]), pt_lr_scale=float(optimizer_cfg.get("pt_lr_scale", 1.0)),
            pt_trainable_layers=optimizer_cfg.get("pt_trainable_layers", "all"), weight_decay=weight_decay, stage=2,
        )

    def set_train_modes(self, student: nn.Module, teacher: nn.Module, transformer_frontend: nn.Module) -> None:
        """Modes inside a training step: the teacher always in eval (no dropout; its BatchNorm statistics
        follow the student's through the EMA of buffers); in stage 1 the frozen transformer and its front-end
        too (so e.g. PaSST's random mel-range augmentation is off, as in the reference)."""
        teacher.eval()
        if not self.train_transformer:
            student.as_model.eval()
            transformer_frontend.eval()


STAGE1 = StageStrategy(
    stage=1, train_transformer=False, mixup_before_time_mask=True, teacher_sees_unmixed=False,
    filter_augment_transformer=False, use_freq_warp=False, allow_ict=False, strong_divisor=1.0, weak_divisor=1.0,
    mean_teacher_weak_divisor=1.0, total_scale=STAGE1_TOTAL_SCALE,
)
STAGE2 = StageStrategy(
    stage=2, train_transformer=True, mixup_before_time_mask=False, teacher_sees_unmixed=True,
    filter_augment_transformer=True, use_freq_warp=True, allow_ict=True, strong_divisor=STAGE2_STRONG_DIVISOR,
    weak_divisor=STAGE2_WEAK_DIVISOR, mean_teacher_weak_divisor=STAGE2_MT_WEAK_DIVISOR, total_scale=1.0,
)


def strategy_for(stage: int) -> StageStrategy:
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    return STAGE1 if stage == 1 else STAGE2


# ------------------------------------------------------------------------------------------------ rows
def group_slice(slices: Mapping[str, slice], names: tuple[str, ...]) -> slice:
    """One slice covering the adjacent sub-batches ``names`` (in batch order)."""
    parts = [slices[n] for n in names]
    for left, right in zip(parts[:-1], parts[1:]):
        if left.stop != right.start:
            raise ValueError(f"sub-batches {names} are not adjacent in the batch: {parts}")
    return slice(parts[0].start, parts[-1].stop)


def rows_vector(batch_size: int, rows: slice, device) -> Tensor:
    """Bool [batch_size] selecting ``rows``."""
    selected = torch.zeros(batch_size, dtype=torch.bool, device=device)
    selected[rows] = True
    return selected


# ------------------------------------------------------------------------------------------------ augmentation
@dataclass
class StepFeatures:
    """Features and targets of one training batch while it is being augmented.

    cnn: linear mel [B, 1, 128, 626] (dB and min-max scaling happen at the model input, after augmentation);
    transformer: the transformer front-end output [B, 1, F, T]; labels, pseudo [B, 27, 156]; weak_labels
    [B_weak, 27] for the weak rows only; mask [B, 27] bool.
    """

    cnn: Tensor
    transformer: Tensor
    labels: Tensor
    weak_labels: Tensor
    pseudo: Tensor
    mask: Tensor


@dataclass
class AugmentedBatch:
    """Result of :func:`augment_batch`: the student's and the teacher's inputs, the targets, and the mixup
    of each mixed row group (``{group name: (slice, MixResult)}``; empty when mixup did not fire)."""

    student_cnn: Tensor
    student_transformer: Tensor
    teacher_cnn: Tensor
    teacher_transformer: Tensor
    labels: Tensor
    weak_labels: Tensor
    pseudo: Tensor
    mask: Tensor
    mixups: dict[str, tuple[slice, augment.MixResult]] = field(default_factory=dict)


def _mixup_groups(mix_cfg: Mapping) -> list[tuple[str, tuple[str, ...]]]:
    """(group name, sub-batches) mixed within, as the reference: weak; strong rows jointly or separately; unlabeled."""
    groups = []
    if mix_cfg.get("mixup_weak", True):
        groups.append(("weak", ("weak",)))
    joint = mix_cfg.get("mixup_desed_maestro", True) and mix_cfg.get("mixup_desed_strong", True) \
        and mix_cfg.get("mixup_maestro", True)
    if joint:
        groups.append(("strong", STRONG_GROUP))
    else:
        if mix_cfg.get("mixup_desed_strong", True):
            groups.append(("desed_strong", DESED_STRONG_GROUP))
        if mix_cfg.get("mixup_maestro", True):
            groups.append(("maestro", ("maestro",)))
    if mix_cfg.get("mixup_unlabeled", True):
        groups.append(("unlabeled", ("unlabeled",)))
    return groups


def _mixstyle_groups(mix_cfg: Mapping) -> list[tuple[str, ...]]:
    groups = []
    if mix_cfg.get("mixstyle_weak", True):
        groups.append(("weak",))
    if mix_cfg.get("mixstyle_desed_maestro", True) and mix_cfg.get("mixstyle_desed_strong", True) \
            and mix_cfg.get("mixstyle_maestro", True):
        groups.append(STRONG_GROUP)
    else:
        if mix_cfg.get("mixstyle_desed_strong", True):
            groups.append(DESED_STRONG_GROUP)
        if mix_cfg.get("mixstyle_maestro", True):
            groups.append(("maestro",))
    if mix_cfg.get("mixstyle_unlabeled", True):
        groups.append(("unlabeled",))
    return groups


def _apply_mixup(x: StepFeatures, slices: Mapping[str, slice], mix_cfg: Mapping) -> dict:
    mixups = {}
    for name, members in _mixup_groups(mix_cfg):
        rows = group_slice(slices, members)
        if rows.stop - rows.start < 2:
            continue
        # the weak rows mix their clip labels; all others their strong labels (and the mask of the joint group)
        labels = x.weak_labels if name == "weak" else x.labels[rows]
        mask = x.mask[rows] if name == "strong" else None
        result = augment.mixup([x.cnn[rows], x.transformer[rows]], [labels, x.pseudo[rows]], mask,
                               alpha=MIXUP_ALPHA, max_coef=bool(mix_cfg.get("mixup_max_coef", True)))
        x.cnn[rows], x.transformer[rows] = result.features
        if name == "weak":
            x.weak_labels = result.targets[0]
        else:
            x.labels[rows] = result.targets[0]
        x.pseudo[rows] = result.targets[1]
        if result.mask is not None:
            x.mask[rows] = result.mask
        mixups[name] = (rows, result)
    return mixups


def _apply_mixstyle(x: StepFeatures, slices: Mapping[str, slice], mix_cfg: Mapping) -> None:
    alpha = float(mix_cfg.get("mixstyle_alpha", 0.3))
    for members in _mixstyle_groups(mix_cfg):
        rows = group_slice(slices, members)
        if rows.stop - rows.start < 2:
            continue
        x.cnn[rows] = augment.mixstyle(x.cnn[rows], alpha=alpha, p=1.0)
        x.transformer[rows] = augment.mixstyle(x.transformer[rows], alpha=alpha, p=1.0)


def _time_mask_rows(slices: Mapping[str, slice], target: str, batch_size: int) -> slice:
    if target == "desed_strong":
        return group_slice(slices, DESED_STRONG_GROUP)
    if target == "strong":
        return group_slice(slices, STRONG_GROUP)
    if target == "all":
        return slice(0, batch_size)
    raise ValueError(f"time_augment.mask_target={target!r} is unknown; expected desed_strong, strong or all")


def _apply_time_mask(x: StepFeatures, slices: Mapping[str, slice], ta_cfg: Mapping) -> None:
    rows = _time_mask_rows(slices, ta_cfg.get("mask_target", "desed_strong"), x.cnn.shape[0])
    if rows.stop <= rows.start:
        return
    # fill 0: silence in the linear CNN mel (the floor after dB and min-max scaling), 0 in the normalised
    # transformer features, as the reference
    result = augment.time_mask([x.cnn[rows], x.transformer[rows]], [x.labels[rows], x.pseudo[rows]],
                               min_ratio=float(ta_cfg.get("min_mask_ratio", 0.05)),
                               max_ratio=float(ta_cfg.get("max_mask_ratio", 0.3)), fill_values=0.0)
    x.cnn[rows], x.transformer[rows] = result.features
    x.labels[rows], x.pseudo[rows] = result.targets


def _apply_frame_shift(x: StepFeatures, slices: Mapping[str, slice], ta_cfg: Mapping) -> None:
    target = ta_cfg.get("shift_target", "desed")
    if target == "all":
        rows = slice(0, x.cnn.shape[0])
    elif target == "desed":
        rows = group_slice(slices, DESED_GROUP)
    else:
        raise ValueError(f"time_augment.shift_target={target!r} is unknown; expected desed or all")
    result = augment.frame_shift([x.cnn[rows], x.transformer[rows]], [x.labels[rows], x.pseudo[rows]],
                                 shift_range=float(ta_cfg.get("shift_range", 0.075)))
    x.cnn[rows], x.transformer[rows] = result.features
    x.labels[rows], x.pseudo[rows] = result.targets


def _apply_freq_warp(x: StepFeatures, slices: Mapping[str, slice], include_maestro: bool) -> None:
    groups = [("weak",), DESED_STRONG_GROUP, ("unlabeled",)] + ([("maestro",)] if include_maestro else [])
    for members in groups:
        rows = group_slice(slices, members)
        if rows.stop > rows.start:
            x.transformer[rows] = augment.freq_warp(x.transformer[rows], p=1.0)


def augment_batch(
    x: StepFeatures,
    slices: Mapping[str, slice],
    strategy: StageStrategy,
    config: Mapping,
    *,
    transformer_units_per_db: float,
) -> AugmentedBatch:
    """Run the batch augmentations of ``strategy``'s stage on ``x`` (modified in place; pass clones).

    ``config`` is the experiment config (blocks ``mix_augment``, ``time_augment``, ``filter_augment`` and,
    stage 2, ``freq_warp``). One coin per augmentation per step (``should_apply``), as the reference.
    ``transformer_units_per_db``: feature change per dB for the transformer features
    (``helpers.training.augment.FEATURE_UNITS_PER_DB[arch]``; FilterAugment adds dB gains there).
    """
    mix_cfg = config.get("mix_augment", {})
    ta_cfg = config.get("time_augment", {})
    fa_cfg = config.get("filter_augment", {})
    fw_cfg = config.get("freq_warp", {}) if strategy.use_freq_warp else {}

    if ta_cfg.get("apply_shift", False):
        _apply_frame_shift(x, slices, ta_cfg)
    if not strategy.mixup_before_time_mask and ta_cfg.get("apply_mask", False):
        _apply_time_mask(x, slices, ta_cfg)
    teacher_cnn, teacher_transformer = (x.cnn.clone(), x.transformer.clone()) if strategy.teacher_sees_unmixed \
        else (None, None)

    mixups = {}
    if mix_cfg.get("apply_mixup", True) and augment.should_apply(float(mix_cfg.get("mixup_p", 0.5))):
        mixups = _apply_mixup(x, slices, mix_cfg)
    if mix_cfg.get("apply_mixstyle", True) and augment.should_apply(float(mix_cfg.get("mixstyle_p", 0.5))):
        _apply_mixstyle(x, slices, mix_cfg)
    if strategy.mixup_before_time_mask and ta_cfg.get("apply_mask", False):
        _apply_time_mask(x, slices, ta_cfg)
    if fw_cfg.get("apply", False) and augment.should_apply(float(fw_cfg.get("p", 0.5))):
        _apply_freq_warp(x, slices, bool(fw_cfg.get("include_maestro", False)))

    student_cnn, student_transformer = x.cnn, x.transformer
    filtered_cnn, filtered_transformer = x.cnn, x.transformer
    if fa_cfg.get("apply", False) and augment.should_apply(float(fa_cfg.get("p", 0.8))):
        filter_kwargs = dict(db_range=tuple(fa_cfg.get("filter_db_range", (-6, 6))),
                             n_band=tuple(fa_cfg.get("filter_bands", (3, 6))),
                             min_bw=int(fa_cfg.get("filter_minimum_bandwidth", 6)))
        n_transform = int(fa_cfg.get("n_transform", 1))
        # CNN branch: the linear mel, so the reference's multiplicative gains are exact dB gains
        student_cnn, filtered_cnn = augment.filter_augment_views(x.cnn, n_transform, log_domain=False,
                                                                 **filter_kwargs)
        if strategy.filter_augment_transformer:
            # transformer branch: log-domain features, dB gains added in feature units (reference bug fixed)
            student_transformer, filtered_transformer = augment.filter_augment_views(
                x.transformer, n_transform, log_domain=True, units_per_db=transformer_units_per_db,
                **filter_kwargs)
    if not strategy.teacher_sees_unmixed:
        teacher_cnn, teacher_transformer = filtered_cnn, filtered_transformer
    return AugmentedBatch(student_cnn, student_transformer, teacher_cnn, teacher_transformer, x.labels,
                          x.weak_labels, x.pseudo, x.mask, mixups)


__all__ = ["StageStrategy", "STAGE1", "STAGE2", "strategy_for", "augment_batch", "StepFeatures", "AugmentedBatch",
           "group_slice", "rows_vector", "SUB_BATCHES"]
