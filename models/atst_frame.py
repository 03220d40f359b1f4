"""ATST-Frame: the frame-level audio teacher-student transformer, with its mel front-end.

Paper: Li et al., "Self-supervised Audio Teacher-Student Transformer for Both Clip-level and Frame-level
Tasks", IEEE/ACM TASLP 2024 (arXiv 2306.04186). Upstream code: Audio-WestlakeU/audiossl
(``methods/atstframe``: ``FrameAST`` with ``PatchEmbed_v2``, "base" size, patch 64x4) and its SED use in
CPJKU/cpjku_dcase24 (``models/atst``) and fschmid56/PretrainedSED (``models/atstframe``).

What a checkpoint needs: ``FrameAST`` keys ``mask_embed``, ``pos_embed``, ``patch_embed.patch_embed.*``,
``blocks.{i}.*``, ``norm_frame.*`` (138 keys, 85,419,264 parameters) and the wrapper ``ATSTFrame`` that
holds it as ``.atst`` (the released SED checkpoints store ``as_model.model.atst.*``).

What we changed (see docs/DIFFERENCES.md):
- attention through ``F.scaled_dot_product_attention`` (eager path behind ``use_sdpa=False``);
- inputs longer than 1001 mel frames are processed in 10-second chunks instead of crashing;
- the unused attention-mask / ``length`` / prompt / mask-token code paths of audiossl are not built
  (``mask_embed`` is kept as a parameter because checkpoints contain it);
- ``ATSTMel`` can optionally apply the 80 dB floor per clip (``per_sample_top_db=True``); the default keeps
  the reference's batch-wide floor, which the released checkpoints were trained with.
"""
from __future__ import annotations

import torch
import torchaudio
from torch import nn

from models.vit import LAYER_NORM_EPS, build_blocks, layerwise_lr_groups, removed_block_prefixes

# --- front-end settings (audiossl / cpjku ``ATSTMel``) ---
SAMPLE_RATE = 16_000
N_FFT = 1024  # = win_length
HOP_LENGTH = 160  # 10 ms
F_MIN = 60.0
F_MAX = 7800.0
N_MELS = 64
AMIN = 1e-10  # torchaudio AmplitudeToDB floor before log10
TOP_DB = 80.0  # dynamic range kept below the maximum
DB_CLAMP_MIN, DB_CLAMP_MAX = -50.0, 80.0  # the SED wrappers clamp the dB values to this range
# MinMax normalisation statistics of the pre-trained ATST (audiossl ``MinMax(min=-79.6482, max=50.6842)``)
DB_NORM_MIN, DB_NORM_MAX = -79.6482, 50.6842

# --- backbone settings ---
PATCH_H = 64  # one patch spans all 64 mel bins ...
PATCH_W = 4  # ... and 4 frames (40 ms)
MAX_FRAMES = 1001  # 10 s at 10 ms hop with centre padding; pos_embed covers 1001 // 4 = 250 tokens
CHUNK_STRIDE_FRAMES = 1000  # 10 s; consecutive 1001-frame chunks share one frame (see ATSTFrame)


class ATSTMel(nn.Module):
    """Waveform [B, N] at 16 kHz -> normalised log-mel [B, 1, 64, 1 + N // 160].

    torchaudio ``MelSpectrogram`` defaults (periodic Hann, power 2, centre/reflect padding, HTK mel scale,
    no filter normalisation), ``AmplitudeToDB(power, top_db=80)``, clamp to [-50, 80] dB and the fixed
    MinMax scaling of the pre-trained model to about [-1, 1].

    ``per_sample_top_db=False`` (default) reproduces torchaudio on a 3-D batch: one ``max - 80 dB`` floor
    for the *whole batch*, so a quiet clip's features depend on the loud clips batched with it. The
    released SED checkpoints were trained that way. ``True`` computes the floor per clip.
    """

    def __init__(self, *, per_sample_top_db: bool = False):
        super().__init__()
        self.per_sample_top_db = per_sample_top_db
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        mel_fb = torchaudio.functional.melscale_fbanks(
            n_freqs=N_FFT // 2 + 1, f_min=F_MIN, f_max=F_MAX, n_mels=N_MELS, sample_rate=SAMPLE_RATE,
            norm=None, mel_scale="htk")
        self.register_buffer("mel_fb", mel_fb, persistent=False)  # [513, 64]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim != 2:
            raise ValueError(f"ATSTMel expects a waveform batch [B, N], got shape {tuple(wav.shape)}")
        with torch.autocast(device_type=wav.device.type, enabled=False):
            stft = torch.stft(wav.float(), n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=N_FFT,
                              window=self.window, center=True, pad_mode="reflect", return_complex=True)
            parts = torch.view_as_real(stft)
            power = parts[..., 0].square() + parts[..., 1].square()  # |X|² [B, 513, T], no complex abs and pow
            mel = torch.matmul(power.transpose(1, 2), self.mel_fb).transpose(1, 2)  # [B, 64, T]
            db = 10.0 * torch.log10(torch.clamp(mel, min=AMIN))
            if self.per_sample_top_db:
                floor = db.amax(dim=(1, 2), keepdim=True) - TOP_DB  # [B, 1, 1]
            else:
                floor = db.amax() - TOP_DB  # one floor for the batch, as torchaudio on [B, F, T]
            db = torch.maximum(db, floor).clamp(min=DB_CLAMP_MIN, max=DB_CLAMP_MAX)
            spec = (db - DB_NORM_MIN) / (DB_NORM_MAX - DB_NORM_MIN) * 2.0 - 1.0
        return spec.unsqueeze(1)  # [B, 1, 64, T]


def build_frontend(*, per_sample_top_db: bool = False) -> ATSTMel:
    """The ATST-Frame front-end (the reference's ``atst_mel`` block has no settings)."""
    return ATSTMel(per_sample_top_db=per_sample_top_db)


class PatchEmbed(nn.Module):
    """Non-overlapping 64x4 patches, flattened (freq-major, then time) and projected by one Linear.

    Key ``patch_embed.weight`` [embed_dim, 64 * 4 * in_chans], like audiossl's ``PatchEmbed_v2`` whose
    patcher is ``Rearrange('b c (h p1) (w p2) -> b (w h) (p1 p2 c)')``.
    """

    def __init__(self, *, patch_h: int, patch_w: int, embed_dim: int, in_chans: int = 1):
        super().__init__()
        self.patch_h = patch_h
        self.patch_w = patch_w
        self.patch_embed = nn.Linear(patch_h * patch_w * in_chans, embed_dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        B, C, n_freq, T = spec.shape
        h, w = n_freq // self.patch_h, T // self.patch_w  # incomplete patches are cropped, as upstream
        x = spec[:, :, :h * self.patch_h, :w * self.patch_w]
        x = x.reshape(B, C, h, self.patch_h, w, self.patch_w)
        x = x.permute(0, 4, 2, 3, 5, 1).reshape(B, w * h, self.patch_h * self.patch_w * C)  # [B, w*h, p1*p2*c]
        return self.patch_embed(x)


class FrameAST(nn.Module):
    """The ATST-Frame transformer: patch embedding, cut positions, pre-LN blocks, ``norm_frame``.

    forward(spec [B, 1, 64, T]) -> [B, T // 4, embed_dim] for T <= 1001 frames (250 tokens at most).
    """

    def __init__(self, *, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_top_layers: int = 0, use_sdpa: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, n_mels: int = N_MELS,
                 max_frames: int = MAX_FRAMES):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_positions = (n_mels // PATCH_H) * (max_frames // PATCH_W)  # 250
        self.patch_embed = PatchEmbed(patch_h=PATCH_H, patch_w=PATCH_W, embed_dim=embed_dim)
        # SSL mask token: unused for SED, present in every checkpoint
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # index 0 belonged to a class token and is never added ("cut" positions use 1..T)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_positions + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = build_blocks(
            embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=False, full_depth=depth,
            drop_top_layers=drop_top_layers, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, use_sdpa=use_sdpa)
        self.norm_frame = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """audiossl init: truncated normal (std 0.02) for positions, mask token and Linear weights."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.mask_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(spec)  # [B, T_tok, D]
        T = x.shape[1]
        if T > self.num_positions:
            raise ValueError(f"FrameAST takes at most {self.num_positions} tokens "
                             f"({self.num_positions * PATCH_W + 1} frames), got {T} from input {tuple(spec.shape)}; "
                             "use ATSTFrame, which splits long inputs into chunks")
        x = self.pos_drop(x + self.pos_embed[:, 1:T + 1])
        for block in self.blocks:
            x = block(x)
        return self.norm_frame(x)


class ATSTFrame(nn.Module):
    """ATST-Frame backbone for SED: spec [B, 1, 64, T] -> frame embeddings [B, T // 4, embed_dim].

    Holds the transformer as ``self.atst`` (checkpoint keys ``atst.*``).

    Long inputs: the model's positions cover 1001 frames (10 s), and audiossl crashes beyond. Inputs with
    T > 1001 frames are cut into chunks that start every 1000 frames and are 1001 frames long, i.e. exactly
    the frames of consecutive 10-second waveform segments (a 10 s segment yields 1001 centred frames, the
    last of which is the first frame of the next segment; the patcher uses only the first 1000 of them).
    So chunk k gives tokens 250k ... 250k + 249 with no drift, and the chunks' outputs are concatenated
    along time. The last chunk holds the remaining T - 1000k frames (fewer than 1001; it uses the first
    positions like any short clip); a remainder shorter than one 4-frame patch yields no token and is
    skipped. In total the output has T // 4 tokens, as for a short input. Chunks of full length run as
    one batch. The front-end is computed on the whole waveform, so its batch-wide top_db floor spans
    all chunks.
    """

    def __init__(self, *, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_top_layers: int = 0, use_sdpa: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.full_depth = depth
        self.depth = depth - drop_top_layers
        self.atst = FrameAST(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                             drop_top_layers=drop_top_layers, use_sdpa=use_sdpa, drop_rate=drop_rate,
                             attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if spec.ndim != 4 or spec.shape[1] != 1 or spec.shape[2] != N_MELS:
            raise ValueError(f"ATSTFrame expects a spectrogram [B, 1, {N_MELS}, T], got {tuple(spec.shape)}")
        B, _, _, T = spec.shape
        if T <= MAX_FRAMES:
            return self.atst(spec)
        n_full = (T - MAX_FRAMES) // CHUNK_STRIDE_FRAMES + 1  # chunks with all 1001 frames
        full = torch.stack([spec[..., k * CHUNK_STRIDE_FRAMES:k * CHUNK_STRIDE_FRAMES + MAX_FRAMES]
                            for k in range(n_full)], dim=1)  # [B, n_full, 1, 64, 1001]
        tokens = self.atst(full.flatten(0, 1))  # [B * n_full, 250, D]
        outputs = [tokens.reshape(B, -1, self.embed_dim)]  # chunk-major: [B, n_full * 250, D]
        rest = spec[..., n_full * CHUNK_STRIDE_FRAMES:]  # the last, shorter chunk
        if rest.shape[-1] >= PATCH_W:
            outputs.append(self.atst(rest))
        return torch.cat(outputs, dim=1)  # [B, T // 4, D]

    def lr_groups(self) -> list[list[str]]:
        """Parameter names, top first: [norm_frame, block depth-1, ..., block 0, embeddings]."""
        return layerwise_lr_groups((name for name, _ in self.named_parameters()), blocks_prefix="atst.blocks.",
                                   final_norm_prefix="atst.norm_frame.", depth=self.depth)

    def removed_block_prefixes(self) -> list[str]:
        """State-dict prefixes of blocks dropped by ``drop_top_layers`` (to ignore when loading)."""
        return removed_block_prefixes(blocks_prefix="atst.blocks.", kept_depth=self.depth,
                                      full_depth=self.full_depth)
