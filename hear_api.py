"""The HEAR 2021 common API (hearbenchmark.com/hear-api.html) for this project's transformers.

    import hear_api
    model = hear_api.load_model("resources/pretrained_models/atst_stage2.ckpt")    # any checkpoint the project loads
    embeddings, timestamps = hear_api.get_timestamp_embeddings(audio, model)      # (n, T, D) float32, (n, T) ms
    scene = hear_api.get_scene_embeddings(audio, model)                           # (n, D) float32

``audio``: a float32 tensor (n, samples) at ``model.sample_rate`` (16 kHz), any length, on the model's device (CPU or
GPU). ``load_model`` reads every checkpoint format ``models.loading.read_backbone`` knows: stage checkpoints (the
student's transformer; ``mode="teacher"`` for the teacher), our ``ex_downstream`` checkpoints, the AudioSet-strong
files (``atst_as_strong.ckpt``, ``passt_as_strong.ckpt``), PretrainedSED files (``ATST-F_strong_1.pt``, ...),
official BEATs and audiossl ATST-Frame files. Architecture and sizes come from the file; nothing is downloaded.

Embeddings are the transformer's frame embeddings (``models.frame_embedder``): one every 40 ms (25 per second,
timestamps at the frame centres (k + 0.5)·40 ms, the last one inside the audio), computed in 10 s windows (the
last one zero-padded) run ``batch_size`` at a time; BEATs' 160 ms time steps (the mean of their 8 frequency tokens)
are linearly interpolated to the 40 ms grid. Scene embeddings are the mean of a clip's timestamp embeddings. A sound's
embeddings do not depend on the other sounds of the batch (ATST-Frame's front-end floors each window at its own
maximum - 80 dB here, not the batch's as in training; docs/DIFFERENCES.md).
``timestamp_embedding_size`` and ``scene_embedding_size`` are the transformer's width (768 for the released models).

Checked by the HEAR validator: ``make hear-validate`` (README, "HEAR API").
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn

from models.frame_embedder import FrameEmbedder, frame_centres_ms
from models.loading import load_frame_embedder

SAMPLE_RATE = 16_000
BATCH_SIZE = 16  # 10 s windows per forward pass


class HearModel(nn.Module):
    """A ``FrameEmbedder`` with the attributes the HEAR API asks for."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self, embedder: FrameEmbedder, batch_size: int = BATCH_SIZE):
        super().__init__()
        if embedder.sample_rate != SAMPLE_RATE:
            raise ValueError(f"the HEAR API model runs at {SAMPLE_RATE} Hz, the embedder at {embedder.sample_rate}")
        self.embedder = embedder
        self.batch_size = int(batch_size)
        self.scene_embedding_size = int(embedder.embed_dim)
        self.timestamp_embedding_size = int(embedder.embed_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.embedder(audio, batch_size=self.batch_size)


def load_model(model_file_path: str | os.PathLike = "", *, mode: str = "student", overrides: Mapping | None = None,
               batch_size: int = BATCH_SIZE) -> HearModel:
    """The transformer of a checkpoint file as a HEAR model (eval mode, on the CPU; ``.to(device)`` it).

    ``mode``: which model of a stage checkpoint ("student" / "teacher"). ``overrides``: settings the file cannot
    show, e.g. ``{"backbone": {"num_heads": 4}}`` for a foreign file of unusual head width.
    """
    if not str(model_file_path):
        raise ValueError("hear_api.load_model needs a checkpoint file (nothing is downloaded): e.g. "
                         "hear-validator hear_api --model resources/pretrained_models/atst_stage2.ckpt")
    embedder = load_frame_embedder(model_file_path, mode=mode, overrides=overrides)
    if hasattr(embedder.frontend, "per_sample_top_db"):
        # a sound's embeddings must not depend on the other sounds of the batch: ATST-Frame's 80 dB floor per clip
        embedder.frontend.per_sample_top_db = True
    return HearModel(embedder, batch_size).eval()


def _device(model: HearModel) -> torch.device:
    return next(model.parameters()).device


def _check_audio(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
        raise ValueError(f"audio must be a tensor (n_sounds, n_samples) at {model.sample_rate} Hz, got "
                         f"{type(audio).__name__} of shape {tuple(getattr(audio, 'shape', ()))}")
    return audio.to(_device(model)).float()


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (n, T, D) float32, timestamps (n, T) float32 in ms, the frame centres) of ``audio`` (n, samples)."""
    audio = _check_audio(audio, model)
    model.eval()
    embeddings = model(audio).float()  # (n, T, D)
    n, T, _ = embeddings.shape
    timestamps = frame_centres_ms(T, model.embedder.hop_s).to(embeddings.device).expand(n, T).contiguous()
    return embeddings, timestamps


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """One embedding per sound (n, D) float32: the mean of its timestamp embeddings."""
    embeddings, _ = get_timestamp_embeddings(audio, model)
    return embeddings.mean(dim=1)


__all__ = ["load_model", "get_timestamp_embeddings", "get_scene_embeddings", "HearModel", "SAMPLE_RATE"]
