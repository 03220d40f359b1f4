"""Sound event detection on one recording of any length: models loaded for it and their window predictions.

A model (one checkpoint, or an ensemble averaging its members' strong logits) is loaded by
``models.loading.load_inference_model``; a recording is cut into sliding 10 s windows whose strong logits are
overlap-added onto its own frame grid (``models.long_audio.predict_long``; several short recordings share
batches through ``models.window_batches``). The result keeps the per-window logits too (the prediction files).
Used by ``inference.py``; post-processing and files: ``helpers.predictions.recording_outputs``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

import configs
from data_util.audio import SAMPLE_RATE
from data_util.classes import CLASSES
from models import long_audio, window_batches
from models.factory import WaveformSED
from models.loading import load_inference_model

DEFAULT_HOP_SECONDS = 5.0
DEFAULT_BATCH_SIZE = 16
FRAME_HOP_SECONDS = long_audio.FRAME_HOP_SAMPLES / SAMPLE_RATE  # 0.064
WINDOW_SAMPLES = round(long_audio.WINDOW_SECONDS * SAMPLE_RATE)
CENTISECONDS = 100


class InferenceError(RuntimeError):
    """A user-facing problem (unknown model, no audio files, bad option); the message says what to do."""


class SEDEnsemble(nn.Module):
    """Mean of the members' strong logits (each member computes its own front-ends)."""

    def __init__(self, members: Sequence[WaveformSED]):
        super().__init__()
        if not members:
            raise InferenceError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        outputs = {(tuple(m.class_names), m.mel_hop, m.net_pooling) for m in members}
        if len(outputs) > 1:
            raise InferenceError("the ensemble's models have different classes or frame rates; ensemble models "
                                 "trained for the same outputs (all SED models, or all AudioSet-strong models)")
        self.class_names, self.median_windows = members[0].class_names, members[0].median_windows
        self.mel_hop, self.net_pooling = members[0].mel_hop, members[0].net_pooling

    @property
    def name(self) -> str:
        return "+".join(member.name for member in self.members)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(wav).float() for member in self.members]).mean(0)  # (B, frames, 27)


def load_model(
    name_or_path: str | os.PathLike,
    *,
    mode: str = "student",
    arch: str | None = None,
    num_heads: int | None = None,
    embed_pool: str | None = None,
    interpolation_mode: str | None = None,
    models_dir: Path = configs.PRETRAINED_MODELS_DIR,
) -> WaveformSED:
    """The model a checkpoint holds (``models.loading.load_sed_model``); the options are the CLI's overrides of
    what the shapes cannot show, cross-checked against the file (``--arch`` names the expected architecture)."""
    overrides: dict[str, Any] = {}
    if arch is not None:
        overrides["arch"] = arch
    wrapper = {k: v for k, v in (("embed_pool", embed_pool), ("interpolation_mode", interpolation_mode)) if v}
    if wrapper:
        overrides["t4_wrapper"] = wrapper
    if num_heads is not None:
        overrides["backbone"] = {"num_heads": num_heads}
    return load_inference_model(name_or_path, mode=mode, overrides=overrides, model_dir=models_dir)


@dataclasses.dataclass
class WaveformPrediction:
    """Strong logits of one recording: overlap-added frames and the per-window logits they came from."""

    frame_logits: np.ndarray  # float32 [T, C] on the recording's frame grid (64 ms; AudioSet-strong models 40 ms)
    window_logits: np.ndarray  # float32 [W, frames, C], one row per 10 s window
    window_starts: list[int]  # samples
    num_samples: int
    # what the model's outputs are (the SED model's by default): classes, median windows, samples per frame
    class_names: tuple[str, ...] = CLASSES
    median_windows: tuple[int, ...] = WaveformSED.median_windows
    frame_hop_samples: int = long_audio.FRAME_HOP_SAMPLES

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE

    @property
    def timestamps(self) -> np.ndarray:
        """[T + 1] frame boundaries in seconds, the last one clipped to the duration."""
        frames = np.arange(len(self.frame_logits) + 1, dtype=np.float64)
        return np.minimum(frames * self.frame_hop_samples / SAMPLE_RATE, self.duration)


class _WindowRunner(nn.Module):
    """Adapter between ``long_audio.predict_long`` and a waveform model.

    ``predict_long`` calls ``model(cnn_frontend(w), transformer_frontend(w), return_strong_logits=True)``;
    with identity front-ends both arguments are the raw windows (kept on the CPU so long recordings do not
    fill the accelerator). Here each batch goes to the device (under bf16 autocast if asked), its logits come
    back as float32 on the CPU (the overlap-add runs there), are recorded per window and tick the progress bar.
    """

    def __init__(self, model: nn.Module, device: torch.device, bf16: bool, on_batch: Callable[[int], None]):
        super().__init__()
        self.model = model
        self.device = device
        self.bf16 = bf16
        self.on_batch = on_batch
        self.window_logits: list[torch.Tensor] = []

    def forward(self, windows: torch.Tensor, _same_windows: torch.Tensor, return_strong_logits: bool = True):
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(windows.to(self.device, non_blocking=True))
        logits = logits.float().cpu()  # (W, 156, 27)
        self.window_logits.append(logits)
        self.on_batch(len(logits))
        return logits


def predict_waveform(
    model: nn.Module,
    wav: np.ndarray,
    *,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    on_batch: Callable[[int], None] = lambda n: None,
) -> WaveformPrediction:
    """Strong logits of a mono 16 kHz waveform [N] of any length (sliding 10 s windows, overlap-add)."""
    num_samples = len(wav)
    check_length(num_samples, model)
    runner = _WindowRunner(model, torch.device(device), bf16, on_batch)
    frame_logits = long_audio.predict_long(
        runner, nn.Identity(), nn.Identity(), torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)),
        hop_seconds, batch_size=batch_size, **_geometry(model),
    )
    starts = long_audio.window_starts(num_samples, WINDOW_SAMPLES, round(hop_seconds * SAMPLE_RATE))
    return WaveformPrediction(frame_logits=frame_logits.numpy(), window_logits=torch.cat(runner.window_logits).numpy(),
                              window_starts=starts, num_samples=num_samples, **_outputs(model))


def _geometry(model: nn.Module) -> dict:
    """The model's output frame: ``mel_hop`` x ``net_pooling`` samples (SED models 256 x 4, AudioSet-strong 160 x 4)."""
    return {"mel_hop": getattr(model, "mel_hop", long_audio.MEL_HOP),
            "net_pooling": getattr(model, "net_pooling", long_audio.NET_POOLING)}


def _outputs(model: nn.Module) -> dict:
    geometry = _geometry(model)
    return {"class_names": tuple(getattr(model, "class_names", CLASSES)),
            "median_windows": tuple(getattr(model, "median_windows", WaveformSED.median_windows)),
            "frame_hop_samples": geometry["mel_hop"] * geometry["net_pooling"]}


def check_length(num_samples: int, model: nn.Module | None = None) -> None:
    geometry = _geometry(model)
    if long_audio.num_output_frames(num_samples, **geometry) < 1:
        frame_ms = geometry["mel_hop"] * geometry["net_pooling"] / SAMPLE_RATE * 1000
        raise InferenceError(f"the audio is {num_samples / SAMPLE_RATE * 1000:.0f} ms long: too short for one "
                             f"{frame_ms:.0f} ms output frame")


def predict_waveforms(
    model: nn.Module,
    wavs: Sequence[np.ndarray],
    *,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    on_batch: Callable[[int], None] = lambda n: None,
) -> list[WaveformPrediction]:
    """``predict_waveform`` for several recordings whose windows share batches (folder mode)."""
    for wav in wavs:
        check_length(len(wav), model)
    runner = _WindowRunner(model, torch.device(device), bf16, on_batch)
    recordings = [torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)) for wav in wavs]
    results = window_batches.predict_recordings(lambda windows: runner(windows, windows), recordings, hop_seconds,
                                                batch_size=batch_size, **_geometry(model))
    return [WaveformPrediction(frame_logits=r.frame_logits.numpy(), window_logits=r.window_logits.numpy(),
                               window_starts=r.window_starts, num_samples=r.num_samples, **_outputs(model))
            for r in results]


def num_windows(num_samples: int, hop_seconds: float) -> int:
    return len(long_audio.window_starts(num_samples, WINDOW_SAMPLES, round(hop_seconds * SAMPLE_RATE)))


def window_names(stem: str, prediction: WaveformPrediction) -> list[str]:
    """Row names of the window logits: ``stem`` for one window, else MAESTRO chunk names (centiseconds)."""
    if len(prediction.window_starts) == 1:
        return [stem]
    names = []
    for start in prediction.window_starts:
        end = min(start + WINDOW_SAMPLES, prediction.num_samples)
        onset_cs = round(start * CENTISECONDS / SAMPLE_RATE)
        offset_cs = round(end * CENTISECONDS / SAMPLE_RATE)
        names.append(f"{stem}-{onset_cs:06d}-{offset_cs:06d}")
    return names


__all__ = ["InferenceError", "SEDEnsemble", "load_model", "WaveformPrediction", "predict_waveform", "predict_waveforms",
           "check_length", "num_windows", "window_names", "DEFAULT_HOP_SECONDS", "DEFAULT_BATCH_SIZE",
           "FRAME_HOP_SECONDS", "WINDOW_SAMPLES"]
