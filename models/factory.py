"""The one way to build a model: (resolved config) -> SED model, front-ends, and the waveform -> logits wrapper.

Training (``helpers.training``), ``store_predictions``, the inference CLI, downstream fine-tuning, the HEAR API, the
benchmarks and the tests all build through these functions; ``models.loading`` turns a checkpoint into a config and
calls them too. What each architecture needs (which config keys are constructor arguments, its front-end settings,
its token rate) is data in ``models.registry.ARCH_SPECS``, so this module has no per-architecture branch.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

import torch
from torch import nn

from data_util.classes import CLASSES, MEDIAN_WINDOWS
from models.frame_embedder import FRAME_HOP_S, WINDOW_S, FrameEmbedder
from models.mel import CNNMel
from models.registry import WRAPPER_INIT_KEYS, arch_spec, split_wrapper_config
from models.sed_model import SEDModel

CNN_MEL_HOP = 256  # samples per CNN mel frame
CNN_NET_POOLING = 4  # CNN mel frames per output frame (64 ms)


def _module(arch: str):
    return importlib.import_module(arch_spec(arch).module)  # backbone modules load when first built


def create_backbone(arch: str, **backbone_kwargs) -> nn.Module:
    """The transformer alone (``ATSTFrame``, ``FPaSST``, ``BEATs`` ...), full size unless told otherwise."""
    return getattr(_module(arch), arch_spec(arch).backbone_class)(**backbone_kwargs)


def create_model(arch: str, *, backbone_kwargs: Mapping[str, Any] | None = None, **wrapper_kwargs) -> SEDModel:
    """The full SED model for ``arch``: ``SEDModel(create_backbone(arch, **backbone_kwargs), **wrapper_kwargs)``.

    ``wrapper_kwargs`` are ``SEDModel`` keywords (the reference ``t4_wrapper`` keys; pass a whole config
    through ``split_wrapper_config`` first, or use :func:`build_model`). Unset keys take
    ``SEDModel``'s defaults, not the arch's released settings (``ARCH_SPECS[arch].wrapper_defaults``), exactly as
    the reference config does: its commands set ``t4_wrapper.no_wrapper=1`` / ``embed_pool=int`` explicitly.
    """
    for key in WRAPPER_INIT_KEYS + ("name",):
        if key in wrapper_kwargs:
            raise TypeError(
                f"create_model got t4_wrapper.{key}: checkpoint initialisation is not part of building the model; "
                "use models.registry.split_wrapper_config and models.loading"
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
    return cnn_mel, create_transformer_frontend(arch, **transformer_frontend_cfg)


def create_transformer_frontend(arch: str, **frontend_cfg) -> nn.Module:
    """The transformer's own front-end (waveform -> features), from the arch's ``build_frontend``."""
    return _module(arch).build_frontend(**frontend_cfg)


def build_transformer_frontend(config: Mapping) -> nn.Module:
    """The transformer front-end of ``config["arch"]`` with the config's settings (``passt_mel`` for fPaSST)."""
    return create_transformer_frontend(config["arch"], **arch_spec(config["arch"]).frontend_kwargs(config))


def backbone_kwargs(config: Mapping) -> dict:
    """Constructor arguments of ``config["arch"]``'s backbone: its config block minus the keys that are not."""
    arch = config["arch"]
    spec = arch_spec(arch)
    kwargs = {k: v for k, v in dict(config[arch]).items() if k not in spec.config_only_keys}
    return {**kwargs, **spec.extra_backbone_kwargs(config)}


def build_model(config: Mapping) -> SEDModel:
    """The SED model of ``config["arch"]`` from the blocks ``<arch>`` and ``t4_wrapper`` (random init)."""
    wrapper_kwargs, _ = split_wrapper_config(config["t4_wrapper"])
    return create_model(config["arch"], backbone_kwargs=backbone_kwargs(config), **wrapper_kwargs)


def build_frontends(config: Mapping) -> tuple[CNNMel, nn.Module]:
    """(CNN-branch mel, transformer front-end) of ``config["arch"]``."""
    cnn_mel = CNNMel(**dict(config["mel"]), **dict(config["scaler"]))
    return cnn_mel, build_transformer_frontend(config)


def build_frame_embedder(config: Mapping, *, hop_s: float = FRAME_HOP_S, window_s: float = WINDOW_S,
                         token_pooling: str = "time") -> FrameEmbedder:
    """Front-end + backbone of ``config["arch"]`` (blocks ``<arch>``, and ``passt_mel`` for fPaSST) as a
    ``FrameEmbedder`` (random init; load weights with ``models.loading``)."""
    arch = config["arch"]
    spec = arch_spec(arch)
    return FrameEmbedder(build_transformer_frontend(config), create_backbone(arch, **backbone_kwargs(config)),
                         token_hop_s=spec.token_hop_s, tokens_per_step=spec.tokens_per_step, hop_s=hop_s, window_s=window_s,
                         token_pooling=token_pooling)


class WaveformSED(nn.Module):
    """A SED model with its two front-ends: waveforms [B, N] at 16 kHz -> strong logits [B, frames, nclass].

    The front-ends disable autocast themselves (float32 features, as in training). ``name`` says where the
    weights came from (a checkpoint's stem, or "" for a fresh model). ``class_names``, ``median_windows`` and the
    frame geometry (``mel_hop`` x ``net_pooling`` samples per output frame) describe the outputs for the inference
    CLI (``models.audioset_strong.ASStrongWaveform`` has the same attributes).
    """

    class_names = CLASSES
    median_windows = MEDIAN_WINDOWS
    mel_hop = CNN_MEL_HOP
    net_pooling = CNN_NET_POOLING

    def __init__(self, model: SEDModel, cnn_frontend: nn.Module, transformer_frontend: nn.Module, name: str = ""):
        super().__init__()
        self.model = model
        self.cnn_frontend = cnn_frontend
        self.transformer_frontend = transformer_frontend
        self.name = name
        self.config: dict | None = None  # the resolved config it was built from (models.loading sets it)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        cnn_features, transformer_features = self.cnn_frontend(audio), self.transformer_frontend(audio)
        return self.model(cnn_features, transformer_features, return_strong_logits=True)  # (B, frames, nclass)


def build_waveform_model(config: Mapping, name: str = "") -> WaveformSED:
    """Model and front-ends of ``config``, wrapped (random init; load weights with ``models.loading``)."""
    cnn_frontend, transformer_frontend = build_frontends(config)
    model = WaveformSED(build_model(config), cnn_frontend, transformer_frontend, name=name)
    model.config = dict(config)
    return model


__all__ = ["create_backbone", "create_model", "create_frontends", "create_transformer_frontend", "backbone_kwargs",
           "build_model", "build_frontends", "build_transformer_frontend", "build_frame_embedder", "WaveformSED", "build_waveform_model"]
