"""The one place that builds models and front-ends by architecture name, with per-arch metadata.

``create_model("atst_frame" | "fpasst" | "beats", backbone_kwargs=..., **t4_wrapper)`` returns the full
``SEDModel``; ``create_frontends(arch, mel=..., scaler=..., **transformer_frontend_cfg)`` returns the
CNN-branch mel and the transformer's own front-end. ``PRETRAINED`` holds the facts about each
architecture's released weights and inputs as data (timm ``default_cfgs`` style).

Backbone modules are imported lazily, so importing the registry stays cheap.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

from torch import nn

from models.mel import CNNMel
from models.sed_model import SEDModel

ARCHS = ("atst_frame", "fpasst", "beats")

# Reference ``t4_wrapper`` keys that concern loading a checkpoint, not building the model.
WRAPPER_INIT_KEYS = ("model_init_id", "model_init_mode")
WRAPPER_NAME = "Task4CRNNEmbeddingsWrapper"


@dataclasses.dataclass(frozen=True)
class ArchInfo:
    """What is known about one architecture: where its code is, its weights, its inputs and token rate."""

    module: str  # python module holding the backbone class and ``build_frontend``
    backbone_class: str
    pretrained_name: str | None  # the arch's config default ``<arch>.pretrained_name`` (AudioSet-strong weights)
    ssl_checkpoint: str | None  # backbone-only weights used to build it in the reference (config key)
    stage_checkpoints: tuple[str, ...]  # released full SED checkpoints
    wrapper_defaults: Mapping[str, Any]  # t4_wrapper settings of the released checkpoints
    frontend: str  # human-readable front-end facts
    frontend_frames_10s: int  # front-end frames for 10 s at 16 kHz
    tokens_10s: int  # backbone tokens for 10 s
    token_hop_s: float  # seconds per token (per time step for BEATs' 8 frequency tokens)
    embed_dim: int = 768


PRETRAINED: dict[str, ArchInfo] = {
    "atst_frame": ArchInfo(
        module="models.atst_frame",
        backbone_class="ATSTFrame",
        pretrained_name="atst_as_strong",
        ssl_checkpoint="atst_as.ckpt",
        stage_checkpoints=("atst_stage1", "atst_stage2"),
        wrapper_defaults={"no_wrapper": False, "embed_pool": "aap"},
        frontend="MelSpectrogram n_fft=win=1024 hop 160, 60-7800 Hz, 64 mels, power dB (top_db 80, batch-wide), "
                 "clamp [-50, 80], MinMax(-79.6482, 50.6842)",
        frontend_frames_10s=1001,
        tokens_10s=250,
        token_hop_s=0.04,
    ),
    "fpasst": ArchInfo(
        module="models.fpasst",
        backbone_class="FPaSST",
        pretrained_name="passt_as_strong",
        ssl_checkpoint=None,
        stage_checkpoints=("passt_stage1", "passt_stage2"),
        wrapper_defaults={"no_wrapper": False, "embed_pool": "int", "interpolation_mode": "nearest-exact"},
        frontend="pre-emphasis, STFT n_fft 512 win 400 hop 160, Kaldi mel 128, log(x+1e-7), (x+4.5)/5",
        frontend_frames_10s=1000,
        tokens_10s=250,
        token_hop_s=0.04,
    ),
    "beats": ArchInfo(
        module="models.beats",
        backbone_class="BEATs",
        pretrained_name=None,
        ssl_checkpoint="beats_as.pt",
        stage_checkpoints=("beats_stage1", "beats_stage2"),
        wrapper_defaults={"no_wrapper": True, "embed_pool": "int", "interpolation_mode": "nearest-exact"},
        frontend="Kaldi fbank 128 (25 ms / 10 ms, x*2^15, snip_edges), (x-15.41663)/(2*6.55582)",
        frontend_frames_10s=998,
        tokens_10s=496,  # 62 time steps x 8 frequency bands, time-major (index 8*t + f)
        token_hop_s=0.16,
    ),
}


def _check_arch(arch: str) -> ArchInfo:
    if arch not in PRETRAINED:
        raise ValueError(f"arch={arch!r} is unknown; expected one of {ARCHS}")
    return PRETRAINED[arch]


def _module(arch: str):
    return importlib.import_module(_check_arch(arch).module)


def create_backbone(arch: str, **backbone_kwargs) -> nn.Module:
    """The transformer alone (``ATSTFrame``, ``FPaSST`` or ``BEATs``), full size unless told otherwise."""
    info = _check_arch(arch)
    return getattr(_module(arch), info.backbone_class)(**backbone_kwargs)


def split_wrapper_config(t4_wrapper: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split a reference ``t4_wrapper`` config into (model kwargs, checkpoint-init kwargs).

    ``name`` must be the reference's only wrapper class; ``model_init_id`` / ``model_init_mode`` go to
    the checkpoint loader (``models.checkpoints``), everything else to ``SEDModel``.
    """
    model_kwargs = dict(t4_wrapper)
    name = model_kwargs.pop("name", WRAPPER_NAME)
    if name != WRAPPER_NAME:
        raise ValueError(f"t4_wrapper.name={name!r} is unknown; the only wrapper is {WRAPPER_NAME!r}")
    init_kwargs = {key: model_kwargs.pop(key) for key in WRAPPER_INIT_KEYS if key in model_kwargs}
    return model_kwargs, init_kwargs


def create_model(arch: str, *, backbone_kwargs: Mapping[str, Any] | None = None, **wrapper_kwargs) -> SEDModel:
    """The full SED model for ``arch``: ``SEDModel(create_backbone(arch, **backbone_kwargs), **wrapper_kwargs)``.

    ``wrapper_kwargs`` are ``SEDModel`` keywords (the reference ``t4_wrapper`` keys; pass a whole config
    through ``split_wrapper_config`` first). Unset keys take ``SEDModel``'s defaults, not the arch's released
    settings (``PRETRAINED[arch].wrapper_defaults``), exactly as the reference config does: its commands set
    ``t4_wrapper.no_wrapper=1`` / ``embed_pool=int`` explicitly.
    """
    for key in WRAPPER_INIT_KEYS + ("name",):
        if key in wrapper_kwargs:
            raise TypeError(
                f"create_model got t4_wrapper.{key}: checkpoint initialisation is not part of building the model; "
                "use models.registry.split_wrapper_config and models.checkpoints"
            )
    backbone = create_backbone(arch, **dict(backbone_kwargs or {}))
    return SEDModel(backbone, **wrapper_kwargs)


def create_frontends(arch: str, *, mel: Mapping[str, Any] | None = None, scaler: Mapping[str, Any] | None = None,
                     **transformer_frontend_cfg) -> tuple[CNNMel, nn.Module]:
    """(CNN-branch mel, transformer front-end) for ``arch``.

    ``mel`` / ``scaler``: the reference's config blocks of those names for the CNN branch; the remaining
    keywords go to the arch's ``build_frontend`` (e.g. the ``passt_mel`` block for fPaSST).
    """
    cnn_mel = CNNMel(**dict(mel or {}), **dict(scaler or {}))
    transformer_frontend = _module(arch).build_frontend(**transformer_frontend_cfg)
    return cnn_mel, transformer_frontend


__all__ = ["ARCHS", "PRETRAINED", "ArchInfo", "create_backbone", "create_model", "create_frontends",
           "split_wrapper_config"]
