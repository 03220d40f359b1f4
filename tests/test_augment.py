"""Tests for helpers/training/augment.py: shapes, determinism, and the label/mask semantics of each augmentation."""
from __future__ import annotations

import math

import pytest
import torch

from helpers.training import augment
from models.registry import ARCH_SPECS
from helpers.training.augment import (
    TRANSFORMER_FRAMES_PER_LABEL,
    apply_mixup_to,
    filter_augment,
    filter_augment_views,
    frame_shift,
    freq_warp,
    gain,
    harden,
    mixstyle,
    mixup,
    should_apply,
    time_mask,
)

B, C, N_LABEL = 6, 27, 156
CNN_SHAPE = (B, 1, 128, 626)
TRANSFORMER_SHAPE = (B, 1, 64, 1001)  # ATST


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def batch():
    g = _gen(123)
    return {
        "cnn": torch.randn(CNN_SHAPE, generator=g),
        "transformer": torch.randn(TRANSFORMER_SHAPE, generator=g),
        "strong": (torch.rand(B, C, N_LABEL, generator=g) > 0.7).float(),
        "weak": (torch.rand(B, C, generator=g) > 0.7).float(),
        "pseudo": torch.rand(B, C, N_LABEL, generator=g),
    }


# --- mixup -------------------------------------------------------------------------------------
def test_mixup_shapes_coef_and_same_perm_everywhere(batch):
    originals = {k: v.clone() for k, v in batch.items()}
    result = mixup([batch["cnn"], batch["transformer"]], [batch["strong"], batch["pseudo"]], generator=_gen())
    for k, v in batch.items():  # inputs untouched
        assert torch.equal(v, originals[k])
    assert [f.shape for f in result.features] == [torch.Size(CNN_SHAPE), torch.Size(TRANSFORMER_SHAPE)]
    assert result.mask is None
    assert result.perm.shape == (B,) and sorted(result.perm.tolist()) == list(range(B))
    assert torch.all(result.coef >= 0.5) and torch.all(result.coef <= 1.0)
    for mixed, name in zip(result.features + result.targets, ["cnn", "transformer", "strong", "pseudo"]):
        x = batch[name]
        c = result.coef.view(-1, *([1] * (x.ndim - 1)))
        torch.testing.assert_close(mixed, c * x + (1 - c) * x[result.perm])


def test_mixup_without_max_coef_allows_small_coefficients(batch):
    coefs = torch.cat([mixup([batch["cnn"]], [], alpha=0.2, max_coef=False, generator=_gen(s)).coef for s in range(20)])
    assert coefs.min() < 0.5


def test_mixup_is_deterministic_with_a_seeded_generator(batch):
    first = mixup([batch["cnn"]], [batch["strong"]], generator=_gen(7))
    second = mixup([batch["cnn"]], [batch["strong"]], generator=_gen(7))
    assert torch.equal(first.perm, second.perm) and torch.equal(first.coef, second.coef)
    assert torch.equal(first.features[0], second.features[0])


def test_mixup_mask_or_partner_active_classes():
    # sample 0: "DESED" (classes 0..9 valid), sample 1: "MAESTRO" (classes 10..26 valid)
    labels = torch.zeros(2, C, N_LABEL)
    labels[0, 3, 10:20] = 1.0  # DESED clip: class 3 active
    labels[1, 17, :5] = 0.4  # MAESTRO clip: class 17 active (soft)
    mask = torch.zeros(2, C, dtype=torch.bool)
    mask[0, :10] = True
    mask[1, 10:] = True
    features = torch.randn(2, 1, 8, 16)
    # find a seed whose permutation swaps the two samples
    for seed in range(100):
        result = mixup([features], [labels], mask, generator=_gen(seed))
        if result.perm.tolist() == [1, 0]:
            break
    else:
        pytest.fail("no seed swapped the two samples")
    expected = mask.clone()
    expected[0, 17] = True  # the partner's active class becomes valid ...
    expected[1, 3] = True
    assert torch.equal(result.mask, expected)  # ... but not the partner's silent classes
    assert not torch.equal(mask, result.mask)  # input mask untouched
    assert mask[0, 17].item() is False


def test_mixup_mask_requires_labels_first_and_matching_shape(batch):
    with pytest.raises(ValueError, match="mask"):
        mixup([batch["cnn"]], [batch["strong"]], torch.ones(B, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch sizes"):
        mixup([batch["cnn"]], [batch["strong"][:3]])


def test_apply_mixup_to_equals_mixing_the_same_tensor(batch):
    teacher_out = torch.rand(B, C, N_LABEL)
    result = mixup([batch["cnn"]], [batch["strong"], teacher_out], generator=_gen(3))
    torch.testing.assert_close(apply_mixup_to(result.perm, result.coef, teacher_out), result.targets[1])
    torch.testing.assert_close(
        apply_mixup_to(result.perm, result.coef, batch["transformer"]),
        mixup([batch["cnn"], batch["transformer"]], [], generator=_gen(3)).features[1],
    )


# --- mixstyle ----------------------------------------------------------------------------------
def test_mixstyle_preserves_shape_changes_stats_and_is_deterministic(batch):
    x = batch["cnn"] * torch.linspace(0.5, 3.0, B).view(B, 1, 1, 1) + torch.arange(B).view(B, 1, 1, 1)
    out = mixstyle(x, alpha=0.3, p=1.0, generator=_gen(1))
    assert out.shape == x.shape
    assert not torch.allclose(out.mean(-1), x.mean(-1), atol=1e-3)
    torch.testing.assert_close(out, mixstyle(x, alpha=0.3, p=1.0, generator=_gen(1)))
    assert mixstyle(x, p=0.0, generator=_gen(1)) is x


def test_mixstyle_with_one_sample_is_identity():
    x = torch.randn(1, 1, 16, 50)
    torch.testing.assert_close(mixstyle(x, p=1.0, generator=_gen()), x, atol=1e-5, rtol=1e-5)


# --- FilterAugment -----------------------------------------------------------------------------
def test_filter_augment_zero_gain_is_identity(batch):
    x = batch["transformer"]
    for filter_type in ("linear", "step"):
        out = filter_augment(x, db_range=(0.0, 0.0), filter_type=filter_type, generator=_gen())
        torch.testing.assert_close(out, x)


def test_filter_augment_log_domain_adds_a_bounded_frequency_response(batch):
    x = batch["cnn"]
    units = ARCH_SPECS["fpasst"].feature_units_per_db
    out = filter_augment(x, db_range=(-6, 6), units_per_db=units, generator=_gen(5))
    delta = out - x
    assert out.shape == x.shape
    # additive, constant over time, within the dB range
    torch.testing.assert_close(delta, delta[..., :1].expand_as(delta))
    assert delta.abs().max() <= 6 * units + 1e-6
    assert delta.abs().max() > 0
    torch.testing.assert_close(out, filter_augment(x, units_per_db=units, generator=_gen(5)))


def test_filter_augment_linear_domain_multiplies_consistently_with_log_domain(batch):
    amplitude = batch["cnn"].abs() + 0.1
    multiplied = filter_augment(amplitude, log_domain=False, generator=_gen(9))
    added_db = filter_augment(20 * torch.log10(amplitude), log_domain=True, units_per_db=1.0, generator=_gen(9))
    torch.testing.assert_close(20 * torch.log10(multiplied), added_db, atol=1e-4, rtol=1e-4)


def test_filter_augment_step_is_piecewise_constant(batch):
    x = torch.zeros(2, 1, 128, 4)
    out = filter_augment(x, filter_type="step", generator=_gen(2))
    response = out[:, 0, :, 0]
    n_levels = [len(torch.unique(r)) for r in response]
    assert all(2 <= n <= 5 for n in n_levels)


def test_filter_augment_views():
    x = torch.randn(2, 1, 32, 10)
    student, teacher = filter_augment_views(x, 0)
    assert student is x and teacher is x
    student, teacher = filter_augment_views(x, 1, generator=_gen())
    assert student is teacher
    student, teacher = filter_augment_views(x, 2, generator=_gen())
    assert not torch.equal(student, teacher)
    with pytest.raises(ValueError, match="n_transform"):
        filter_augment_views(x, 3)


# --- time mask ---------------------------------------------------------------------------------
@pytest.mark.parametrize("transformer_frames", [1001, 1000, 998])
def test_time_mask_same_time_span_in_streams_and_targets(transformer_frames):
    g = _gen(11)
    cnn = torch.rand(B, 1, 128, 626, generator=g) + 1.0  # never zero
    transformer = torch.rand(B, 1, 16, transformer_frames, generator=g) + 1.0
    labels = torch.ones(B, C, N_LABEL)
    pseudo = torch.full((B, C, N_LABEL), 0.7)
    originals = [t.clone() for t in (cnn, transformer, labels, pseudo)]
    result = time_mask([cnn, transformer], [labels, pseudo], generator=_gen(4))
    for t, o in zip((cnn, transformer, labels, pseudo), originals):
        assert torch.equal(t, o)  # inputs untouched
    start, stop = result.start, result.stop
    assert int(N_LABEL * 0.05) <= stop - start < int(N_LABEL * 0.3)

    def zero_frames(x):
        return torch.nonzero((x == 0).all(dim=(0, 1, 2))).flatten()

    cnn_zero, transformer_zero = zero_frames(result.features[0]), zero_frames(result.features[1])
    assert cnn_zero.tolist() == list(range(start * 4, stop * 4))
    # transformer span covers the same seconds (10 ms frames) up to half a frame
    assert abs(transformer_zero[0].item() * 0.010 - start * 0.064) <= 0.005 + 1e-9
    assert abs((transformer_zero[-1].item() + 1) * 0.010 - stop * 0.064) <= 0.005 + 1e-9
    for target in result.targets:  # labels AND pseudo-labels masked in the same label frames
        zero = torch.nonzero((target == 0).all(dim=(0, 1))).flatten()
        assert zero.tolist() == list(range(start, stop))
    assert torch.all(result.targets[1][..., :start] == 0.7)


def test_time_mask_fill_values_and_determinism():
    cnn = torch.rand(2, 1, 8, 626)
    transformer = torch.rand(2, 1, 8, 1000)
    labels = torch.ones(2, C, N_LABEL)
    first = time_mask([cnn, transformer], [labels], fill_values=(-1.0, 0.0), generator=_gen(8))
    second = time_mask([cnn, transformer], [labels], fill_values=(-1.0, 0.0), generator=_gen(8))
    assert (first.start, first.stop) == (second.start, second.stop)
    assert torch.all(first.features[0][..., first.start * 4 : first.stop * 4] == -1.0)
    lo = round(first.start * TRANSFORMER_FRAMES_PER_LABEL)
    assert torch.all(first.features[1][..., lo] == 0.0)
    with pytest.raises(ValueError, match="fill_values"):
        time_mask([cnn, transformer], [labels], fill_values=(0.0,))
    with pytest.raises(ValueError, match="strong"):
        time_mask([cnn], [torch.ones(2, C)])


# --- frame shift -------------------------------------------------------------------------------
def test_frame_shift_consistent_across_streams_and_targets():
    T_cnn, T_tr = 626, 1000
    time_cnn = torch.arange(T_cnn).float().expand(B, 1, 4, T_cnn)
    time_tr = torch.arange(T_tr).float().expand(B, 1, 4, T_tr)
    time_label = torch.arange(N_LABEL).float().expand(B, C, N_LABEL)
    result = frame_shift([time_cnn, time_tr], [time_label, time_label.clone()], shift_range=0.075, generator=_gen(6))
    shifts = result.label_shifts
    assert shifts.shape == (B,) and shifts.abs().sum() > 0
    for b in range(B):
        s = int(shifts[b])
        torch.testing.assert_close(result.targets[0][b], torch.roll(time_label[b], s, dims=-1))
        torch.testing.assert_close(result.targets[1][b], result.targets[0][b])
        torch.testing.assert_close(result.features[0][b], torch.roll(time_cnn[b], 4 * s, dims=-1))
        torch.testing.assert_close(
            result.features[1][b], torch.roll(time_tr[b], round(s * TRANSFORMER_FRAMES_PER_LABEL), dims=-1)
        )
    again = frame_shift([time_cnn, time_tr], [time_label], generator=_gen(6))
    assert torch.equal(again.label_shifts, shifts)


# --- frequency warp ----------------------------------------------------------------------------
def test_freq_warp_identity_with_full_crop_and_shape_preserved(batch):
    x = batch["transformer"]
    assert freq_warp(x, p=1.0, min_crop=1.0, max_crop=1.0, generator=_gen()) is x
    assert freq_warp(x, p=0.0, generator=_gen()) is x
    out = freq_warp(x, p=1.0, min_crop=0.6, max_crop=0.7, generator=_gen(2))
    assert out.shape == x.shape and not torch.allclose(out, x)
    out3 = freq_warp(x[:, 0], p=1.0, min_crop=0.6, max_crop=0.7, generator=_gen(2))
    torch.testing.assert_close(out3, out[:, 0])


def test_freq_warp_stretches_a_crop_of_a_frequency_ramp():
    n_freq = 64
    ramp = torch.arange(n_freq).float().view(1, 1, n_freq, 1).expand(2, 1, n_freq, 5)
    out = freq_warp(ramp, p=1.0, min_crop=0.6, max_crop=0.6, generator=_gen(1))
    column = out[0, 0, :, 0]
    height = int(0.6 * n_freq)
    assert torch.all(column[1:] > column[:-1])  # still increasing
    torch.testing.assert_close(column[-1] - column[0], torch.tensor(float(height - 1)))  # spans the crop
    torch.testing.assert_close(out[..., 0:1].expand_as(out), out)  # time axis untouched


# --- gain, hardening, coin ---------------------------------------------------------------------
def test_gain_scales_each_waveform_within_range():
    waveforms = torch.ones(8, 100)
    out = gain(waveforms, min_db=-6, max_db=6, generator=_gen())
    factors = out[:, 0]
    assert torch.all(out == factors[:, None])
    db = 20 * torch.log10(factors)
    assert torch.all(db >= -6 - 1e-4) and torch.all(db <= 6 + 1e-4)
    assert len(torch.unique(factors)) == 8
    torch.testing.assert_close(gain(waveforms, min_db=0, max_db=0), waveforms)


def test_harden():
    soft = torch.tensor([[0.2, 0.5, 0.51, 0.9]])
    assert torch.equal(harden(soft, 1.0, _gen()), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert harden(soft, 0.0, _gen()) is soft


def test_should_apply_rates_and_bounds():
    g = _gen()
    rate = sum(should_apply(0.3, g) for _ in range(2000)) / 2000
    assert math.isclose(rate, 0.3, abs_tol=0.05)
    assert should_apply(1.0, g) and not should_apply(0.0, g)
    with pytest.raises(ValueError):
        should_apply(1.5)


def test_units_per_db_table_matches_front_end_normalisations():
    # ATST: +1 dB on the [-79.6482, 50.6842] dB range scaled to [-1, 1]
    assert math.isclose(ARCH_SPECS["atst_frame"].feature_units_per_db, 2 / 130.3324)
    # fPaSST: ln(10^(1/10)) / 5
    assert math.isclose(ARCH_SPECS["fpasst"].feature_units_per_db, math.log(10 ** 0.1) / 5)
    assert augment.LABEL_FRAME_HOP_S == pytest.approx(0.064)
