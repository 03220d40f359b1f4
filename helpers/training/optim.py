"""Optimizer and learning-rate schedules of both stages (the reference's ``get_optimizer`` / ``get_lr_scheduler``).

- Optimizer: Adam, or AdamW when ``optimizer.adamw``; every parameter group carries its ``weight_decay``
  explicitly (the reference gave plain Adam no weight decay at all: ``adamw=False`` keeps that, weight decay 0).
- Schedules, stepped once per optimizer step over ``num_training_steps`` = Lightning's
  ``trainer.estimated_stepping_batches`` (gradient accumulation and devices included):
  ``cos``/``cosine``: linear warm-up from 0 over ``num_warmup_steps``, then half a cosine down to 0
  (the formula of ``transformers.get_cosine_schedule_with_warmup``, num_cycles 0.5);
  ``linear``: the same warm-up, then linear decay from the group's LR to ``lr_end`` (``get_polynomial_decay_
  schedule_with_warmup`` with power 1); ``exp``: ``lr · gamma^step`` (no warm-up, as the reference).
  Written here as ``LambdaLR`` factors, without the ``transformers`` dependency.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

SCHEDULE_MODES = ("cos", "cosine", "linear", "exp")
COSINE_CYCLES = 0.5  # half a cosine: from the peak LR down to 0


def build_optimizer(groups: Iterable[dict], *, adamw: bool, weight_decay: float, betas) -> torch.optim.Optimizer:
    """Adam / AdamW over ``groups`` (dicts with ``params``, ``lr`` and optionally ``weight_decay``, ``name``).

    With ``adamw`` the groups' weight decay (default ``weight_decay``) is decoupled; without, Adam runs with
    weight decay 0 on every group, as the reference's ``torch.optim.Adam(groups, betas=betas)``.
    """
    groups = [dict(g) for g in groups]
    if not groups:
        raise ValueError("build_optimizer: no parameter groups (nothing is trainable)")
    for group in groups:
        group["weight_decay"] = float(group.get("weight_decay", weight_decay)) if adamw else 0.0
    betas = tuple(float(b) for b in betas)
    if adamw:
        return torch.optim.AdamW(groups, betas=betas)
    return torch.optim.Adam(groups, betas=betas)


def _warmup(step: int, num_warmup_steps: int, start: float) -> float:
    """Linear warm-up multiplier from ``start`` (0: from zero) to 1 over ``num_warmup_steps``."""
    return start + (1.0 - start) * step / max(1, num_warmup_steps)


def warmup_cosine_factor(step: int, num_warmup_steps: int, num_training_steps: int, start: float = 0.0) -> float:
    """LR multiplier: linear warm-up (from ``start``), then cosine decay to 0 at ``num_training_steps``."""
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps, start)
    progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * COSINE_CYCLES * 2.0 * progress)))


def warmup_linear_factor(step: int, num_warmup_steps: int, num_training_steps: int, lr_init: float,
                         lr_end: float, start: float = 0.0) -> float:
    """LR multiplier: linear warm-up (from ``start``), then linear decay from ``lr_init`` to ``lr_end``, constant
    after."""
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps, start)
    if lr_init <= 0:
        return 0.0
    if step > num_training_steps:
        return lr_end / lr_init
    remaining = 1.0 - (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
    return ((lr_init - lr_end) * remaining + lr_end) / lr_init


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    num_training_steps: int,
    *,
    schedule_mode: str = "cos",
    num_warmup_steps: int = 0,
    gamma: float = 0.999996,
    lr_end: float = 1e-7,
    warmup_start: Sequence[float] | None = None,
) -> LRScheduler:
    """The per-step LR scheduler of ``optimizer.schedule_mode`` (see the module docstring).

    ``warmup_start``: per parameter group, the multiplier the warm-up starts from (default 0; the AudioSet-strong
    experiment's ``optimizer.initial_lr`` / ``lr`` ratio)."""
    if schedule_mode not in SCHEDULE_MODES:
        raise ValueError(f"optimizer.schedule_mode={schedule_mode!r} is unknown; expected one of {SCHEDULE_MODES}")
    if num_training_steps <= 0 or not math.isfinite(num_training_steps):
        raise ValueError(
            f"the LR schedule needs a finite number of optimizer steps, got {num_training_steps}; "
            "set trainer.max_epochs or trainer.max_steps"
        )
    starts = [0.0] * len(optimizer.param_groups) if warmup_start is None else [float(s) for s in warmup_start]
    if len(starts) != len(optimizer.param_groups):
        raise ValueError(f"warmup_start has {len(starts)} values for {len(optimizer.param_groups)} parameter groups")
    if schedule_mode == "exp":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    if schedule_mode in ("cos", "cosine"):
        return LambdaLR(optimizer, [
            (lambda step, start=start: warmup_cosine_factor(step, num_warmup_steps, num_training_steps, start))
            for start in starts])
    factors = [
        (lambda step, lr=group["lr"], start=start: warmup_linear_factor(step, num_warmup_steps, num_training_steps,
                                                                         lr, lr_end, start))
        for group, start in zip(optimizer.param_groups, starts)
    ]
    return LambdaLR(optimizer, factors)


def learning_rates(optimizer: torch.optim.Optimizer) -> Mapping[str, float]:
    """``{group name: current lr}`` for logging (unnamed groups as ``group<i>``)."""
    return {g.get("name", f"group{i}"): float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


__all__ = ["build_optimizer", "build_scheduler", "warmup_cosine_factor", "warmup_linear_factor", "learning_rates",
           "SCHEDULE_MODES"]
