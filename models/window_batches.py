"""Sliding-window SED over several recordings at once: their 10 s windows share batches.

``models.long_audio.predict_long`` batches the windows of one recording. A folder of short files (a 10 s clip is
one window) would then run one window per forward pass, which leaves a CPU's matrix units and a GPU mostly idle.
``predict_recordings`` cuts every recording into the same windows (start every ``hop_seconds``, last one
zero-padded), runs them ``batch_size`` at a time across recordings, and overlap-adds each recording's windows onto
its own 64 ms grid, exactly as ``predict_long`` does per recording.

The only thing that can differ from one recording at a time is a front-end with batch statistics: ATST's
batch-wide 80 dB floor then spans windows of several files, as it spans clips in training and in
``store_predictions`` (``atst_frame.per_sample_top_db=True`` makes it per window).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from models.long_audio import (
    MEL_HOP,
    NET_POOLING,
    SAMPLE_RATE,
    WINDOW_SECONDS,
    num_output_frames,
    overlap_add,
    window_starts,
)


@dataclasses.dataclass
class RecordingLogits:
    """Strong logits of one recording: on its 64 ms grid, and per 10 s window."""

    frame_logits: torch.Tensor  # (T, C)
    window_logits: torch.Tensor  # (W, frames per window, C)
    window_starts: list[int]  # samples
    num_samples: int


@torch.no_grad()
def predict_recordings(
    run_windows: Callable[[torch.Tensor], torch.Tensor],
    recordings: Sequence[torch.Tensor],
    hop_seconds: float,
    *,
    batch_size: int = 16,
    window_seconds: float = WINDOW_SECONDS,
    sample_rate: int = SAMPLE_RATE,
    mel_hop: int = MEL_HOP,
    net_pooling: int = NET_POOLING,
) -> list[RecordingLogits]:
    """Strong logits of each waveform (N_i,) in ``recordings``; ``run_windows`` maps windows (W, window) to
    float logits (W, frames, C) and sees at most ``batch_size`` windows per call, in recording order.
    ``mel_hop`` x ``net_pooling`` samples make one output frame (``long_audio.predict_long``)."""
    if hop_seconds <= 0 or hop_seconds > window_seconds:
        raise ValueError(f"hop_seconds={hop_seconds} must be in (0, window_seconds={window_seconds}]")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    window = round(window_seconds * sample_rate)
    hop = round(hop_seconds * sample_rate)
    starts_per_recording, windows = [], []
    for wav in recordings:
        if wav.ndim != 1:
            raise ValueError(f"predict_recordings expects mono waveforms (N,); got shape {tuple(wav.shape)}")
        starts = window_starts(len(wav), window, hop)
        padded = torch.nn.functional.pad(wav, (0, starts[-1] + window - len(wav)))  # zero-pad the last window
        windows.extend(padded[s:s + window] for s in starts)
        starts_per_recording.append(starts)
    logits = torch.cat([run_windows(torch.stack(windows[i:i + batch_size])).float()
                        for i in range(0, len(windows), batch_size)])  # (all windows, frames, C)
    results, first = [], 0
    for wav, starts in zip(recordings, starts_per_recording):
        own = logits[first:first + len(starts)]
        first += len(starts)
        frame_logits = overlap_add(own[None], starts, mel_hop * net_pooling,
                                   num_output_frames(len(wav), mel_hop, net_pooling))[0]
        results.append(RecordingLogits(frame_logits, own, starts, len(wav)))
    return results


__all__ = ["predict_recordings", "RecordingLogits"]
