"""The mean teacher: an exponential moving average (EMA) of the student's parameters.

Reference (CPJKU/cpjku_dcase24 ``update_ema``, called in ``on_before_zero_grad`` of both stages):
alpha = min(1 - 1/(step + 1), ema_factor); teacher = alpha * teacher + (1 - alpha) * student, on
parameters only. The first update (step 0) copies the student; early updates are a true running
mean until the EMA factor takes over. Buffers (BatchNorm running statistics) are NOT averaged in
the reference: the teacher's own buffers change only through the teacher's forward passes in
train mode. ``ema_buffers=True`` averages floating-point buffers as well (and copies integer ones,
e.g. ``num_batches_tracked``), for a teacher kept in eval mode.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` whose parameters do not require gradients (updated by EMA only)."""
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def ema_alpha(step: int, ema_factor: float) -> float:
    """The teacher's share at ``step``: min(1 - 1/(step + 1), ema_factor)."""
    if step < 0:
        raise ValueError(f"EMA step must be >= 0, got {step}")
    if not 0.0 <= ema_factor <= 1.0:
        raise ValueError(f"ema_factor must lie in [0, 1], got {ema_factor}")
    return min(1.0 - 1.0 / (step + 1), ema_factor)


def _matched(teacher_items: dict[str, torch.Tensor], student_items: dict[str, torch.Tensor], what: str):
    """Pairs (name, teacher tensor, student tensor); raises on differing names or shapes."""
    if teacher_items.keys() != student_items.keys():
        only_teacher = sorted(teacher_items.keys() - student_items.keys())
        only_student = sorted(student_items.keys() - teacher_items.keys())
        raise ValueError(
            f"EMA: teacher and student {what} differ: only in teacher {only_teacher[:5]}, "
            f"only in student {only_student[:5]}"
        )
    for name, teacher_tensor in teacher_items.items():
        student_tensor = student_items[name]
        if teacher_tensor.shape != student_tensor.shape:
            raise ValueError(
                f"EMA: {what[:-1]} {name!r} has shape {tuple(teacher_tensor.shape)} in the teacher and "
                f"{tuple(student_tensor.shape)} in the student"
            )
        yield name, teacher_tensor, student_tensor


@torch.no_grad()
def ema_update(
    teacher: nn.Module,
    student: nn.Module,
    step: int,
    ema_factor: float = 0.999,
    *,
    ema_buffers: bool = False,
) -> float:
    """In place, without autograd: teacher_p ← alpha * teacher_p + (1 - alpha) * student_p for every
    parameter (matched by name), alpha = :func:`ema_alpha` (step, ema_factor). Returns alpha.

    ``ema_buffers=False`` (reference): buffers untouched. ``True``: floating buffers averaged the
    same way, other buffers copied.
    """
    alpha = ema_alpha(step, ema_factor)
    parameters = _matched(dict(teacher.named_parameters()), dict(student.named_parameters()), "parameters")
    for _, teacher_parameter, student_parameter in parameters:
        teacher_parameter.lerp_(student_parameter.to(teacher_parameter.dtype), 1.0 - alpha)
    if ema_buffers:
        buffers = _matched(dict(teacher.named_buffers()), dict(student.named_buffers()), "buffers")
        for _, teacher_buffer, student_buffer in buffers:
            if teacher_buffer.is_floating_point():
                teacher_buffer.lerp_(student_buffer.to(teacher_buffer.dtype), 1.0 - alpha)
            else:
                teacher_buffer.copy_(student_buffer)
    return alpha
