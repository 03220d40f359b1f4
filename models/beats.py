"""BEATs (iter3+, AudioSet-2M) with a batched Kaldi fbank front-end.

Paper: Chen et al., "BEATs: Audio Pre-Training with Acoustic Tokenizers", ICML 2023, arXiv 2212.09058.
Upstream code: https://github.com/microsoft/unilm/tree/master/beats (fairseq style), used with
`no_wrapper=1` by the DCASE 2024 Task 4 system (CPJKU/cpjku_dcase24, `models/beats/`).

This is a from-scratch re-implementation that keeps the released checkpoint layout key for key:
`patch_embedding`, `layer_norm`, `post_extract_proj`, `encoder.pos_conv.0.{bias, parametrizations.weight.
original0 (g), original1 (v)}`, `encoder.layer_norm`, `encoder.layers.{i}.*` (12 copies of the shared
`self_attn.relative_attention_bias.weight`) and `predictor.{weight,bias}`.

What we changed (the maths is unchanged):
- The fbank front-end is computed for the whole batch at once (unfold → one rfft → one matmul with a cached
  mel matrix) instead of a Python loop of `torchaudio.compliance.kaldi.fbank` calls.
- Attention runs through `F.scaled_dot_product_attention` with the gated relative position bias as a float
  `attn_mask` (an eager explicit-softmax path is kept behind `use_sdpa=False`). The reference's
  "q / 32, subtract the row max, × 32" trick is a softmax-invariant rewrite and is not repeated.
- The bucket table of the relative position bias is cached per (sequence length, device).
- Weight norm of the positional convolution is two plain parameters (g, v) under the parametrization names;
  official files with the legacy `weight_g` / `weight_v` names load through a state-dict pre-hook.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Front-end: Kaldi fbank (torchaudio.compliance.kaldi.fbank semantics), batched
# ---------------------------------------------------------------------------------------------------------

SAMPLE_RATE = 16000
WAVEFORM_SCALE = 2.0**15  # BEATs feeds int16-range samples to the Kaldi fbank
FBANK_MEAN = 15.41663  # dataset statistics of the released BEATs models
FBANK_STD = 6.55582
FBANK_STD_FACTOR = 2.0  # the reference divides by 2·std
PREEMPHASIS = 0.97
POVEY_EXPONENT = 0.85
KALDI_LOW_FREQ = 20.0  # torchaudio kaldi.fbank default low_freq
FLOAT32_EPS = torch.finfo(torch.float32).eps  # Kaldi's log floor (1.1920929e-07)
GATE_COUNT = 2  # the relative-bias gate has two sigmoids (a, b) ...
GATE_GROUP = 4  # ... each the sum of 4 outputs of `grep_linear` (head_dim → 8)


def kaldi_mel_scale(freq_hz: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale, 1127·ln(1 + f/700) (tensor or Python float; ln(1 + x), not log1p, as torchaudio)."""
    if isinstance(freq_hz, torch.Tensor):
        return 1127.0 * torch.log(1.0 + freq_hz / 700.0)
    return 1127.0 * math.log(1.0 + freq_hz / 700.0)


def kaldi_mel_matrix(num_mel_bins: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float) -> torch.Tensor:
    """Triangular Kaldi mel filters as a (n_fft // 2 + 1, num_mel_bins) float32 matrix.

    Same filters as `torchaudio.compliance.kaldi.get_mel_banks` without VTLN warping: triangles equally spaced
    on the Kaldi mel scale between `low_freq` and `high_freq`, evaluated at the FFT bin centres 0 … n_fft/2 − 1;
    the Nyquist bin gets an all-zero row (Kaldi leaves it out). Band edges are Python floats and the rest is
    float32, like torchaudio, so the fbank matches it to float32 rounding.
    """
    num_fft_bins = n_fft // 2
    fft_bin_width = sample_rate / n_fft
    mel_low = kaldi_mel_scale(low_freq)
    mel_high = kaldi_mel_scale(high_freq)
    mel_delta = (mel_high - mel_low) / (num_mel_bins + 1)
    band = torch.arange(num_mel_bins, dtype=torch.float32).unsqueeze(1)  # (M, 1)
    left = mel_low + band * mel_delta
    center = mel_low + (band + 1.0) * mel_delta
    right = mel_low + (band + 2.0) * mel_delta
    bin_mel = kaldi_mel_scale(fft_bin_width * torch.arange(num_fft_bins, dtype=torch.float32)).unsqueeze(0)  # (1, K)
    up_slope = (bin_mel - left) / (center - left)
    down_slope = (right - bin_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up_slope, down_slope), min=0.0)  # (M, K)
    banks = F.pad(banks, (0, 1))  # (M, K + 1): zero weight for the Nyquist bin
    return banks.t().contiguous()  # (K + 1, M)


class BEATsFbank(nn.Module):
    """Waveform (B, N) at 16 kHz → normalised Kaldi log-mel fbank (B, 1, num_mel_bins, T), frequency first.

    Equals, clip by clip, `kaldi.fbank(wav * 2**15, num_mel_bins=128, sample_frequency=16000, frame_length=25,
    frame_shift=10)` (dither 0, per-frame DC removal, pre-emphasis 0.97 with the first sample replicated, Povey
    window, 512-point FFT, power spectrum, mel banks 20 Hz–Nyquist, log floored at float32 eps, snip_edges so
    T = 1 + (N − 400) // 160: 998 frames for 10 s), then (fbank − 15.41663) / (2 · 6.55582).
    Computed in float32 with autocast disabled, for the whole batch at once.
    """

    def __init__(
        self,
        *,
        sample_rate: int = SAMPLE_RATE,
        num_mel_bins: int = 128,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        fbank_mean: float = FBANK_MEAN,
        fbank_std: float = FBANK_STD,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.win_length = int(sample_rate * frame_length_ms / 1000)  # 400 samples
        self.hop_length = int(sample_rate * frame_shift_ms / 1000)  # 160 samples
        self.n_fft = 1 << (self.win_length - 1).bit_length()  # Kaldi rounds the window up to a power of two: 512
        self.fbank_mean = fbank_mean
        self.fbank_std = fbank_std
        # float32 like torchaudio: a float64 window moves the lowest bands of quiet frames by ~1e-3
        povey = torch.hann_window(self.win_length, periodic=False, dtype=torch.float32).pow(POVEY_EXPONENT)
        self.register_buffer("window", povey, persistent=False)
        mel = kaldi_mel_matrix(num_mel_bins, self.n_fft, sample_rate, KALDI_LOW_FREQ, sample_rate / 2)
        self.register_buffer("mel_matrix", mel, persistent=False)  # (n_fft // 2 + 1, num_mel_bins)

    def num_frames(self, num_samples: int) -> int:
        """Frames for `num_samples` samples (Kaldi snip_edges: only whole windows)."""
        return 1 + (num_samples - self.win_length) // self.hop_length

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise ValueError(f"BEATsFbank expects a waveform batch (B, N), got shape {tuple(wav.shape)}")
        if wav.shape[1] < self.win_length:
            raise ValueError(
                f"BEATsFbank needs at least {self.win_length} samples ({self.win_length / self.sample_rate:.3f} s), "
                f"got {wav.shape[1]}"
            )
        with torch.autocast(device_type=wav.device.type, enabled=False):
            x = wav.float() * WAVEFORM_SCALE
            frames = x.unfold(-1, self.win_length, self.hop_length)  # (B, T, win)
            frames = frames - frames.mean(dim=-1, keepdim=True)  # per-frame DC removal
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # first sample replicated
            frames = (frames - PREEMPHASIS * previous) * self.window
            spectrum = torch.fft.rfft(frames, n=self.n_fft)  # (B, T, n_fft // 2 + 1), zero-padded window
            power = spectrum.real.square() + spectrum.imag.square()
            mel = torch.matmul(power, self.mel_matrix)  # (B, T, M)
            fbank = torch.log(torch.clamp(mel, min=FLOAT32_EPS))
            fbank = (fbank - self.fbank_mean) / (FBANK_STD_FACTOR * self.fbank_std)
            return fbank.transpose(1, 2).unsqueeze(1)  # (B, 1, M, T)


def build_frontend(**cfg: Any) -> BEATsFbank:
    """The BEATs front-end (keyword arguments of `BEATsFbank`)."""
    return BEATsFbank(**cfg)


# ---------------------------------------------------------------------------------------------------------
# Relative position buckets
# ---------------------------------------------------------------------------------------------------------


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 320, max_distance: int = 800) -> torch.Tensor:
    """Bidirectional T5-style buckets of `relative_position` = key position − query position.

    Half of the buckets for rel ≤ 0, half (offset num_buckets/2) for rel > 0. Within a half, distances below
    a quarter of `num_buckets` (80) get one bucket each; larger ones share log-spaced buckets up to
    `max_distance`, capped at the last bucket of the half. The log is taken in float32 as in the reference.
    """
    half = num_buckets // 2
    max_exact = half // 2
    bucket_offset = (relative_position > 0).long() * half
    distance = relative_position.abs()
    safe_distance = distance.clamp(min=1).float()  # avoid log(0); those entries take the exact branch
    log_bucket = max_exact + (
        torch.log(safe_distance / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).long()
    log_bucket = log_bucket.clamp(max=half - 1)
    return bucket_offset + torch.where(distance < max_exact, distance, log_bucket)


# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient × scale backward (the reference's layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class _WeightNormParams(nn.Module):
    """Holds weight norm's g (`original0`) and v (`original1`) under torch's parametrization names."""

    def __init__(self, g_shape: tuple[int, ...], v_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.original0 = nn.Parameter(torch.ones(g_shape))
        self.original1 = nn.Parameter(torch.empty(v_shape))


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d whose weight is g · v / ‖v‖ with the norm over all dims except the kernel axis (dim=2).

    Keys: `bias`, `parametrizations.weight.original0` (g, (1, 1, k)), `parametrizations.weight.original1`
    (v, (out, in / groups, k)) as `nn.utils.parametrizations.weight_norm(conv, dim=2)` names them. A
    state-dict pre-hook also accepts the legacy names `weight_g` / `weight_v` of the official BEATs files.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.groups = groups
        self.bias = nn.Parameter(torch.zeros(channels))
        self.parametrizations = nn.ModuleDict(
            {"weight": _WeightNormParams((1, 1, kernel_size), (channels, channels // groups, kernel_size))}
        )
        self._reset_parameters(channels, kernel_size)
        self._register_load_state_dict_pre_hook(self._accept_legacy_names)

    @torch.no_grad()
    def _reset_parameters(self, channels: int, kernel_size: int) -> None:
        """BEATs' init: v ~ N(0, 4/(k·C)), then g = ‖v‖ so that the initial weight equals v."""
        params = self.parametrizations["weight"]
        nn.init.normal_(params.original1, mean=0.0, std=math.sqrt(4.0 / (kernel_size * channels)))
        params.original0.copy_(params.original1.square().sum(dim=(0, 1), keepdim=True).sqrt())

    @staticmethod
    def _accept_legacy_names(state_dict, prefix, *args) -> None:
        for legacy, current in (("weight_g", "original0"), ("weight_v", "original1")):
            if prefix + legacy in state_dict:
                state_dict[f"{prefix}parametrizations.weight.{current}"] = state_dict.pop(prefix + legacy)

    def weight(self) -> torch.Tensor:
        params = self.parametrizations["weight"]
        g, v = params.original0, params.original1
        norm = v.square().sum(dim=(0, 1), keepdim=True).sqrt()  # (1, 1, k)
        return v * (g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, T + 1 − k % 2).

        Run as a 2-D convolution over a height-1 map in channels-last layout: oneDNN's grouped channels-last
        kernel is about 2x faster on CPU than its 1-D (channels-first) one for this 128-tap, 16-group filter, and
        the encoder's (B, T, C) tokens transposed to (B, C, T) already are that layout, so no copy is made
        either way. Same sums as ``F.conv1d`` (differences at float32 rounding).
        """
        x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, C, 1, T), no copy from (B, T, C)
        weight = self.weight().unsqueeze(2)  # (C, C / groups, 1, k)
        out = F.conv2d(x, weight, self.bias, padding=(0, self.padding), groups=self.groups)
        return out.squeeze(2)


class SamePad(nn.Module):
    """Drops the extra last step an even-kernel convolution with padding k/2 produces."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : x.shape[-1] - self.remove]


class GatedRelPosAttention(nn.Module):
    """Multi-head self-attention with BEATs' gated relative position bias (GRU-style gate per query).

    gate_h(i) = a·(b·grep_a_h − 1) + 2 with (a, b) = sigmoid of `grep_linear` on the unscaled query head summed
    in pairs of 4; the logits get gate_h(i) · bias_h(i, j), bias = the shared bucket table lookup.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, attention_dropout: float, use_sdpa: bool,
                 num_buckets: int | None) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attention_dropout = attention_dropout
        self.use_sdpa = use_sdpa
        # Only layer 0 builds the bucket table; the encoder registers it in the other layers too (12 state-dict
        # copies of one shared Embedding, as in the released checkpoints).
        if num_buckets is not None:
            self.relative_attention_bias = nn.Embedding(num_buckets, num_heads)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.grep_linear = nn.Linear(self.head_dim, GATE_COUNT * GATE_GROUP)
        self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), position_bias (1, H, T, T) → (B, T, C)."""
        B, T, C = x.shape
        q_heads = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)  # (B, T, H, D), contiguous
        q = q_heads.transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

        # the gate from the contiguous (B, T, H, D) layout: the transposed q would be copied first
        gate_logits = self.grep_linear(q_heads).view(B, T, self.num_heads, GATE_COUNT, GATE_GROUP).sum(dim=-1)
        gate_a, gate_b = torch.sigmoid(gate_logits.transpose(1, 2)).unbind(dim=-1)  # (B, H, T) each
        gate = gate_a * (gate_b * self.grep_a.squeeze(-1) - 1.0) + 2.0  # (B, H, T)
        attn_bias = (gate.unsqueeze(-1) * position_bias).to(q.dtype)  # (B, H, T, T)

        dropout_p = self.attention_dropout if self.training else 0.0
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, scale=self.scale)
        else:
            logits = torch.matmul(q, k.transpose(-2, -1)) * self.scale + attn_bias  # (B, H, T, T)
            probs = F.dropout(torch.softmax(logits, dim=-1), p=dropout_p, training=self.training)
            out = torch.matmul(probs, v)
        out = out.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.out_proj(out)


class BEATsLayer(nn.Module):
    """Post-LN deep-norm layer: x = LN(α·x + MHA(x)); x = LN(α·x + fc2(GELU(fc1(x))))."""

    def __init__(self, embed_dim: int, num_heads: int, ffn_dim: int, *, deep_norm_alpha: float, dropout: float,
                 attention_dropout: float, activation_dropout: float, use_sdpa: bool,
                 num_buckets: int | None) -> None:
        super().__init__()
        self.self_attn = GatedRelPosAttention(
            embed_dim, num_heads, attention_dropout=attention_dropout, use_sdpa=use_sdpa, num_buckets=num_buckets
        )
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.deep_norm_alpha = deep_norm_alpha

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        # torch.add(branch, x, alpha=α) = α·x + branch in one pass over the activations
        x = self.self_attn_layer_norm(torch.add(self.dropout(self.self_attn(x, position_bias)), x,
                                                alpha=self.deep_norm_alpha))
        hidden = F.gelu(self.fc1(x).float()).type_as(x)  # GELU in fp32, as the reference
        hidden = self.fc2(self.activation_dropout(hidden))
        return self.final_layer_norm(torch.add(self.dropout(hidden), x, alpha=self.deep_norm_alpha))


class BEATsEncoder(nn.Module):
    """Convolutional positions + LayerNorm + post-LN layers sharing one relative position bias table."""

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, ffn_dim: int, conv_pos: int,
                 conv_pos_groups: int, num_buckets: int, max_distance: int, deep_norm_alpha: float,
                 dropout: float, attention_dropout: float, activation_dropout: float, layerdrop: float,
                 layer_wise_gradient_decay_ratio: float, use_sdpa: bool) -> None:
        super().__init__()
        self.pos_conv = nn.Sequential(WeightNormConv1d(embed_dim, conv_pos, conv_pos_groups), SamePad(conv_pos), nn.GELU())
        self.layers = nn.ModuleList(
            BEATsLayer(embed_dim, num_heads, ffn_dim, deep_norm_alpha=deep_norm_alpha, dropout=dropout,
                       attention_dropout=attention_dropout, activation_dropout=activation_dropout,
                       use_sdpa=use_sdpa, num_buckets=num_buckets if i == 0 else None)
            for i in range(depth)
        )
        # Same module registered in every layer: 12 state-dict copies, one parameter (named under layer 0 in
        # named_parameters); loading a state dict writes every copy into it, the last layer's copy wins.
        shared_bias = self.layers[0].self_attn.relative_attention_bias
        for layer in self.layers[1:]:
            layer.self_attn.relative_attention_bias = shared_bias
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.layerdrop = layerdrop
        self.layer_wise_gradient_decay_ratio = layer_wise_gradient_decay_ratio
        self._bucket_cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def bucket_table(self, length: int, device: torch.device) -> torch.Tensor:
        """(T, T) bucket indices of key − query positions, cached per (T, device)."""
        key = (length, device)
        if key not in self._bucket_cache:
            positions = torch.arange(length, device=device)
            relative = positions.unsqueeze(0) - positions.unsqueeze(1)  # [i, j] = j − i
            self._bucket_cache[key] = relative_position_bucket(relative, self.num_buckets, self.max_distance)
        return self._bucket_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) → (B, T, C)."""
        positional = self.pos_conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
        x = self.dropout(self.layer_norm(x + positional))
        buckets = self.bucket_table(x.shape[1], x.device)
        table = self.layers[0].self_attn.relative_attention_bias
        # contiguous once here: every layer scales it by its gate, and a (T, T, H)-strided view made each of those
        # 12 products a strided gather (about 4x slower than the product on contiguous memory)
        position_bias = table(buckets).permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, H, T, T)
        for layer in self.layers:
            if self.layer_wise_gradient_decay_ratio != 1.0:
                x = _GradMultiply.apply(x, self.layer_wise_gradient_decay_ratio)
            if self.training and self.layerdrop > 0 and torch.rand(()).item() < self.layerdrop:
                continue
            x = layer(x, position_bias)
        return x


# ---------------------------------------------------------------------------------------------------------
# Config (the official checkpoint's `cfg` dict) and the backbone
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BEATsConfig:
    """The official BEATs `cfg` fields (names as in the checkpoint), defaulting to the iter3+ AS2M values."""

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = True
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.05
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = True
    predictor_dropout: float = 0.0
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "BEATsConfig":
        """Read an official cfg dict; unknown keys are logged and ignored, unsupported variants raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            logger.warning("BEATs cfg: ignoring unknown keys %s", unknown)
        config = cls(**{k: v for k, v in cfg.items() if k in known})
        unsupported = {
            "layer_norm_first": (config.layer_norm_first, False),
            "relative_position_embedding": (config.relative_position_embedding, True),
            "gru_rel_pos": (config.gru_rel_pos, True),
            "activation_fn": (config.activation_fn, "gelu"),
        }
        for name, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"BEATs cfg: {name}={value!r} is not supported (only {supported!r}, as in the "
                                 f"released iter3+ models)")
        return config


class BEATs(nn.Module):
    """BEATs backbone: normalised fbank (B, 1, 128, T) → tokens (B, 62·8 for 10 s, 768), time-major (8·t + f).

    Patch embedding (16×16 conv, no bias) → LayerNorm(512) → Linear(512→768) → encoder (conv positions,
    LayerNorm, `depth − drop_top_layers` post-LN deep-norm layers, no final norm). `predictor` (768→527) only
    exists to hold the released weights; forward does not use it.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_top_layers: int = 0,
        use_sdpa: bool = True,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        dropout_input: float = 0.0,
        layerdrop: float = 0.0,
        patch_size: int = 16,
        patch_embed_dim: int = 512,
        patch_bias: bool = False,
        conv_pos: int = 128,
        conv_pos_groups: int = 16,
        num_buckets: int = 320,
        max_distance: int = 800,
        deep_norm: bool = True,
        layer_wise_gradient_decay_ratio: float = 1.0,
        predictor_classes: int = 527,
        pool_frequency: bool = False,
    ) -> None:
        super().__init__()
        # True: each time step's frequency-patch tokens are averaged, (B, T'·F', C) -> (B, T', C), so the tokens
        # form a time sequence (no parameters; off in the reference, whose SED wrapper interpolates the interleaved
        # 8·t + f sequence in time: docs/DIFFERENCES.md)
        self.pool_frequency = pool_frequency
        if not 0 <= drop_top_layers < depth:
            raise ValueError(f"drop_top_layers={drop_top_layers} must be in [0, depth={depth})")
        self.embed_dim = embed_dim
        self.full_depth = depth
        self.depth = depth - drop_top_layers
        # Deep norm's α is set by the full depth the weights were trained with, not by the layers kept.
        deep_norm_alpha = (2 * depth) ** 0.25 if deep_norm else 1.0

        # Registration order = the released state dict's key order.
        self.post_extract_proj = nn.Linear(patch_embed_dim, embed_dim)
        self.patch_embedding = nn.Conv2d(1, patch_embed_dim, kernel_size=patch_size, stride=patch_size, bias=patch_bias)
        self.dropout_input = nn.Dropout(dropout_input)
        self.encoder = BEATsEncoder(
            embed_dim=embed_dim, depth=self.depth, num_heads=num_heads, ffn_dim=round(embed_dim * mlp_ratio),
            conv_pos=conv_pos, conv_pos_groups=conv_pos_groups, num_buckets=num_buckets, max_distance=max_distance,
            deep_norm_alpha=deep_norm_alpha, dropout=dropout, attention_dropout=attention_dropout,
            activation_dropout=activation_dropout, layerdrop=layerdrop,
            layer_wise_gradient_decay_ratio=layer_wise_gradient_decay_ratio, use_sdpa=use_sdpa,
        )
        self.layer_norm = nn.LayerNorm(patch_embed_dim)
        self.predictor = nn.Linear(embed_dim, predictor_classes) if predictor_classes > 0 else None

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | BEATsConfig | None = None, **overrides: Any) -> "BEATs":
        """Build from an official checkpoint's `cfg` dict (missing fields: iter3+ AS2M values)."""
        config = cfg if isinstance(cfg, BEATsConfig) else BEATsConfig.from_dict(cfg or {})
        kwargs = dict(
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_layers,
            num_heads=config.encoder_attention_heads,
            mlp_ratio=config.encoder_ffn_embed_dim / config.encoder_embed_dim,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout,
            dropout_input=config.dropout_input,
            layerdrop=config.encoder_layerdrop,
            patch_size=config.input_patch_size,
            patch_embed_dim=config.embed_dim,
            patch_bias=config.conv_bias,
            conv_pos=config.conv_pos,
            conv_pos_groups=config.conv_pos_groups,
            num_buckets=config.num_buckets,
            max_distance=config.max_distance,
            deep_norm=config.deep_norm,
            layer_wise_gradient_decay_ratio=config.layer_wise_gradient_decay_ratio,
            predictor_classes=config.predictor_class if config.finetuned_model else 0,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec (B, 1, F, T) frequency first → tokens (B, (T // 16) · (F // 16), embed_dim), index 8·t + f; with
        ``pool_frequency`` (B, T // 16, embed_dim), the mean over each time step's F // 16 tokens."""
        if spec.dim() != 4 or spec.shape[1] != 1:
            raise ValueError(f"BEATs expects a front-end output (B, 1, F, T), got shape {tuple(spec.shape)}")
        x = self.patch_embedding(spec.transpose(2, 3))  # (B, P, T', F')
        B, _, T, Fr = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, T'·F', P), time-major
        x = self.dropout_input(self.post_extract_proj(self.layer_norm(x)))  # (B, N, C)
        x = self.encoder(x)
        if self.pool_frequency:
            x = x.view(B, T, Fr, x.shape[-1]).mean(dim=2)  # (B, T', C)
        return x

    # --- parameter groups and layer dropping -----------------------------------------------------------

    def lr_groups(self) -> list[list[str]]:
        """Parameter names in depth + 2 groups, top first: [predictor], layer depth−1, …, layer 0, [embeddings].

        BEATs has no final norm, so the top group holds only the predictor (empty without one). The shared
        relative position table is named (and grouped) under layer 0.
        """
        names = [name for name, _ in self.named_parameters()]
        top = [n for n in names if n.startswith("predictor.")]
        layers = [[n for n in names if n.startswith(f"encoder.layers.{i}.")] for i in reversed(range(self.depth))]
        grouped = set(top).union(*layers)
        embeddings = [n for n in names if n not in grouped]
        return [top, *layers, embeddings]

    def removed_block_prefixes(self) -> list[str]:
        """State-dict prefixes of the layers dropped by `drop_top_layers` (to ignore when loading)."""
        return [f"encoder.layers.{i}." for i in range(self.depth, self.full_depth)]


# Legacy → current names of the weight-norm tensors (official `beats_as.pt` / BEATs_iter3+ files).
LEGACY_KEY_RENAMES: dict[str, str] = {
    "encoder.pos_conv.0.weight_g": "encoder.pos_conv.0.parametrizations.weight.original0",
    "encoder.pos_conv.0.weight_v": "encoder.pos_conv.0.parametrizations.weight.original1",
}
