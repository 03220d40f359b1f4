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
    ICT_SSL_DIVISOR,
    ICT_SUM_DIVISOR,
    STAGE1_TOTAL_SCALE,
    STAGE2_MT_WEAK_DIVISOR,
    STAGE2_STRONG_DIVISOR,
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
        weight_decay = float(optimizer_cfg["weight_decay"])
        if self.stage == 1:
            crnn_lr = float(optimizer_cfg["crnn_lr"])
            return param_groups(model, cnn_lr=crnn_lr, rnn_lr=crnn_lr, weight_decay=weight_decay, stage=1)
        return param_groups(
            model, cnn_lr=float(optimizer_cfg["cnn_lr"]), rnn_lr=float(optimizer_cfg["rnn_lr"]),
            pt_lr=float(optimizer_cfg["pt_lr"]), pt_lr_scale=float(optimizer_cfg["pt_lr_scale"]),
            pt_trainable_layers=optimizer_cfg["pt_trainable_layers"], weight_decay=weight_decay, stage=2,
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


def step_features(batch: Mapping, rows: Mapping[str, slice], cnn: Tensor, transformer: Tensor,
                  loss_cfg: Mapping) -> StepFeatures:
    """The features and targets of a training batch, ready for :func:`augment_batch` (clones: the batch stays as it
    was). MAESTRO labels and pseudo-labels are hardened with the ``loss.harden_*_p`` probabilities."""
    labels = batch["strong"].float().clone()
    labels[rows["maestro"]] = augment.harden(labels[rows["maestro"]], float(loss_cfg["harden_labels_maestro_p"]))
    pseudo = augment.harden(batch["pseudo"].float().clone(), float(loss_cfg["harden_pseudo_labels_p"]))
    return StepFeatures(cnn=cnn.clone(), transformer=transformer.clone(), labels=labels,
                        weak_labels=batch["weak"][rows["weak"]].float().clone(), pseudo=pseudo,
                        mask=batch["mask"].bool().clone())


def masked_targets(aug: "AugmentedBatch", rows: Mapping[str, slice], *,
                   mask_pseudo: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(valid [B, 27], strong labels, weak labels, pseudo-labels), each zero outside the valid classes of its row
    (the mask after mixup extended it); pseudo-labels keep every class unless ``mask_pseudo``."""
    valid = aug.mask
    pseudo = aug.pseudo * valid[:, :, None] if mask_pseudo else aug.pseudo
    return valid, aug.labels * valid[:, :, None], aug.weak_labels * valid[rows["weak"]], pseudo


def _mixup_groups(mix_cfg: Mapping) -> list[tuple[str, tuple[str, ...]]]:
    """(group name, sub-batches) mixed within, as the reference: weak; strong rows jointly or separately; unlabeled."""
    groups = []
    if mix_cfg["mixup_weak"]:
        groups.append(("weak", ("weak",)))
    joint = mix_cfg["mixup_desed_maestro"] and mix_cfg["mixup_desed_strong"] \
        and mix_cfg["mixup_maestro"]
    if joint:
        groups.append(("strong", STRONG_GROUP))
    else:
        if mix_cfg["mixup_desed_strong"]:
            groups.append(("desed_strong", DESED_STRONG_GROUP))
        if mix_cfg["mixup_maestro"]:
            groups.append(("maestro", ("maestro",)))
    if mix_cfg["mixup_unlabeled"]:
        groups.append(("unlabeled", ("unlabeled",)))
    return groups


def _mixstyle_groups(mix_cfg: Mapping) -> list[tuple[str, ...]]:
    groups = []
    if mix_cfg["mixstyle_weak"]:
        groups.append(("weak",))
    if mix_cfg["mixstyle_desed_maestro"] and mix_cfg["mixstyle_desed_strong"] \
            and mix_cfg["mixstyle_maestro"]:
        groups.append(STRONG_GROUP)
    else:
        if mix_cfg["mixstyle_desed_strong"]:
            groups.append(DESED_STRONG_GROUP)
        if mix_cfg["mixstyle_maestro"]:
            groups.append(("maestro",))
    if mix_cfg["mixstyle_unlabeled"]:
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
                               alpha=MIXUP_ALPHA, max_coef=bool(mix_cfg["mixup_max_coef"]))
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
    alpha = float(mix_cfg["mixstyle_alpha"])
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
    rows = _time_mask_rows(slices, ta_cfg["mask_target"], x.cnn.shape[0])
    if rows.stop <= rows.start:
        return
    # fill 0: silence in the linear CNN mel (the floor after dB and min-max scaling), 0 in the normalised
    # transformer features, as the reference
    result = augment.time_mask([x.cnn[rows], x.transformer[rows]], [x.labels[rows], x.pseudo[rows]],
                               min_ratio=float(ta_cfg["min_mask_ratio"]),
                               max_ratio=float(ta_cfg["max_mask_ratio"]), fill_values=0.0)
    x.cnn[rows], x.transformer[rows] = result.features
    x.labels[rows], x.pseudo[rows] = result.targets


def _apply_frame_shift(x: StepFeatures, slices: Mapping[str, slice], ta_cfg: Mapping) -> None:
    target = ta_cfg["shift_target"]
    if target == "all":
        rows = slice(0, x.cnn.shape[0])
    elif target == "desed":
        rows = group_slice(slices, DESED_GROUP)
    else:
        raise ValueError(f"time_augment.shift_target={target!r} is unknown; expected desed or all")
    result = augment.frame_shift([x.cnn[rows], x.transformer[rows]], [x.labels[rows], x.pseudo[rows]],
                                 shift_range=float(ta_cfg["shift_range"]))
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
    (``models.registry.ARCH_SPECS[arch].feature_units_per_db``; FilterAugment adds dB gains there).
    """
    mix_cfg = config["mix_augment"]
    ta_cfg = config["time_augment"]
    fa_cfg = config["filter_augment"]

    if ta_cfg["apply_shift"]:
        _apply_frame_shift(x, slices, ta_cfg)
    if not strategy.mixup_before_time_mask and ta_cfg["apply_mask"]:
        _apply_time_mask(x, slices, ta_cfg)
    teacher_cnn, teacher_transformer = (x.cnn.clone(), x.transformer.clone()) if strategy.teacher_sees_unmixed \
        else (None, None)

    mixups = {}
    if mix_cfg["apply_mixup"] and augment.should_apply(float(mix_cfg["mixup_p"])):
        mixups = _apply_mixup(x, slices, mix_cfg)
    if mix_cfg["apply_mixstyle"] and augment.should_apply(float(mix_cfg["mixstyle_p"])):
        _apply_mixstyle(x, slices, mix_cfg)
    if strategy.mixup_before_time_mask and ta_cfg["apply_mask"]:
        _apply_time_mask(x, slices, ta_cfg)
    if strategy.use_freq_warp and config["freq_warp"]["apply"] and augment.should_apply(float(config["freq_warp"]["p"])):
        _apply_freq_warp(x, slices, bool(config["freq_warp"]["include_maestro"]))

    student_cnn, student_transformer = x.cnn, x.transformer
    filtered_cnn, filtered_transformer = x.cnn, x.transformer
    if fa_cfg["apply"] and augment.should_apply(float(fa_cfg["p"])):
        filter_kwargs = dict(db_range=tuple(fa_cfg["filter_db_range"]),
                             n_band=tuple(fa_cfg["filter_bands"]),
                             min_bw=int(fa_cfg["filter_minimum_bandwidth"]))
        n_transform = int(fa_cfg["n_transform"])
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
