"""Tests for helpers/training/ema.py: the EMA formula, the warm-up alpha, buffers and the teacher copy."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers.training.ema import ema_alpha, ema_update, make_teacher


class Toy(nn.Module):
    """Two parameters and one BatchNorm (buffers)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.b = nn.Parameter(torch.tensor(-3.0))
        self.norm = nn.BatchNorm1d(2)


def test_ema_alpha_warmup_then_factor():
    assert ema_alpha(0, 0.999) == 0.0
    assert ema_alpha(1, 0.999) == 0.5
    assert ema_alpha(9, 0.999) == pytest.approx(0.9)
    assert ema_alpha(10_000, 0.999) == 0.999
    with pytest.raises(ValueError):
        ema_alpha(-1, 0.999)


def test_ema_update_formula_on_two_parameters():
    student, teacher = Toy(), Toy()
    with torch.no_grad():
        teacher.a.copy_(torch.tensor([10.0, 20.0]))
        teacher.b.fill_(5.0)
    alpha = ema_update(teacher, student, step=3, ema_factor=0.999)
    assert alpha == pytest.approx(0.75)
    torch.testing.assert_close(teacher.a, torch.tensor([0.75 * 10 + 0.25 * 1, 0.75 * 20 + 0.25 * 2]))
    torch.testing.assert_close(teacher.b, torch.tensor(0.75 * 5 + 0.25 * -3))
    alpha = ema_update(teacher, student, step=100_000, ema_factor=0.9)
    assert alpha == 0.9
    torch.testing.assert_close(teacher.b, torch.tensor(0.9 * (0.75 * 5 - 0.75) + 0.1 * -3))
    # student untouched, no autograd graph on the teacher
    torch.testing.assert_close(student.a, torch.tensor([1.0, 2.0]))
    assert teacher.a.grad_fn is None


def test_first_update_copies_the_student():
    student, teacher = Toy(), Toy()
    with torch.no_grad():
        teacher.a.fill_(100.0)
    ema_update(teacher, student, step=0, ema_factor=0.999)
    torch.testing.assert_close(teacher.a, student.a)


def test_buffers_kept_by_default_and_averaged_on_request():
    student, teacher = Toy(), Toy()
    with torch.no_grad():
        student.norm.running_mean.fill_(4.0)
        student.norm.num_batches_tracked.fill_(7)
    ema_update(teacher, student, step=1)
    torch.testing.assert_close(teacher.norm.running_mean, torch.zeros(2))
    assert teacher.norm.num_batches_tracked.item() == 0
    ema_update(teacher, student, step=1, ema_buffers=True)
    torch.testing.assert_close(teacher.norm.running_mean, torch.full((2,), 2.0))
    assert teacher.norm.num_batches_tracked.item() == 7


def test_make_teacher_is_a_frozen_deep_copy():
    student = Toy()
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert teacher.a is not student.a
    torch.testing.assert_close(teacher.a, student.a)


def test_mismatched_models_raise():
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(2, 2), Toy(), step=1)
    with pytest.raises(ValueError, match="shape"):
        ema_update(nn.Linear(2, 3), nn.Linear(2, 2), step=1)
