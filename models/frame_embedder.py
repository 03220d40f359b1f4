"""Frame-level embeddings of a bare transformer, and a linear frame classifier on top (downstream tasks, HEAR API).

    audio (B, N) at 16 kHz ──► 10 s windows ──► front-end ──► backbone tokens ──► time steps ──► frames every hop_s
                                                               (B·W, T_tok, D)    (B·W, T, D)   (B·W, F, D) ──► overlap-add

What PretrainedSED (fschmid56/PretrainedSED, ``models/prediction_wrapper.py``, ``ex_dcase2016task2.py``) does for
downstream SED, written from scratch on this project's backbones: a transformer's token sequence brought to a fixed
frame rate (25 frames/s: 250 frames per 10 s) and one linear layer per frame. Two ways to reach the frame rate
(``token_pooling``):

- ``"time"`` (default): tokens are grouped into time steps first (BEATs' 8 frequency tokens of a 160 ms step are
  averaged; ATST-Frame and fPaSST have one token per 40 ms step), then the steps are linearly interpolated at the
  frame centres: step t is centred at (t + 0.5)·token_hop_s, frame k at (k + 0.5)·hop_s.
- ``"sequence"``: PretrainedSED's rule on the token sequence as it is: adaptive average pooling to the frame count
  when there are more tokens, linear interpolation when fewer. For BEATs this pools the flattened time-frequency
  sequence (496 → 250), so a "frame" sees a pair of frequency bands of one time step (docs/DIFFERENCES.md).

For ATST-Frame and fPaSST at 40 ms both give the tokens unchanged. Recordings of any length run in windows of
``window_s`` (the last one zero-padded), ``hop_s`` apart (default: no overlap), whose frames are overlap-added onto
the recording's frame grid (``models.long_audio``); a recording of N samples has ``data_util.hear.num_frames(N)``
frames (the centres inside it), frame k centred at (k + 0.5)·hop_s, as the frame targets of ``data_util.hear``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from data_util.hear import num_frames
from models.long_audio import overlap_add, split_windows

SAMPLE_RATE = 16_000
FRAME_HOP_S = 0.04  # 25 frames/s: ATST-Frame's and fPaSST's token rate, PretrainedSED's 250 frames per 10 s
WINDOW_S = 10.0  # the length every backbone was pre-trained on
TOKEN_POOLINGS = ("time", "sequence")


def frame_centres_ms(num_frames: int, hop_s: float) -> torch.Tensor:
    """Frame centres (k + 0.5)·hop in milliseconds, float32 [num_frames] (the HEAR API's timestamps)."""
    return (torch.arange(num_frames, dtype=torch.float64) + 0.5).mul(hop_s * 1000.0).float()


def tokens_to_steps(tokens: torch.Tensor, tokens_per_step: int) -> torch.Tensor:
    """(B, T·k, D) time-major tokens → (B, T, D): the mean of each time step's k tokens."""
    if tokens_per_step == 1:
        return tokens
    B, N, D = tokens.shape
    if N % tokens_per_step:
        raise ValueError(f"{N} tokens are not a whole number of time steps of {tokens_per_step} tokens")
    return tokens.reshape(B, N // tokens_per_step, tokens_per_step, D).mean(dim=2)  # (B, T, D)


def steps_to_frames(steps: torch.Tensor, step_hop_s: float, num_frames: int, hop_s: float) -> torch.Tensor:
    """(B, T, D) time steps → (B, num_frames, D) by linear interpolation in time (held constant beyond the ends)."""
    B, T, D = steps.shape
    if T == 0:
        raise ValueError("no time step to interpolate from (the input is shorter than one token)")
    centres = (torch.arange(num_frames, device=steps.device, dtype=torch.float64) + 0.5) * hop_s
    position = (centres / step_hop_s - 0.5).clamp(0, T - 1)  # fractional step index of each frame centre
    low = position.floor().long()
    high = (low + 1).clamp(max=T - 1)
    weight = (position - low).to(steps.dtype)[None, :, None]  # (1, F, 1)
    return steps[:, low] * (1 - weight) + steps[:, high] * weight


def sequence_to_frames(tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
    """PretrainedSED's rule: (B, N, D) → (B, num_frames, D), average-pooled when N is larger, linearly interpolated
    (``align_corners=False``) when smaller."""
    N = tokens.shape[1]
    if N == num_frames:
        return tokens
    x = tokens.transpose(1, 2)  # (B, D, N)
    x = F.adaptive_avg_pool1d(x, num_frames) if N > num_frames else F.interpolate(x, size=num_frames, mode="linear")
    return x.transpose(1, 2)


class FrameEmbedder(nn.Module):
    """Waveforms (B, N) at 16 kHz → frame embeddings (B, num_frames(N), embed_dim), every ``hop_s`` seconds.

    ``frontend``: the backbone's own front-end (``build_frontend`` of its model file); ``backbone``: the transformer
    (``embed_dim`` attribute, tokens (B, T·tokens_per_step, D)). ``token_hop_s`` / ``tokens_per_step``: the
    backbone's time step and tokens per step (``models.registry.ArchSpec``). Build it with
    ``models.factory.build_frame_embedder`` (random init) or ``models.loading.load_frame_embedder`` (a checkpoint).
    """

    def __init__(self, frontend: nn.Module, backbone: nn.Module, *, token_hop_s: float, tokens_per_step: int = 1,
                 hop_s: float = FRAME_HOP_S, window_s: float = WINDOW_S, token_pooling: str = "time",
                 sample_rate: int = SAMPLE_RATE):
        super().__init__()
        if token_pooling not in TOKEN_POOLINGS:
            raise ValueError(f"token_pooling={token_pooling!r} is unknown; expected one of {TOKEN_POOLINGS}")
        frames_per_window = window_s / hop_s
        if hop_s <= 0 or abs(frames_per_window - round(frames_per_window)) > 1e-6:
            raise ValueError(f"the window ({window_s} s) must be a whole number of frames of {hop_s} s")
        self.frontend = frontend
        self.backbone = backbone
        self.embed_dim = int(backbone.embed_dim)
        self.token_hop_s = float(token_hop_s)
        self.tokens_per_step = int(tokens_per_step)
        self.hop_s = float(hop_s)
        self.window_s = float(window_s)
        self.token_pooling = token_pooling
        self.sample_rate = int(sample_rate)
        self.window_samples = round(window_s * sample_rate)
        self.frames_per_window = round(frames_per_window)
        self.hop_samples = hop_s * sample_rate  # may be fractional (e.g. 22.05 kHz): never rounded

    def features(self, windows: torch.Tensor) -> torch.Tensor:
        """The front-end's features of waveform windows (B, S), float32 with autocast off and no gradient."""
        with torch.no_grad(), torch.autocast(device_type=windows.device.type, enabled=False):
            return self.frontend(windows.float()).float()

    def frames_from_features(self, features: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Front-end features of windows → (B, num_frames, D) frame embeddings (default: a whole window's frames)."""
        num_frames = self.frames_per_window if num_frames is None else num_frames
        tokens = self.backbone(features)  # (B, T·k, D)
        if self.token_pooling == "sequence":
            return sequence_to_frames(tokens, num_frames)
        return steps_to_frames(tokens_to_steps(tokens, self.tokens_per_step), self.token_hop_s, num_frames,
                               self.hop_s)

    def forward(self, audio: torch.Tensor, *, window_hop_s: float | None = None, batch_size: int = 16,
                frame_fn=None) -> torch.Tensor:
        """Frames of whole recordings (B, N) → (B, num_frames(N), D).

        Windows of ``window_s`` start every ``window_hop_s`` (default ``window_s``: no overlap) and run
        ``batch_size`` at a time; their frames are overlap-added. ``frame_fn`` maps each window batch's frames
        (W, F, D) further before the overlap-add (the classifier's head), so any per-frame output can be assembled.
        """
        if audio.ndim != 2:
            raise ValueError(f"expected waveforms (B, N), got shape {tuple(audio.shape)}")
        window_hop_s = self.window_s if window_hop_s is None else window_hop_s
        if not 0 < window_hop_s <= self.window_s:
            raise ValueError(f"window hop {window_hop_s} s must be in (0, {self.window_s}] s")
        B, N = audio.shape
        windows, starts = split_windows(audio, self.window_samples, round(window_hop_s * self.sample_rate))
        outputs = []
        for chunk in windows.split(batch_size):
            frames = self.frames_from_features(self.features(chunk))
            outputs.append((frames if frame_fn is None else frame_fn(frames)).float())
        outputs = torch.cat(outputs).reshape(B, len(starts), self.frames_per_window, -1)  # (B, W, F, D)
        return overlap_add(outputs, starts, self.hop_samples, num_frames(N, self.hop_s, self.sample_rate))


class FrameClassifier(nn.Module):
    """A :class:`FrameEmbedder` and one linear layer per frame: waveforms → frame logits (B, frames, n_classes).

    State-dict keys: ``embedder.backbone.*`` (the transformer, as in the backbone's own files) and ``head.*``.
    """

    def __init__(self, embedder: FrameEmbedder, n_classes: int):
        super().__init__()
        self.embedder = embedder
        self.head = nn.Linear(embedder.embed_dim, n_classes)
        self.n_classes = n_classes

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Front-end features of whole windows → frame logits (B, frames_per_window, n_classes) (training)."""
        return self.head(self.embedder.frames_from_features(features))

    def forward(self, audio: torch.Tensor, *, window_hop_s: float | None = None, batch_size: int = 16) -> torch.Tensor:
        """Frame logits of whole recordings (B, N) → (B, num_frames(N), n_classes) (validation, test)."""
        return self.embedder(audio, window_hop_s=window_hop_s, batch_size=batch_size, frame_fn=self.head)


__all__ = ["FrameEmbedder", "FrameClassifier", "frame_centres_ms", "tokens_to_steps",
           "steps_to_frames", "sequence_to_frames", "FRAME_HOP_S", "WINDOW_S", "TOKEN_POOLINGS"]
