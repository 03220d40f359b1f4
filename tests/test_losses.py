"""Loss terms, SSL warm-up, ICT, stage strategies, optimizer groups and LR schedules on hand-made inputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers.training import losses
from helpers.training.ema import ema_update, make_teacher
from helpers.training.optim import build_optimizer, build_scheduler, warmup_cosine_factor, warmup_linear_factor
import configs
from helpers.training.stages import STAGE1, STAGE2, StepFeatures, augment_batch, group_slice, strategy_for

ROWS = {"maestro": slice(0, 2), "desed_strong": slice(2, 4), "synth": slice(4, 6), "weak": slice(6, 8),
        "unlabeled": slice(8, 10)}
WEIGHTS = (0.5, 0.25, 0.12, 0.1, 0.1, 1.5)


def _probs(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 0.98 + 0.01


def test_loss_types():
    p, t = _probs(3, 4, 5), _probs(3, 4, 5, seed=1)
    assert torch.allclose(losses.loss_function("BCELoss")(p, t), F.binary_cross_entropy(p, t))
    assert torch.allclose(losses.loss_function("MSELoss")(p, t), F.mse_loss(p, t))
    both = (4 * F.mse_loss(p, t) + F.binary_cross_entropy(p, t)) / 2
    assert torch.allclose(losses.loss_function("both")(p, t), both)
    with pytest.raises(ValueError, match="loss.maestro_type"):
        losses.loss_function("L1", "loss.maestro_type")


def test_empty_selection_is_zero_and_bce_tolerates_rounding():
    loss = losses.loss_function("BCELoss")
    assert loss(torch.zeros(0, 27), torch.zeros(0, 27)).item() == 0.0
    assert torch.isfinite(loss(torch.full((2, 3), 1.0 + 1e-7), torch.ones(2, 3)))


@pytest.mark.parametrize("step,expected", [(0, 0.0), (50, 0.05), (100, 0.1), (150, 0.15), (10_000, 0.2)])
def test_ssl_weight_warmup_and_cap(step, expected):
    assert math.isclose(losses.ssl_weight(step, 100, 0.1, 2.0), expected, rel_tol=1e-9)


def test_supervised_terms_use_the_named_rows():
    strong, labels = _probs(10, 27, 156), (_probs(10, 27, 156, seed=2) > 0.5).float()
    weak = _probs(10, 27, seed=3)
    weak_labels = (_probs(2, 27, seed=4) > 0.5).float()
    bce = losses.loss_function("BCELoss")
    terms = losses.supervised_terms(strong, weak, labels, weak_labels, ROWS, strong_loss=bce, maestro_loss=bce,
                                    weak_loss=bce)
    assert torch.allclose(terms.maestro, F.binary_cross_entropy(strong[0:2], labels[0:2]))
    assert torch.allclose(terms.real_strong, F.binary_cross_entropy(strong[2:4], labels[2:4]))
    assert torch.allclose(terms.synth, F.binary_cross_entropy(strong[4:6], labels[4:6]))
    assert torch.allclose(terms.weak, F.binary_cross_entropy(weak[6:8], weak_labels))
    expected = 0.5 * terms.maestro + 0.25 * terms.real_strong + 0.12 * terms.synth
    assert torch.allclose(terms.weighted_strong(WEIGHTS), expected)


def test_pseudo_label_loss_weights_and_skips_rows_without_labels():
    strong, pseudo = _probs(10, 27, 156), _probs(10, 27, 156, seed=5)
    maestro = torch.zeros(10, dtype=torch.bool)
    maestro[:2] = True
    has = torch.ones(10, dtype=torch.bool)
    bce = losses.loss_function("BCELoss")
    full = losses.pseudo_label_loss(strong, pseudo, has, maestro, WEIGHTS, bce)
    desed = F.binary_cross_entropy(strong[2:], pseudo[2:]) * (0.25 + 0.12 + 0.1)
    mae = F.binary_cross_entropy(strong[:2], pseudo[:2]) * 0.5
    assert torch.allclose(full, (desed + mae) * 1.5)
    # iteration 1: no pseudo-labels at all -> 0; some rows without -> those rows are left out
    assert losses.pseudo_label_loss(strong, pseudo, torch.zeros(10, dtype=torch.bool), maestro, WEIGHTS, bce) == 0
    has[5:] = False
    partial = losses.pseudo_label_loss(strong, pseudo, has, maestro, WEIGHTS, bce)
    desed = F.binary_cross_entropy(strong[2:5], pseudo[2:5]) * (0.25 + 0.12 + 0.1)
    assert torch.allclose(partial, (desed + mae) * 1.5)


def test_mean_teacher_and_ict_terms():
    s_strong, t_strong = _probs(10, 27, 156), _probs(10, 27, 156, seed=6)
    s_weak, t_weak = _probs(10, 27, seed=7), _probs(10, 27, seed=8)
    mse = losses.loss_function("MSELoss")
    rows = torch.ones(10, dtype=torch.bool)
    weak_rows = rows.clone()
    weak_rows[:2] = False  # exclude_maestro_weak_ssl
    strong_term, weak_term = losses.mean_teacher_terms(s_strong, s_weak, t_strong, t_weak, rows, weak_rows, mse)
    assert torch.allclose(strong_term, F.mse_loss(s_strong, t_strong))
    assert torch.allclose(weak_term, F.mse_loss(s_weak[2:], t_weak[2:]))
    term = losses.ict_term(s_strong, s_weak, t_strong * 2, t_weak, mse, weak_factor=0.0)
    assert torch.allclose(term, F.mse_loss(s_strong, (t_strong * 2).clamp(0, 1)))  # teacher clamped, no weak
    # The reference's ICT sub-batch term: strong MSE + weak MSE / 2 (weak_factor 1).
    term = losses.ict_term(s_strong, s_weak, t_strong, t_weak, mse)
    assert torch.allclose(term, F.mse_loss(s_strong, t_strong) + F.mse_loss(s_weak, t_weak) / 2)


def test_stage_strategies_reproduce_the_reference_scales():
    assert STAGE1.total_scale == 5 == len(WEIGHTS[:-1])
    assert (STAGE2.strong_divisor, STAGE2.weak_divisor, STAGE2.mean_teacher_weak_divisor) == (3, 2, 2)
    assert (STAGE2.ict_sum_divisor, STAGE2.ict_ssl_divisor) == (8, 4)
    assert strategy_for(1) is STAGE1 and strategy_for(2) is STAGE2
    with pytest.raises(ValueError):
        strategy_for(3)
    assert group_slice(ROWS, ("desed_strong", "synth")) == slice(2, 6)
    with pytest.raises(ValueError, match="adjacent"):
        group_slice(ROWS, ("maestro", "weak"))


def _features(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(10, 27, 156, generator=g) > 0.9).float()
    mask = torch.zeros(10, 27, dtype=torch.bool)
    mask[:2, 10:] = True  # MAESTRO rows
    mask[2:, :12] = True  # DESED rows
    labels = labels * mask[:, :, None]
    return StepFeatures(cnn=torch.rand(10, 1, 128, 626, generator=g), transformer=torch.randn(10, 1, 64, 1001),
                        labels=labels, weak_labels=labels[6:8].amax(-1), pseudo=torch.rand(10, 27, 156), mask=mask)


def _config(**mix):
    # the stage-2 tree holds every augmentation block (freq_warp is stage 2's); stage 1's strategy ignores freq_warp
    return configs.merge_config(configs.default_config(2), {
        "mix_augment": dict(apply_mixup=True, mixup_p=1.0, apply_mixstyle=False, **mix),
        "time_augment": dict(apply_mask=True, mask_target="desed_strong"),
        "filter_augment": dict(apply=1, p=1.0, n_transform=2), "freq_warp": dict(apply=0)})


def test_stage1_augmentation_mixes_named_groups_and_keeps_teacher_view_separate():
    torch.manual_seed(0)
    x = _features()
    original = x.cnn.clone()
    out = augment_batch(x, ROWS, STAGE1, _config(), transformer_units_per_db=0.01)
    assert set(out.mixups) == {"weak", "strong", "unlabeled"}
    assert out.mixups["strong"][0] == slice(0, 6)
    assert not torch.equal(out.student_cnn, out.teacher_cnn)  # two FilterAugment views
    assert torch.equal(out.teacher_transformer, out.student_transformer)  # stage 1: transformer not filtered
    assert not torch.equal(original, out.student_cnn)
    # the joint DESED + MAESTRO mixup extends the MAESTRO rows' mask by the partner's active classes
    assert out.mask[:6].sum() >= _features().mask[:6].sum()


def test_stage2_teacher_sees_unmixed_features():
    torch.manual_seed(0)
    x = _features()
    cfg = _config(mixup_desed_maestro=False)
    cfg["time_augment"]["apply_mask"] = False
    cfg["filter_augment"]["n_transform"] = 1
    before = x.cnn.clone()
    out = augment_batch(x, ROWS, STAGE2, cfg, transformer_units_per_db=0.01)
    assert set(out.mixups) == {"weak", "desed_strong", "maestro", "unlabeled"}
    assert torch.equal(out.teacher_cnn, before)
    assert not torch.equal(out.student_cnn, before)


def test_ema_update_tracks_student():
    student = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(2.0)
    ema_update(teacher, student, step=0, ema_factor=0.999, ema_buffers=True)  # step 0 copies
    assert torch.allclose(teacher[0].weight, student[0].weight)
    assert torch.allclose(teacher[1].running_mean, student[1].running_mean)


def test_optimizer_groups_weight_decay_and_schedules():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    groups = [{"name": "cnn", "params": [a], "lr": 1e-3, "weight_decay": 1e-2}, {"name": "rnn", "params": [b],
                                                                                  "lr": 1e-4}]
    adamw = build_optimizer(groups, adamw=True, weight_decay=1e-3, betas=(0.9, 0.999))
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [1e-2, 1e-3]
    adam = build_optimizer(groups, adamw=False, weight_decay=1e-3, betas=(0.9, 0.999))
    assert [g["weight_decay"] for g in adam.param_groups] == [0.0, 0.0]  # reference: Adam without decay

    assert warmup_cosine_factor(0, 10, 110) == 0 and warmup_cosine_factor(5, 10, 110) == 0.5
    assert warmup_cosine_factor(10, 10, 110) == 1.0 and math.isclose(warmup_cosine_factor(60, 10, 110), 0.5)
    assert math.isclose(warmup_cosine_factor(110, 10, 110), 0.0, abs_tol=1e-12)
    assert math.isclose(warmup_linear_factor(110, 10, 110, 1e-3, 1e-7), 1e-4)

    scheduler = build_scheduler(adamw, 110, schedule_mode="cos", num_warmup_steps=10)
    lrs = []
    for _ in range(60):
        adamw.step()
        scheduler.step()
        lrs.append(adamw.param_groups[0]["lr"])
    assert math.isclose(lrs[9], 1e-3) and math.isclose(lrs[-1], 0.5e-3)
    assert math.isclose(adamw.param_groups[1]["lr"], 0.5e-4)
    with pytest.raises(ValueError, match="schedule_mode"):
        build_scheduler(adamw, 10, schedule_mode="step")


# ------------------------------------------------------------------ guards and clamps (mutation-testing survivors)
def test_bce_clamps_both_ends_and_empty_selection_is_float32():
    loss = losses.loss_function("BCELoss")
    below = loss(torch.tensor([-1e-7, 0.5]), torch.tensor([0.0, 1.0]))  # a rounding error below 0
    assert torch.allclose(below, F.binary_cross_entropy(torch.tensor([0.0, 0.5]), torch.tensor([0.0, 1.0])))
    for dtype in (torch.float16, torch.bfloat16):
        zero = loss(torch.zeros(0, 27, dtype=dtype), torch.zeros(0, 27, dtype=dtype))
        assert zero.dtype == torch.float32 and zero.item() == 0.0


def test_loss_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"^loss='L1' is unknown"):
        losses.loss_function("L1")
    with pytest.raises(ValueError, match=r"^loss='L1' is unknown"):
        losses.LossFunction("L1")
    with pytest.raises(ValueError, match=r"^loss: prediction \(2,\) and target \(3,\) differ"):
        losses.loss_function("MSELoss")(torch.zeros(2), torch.zeros(3))


def test_ssl_weight_ramp_edges():
    assert losses.ssl_weight(5, 0, 2.0, 3.0) == 6.0  # no ramp: the cap at once
    assert losses.ssl_weight(0, 1, 2.0, 3.0) == 0.0  # a one-step ramp starts at 0
    assert losses.ssl_weight(1, 1, 2.0, 3.0) == 2.0


def test_ict_term_clamps_both_teachers_to_probabilities():
    s_strong, s_weak = _probs(4, 27, 156), _probs(4, 27, seed=3)
    t_strong = _probs(4, 27, 156, seed=4) * 3 - 1  # values in (-1, 2)
    t_weak = _probs(4, 27, seed=5) * 3 - 1
    mse = losses.loss_function("MSELoss")
    term = losses.ict_term(s_strong, s_weak, t_strong, t_weak, mse)
    expected = F.mse_loss(s_strong, t_strong.clamp(0, 1)) + F.mse_loss(s_weak, t_weak.clamp(0, 1)) / 2
    assert torch.allclose(term, expected)


def test_supervised_terms_weighting():
    terms = losses.SupervisedTerms(maestro=torch.tensor(1.0), real_strong=torch.tensor(2.0),
                                   synth=torch.tensor(3.0), weak=torch.tensor(4.0))
    assert terms.weighted_strong(WEIGHTS).item() == pytest.approx(0.5 * 1 + 0.25 * 2 + 0.12 * 3)
    assert terms.weighted_weak(WEIGHTS).item() == pytest.approx(0.1 * 4)
