"""Frame-level SED on recordings of any length: sliding 10 s windows and overlap-add of frame logits.

The SED model sees 10 s clips (156 frames of 64 ms). For a longer recording we run windows that start
every ``hop_seconds`` (the last one zero-padded to 10 s), and overlap-add each window's strong logits onto
the recording's own 64 ms frame grid (frame k covers [k·0.064, (k+1)·0.064) s), dividing by the summed
weights. A window frame that straddles two grid frames (window starts that are not a multiple of 64 ms,
e.g. a 1 s hop) contributes to both in proportion to the overlap, so nothing is rounded to the grid
(with hops that are multiples of 64 ms, e.g. 5.12 s, window frames fall exactly on grid frames).
Recordings of at most 10 s give one window, i.e. the plain model
output on the zero-padded clip, cut to the clip's own frame count.

This is our method for inference on long files (the reference re-assembles MAESTRO's pre-cut chunks at
1 s segment resolution in its evaluation code instead; see ``helpers`` for that). Its two steps,
``split_windows`` and ``overlap_add`` (any frame hop), also serve ``models.frame_embedder``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 10.0
MEL_HOP = 256  # samples per CNN mel frame
NET_POOLING = 4  # CNN time pooling: one output frame per 4 mel frames
FRAME_HOP_SAMPLES = MEL_HOP * NET_POOLING  # 1024 samples = 64 ms


def num_output_frames(num_samples: int, mel_hop: int = MEL_HOP, net_pooling: int = NET_POOLING) -> int:
    """Output frames for ``num_samples``: centred front-end frames // pooling (156 for 10 s with the CNN's 256-sample
    hop and pooling 4; 250 with the transformers' 160-sample hop and 4 frames per token)."""
    return (1 + num_samples // mel_hop) // net_pooling


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Window start samples: 0, hop, 2·hop, … until a window reaches the end (at least one window)."""
    if num_samples <= window:
        return [0]
    n_windows = math.ceil((num_samples - window) / hop) + 1
    return [i * hop for i in range(n_windows)]


def split_windows(clips: torch.Tensor, window: int, hop: int) -> tuple[torch.Tensor, list[int]]:
    """Clips (B, N) -> (windows (B * W, window), start samples): windows every ``hop`` samples, clip-major, the last
    one zero-padded to ``window`` (a clip of at most ``window`` samples gives one window)."""
    starts = window_starts(clips.shape[1], window, hop)
    padded = torch.nn.functional.pad(clips, (0, starts[-1] + window - clips.shape[1]))  # zero-pad the last window
    windows = torch.stack([padded[:, s:s + window] for s in starts], dim=1)  # (B, W, window)
    return windows.flatten(0, 1), starts


def overlap_add(window_outputs: torch.Tensor, starts: list[int], frame_hop_samples: float, n_out: int) -> torch.Tensor:
    """Window outputs (B, W, F, C) on the recording's frame grid (B, n_out, C), averaged where windows overlap.

    Window w starts at ``starts[w]`` samples; its frame j covers [start + j·hop, start + (j + 1)·hop). Frame k of the
    grid covers [k·hop, (k + 1)·hop); a window frame that straddles two grid frames (a start that is not a multiple
    of the hop) contributes to both in proportion to the overlap.
    """
    B, W, frames_per_window, C = window_outputs.shape
    if W != len(starts):
        raise ValueError(f"overlap_add: {W} window outputs for {len(starts)} window starts")
    grid = max(n_out, 0) + frames_per_window + 2  # room for the padded tail; cut at the end
    total = window_outputs.new_zeros(B, grid, C)
    weight = window_outputs.new_zeros(grid)
    positions = torch.arange(frames_per_window, device=window_outputs.device)
    for w, start in enumerate(starts):
        offset = start / frame_hop_samples  # window start in output frames (may be fractional)
        first = math.floor(offset)
        frac = offset - first  # window frame j covers [first + j + frac, first + j + 1 + frac)
        for shift, share in ((0, 1.0 - frac), (1, frac)):
            if share <= 0.0:
                continue
            index = first + shift + positions
            total.index_add_(1, index, share * window_outputs[:, w])
            weight.index_add_(0, index, torch.full_like(index, share, dtype=weight.dtype))
    weight = weight[:n_out].clamp(min=torch.finfo(weight.dtype).tiny)
    return total[:, :n_out] / weight[None, :, None]  # (B, n_out, C)


@torch.no_grad()
def predict_long(
    model: nn.Module,
    cnn_frontend: nn.Module,
    transformer_frontend: nn.Module,
    wav: torch.Tensor,
    hop_seconds: float,
    *,
    window_seconds: float = WINDOW_SECONDS,
    sample_rate: int = SAMPLE_RATE,
    batch_size: int = 16,
    mel_hop: int = MEL_HOP,
    net_pooling: int = NET_POOLING,
) -> torch.Tensor:
    """Strong logits over a whole recording: wav (N,) → (T, C) or (B, N) → (B, T, C), T = N's 64 ms frames.

    ``model(cnn_features, transformer_features, return_strong_logits=True)`` must return (W, frames, C) for a
    batch of W windows. Windows are run ``batch_size`` at a time (whole windows of one batch share the
    transformer front-end's batch statistics where it has any, e.g. ATST's batch-wide top_db, as clips do
    in training). Apply ``torch.sigmoid`` to the result for probabilities. The model is not put in eval
    mode here: do it before calling. ``mel_hop`` x ``net_pooling`` samples make one output frame (the SED model's
    64 ms by default; AudioSet-strong models: 160 x 4 = 40 ms).
    """
    if wav.ndim not in (1, 2):
        raise ValueError(f"predict_long expects a waveform (N,) or (B, N); got shape {tuple(wav.shape)}")
    if hop_seconds <= 0 or hop_seconds > window_seconds:
        raise ValueError(f"hop_seconds={hop_seconds} must be in (0, window_seconds={window_seconds}]")
    single = wav.ndim == 1
    clips = wav[None] if single else wav  # (B, N)
    B, N = clips.shape
    windows, starts = split_windows(clips, round(window_seconds * sample_rate), round(hop_seconds * sample_rate))
    logits = []
    for chunk in windows.split(batch_size):
        logits.append(model(cnn_frontend(chunk), transformer_frontend(chunk), return_strong_logits=True).float())
    logits = torch.cat(logits).reshape(B, len(starts), *logits[0].shape[1:])  # (B, W, F, C)
    n_out = num_output_frames(N, mel_hop, net_pooling)
    result = overlap_add(logits, starts, mel_hop * net_pooling, n_out)  # (B, T, C)
    return result[0] if single else result


__all__ = ["predict_long", "num_output_frames", "window_starts", "split_windows", "overlap_add", "FRAME_HOP_SAMPLES",
           "MEL_HOP", "NET_POOLING"]
