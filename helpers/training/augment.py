"""Batch-level augmentations of the DCASE 2024 Task 4 training step.

Each function takes a (sub-)batch, returns new tensors and leaves the caller's tensors untouched.
Randomness comes from an explicit CPU ``torch.Generator`` (``None`` = torch's global RNG), so a
seeded generator reproduces every draw. Draws are made on the CPU and moved to the data's device.

Tensor conventions (see docs/AUGMENTATIONS.md for where each augmentation runs):
- features: ``[B, C, F, T]`` log-mel-like maps, frequency first; the CNN branch has 626 frames of
  16 ms, the transformers 1001 (ATST), 1000 (fPaSST) or 998 (BEATs) frames of 10 ms.
- strong targets (labels, pseudo-labels): ``[B, 27, 156]``, 156 label frames of 64 ms;
  weak targets ``[B, 27]``; class masks ``[B, 27]`` bool.

Follows the reference (CPJKU/cpjku_dcase24 ``helpers/training/augment.py`` and the training steps of
``ex_stage1.py`` / ``ex_stage2.py``); the differences are fixes, listed in docs/AUGMENTATIONS.md:
FilterAugment adds dB gains to log-domain features instead of multiplying them by linear gains,
the time mask zeroes pseudo-labels (the reference zeroed the labels twice), time spans are mapped
between streams by time, and frame shifts are whole label frames so labels stay aligned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# --- time grid (10 s clips at 16 kHz) ---------------------------------------------------------
SAMPLE_RATE = 16000
CNN_HOP_SAMPLES = 256  # CNN-branch mel hop
NET_POOLING = 4  # CNN frames per label frame
LABEL_FRAME_HOP_S = CNN_HOP_SAMPLES * NET_POOLING / SAMPLE_RATE  # 0.064 s
TRANSFORMER_FRAME_HOP_S = 160 / SAMPLE_RATE  # ATST, fPaSST and BEATs front-ends: 10 ms hop
TRANSFORMER_FRAMES_PER_LABEL = LABEL_FRAME_HOP_S / TRANSFORMER_FRAME_HOP_S  # 6.4

# --- FilterAugment in the log domain ------------------------------------------------------------
# How much a feature value changes for a +1 dB amplitude gain is a fact of each front-end: the CNN branch's mel is in
# dB before its scaler (1 unit per dB); each transformer's value is ``models.registry.ARCH_SPECS[arch].
# feature_units_per_db``. Pass it as ``units_per_db``.

HARDEN_THRESHOLD = 0.5  # labels above become 1, the rest 0
MIXSTYLE_EPS = 1e-6  # added to the variance before the square root
_SEED_HIGH = 2**62  # range of the seeds drawn from a torch generator for numpy


# --- random helpers -------------------------------------------------------------------------------
def should_apply(p: float, generator: torch.Generator | None = None) -> bool:
    """One coin flip: True with probability ``p``. Always consumes one draw (reproducible streams).

    The reference flips one coin per training step for each augmentation (``mixup_p``,
    ``mixstyle_p``, ``freq_warp.p``, ``filter_augment.p``, the hardening probabilities) and then
    applies it to every enabled sub-batch: do that with this function and call the augmentation
    with ``p=1.0``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability p={p} must lie in [0, 1]")
    return bool(torch.rand((), generator=generator).item() < p)


def _beta(alpha: float, size: int, generator: torch.Generator | None) -> Tensor:
    """``size`` draws from Beta(alpha, alpha) as float32 [size] (torch's Beta takes no generator,
    so a numpy generator is seeded from the torch one)."""
    if alpha <= 0:
        raise ValueError(f"Beta parameter alpha={alpha} must be > 0")
    seed = int(torch.randint(0, _SEED_HIGH, (1,), generator=generator).item())
    draws = np.random.default_rng(seed).beta(alpha, alpha, size=size)
    return torch.from_numpy(draws).float()


def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Uniform draws in [low, high) as float32 on the CPU."""
    return torch.rand(shape, generator=generator) * (high - low) + low


def _batch_size(tensors: Sequence[Tensor], what: str) -> int:
    """The common first dimension of ``tensors``; raises if they disagree."""
    if len(tensors) == 0:
        raise ValueError(f"{what}: expected at least one tensor, got none")
    sizes = {t.shape[0] for t in tensors}
    if len(sizes) != 1:
        raise ValueError(f"{what}: tensors have different batch sizes {[t.shape[0] for t in tensors]}")
    return sizes.pop()


def _batch_view(values: Tensor, like: Tensor) -> Tensor:
    """``values`` [B] reshaped to [B, 1, ..., 1] to broadcast against ``like``, on its device/dtype."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


# --- mixup ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixResult:
    """Output of :func:`mixup`.

    features / targets: the mixed tensors, in the order given. mask: the extended class mask
    (None if none was given). perm: long [B], the partner of sample i is ``perm[i]``.
    coef: float32 [B], the weight of the sample itself (its partner gets ``1 - coef``).
    perm and coef live on the device of the first feature (or target) tensor.
    """

    features: list[Tensor]
    targets: list[Tensor]
    mask: Tensor | None
    perm: Tensor
    coef: Tensor


def apply_mixup_to(perm: Tensor, coef: Tensor, tensor: Tensor) -> Tensor:
    """``coef * tensor + (1 - coef) * tensor[perm]`` per sample: mixes any further tensor (e.g. the
    teacher's outputs on the un-mixed input, for the ICT loss) exactly like :func:`mixup` did."""
    if not tensor.is_floating_point():
        raise TypeError(f"apply_mixup_to: expected a floating-point tensor, got {tensor.dtype}")
    if tensor.shape[0] != perm.numel() or coef.numel() != perm.numel():
        raise ValueError(
            f"apply_mixup_to: batch size {tensor.shape[0]} does not match perm ({perm.numel()}) "
            f"and coef ({coef.numel()})"
        )
    c = _batch_view(coef, tensor)
    return c * tensor + (1.0 - c) * tensor[perm.to(tensor.device)]


def mixup(
    features: Sequence[Tensor],
    targets: Sequence[Tensor],
    mask: Tensor | None = None,
    *,
    alpha: float = 0.2,
    max_coef: bool = True,
    generator: torch.Generator | None = None,
) -> MixResult:
    """Mixup within a sub-batch: sample i is mixed with sample ``perm[i]``.

    - One coefficient per sample, c ~ Beta(alpha, alpha); with ``max_coef`` c = max(c, 1 - c), so
      every sample keeps the larger share of itself (as the reference).
    - The same perm and c mix every feature stream (CNN and transformer features) and every
      target (labels, weak labels, pseudo-labels): ``c * x + (1 - c) * x[perm]``. Convex
      combinations of values in [0, 1] stay in [0, 1] (the reference's clamp is a no-op).
    - ``mask`` [B, C] (valid classes): OR'ed with the classes that are *active* in the partner's
      labels ``targets[0][perm]`` (any non-zero value over the remaining axes), so that mixing a
      DESED clip with a MAESTRO clip makes the partner's sounding classes valid training targets
      while the partner's silent classes stay unlabelled. ``targets[0]`` must therefore be the
      labels (not pseudo-labels, which are almost never exactly zero).

    Returns new tensors; the inputs are not modified.
    """
    tensors = list(features) + list(targets)
    batch_size = _batch_size(tensors, "mixup")
    coef = _beta(alpha, batch_size, generator)
    if max_coef:
        coef = torch.maximum(coef, 1.0 - coef)
    perm = torch.randperm(batch_size, generator=generator)
    device = tensors[0].device
    perm, coef = perm.to(device), coef.to(device)

    mixed_features = [apply_mixup_to(perm, coef, x) for x in features]
    mixed_targets = [apply_mixup_to(perm, coef, y) for y in targets]

    mixed_mask = None
    if mask is not None:
        if len(targets) == 0:
            raise ValueError("mixup: a class mask needs targets[0] (the labels) to find the partner's classes")
        labels = targets[0]
        if mask.dtype != torch.bool or mask.shape != labels.shape[:2]:
            raise ValueError(
                f"mixup: mask must be bool [B, C] = {tuple(labels.shape[:2])} matching targets[0], "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        B, C = mask.shape
        partner_labels = labels[perm.to(labels.device)].reshape(B, C, -1)  # [B, C, frames or 1]
        partner_active = partner_labels.ne(0).any(dim=-1)  # [B, C]
        mixed_mask = mask | partner_active.to(mask.device)

    return MixResult(mixed_features, mixed_targets, mixed_mask, perm, coef)


# --- mixstyle ---------------------------------------------------------------------------------------
def mixstyle(
    features: Tensor,
    *,
    alpha: float = 0.3,
    p: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Frequency-wise MixStyle (Zhou et al., 2021) on features [B, C, F, T].

    With probability ``p`` (one coin per call): each frequency bin is normalised by its mean and
    standard deviation over time, then re-styled with statistics mixed with a random partner's:
    mu = l * mu + (1 - l) * mu[perm], sigma likewise, l ~ Beta(alpha, alpha) per sample and
    l = max(l, 1 - l). Statistics are detached (no gradient through them). Labels, pseudo-labels
    and masks are unchanged (the content is the sample's own). Returns a new tensor (or the input
    itself when the coin says no).

    The reference calls it separately on each feature stream (its own perm and l per stream) and
    draws the coin once per step for all sub-batches (use :func:`should_apply` and ``p=1.0``).
    """
    if features.ndim != 4:
        raise ValueError(f"mixstyle: expected features [B, C, F, T], got shape {tuple(features.shape)}")
    if not should_apply(p, generator):
        return features
    B = features.shape[0]
    mean = features.mean(dim=-1, keepdim=True).detach()  # [B, C, F, 1]
    std = (features.var(dim=-1, keepdim=True) + MIXSTYLE_EPS).sqrt().detach()  # [B, C, F, 1]
    normed = (features - mean) / std

    lam = _beta(alpha, B, generator)
    lam = torch.maximum(lam, 1.0 - lam)
    perm = torch.randperm(B, generator=generator).to(features.device)
    lam = _batch_view(lam, features)  # [B, 1, 1, 1]
    mixed_mean = lam * mean + (1.0 - lam) * mean[perm]
    mixed_std = lam * std + (1.0 - lam) * std[perm]
    return normed * mixed_std + mixed_mean


# --- FilterAugment ----------------------------------------------------------------------------------
def filter_augment(
    features: Tensor,
    *,
    db_range: tuple[float, float] = (-6.0, 6.0),
    n_band: tuple[int, int] = (3, 6),
    min_bw: int = 6,
    filter_type: Literal["linear", "step"] = "linear",
    log_domain: bool = True,
    units_per_db: float | Tensor = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """FilterAugment (Nam et al., 2022): a random frequency response applied to features [B, C, F, T].

    Draws n bands with n uniform in [n_band[0], n_band[1]) (high end exclusive, as the reference),
    band edges random but at least ``min_bw`` bins apart (shared by the sub-batch), and gains in dB
    uniform in ``db_range`` per sample. ``"linear"`` interpolates linearly between n + 1 gains
    at the band edges (the reference's only type), ``"step"`` holds one gain per band. n <= 1 leaves
    the features unchanged (returned as is).

    ``log_domain=True`` (log-mel, dB, normalised log features): ADDS ``gain_db * units_per_db``
    (``ArchSpec.feature_units_per_db``; a float or a per-sample [B] tensor). ``log_domain=False``
    (linear magnitudes): multiplies by 10^(gain_db / 20), as the reference did for every input.
    The reference also multiplied log-domain transformer features by linear gains (a bug: a
    contrast change, not a filter); here that is the ``log_domain=True`` path.
    Labels, pseudo-labels and masks are unchanged. Returns a new tensor.
    """
    if features.ndim != 4:
        raise ValueError(f"filter_augment: expected features [B, C, F, T], got shape {tuple(features.shape)}")
    if filter_type not in ("linear", "step"):
        raise ValueError(f"filter_augment: filter_type must be 'linear' or 'step', got {filter_type!r}")
    if n_band[1] <= n_band[0]:
        raise ValueError(f"filter_augment: n_band={n_band} must be (low, high) with high > low")
    B, _, n_freq, _ = features.shape
    n_bands = int(torch.randint(n_band[0], n_band[1], (1,), generator=generator).item())
    if n_bands <= 1:
        return features

    bandwidth = max(0, min(min_bw, n_freq // n_bands))  # shrink the minimum width if F is too small
    inner_edges = torch.sort(
        torch.randint(0, n_freq - n_bands * bandwidth + 1, (n_bands - 1,), generator=generator)
    ).values + torch.arange(1, n_bands) * bandwidth
    edges = [0, *inner_edges.tolist(), n_freq]

    n_gains = n_bands + 1 if filter_type == "linear" else n_bands
    gains_db = _uniform(db_range[0], db_range[1], (B, n_gains), generator)
    response_db = torch.zeros(B, n_freq)
    for band in range(n_bands):
        low, high = edges[band], edges[band + 1]
        if high == low:
            continue
        if filter_type == "linear":
            ramp = torch.linspace(0.0, 1.0, high - low)  # [width]; a single bin gets the lower gain
            start, stop = gains_db[:, band : band + 1], gains_db[:, band + 1 : band + 2]
            response_db[:, low:high] = start + (stop - start) * ramp
        else:
            response_db[:, low:high] = gains_db[:, band : band + 1]
    response_db = response_db.to(device=features.device, dtype=features.dtype).view(B, 1, n_freq, 1)

    if not log_domain:
        return features * 10.0 ** (response_db / 20.0)
    scale = torch.as_tensor(units_per_db, device=features.device, dtype=features.dtype)
    if scale.ndim == 1:
        scale = _batch_view(scale, features)  # per-sample scale, [B, 1, 1, 1]
    return features + response_db * scale


def filter_augment_views(features: Tensor, n_transform: int, **filter_kwargs) -> tuple[Tensor, Tensor]:
    """(student view, teacher view) as the reference's ``feature_transformation``:
    n_transform 0 → both the input; 1 → one filtered view used for both; 2 → two independent
    filtered views. ``filter_kwargs`` go to :func:`filter_augment`."""
    if n_transform == 0:
        return features, features
    if n_transform == 1:
        view = filter_augment(features, **filter_kwargs)
        return view, view
    if n_transform == 2:
        return filter_augment(features, **filter_kwargs), filter_augment(features, **filter_kwargs)
    raise ValueError(f"filter_augment.n_transform must be 0, 1 or 2, got {n_transform}")


# --- time masking and shifting ------------------------------------------------------------------------
def _frames_per_label(n_streams: int, frames_per_label: Sequence[float] | None, net_pooling: int) -> list[float]:
    """Per stream: feature frames per label frame. Default: [CNN (net_pooling), transformer (6.4), ...]."""
    if frames_per_label is None:
        return [float(net_pooling)] + [TRANSFORMER_FRAMES_PER_LABEL] * (n_streams - 1)
    if len(frames_per_label) != n_streams:
        raise ValueError(
            f"frames_per_label has {len(frames_per_label)} entries for {n_streams} feature streams"
        )
    return [float(r) for r in frames_per_label]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class TimeMaskResult:
    """Output of :func:`time_mask`: new features and targets, and the masked label frames
    ``[start, stop)`` (stream k masked frames ``[round(start*r_k), round(stop*r_k))``)."""

    features: list[Tensor]
    targets: list[Tensor]
    start: int
    stop: int


def time_mask(
    features: Sequence[Tensor],
    targets: Sequence[Tensor],
    *,
    min_ratio: float = 0.05,
    max_ratio: float = 0.3,
    net_pooling: int = NET_POOLING,
    frames_per_label: Sequence[float] | None = None,
    fill_values: float | Sequence[float] = 0.0,
    generator: torch.Generator | None = None,
) -> TimeMaskResult:
    """Masks one random time span, the same for the whole sub-batch, in all streams and targets.

    Span in label frames (N = targets' last axis, 156): width uniform integer in
    [int(N*min_ratio), int(N*max_ratio)) and start uniform in [0, N - width), as the reference.
    Each feature stream k gets frames [round(start*r_k), round(stop*r_k)) set to ``fill_values[k]``,
    r_k = ``frames_per_label[k]`` (default: ``net_pooling`` = 4 for the first stream, the CNN
    features, and 6.4 = 64 ms / 10 ms for the others, the transformer features), so the span covers
    the same time in every stream. Every target (strong labels AND pseudo-labels, [B, C, N]) gets
    the span set to 0: nothing is heard there. Masks are unchanged. Returns new tensors.

    Fill value: the reference zeroed the CNN branch's *linear* mel (silence → the floor after log and
    min-max scaling) and the *normalised* transformer features (0). For CNN features already scaled to
    [-1, 1] pass fill -1.0 for the CNN stream to reproduce "silence".
    """
    _batch_size(list(features) + list(targets), "time_mask")
    if len(targets) == 0:
        raise ValueError("time_mask: needs at least one strong target [B, C, frames]")
    n_label = targets[0].shape[-1]
    if any(t.ndim != 3 or t.shape[-1] != n_label for t in targets):
        raise ValueError(
            f"time_mask: targets must be strong [B, C, {n_label}], got {[tuple(t.shape) for t in targets]}"
        )
    ratios = _frames_per_label(len(features), frames_per_label, net_pooling)
    fills = [float(fill_values)] * len(features) if isinstance(fill_values, (int, float)) else list(fill_values)
    if len(fills) != len(features):
        raise ValueError(f"time_mask: {len(fills)} fill_values for {len(features)} feature streams")
    min_width, max_width = int(n_label * min_ratio), int(n_label * max_ratio)
    if not 0 <= min_width < max_width <= n_label:
        raise ValueError(
            f"time_mask: min_ratio={min_ratio}, max_ratio={max_ratio} give widths [{min_width}, {max_width}) "
            f"of {n_label} frames; need 0 <= min < max <= {n_label}"
        )

    width = int(torch.randint(min_width, max_width, (1,), generator=generator).item())
    start = int(torch.randint(0, n_label - width, (1,), generator=generator).item())
    stop = start + width

    masked_features = []
    for x, ratio, fill in zip(features, ratios, fills):
        out = x.clone()
        out[..., _round_half_up(start * ratio) : _round_half_up(stop * ratio)] = fill
        masked_features.append(out)
    masked_targets = []
    for y in targets:
        out = y.clone()
        out[..., start:stop] = 0.0
        masked_targets.append(out)
    return TimeMaskResult(masked_features, masked_targets, start, stop)


def _roll_per_sample(x: Tensor, shifts: Tensor) -> Tensor:
    """``torch.roll(x[b], shifts[b], dims=-1)`` for every b, in one gather."""
    B, T = x.shape[0], x.shape[-1]
    positions = torch.arange(T, device=x.device)
    index = (positions[None, :] - shifts.to(x.device)[:, None]) % T  # [B, T]
    index = index.view(B, *([1] * (x.ndim - 2)), T).expand_as(x)
    return x.gather(-1, index)


@dataclass(frozen=True)
class FrameShiftResult:
    """Output of :func:`frame_shift`: new features and targets, and the shift per sample in
    label frames (long [B]; positive = later in time)."""

    features: list[Tensor]
    targets: list[Tensor]
    label_shifts: Tensor


def frame_shift(
    features: Sequence[Tensor],
    targets: Sequence[Tensor],
    *,
    shift_range: float = 0.075,
    net_pooling: int = NET_POOLING,
    frames_per_label: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> FrameShiftResult:
    """Rolls (circularly, along time) every sample by its own random shift, consistently in all
    streams and targets.

    The shift is drawn in label frames, s ~ round(N(0, (shift_range * N)^2)) with N the targets'
    frames (156; std ≈ 11.7 frames ≈ 0.75 s, the reference: 11.5), and applied as s label frames
    to every target (labels and pseudo-labels, [B, C, N]) and round(s * r_k) frames to feature
    stream k (r_k as in :func:`time_mask`). Masks are unchanged. Returns new tensors.
    """
    batch_size = _batch_size(list(features) + list(targets), "frame_shift")
    if len(targets) == 0:
        raise ValueError("frame_shift: needs at least one strong target [B, C, frames]")
    n_label = targets[0].shape[-1]
    ratios = _frames_per_label(len(features), frames_per_label, net_pooling)
    label_shifts = torch.round(torch.randn(batch_size, generator=generator) * shift_range * n_label).long()

    shifted_features = [
        _roll_per_sample(x, torch.round(label_shifts.double() * ratio).long()) for x, ratio in zip(features, ratios)
    ]
    shifted_targets = [_roll_per_sample(y, label_shifts) for y in targets]
    return FrameShiftResult(shifted_features, shifted_targets, label_shifts)


# --- frequency warping ---------------------------------------------------------------------------------
def freq_warp(
    features: Tensor,
    *,
    p: float = 0.5,
    min_crop: float = 0.6,
    max_crop: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random resized crop along frequency (the reference's ``RandomResizeCrop`` with time scale 1).

    With probability ``p`` (one coin per call): one crop for the whole (sub-)batch of
    h = int(u * F) bins, u ~ U(min_crop, max_crop), starting at a uniform bin, resized back to
    F bins with bicubic interpolation (align_corners=True; the time axis is unchanged).
    ``features`` is [B, F, T] or [B, C, F, T]. Labels, pseudo-labels and masks are unchanged.
    Returns a new tensor, or the input itself when the coin says no or the crop is all F bins.
    The reference flips the coin once per step and crops each sub-batch separately: call
    :func:`should_apply` once and this function per sub-batch with ``p=1.0``.
    """
    if features.ndim not in (3, 4):
        raise ValueError(f"freq_warp: expected [B, F, T] or [B, C, F, T], got shape {tuple(features.shape)}")
    if not 0.0 < min_crop <= max_crop <= 1.0:
        raise ValueError(f"freq_warp: need 0 < min_crop <= max_crop <= 1, got ({min_crop}, {max_crop})")
    if not should_apply(p, generator):
        return features
    n_freq, n_time = features.shape[-2:]
    fraction = float(_uniform(min_crop, max_crop, (1,), generator).item())
    height = min(max(int(fraction * n_freq), 1), n_freq)
    start = int(torch.randint(0, n_freq - height + 1, (1,), generator=generator).item())
    if height == n_freq:
        return features
    images = features if features.ndim == 4 else features.unsqueeze(1)  # [B, C, F, T]
    crop = images[..., start : start + height, :].float()
    warped = F.interpolate(crop, size=(n_freq, n_time), mode="bicubic", align_corners=True)
    warped = warped.to(features.dtype)
    return warped if features.ndim == 4 else warped.squeeze(1)


# --- waveform gain -------------------------------------------------------------------------------------
def gain(
    waveforms: Tensor,
    *,
    min_db: float = -6.0,
    max_db: float = 6.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Multiplies each waveform ([B, N] or [B, ..., N]) by 10^(g/20), g ~ U(min_db, max_db) dB per
    sample. The reference's config ``gain_augment = G`` (0 = off) corresponds to
    ``min_db=-G, max_db=G`` (it drew integer dB in [-G, G-1]). Targets unchanged. New tensor."""
    if min_db > max_db:
        raise ValueError(f"gain: min_db={min_db} > max_db={max_db}")
    gains_db = _uniform(min_db, max_db, (waveforms.shape[0],), generator)
    return waveforms * _batch_view(10.0 ** (gains_db / 20.0), waveforms)


# --- label hardening -----------------------------------------------------------------------------------
def harden(labels: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """With probability ``p`` (one coin for the whole tensor): soft labels → hard labels,
    1 where > 0.5 else 0, same dtype; otherwise the input itself. The reference applies it to the
    MAESTRO labels (``loss.harden_labels_maestro_p``) and to all pseudo-labels
    (``loss.harden_pseudo_labels_p``) before augmentation, one coin each per step."""
    if not should_apply(p, generator):
        return labels
    return (labels > HARDEN_THRESHOLD).to(labels.dtype)
