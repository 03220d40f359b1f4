"""The CNN branch's front-end: a log-mel spectrogram scaled per clip to [-1, 1].

Reproduces what the reference (CPJKU/cpjku_dcase24) feeds the CRNN: torchaudio's
``MelSpectrogram`` with the ``mel`` config (16 kHz, n_fft = win = 2048, hop 256, 0-8000 Hz,
128 mels, Hamming window with ``periodic=False``, power 1, i.e. magnitude), then
``AmplitudeToDB(stype="amplitude")`` with ``amin=1e-5`` (20·log10(clamp(x, 1e-5))), a clamp to
[-50, 80] dB, and the ``scaler`` config (instance statistic, min-max to [-1, 1] over mel and time).

The two halves are exposed separately because the training recipe augments the *linear*
mel (mixup, FilterAugment) before the log and the scaling:
``features = frontend.normalize(augment(frontend.mel_amplitude(wav)))``; ``forward`` does both.

10 s at 16 kHz → (B, 1, 128, 626) (center padding: 1 + 160000 // 256 frames).
Written from scratch; the behaviour is checked against ``tests/fixtures/reference_t4/cnn_features.npy``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torchaudio
from torch import nn

# torchaudio's AmplitudeToDB(stype="amplitude") multiplier: 20·log10 for magnitudes.
AMPLITUDE_DB_MULTIPLIER = 20.0
# The reference sets amin = 1e-5 ("as in librosa") after constructing AmplitudeToDB.
DB_AMIN = 1e-5
# "clamp to reproduce old code" in the reference's take_log.
DB_CLAMP = (-50.0, 80.0)
# TorchScaler's eps in the min-max denominator.
SCALER_EPS = 1e-8

_WINDOWS: dict[str, Callable[..., torch.Tensor]] = {
    "hamming": torch.hamming_window,
    "hann": torch.hann_window,
    "blackman": torch.blackman_window,
}
_NORMTYPES = ("minmax", "standard", "mean")


def _window_function(window_fn: str | Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Accept a window function or its name (Sacred configs hold names more easily than functions)."""
    if callable(window_fn):
        return window_fn
    name = str(window_fn).lower().removesuffix("_window")
    if name not in _WINDOWS:
        raise ValueError(f"mel.window_fn={window_fn!r} is unknown; expected one of {sorted(_WINDOWS)} or a callable")
    return _WINDOWS[name]


class CNNMel(nn.Module):
    """Waveform (B, N) at ``sample_rate`` → scaled log-mel (B, 1, n_mels, 1 + N // hop_length).

    Keyword names are the reference's ``mel`` config keys (torchaudio ``MelSpectrogram`` names) plus
    the ``scaler`` config keys (``statistic``, ``normtype``, ``dims``). Window and mel matrix are
    non-persistent buffers: nothing here appears in a state dict, nothing is trainable.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16_000,
        n_fft: int = 2048,
        win_length: int | None = 2048,
        hop_length: int = 256,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        n_mels: int = 128,
        window_fn: str | Callable[..., torch.Tensor] = "hamming",
        wkwargs: dict | None = None,
        power: float = 1.0,
        statistic: str = "instance",
        normtype: str = "minmax",
        dims: Sequence[int] = (2, 3),
    ):
        super().__init__()
        if statistic != "instance":
            raise ValueError(
                f"scaler.statistic={statistic!r} is not supported: only 'instance' (per-clip statistics) exists, "
                "as in the reference (its 'dataset' statistic was never used)"
            )
        if normtype not in _NORMTYPES:
            raise ValueError(f"scaler.normtype={normtype!r} is unknown; expected one of {_NORMTYPES}")
        if power <= 0:
            raise ValueError(f"mel.power={power!r} must be positive (1 = magnitude, 2 = power)")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.power = float(power)
        self.normtype = normtype
        self.dims = tuple(dims)
        window_kwargs = {"periodic": False} if wkwargs is None else dict(wkwargs)
        window = _window_function(window_fn)(self.win_length, **window_kwargs)
        # torchaudio's defaults: HTK mel scale, no filter normalisation; (n_fft // 2 + 1, n_mels).
        mel_matrix = torchaudio.functional.melscale_fbanks(
            n_freqs=n_fft // 2 + 1,
            f_min=float(f_min),
            f_max=float(f_max if f_max is not None else sample_rate / 2),
            n_mels=n_mels,
            sample_rate=sample_rate,
            norm=None,
            mel_scale="htk",
        )
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("mel_matrix", mel_matrix.float(), persistent=False)

    def mel_amplitude(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform → linear mel spectrogram (B, 1, n_mels, T), float32, autocast off."""
        if wav.ndim != 2:
            raise ValueError(f"CNNMel expects a waveform batch (B, N); got shape {tuple(wav.shape)}")
        with torch.autocast(device_type=wav.device.type, enabled=False):
            spec = torch.stft(
                wav.float(),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window,
                center=True,
                pad_mode="reflect",
                normalized=False,
                onesided=True,
                return_complex=True,
            )  # (B, n_fft // 2 + 1, T)
            # |X|^power from re² + im²: one pass over the (frame-major) STFT instead of complex abs then pow
            parts = torch.view_as_real(spec)
            power = parts[..., 0].square() + parts[..., 1].square()  # |X|²
            spec = power.sqrt() if self.power == 1.0 else power if self.power == 2.0 else power.pow(self.power / 2)
            mel = torch.matmul(spec.transpose(1, 2), self.mel_matrix).transpose(1, 2)  # (B, n_mels, T)
        return mel.unsqueeze(1)  # (B, 1, n_mels, T)

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        """Linear mel (B, 1, F, T) → dB, clamped to [-50, 80], scaled per clip (fp32, autocast off)."""
        with torch.autocast(device_type=mel.device.type, enabled=False):
            mel = mel.float()
            db = AMPLITUDE_DB_MULTIPLIER * torch.log10(torch.clamp(mel, min=DB_AMIN))
            db = db.clamp(min=DB_CLAMP[0], max=DB_CLAMP[1])
            return self._scale(db)

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        if self.normtype == "mean":
            return x - x.mean(self.dims, keepdim=True)
        if self.normtype == "standard":
            return (x - x.mean(self.dims, keepdim=True)) / (x.std(self.dims, keepdim=True) + SCALER_EPS)
        low = torch.amin(x, dim=self.dims, keepdim=True)
        high = torch.amax(x, dim=self.dims, keepdim=True)
        return (x - low) / (high - low + SCALER_EPS) * 2 - 1  # in [-1, 1]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.mel_amplitude(wav))


__all__ = ["CNNMel"]
