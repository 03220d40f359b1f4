"""fPaSST: the frame-level Patchout faSt Spectrogram Transformer, with its mel front-end.

Papers: Koutini et al., "Efficient Training of Audio Transformers with Patchout", Interspeech 2022
(arXiv 2110.05069); the frame-level variant of Schmid et al., DCASE 2024 (arXiv 2407.12997).
Upstream code: kkoutini/PaSST (``AugmentMelSTFT``, the ViT trunk from timm/DeiT-B/384-distilled) and its
frame-level form in CPJKU/cpjku_dcase24 (``models/fpasst``, ``models/preprocess.py``) and
fschmid56/PretrainedSED (``models/frame_passt``).

Architecture: a 3-layer conv stem (1->16->32->64 channels, total stride 4 in frequency and time), a
reshape that stacks the 64 stem channels into 16 channels of 128 bins, a (128 x 2) patch convolution giving
one token per 40 ms, separate time/frequency positions, cls + dist tokens, 12 pre-LN blocks with
``qkv_bias=True``, a final ``norm``; the two special tokens are dropped from the output. 159 keys,
88,421,632 parameters; key names are those of the released checkpoints (``as_model.model.*``).

What we changed (see docs/DIFFERENCES.md):
- nothing is downloaded at construction (the reference builds DeiT with ``pretrained=True``);
- inputs longer than ``pos_embed_length`` tokens (1000 frames, 10 s) are processed in 10-second chunks
  instead of being silently cut to 10 s;
- attention through ``F.scaled_dot_product_attention`` (eager path behind ``use_sdpa=False``);
  attention dropout only in training mode;
- the front-end caches its mel matrix for evaluation and draws the band-limit augmentation only in
  training mode (the reference draws random numbers in both modes and rebuilds the matrix every call);
- frame patchout (``frame_patchout`` > 0) is not supported: it removes time frames, which a frame-level
  SED model cannot use; the DCASE'24 recipe sets it to 0.
"""
from __future__ import annotations

import torch
import torchaudio
from torch import nn

from models.vit import LAYER_NORM_EPS, build_blocks, layerwise_lr_groups, removed_block_prefixes

# --- front-end ---
PREEMPHASIS = 0.97  # y[n] = x[n + 1] - 0.97 x[n] (the reference's conv1d with kernel [-0.97, 1])
LOG_FLOOR = 1e-7  # log(clip(mel, 1e-7))
FAST_NORM_SHIFT, FAST_NORM_SCALE = 4.5, 5.0  # "fast normalisation": (log_mel + 4.5) / 5
KALDI_VTLN_LOW, KALDI_VTLN_HIGH, KALDI_VTLN_WARP = 100.0, -500.0, 1.0  # no warping (warp factor 1)

# --- backbone ---
STEM_CHANNELS = (16, 32, 64)  # conv_in_1..3 output channels
STEM_STRIDES = (2, 1, 2)  # in frequency and time: total stride 4
STEM_STRIDE = 4
SPECIAL_TOKENS = 2  # cls + dist (DeiT distilled)
PATCH_TIME_WIDTH = 2  # patch conv kernel (n_mels, 2) with time padding 1; the first output step is dropped


class PaSSTMel(nn.Module):
    """Waveform [B, N] at ``sr`` -> log-mel [B, 1, n_mels, T] (``AugmentMelSTFT`` semantics).

    Steps: pre-emphasis (the output is one sample shorter), STFT (``n_fft``, ``hopsize``, periodic Hann of
    ``win_length`` zero-padded to ``n_fft``, centre/reflect padding), power, Kaldi mel banks between
    ``fmin`` and ``fmax`` (``torchaudio.compliance.kaldi.get_mel_banks``; a zero column added for the
    Nyquist bin), ``log(clip(x, 1e-7))``, optional frequency/time masking in training,
    ``(x + 4.5) / 5`` when ``fast_norm``. 10 s at 16 kHz -> 1000 frames.

    Band-limit augmentation (training mode only, one draw per batch, from torch's global generator):
    ``fmin + randint(fmin_aug_range)`` and ``fmax + fmax_aug_range // 2 - randint(fmax_aug_range)``;
    a range of 1 means no augmentation. ``fmax=None`` means ``sr // 2 - fmax_aug_range // 2``. Evaluation
    uses ``fmin``/``fmax`` unchanged through a cached mel matrix.

    Keys and meanings are those of the reference's ``passt_mel`` config; defaults are its DCASE'24 16 kHz
    setting without augmentation. ``htk``, ``norm`` and ``trainable`` are accepted for config compatibility
    only: the reference ignores them, so values that would suggest an effect are rejected.
    """

    def __init__(self, *, n_mels: int = 128, sr: int = 16_000, win_length: int | None = 400, hopsize: int = 160,
                 n_fft: int = 512, freqm: int = 0, timem: int = 0, htk: bool = False, fmin: float = 0.0,
                 fmax: float | None = None, norm: int = 1, fmin_aug_range: int = 1, fmax_aug_range: int = 1,
                 fast_norm: bool = True, preamp: bool = True, trainable: bool = False, padding: str = "center",
                 periodic_window: bool = True):
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        for key, value in (("n_fft", n_fft), ("win_length", win_length)):
            if not isinstance(value, int):
                raise ValueError(f"passt_mel.{key}={value!r}: only one STFT resolution (an int) is supported")
        if win_length > n_fft:
            raise ValueError(f"passt_mel.win_length={win_length} must not exceed passt_mel.n_fft={n_fft}")
        for key, value in (("fmin_aug_range", fmin_aug_range), ("fmax_aug_range", fmax_aug_range)):
            if int(value) < 1:
                raise ValueError(f"passt_mel.{key}={value} must be >= 1 (1 means no augmentation)")
        if padding not in ("center", "same"):
            raise ValueError(f"passt_mel.padding={padding!r} must be 'center' or 'same'")
        for key, value, ignored_default in (("htk", htk, False), ("norm", norm, 1), ("trainable", trainable, False)):
            if value != ignored_default:
                raise ValueError(f"passt_mel.{key}={value!r} has no effect (the reference ignores it too); "
                                 f"remove it or set {ignored_default!r}")
        self.n_mels = n_mels
        self.sr = sr
        self.n_fft = n_fft
        self.win_length = win_length
        self.hopsize = hopsize
        self.fmin = float(fmin)
        self.fmax = float(sr // 2 - fmax_aug_range // 2 if fmax is None else fmax)
        self.fmin_aug_range = int(fmin_aug_range)
        self.fmax_aug_range = int(fmax_aug_range)
        self.fast_norm = fast_norm
        self.preamp = preamp
        self.padding = padding
        # torchaudio's maskings hold no parameters; iid_masks=False: one mask for the batch, as the reference
        self.freqm = torchaudio.transforms.FrequencyMasking(freqm, iid_masks=False) if freqm else nn.Identity()
        self.timem = torchaudio.transforms.TimeMasking(timem, iid_masks=False) if timem else nn.Identity()
        self.register_buffer("window", torch.hann_window(win_length, periodic=periodic_window), persistent=False)
        self.register_buffer("mel_basis", self._mel_basis(self.fmin, self.fmax), persistent=False)

    def _mel_basis(self, fmin: float, fmax: float) -> torch.Tensor:
        """Kaldi triangular mel filters [n_mels, n_fft // 2 + 1] (zero weight on the Nyquist bin)."""
        banks, _ = torchaudio.compliance.kaldi.get_mel_banks(
            self.n_mels, self.n_fft, float(self.sr), fmin, fmax, KALDI_VTLN_LOW, KALDI_VTLN_HIGH, KALDI_VTLN_WARP)
        return nn.functional.pad(banks, (0, 1)).float()  # [n_mels, n_fft // 2 + 1]

    def _current_mel_basis(self) -> torch.Tensor:
        if not self.training:
            return self.mel_basis
        fmin = self.fmin + torch.randint(self.fmin_aug_range, (1,)).item()
        fmax = self.fmax + self.fmax_aug_range // 2 - torch.randint(self.fmax_aug_range, (1,)).item()
        if fmin == self.fmin and fmax == self.fmax:
            return self.mel_basis
        return self._mel_basis(fmin, fmax).to(self.mel_basis.device)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim != 2:
            raise ValueError(f"PaSSTMel expects a waveform batch [B, N], got shape {tuple(wav.shape)}")
        with torch.autocast(device_type=wav.device.type, enabled=False):
            x = wav.float()
            if self.preamp:
                x = x[:, 1:] - PREEMPHASIS * x[:, :-1]  # [B, N - 1]
            if self.padding == "same":
                pad = (self.win_length - self.hopsize) // 2
                x = nn.functional.pad(x, (pad, pad), mode="reflect")
            stft = torch.stft(x, self.n_fft, hop_length=self.hopsize, win_length=self.win_length,
                              window=self.window, center=self.padding == "center", pad_mode="reflect",
                              normalized=False, return_complex=True)
            power = torch.view_as_real(stft).pow(2).sum(-1)  # [B, n_fft // 2 + 1, T]
            mel = torch.matmul(self._current_mel_basis(), power)  # [B, n_mels, T]
            mel = torch.log(torch.clip(mel, min=LOG_FLOOR)).unsqueeze(1)  # [B, 1, n_mels, T]
            if self.training:
                mel = self.timem(self.freqm(mel))
            if self.fast_norm:
                mel = (mel + FAST_NORM_SHIFT) / FAST_NORM_SCALE
        return mel


def build_frontend(**cfg) -> PaSSTMel:
    """The fPaSST front-end from the reference's ``passt_mel`` config keys."""
    return PaSSTMel(**cfg)


class PatchEmbed(nn.Module):
    """One token per time step: Conv2d over all frequency bins, kernel (n_mels, 2), time padding 1.

    The padded convolution yields T + 1 steps; the first is dropped, so token t sees stem steps t and t + 1.
    """

    def __init__(self, *, in_chans: int, n_mels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=(n_mels, PATCH_TIME_WIDTH), stride=1,
                              padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)[:, :, :, 1:]  # [B, D, 1, T]


class FPaSST(nn.Module):
    """Frame-level PaSST backbone: spec [B, 1, n_mels, T] -> frame embeddings [B, ceil(T / 4), embed_dim].

    Positions: ``time_new_pos_embed`` has ``pos_embed_length`` (250) steps = 1000 input frames (10 s).
    A shorter input uses the first T positions in evaluation and a random window of T consecutive
    positions in training (as the reference). Longer inputs are processed in chunks of 1000 frames
    (consecutive 10 s windows, no overlap, run as one batch), each exactly like a separate 10-second
    clip, and the chunks' tokens are concatenated along time; the last chunk holds the remaining frames
    and is treated as a short clip. The reference instead cuts every input to its first 250 tokens
    (so 1001-1003 frames give 250 tokens there and 251 here).
    """

    def __init__(self, *, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_top_layers: int = 0, use_sdpa: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, n_mels: int = 128,
                 in_channels: int = 16, pos_embed_length: int = 250, frame_patchout: int = 0):
        super().__init__()
        if n_mels % STEM_STRIDE != 0:
            raise ValueError(f"FPaSST needs n_mels divisible by {STEM_STRIDE}, got n_mels={n_mels}")
        stacked_channels = STEM_CHANNELS[-1] // STEM_STRIDE  # 64 stem channels of n_mels / 4 bins -> 16 of n_mels
        if in_channels != stacked_channels:
            raise ValueError(f"fpasst.in_channels={in_channels}: the conv stem always yields {stacked_channels} "
                             "channels after its reshape")
        if frame_patchout != 0:
            raise ValueError(f"fpasst.frame_patchout={frame_patchout} is not supported: it removes time frames, "
                             "which breaks frame-level outputs (the DCASE'24 recipe uses 0)")
        self.embed_dim = embed_dim
        self.full_depth = depth
        self.depth = depth - drop_top_layers
        self.n_mels = n_mels
        self.pos_embed_length = pos_embed_length
        self.chunk_frames = pos_embed_length * STEM_STRIDE  # 1000 frames = 10 s
        in_ch = (1,) + STEM_CHANNELS[:-1]
        # channels-last weights: oneDNN runs the stem in NHWC, whose backward is about 1.3x faster on CPU (the
        # forward is as fast); keys and values are unchanged
        self.conv_in_1, self.conv_in_2, self.conv_in_3 = (
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1).to(memory_format=torch.channels_last)
            for c_in, c_out, stride in zip(in_ch, STEM_CHANNELS, STEM_STRIDES))
        self.act = nn.GELU()
        self.patch_embed = PatchEmbed(in_chans=in_channels, n_mels=n_mels, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, SPECIAL_TOKENS, embed_dim))  # for cls and dist
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, pos_embed_length))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = build_blocks(
            embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, full_depth=depth,
            drop_top_layers=drop_top_layers, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, use_sdpa=use_sdpa)
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm ViT init: truncated normal (std 0.02) for tokens, positions and Linear weights."""
        for param in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed,
                      self.time_new_pos_embed):
            nn.init.trunc_normal_(param, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _forward_chunk(self, spec: torch.Tensor) -> torch.Tensor:
        """spec [B, 1, n_mels, T] with T <= chunk_frames -> [B, ceil(T / 4), D]."""
        B, _, n_freq, _ = spec.shape
        x = self.act(self.conv_in_1(spec))
        x = self.act(self.conv_in_2(x))
        x = self.act(self.conv_in_3(x))  # [B, 64, n_mels / 4, T / 4]
        x = x.reshape(B, -1, n_freq, x.shape[-1])  # [B, 16, n_mels, T / 4]: 4 stem channels stacked per band
        x = self.patch_embed(x)  # [B, D, 1, T_tok]
        T = x.shape[-1]
        time_pos = self.time_new_pos_embed
        if T < self.pos_embed_length:
            offset = torch.randint(1 + self.pos_embed_length - T, (1,)).item() if self.training else 0
            time_pos = time_pos[:, :, :, offset:offset + T]
        x = x + time_pos + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)  # [B, T_tok, D]
        cls_token = self.cls_token.expand(B, -1, -1) + self.new_pos_embed[:, :1]
        dist_token = self.dist_token.expand(B, -1, -1) + self.new_pos_embed[:, 1:]
        x = self.pos_drop(torch.cat((cls_token, dist_token, x), dim=1))  # [B, 2 + T_tok, D]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, SPECIAL_TOKENS:]

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if spec.ndim != 4 or spec.shape[1] != 1 or spec.shape[2] != self.n_mels:
            raise ValueError(f"FPaSST expects a spectrogram [B, 1, {self.n_mels}, T], got {tuple(spec.shape)}")
        B, _, _, T = spec.shape
        if T <= self.chunk_frames:
            return self._forward_chunk(spec)
        n_full = T // self.chunk_frames
        full = spec[..., :n_full * self.chunk_frames].reshape(B, 1, self.n_mels, n_full, self.chunk_frames)
        full = full.permute(0, 3, 1, 2, 4).flatten(0, 1)  # [B * n_full, 1, n_mels, chunk_frames]
        outputs = [self._forward_chunk(full).reshape(B, -1, self.embed_dim)]  # [B, n_full * 250, D]
        if T > n_full * self.chunk_frames:
            outputs.append(self._forward_chunk(spec[..., n_full * self.chunk_frames:]))
        return torch.cat(outputs, dim=1)  # [B, ceil(T / 4), D]

    def lr_groups(self) -> list[list[str]]:
        """Parameter names, top first: [norm, block depth-1, ..., block 0, embeddings (stem, patch, tokens)]."""
        return layerwise_lr_groups((name for name, _ in self.named_parameters()), blocks_prefix="blocks.",
                                   final_norm_prefix="norm.", depth=self.depth)

    def removed_block_prefixes(self) -> list[str]:
        """State-dict prefixes of blocks dropped by ``drop_top_layers`` (to ignore when loading)."""
        return removed_block_prefixes(blocks_prefix="blocks.", kept_depth=self.depth, full_depth=self.full_depth)
