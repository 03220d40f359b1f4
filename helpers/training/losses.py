"""Loss terms of the two training stages, as pure functions of predictions, targets and row selections.

What the reference (CPJKU/cpjku_dcase24 ``training_step`` of ``ex_stage1.py`` / ``ex_stage2.py``) computes,
with its magic scale factors given names:

- supervised: BCE (or ``loss.maestro_type``) on the student's strong probabilities of the MAESTRO, DESED
  real-strong and synthetic rows, BCE on the weak probabilities of the weak rows;
  stage 1: ``w0·L_maestro + w1·L_real + w2·L_synth + w3·L_weak``;
  stage 2: ``(w0·L_maestro + w1·L_real + w2·L_synth) / 3 + w3·L_weak / 2``;
- consistency (``loss.selfsup_type``, MSE by default) between student and teacher, scaled by the SSL weight
  ``min(step / ssl_loss_warmup_steps · w4, w4 · ssl_scale_max)``: mean teacher (strong + weak, stage 2 weak / 2)
  or, in stage 2 when mixup fired, interpolation consistency (ICT, see :func:`ict_term`);
- pseudo-labels (stage 1, ``w5 > 0``): ``w5 · (L_pl(DESED rows)·(w1 + w2 + w3) + L_pl(MAESTRO rows)·w0)``;
- stage 1 multiplies the total by 5 = ``len(loss_weights[:-1])`` ("to keep weighting behaviour").

All losses are computed in float32 on probabilities. A selection with no rows contributes 0 (the reference
would produce NaN). Rows without pseudo-labels (iteration 1) are left out of the pseudo-label loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LOSS_TYPES = ("BCELoss", "MSELoss", "both")
# loss type "both" = (MSE_WEIGHT_IN_BOTH · MSE + BCE) / BOTH_DIVISOR (reference).
MSE_WEIGHT_IN_BOTH = 4.0
BOTH_DIVISOR = 2.0

# Indices of ``loss_weights``.
W_MAESTRO, W_REAL_STRONG, W_SYNTH, W_WEAK, W_SSL, W_PSEUDO = range(6)
NUM_LOSS_WEIGHTS = 6

# Stage 1: the total is multiplied by the number of non-pseudo weights, len(loss_weights[:-1]) = 5.
STAGE1_TOTAL_SCALE = float(NUM_LOSS_WEIGHTS - 1)
# Stage 2: strong terms / 3, weak term / 2, mean-teacher weak term / 2, ICT: each sub-batch term's weak part / 2,
# sum of the terms / 8, times ssl_weight / 4.
STAGE2_STRONG_DIVISOR = 3.0
STAGE2_WEAK_DIVISOR = 2.0
STAGE2_MT_WEAK_DIVISOR = 2.0
ICT_WEAK_DIVISOR = 2.0
ICT_SUM_DIVISOR = 8.0
ICT_SSL_DIVISOR = 4.0

LossFn = Callable[[Tensor, Tensor], Tensor]


def _bce(prediction: Tensor, target: Tensor) -> Tensor:
    # attention-pooled weak probabilities can exceed 1 by a rounding error; BCE rejects that
    return F.binary_cross_entropy(prediction.clamp(0.0, 1.0), target)


def _mse(prediction: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(prediction, target)


def _both(prediction: Tensor, target: Tensor) -> Tensor:
    return (MSE_WEIGHT_IN_BOTH * _mse(prediction, target) + _bce(prediction, target)) / BOTH_DIVISOR


class LossFunction:
    """A ``loss.*_type`` loss on probabilities: float32 with autocast off, 0 for an empty selection.

    A class rather than a closure so that the LightningModule stays picklable (``ddp_spawn``).
    """

    _FUNCTIONS = {"BCELoss": _bce, "MSELoss": _mse, "both": _both}

    def __init__(self, kind: str, key: str = "loss"):
        if kind not in self._FUNCTIONS:
            raise ValueError(f"{key}={kind!r} is unknown; expected one of {LOSS_TYPES}")
        self.kind = kind
        self.key = key

    def __call__(self, prediction: Tensor, target: Tensor) -> Tensor:
        if prediction.shape != target.shape:
            raise ValueError(f"{self.key}: prediction {tuple(prediction.shape)} and target {tuple(target.shape)} "
                             "differ")
        if prediction.numel() == 0:
            return prediction.new_zeros((), dtype=torch.float32)
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            return self._FUNCTIONS[self.kind](prediction.float(), target.float())


def loss_function(kind: str, key: str = "loss") -> LossFunction:
    """The loss for a ``loss.*_type`` value: "BCELoss", "MSELoss" or "both" = (4·MSE + BCE) / 2 (see
    :class:`LossFunction`); ``key`` names the config key in error messages."""
    return LossFunction(kind, key)


def ssl_weight(step: int, warmup_steps: int, w_ssl: float, scale_max: float) -> float:
    """Consistency weight at optimizer step ``step``: linear ramp ``step / warmup_steps · w_ssl``, capped at
    ``w_ssl · scale_max`` (reference). ``warmup_steps <= 0`` means no ramp."""
    cap = w_ssl * scale_max
    if warmup_steps <= 0:
        return cap
    return min(step / warmup_steps * w_ssl, cap)


@dataclass(frozen=True)
class SupervisedTerms:
    """The four supervised losses (unweighted)."""

    maestro: Tensor
    real_strong: Tensor
    synth: Tensor
    weak: Tensor

    def weighted_strong(self, weights) -> Tensor:
        return (weights[W_MAESTRO] * self.maestro + weights[W_REAL_STRONG] * self.real_strong
                + weights[W_SYNTH] * self.synth)

    def weighted_weak(self, weights) -> Tensor:
        return weights[W_WEAK] * self.weak


def supervised_terms(
    strong: Tensor,
    weak: Tensor,
    labels: Tensor,
    weak_labels: Tensor,
    rows: dict[str, slice],
    *,
    strong_loss: LossFn,
    maestro_loss: LossFn,
    weak_loss: LossFn,
) -> SupervisedTerms:
    """Supervised losses of one batch.

    strong [B, C, T] and weak [B, C] student probabilities (class-masked), labels [B, C, T] (masked),
    weak_labels [B_weak, C] for the rows ``rows["weak"]``; ``rows`` maps "maestro", "desed_strong"
    (real strong), "synth", "weak" to their slices of the batch.
    """
    return SupervisedTerms(
        maestro=maestro_loss(strong[rows["maestro"]], labels[rows["maestro"]]),
        real_strong=strong_loss(strong[rows["desed_strong"]], labels[rows["desed_strong"]]),
        synth=strong_loss(strong[rows["synth"]], labels[rows["synth"]]),
        weak=weak_loss(weak[rows["weak"]], weak_labels),
    )


def mean_teacher_terms(
    student_strong: Tensor,
    student_weak: Tensor,
    teacher_strong: Tensor,
    teacher_weak: Tensor,
    strong_rows: Tensor,
    weak_rows: Tensor,
    loss: LossFn,
) -> tuple[Tensor, Tensor]:
    """(strong, weak) consistency between student and (detached) teacher on the rows selected by the bool
    vectors ``strong_rows`` / ``weak_rows`` [B]."""
    strong_term = loss(student_strong[strong_rows], teacher_strong.detach()[strong_rows])
    weak_term = loss(student_weak[weak_rows], teacher_weak.detach()[weak_rows])
    return strong_term, weak_term


def ict_term(
    student_strong: Tensor,
    student_weak: Tensor,
    teacher_strong: Tensor,
    teacher_weak: Tensor,
    loss: LossFn,
    *,
    weak_factor: float = 1.0,
) -> Tensor:
    """One sub-batch's interpolation-consistency term: ``L(s_strong, t_strong) + weak_factor · L(s_weak, t_weak) / 2``.

    The teacher outputs must already be mixed like the student's input (``helpers.training.augment.apply_mixup_to`` on
    the teacher's predictions for the un-mixed input); they are clamped to [0, 1] and detached here.
    """
    strong_term = loss(student_strong, teacher_strong.clamp(0, 1).detach())
    weak_term = loss(student_weak, teacher_weak.clamp(0, 1).detach())
    return strong_term + weak_factor * weak_term / ICT_WEAK_DIVISOR


def pseudo_label_loss(
    strong: Tensor,
    pseudo: Tensor,
    has_pseudo: Tensor,
    maestro_rows: Tensor,
    weights,
    loss: LossFn,
) -> Tensor:
    """``w5 · (L(DESED rows)·(w1 + w2 + w3) + L(MAESTRO rows)·w0)`` on rows that have pseudo-labels.

    strong [B, C, T] student probabilities, pseudo [B, C, T] pseudo-labels, has_pseudo [B] bool, maestro_rows
    [B] bool. Rows without pseudo-labels (iteration 1) are left out; with none at all the loss is 0.
    """
    desed = has_pseudo & ~maestro_rows
    maestro = has_pseudo & maestro_rows
    desed_weight = weights[W_REAL_STRONG] + weights[W_SYNTH] + weights[W_WEAK]
    desed_term = loss(strong[desed], pseudo[desed]) * desed_weight
    maestro_term = loss(strong[maestro], pseudo[maestro]) * weights[W_MAESTRO]
    return (desed_term + maestro_term) * weights[W_PSEUDO]


__all__ = [
    "LOSS_TYPES", "loss_function", "ssl_weight", "SupervisedTerms", "supervised_terms", "mean_teacher_terms",
    "ict_term", "pseudo_label_loss", "STAGE1_TOTAL_SCALE", "STAGE2_STRONG_DIVISOR", "STAGE2_WEAK_DIVISOR",
    "STAGE2_MT_WEAK_DIVISOR", "ICT_SUM_DIVISOR", "ICT_SSL_DIVISOR", "ICT_WEAK_DIVISOR",
]
