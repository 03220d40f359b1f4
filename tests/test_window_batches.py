"""Windows of several recordings in shared batches give each recording what predict_long gives it alone."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models import long_audio
from models.window_batches import predict_recordings

SR = 16_000
FRAMES, CLASSES = 156, 3


def window_logits(windows: torch.Tensor) -> torch.Tensor:
    """A per-window stand-in for a SED model: (W, 160000) -> (W, 156, 3), each frame from its own samples."""
    frames = windows[:, : FRAMES * 1024].reshape(len(windows), FRAMES, 1024)
    return torch.stack([frames.mean(-1), frames.abs().amax(-1), frames[..., 0]], dim=-1)


class StandIn(nn.Module):
    def forward(self, cnn_features, transformer_features, return_strong_logits=True):
        return window_logits(cnn_features)


@pytest.mark.parametrize("hop_seconds", [5.0, 10.0, 2.5])
def test_shared_batches_equal_one_recording_at_a_time(hop_seconds):
    generator = torch.Generator().manual_seed(0)
    recordings = [torch.randn(n, generator=generator) for n in (10 * SR, 4 * SR, 37 * SR + 123, 10 * SR + 1)]
    calls = []

    def run(windows):
        calls.append(len(windows))
        return window_logits(windows)

    results = predict_recordings(run, recordings, hop_seconds, batch_size=4)
    starts = [long_audio.window_starts(len(w), 10 * SR, round(hop_seconds * SR)) for w in recordings]
    assert calls and all(n <= 4 for n in calls) and sum(calls) == sum(len(s) for s in starts)
    assert len(calls) == -(-sum(len(s) for s in starts) // 4)  # windows of different recordings share batches
    for wav, result, expected_starts in zip(recordings, results, starts):
        expected = long_audio.predict_long(StandIn(), nn.Identity(), nn.Identity(), wav, hop_seconds, batch_size=3)
        torch.testing.assert_close(result.frame_logits, expected)
        assert result.window_starts == expected_starts and result.num_samples == len(wav)
        assert result.window_logits.shape == (len(expected_starts), FRAMES, CLASSES)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="hop_seconds=0"):
        predict_recordings(window_logits, [torch.zeros(SR)], 0)
    with pytest.raises(ValueError, match="batch_size=0"):
        predict_recordings(window_logits, [torch.zeros(SR)], 5.0, batch_size=0)
    with pytest.raises(ValueError, match="mono waveforms"):
        predict_recordings(window_logits, [torch.zeros(2, SR)], 5.0)
