"""The architecture registry: everything the project knows about each backbone, as data, in one entry.

``ARCH_SPECS[name]`` is an :class:`ArchSpec`: where the backbone's code is, how its config block maps to
constructor arguments and front-end settings, how to read its sizes back from a state dict, and the facts about
its released weights and inputs (timm ``default_cfgs`` style). ``models.factory`` builds models from these
entries, ``models.loading`` reads checkpoints with them; no other module keeps a per-architecture table.
This module is data only (no torch import), so the experiments can check ``arch`` values cheaply.
Adding a backbone is one model file (the backbone class and its ``build_frontend``) plus one :func:`register_arch`
call (tests/test_toy_arch.py does it from inside a test).

"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Mapping

import configs.t4 as t4

# Reference ``t4_wrapper`` keys that concern loading a checkpoint, not building the model.
WRAPPER_INIT_KEYS = ("model_init_id", "model_init_mode")
WRAPPER_NAME = "Task4CRNNEmbeddingsWrapper"
_NATURAL_LOG_PER_DB = math.log(10.0) / 10.0  # a +1 dB gain adds ln(10)/10 to a natural-log power feature


def _no_kwargs(config: Mapping) -> dict:
    return {}


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One architecture. Keys (``*_key``, ``block_pattern``) are relative to the backbone (``as_model.model.``)."""

    module: str  # python module holding the backbone class and ``build_frontend``
    backbone_class: str
    config_block: type  # its config block (``configs.t4.ATSTFrame`` ...): keys, types and defaults
    # -- building from a resolved config
    config_only_keys: tuple[str, ...] = ("pretrained_name",)  # block keys that are not constructor arguments
    extra_backbone_kwargs: Callable[[Mapping], dict] = _no_kwargs  # constructor arguments from other blocks
    frontend_kwargs: Callable[[Mapping], dict] = _no_kwargs  # ``build_frontend`` arguments from the config
    ssl_checkpoint_key: str | None = None  # top-level key naming SSL weights (reference: atst_checkpoint)
    # -- reading sizes back from a state dict
    block_pattern: str = ""  # regex of a transformer-block key, group 1 = the block index
    embed_dim_key: str = ""  # its last dimension is the embedding width
    mlp_in_key: str = ""  # first block's MLP input layer (rows = MLP width)
    heads_key: str | None = None  # a key whose dim 1 is the number of heads (BEATs), else heads are not visible
    optional_backbone_prefixes: tuple[str, ...] = ()  # may be absent from foreign files (BEATs' predictor)
    # -- facts about the released weights and inputs
    feature_units_per_db: float = 1.0  # change of a transformer feature for a +1 dB gain (FilterAugment)
    pretrained_name: str | None = None  # the config default ``<arch>.pretrained_name`` (AudioSet-strong weights)
    ssl_checkpoint: str | None = None  # backbone-only weights used to build it in the reference
    stage_checkpoints: tuple[str, ...] = ()  # released full SED checkpoints
    wrapper_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # their t4_wrapper settings
    frontend: str = ""  # human-readable front-end facts
    frontend_frames_10s: int = 0  # front-end frames for 10 s at 16 kHz
    tokens_10s: int = 0  # backbone tokens for 10 s
    token_hop_s: float = 0.0  # seconds per token (per time step for BEATs' 8 frequency tokens)
    tokens_per_step: int = 1  # tokens per time step, time-major (BEATs: 8 frequency bands); models.frame_embedder
    embed_dim: int = 768
    # -- AudioSet-strong checkpoints in PretrainedSED's layout (models.audioset_strong)
    pretrainedsed_prefix: str = "model."  # backbone key k is stored as <prefix>k in its release files
    pretrainedsed_name: str = ""  # the model's name in its release files (<name>_{ssl,weak,strong_1}.pt)


ARCH_SPECS: dict[str, ArchSpec] = {
    "atst_frame": ArchSpec(
        module="models.atst_frame",
        backbone_class="ATSTFrame",
        config_block=t4.ATSTFrame,
        config_only_keys=("pretrained_name", "per_sample_top_db"),
        frontend_kwargs=lambda config: {"per_sample_top_db": bool(config["atst_frame"]["per_sample_top_db"])},
        ssl_checkpoint_key="atst_checkpoint",
        block_pattern=r"atst\.blocks\.(\d+)\.",
        embed_dim_key="atst.pos_embed",
        mlp_in_key="atst.blocks.0.mlp.fc1.weight",
        # 10*log10(power) dB, then min-max (-79.6482, 50.6842) -> [-1, 1]
        feature_units_per_db=2.0 / (50.6842 + 79.6482),
        pretrained_name="atst_as_strong",
        ssl_checkpoint="atst_as.ckpt",
        stage_checkpoints=("atst_stage1", "atst_stage2"),
        wrapper_defaults={"no_wrapper": False, "embed_pool": "aap"},
        frontend="MelSpectrogram n_fft=win=1024 hop 160, 60-7800 Hz, 64 mels, power dB (top_db 80, batch-wide), "
                 "clamp [-50, 80], MinMax(-79.6482, 50.6842)",
        frontend_frames_10s=1001,
        tokens_10s=250,
        token_hop_s=0.04,
        pretrainedsed_name="ATST-F",
    ),
    "fpasst": ArchSpec(
        module="models.fpasst",
        backbone_class="FPaSST",
        config_block=t4.FPaSST,
        config_only_keys=("pretrained_name", "arch", "n_classes", "sample_rate"),
        extra_backbone_kwargs=lambda config: {"n_mels": config["passt_mel"]["n_mels"]},
        frontend_kwargs=lambda config: dict(config["passt_mel"]),
        block_pattern=r"blocks\.(\d+)\.",
        embed_dim_key="cls_token",
        mlp_in_key="blocks.0.mlp.fc1.weight",
        feature_units_per_db=_NATURAL_LOG_PER_DB / 5.0,  # ln(power), then (x + 4.5) / 5
        pretrained_name="passt_as_strong",
        stage_checkpoints=("passt_stage1", "passt_stage2"),
        wrapper_defaults={"no_wrapper": False, "embed_pool": "int", "interpolation_mode": "nearest-exact"},
        frontend="pre-emphasis, STFT n_fft 512 win 400 hop 160, Kaldi mel 128, log(x+1e-7), (x+4.5)/5",
        frontend_frames_10s=1000,
        tokens_10s=250,
        token_hop_s=0.04,
        pretrainedsed_name="fpasst",
    ),
    "beats": ArchSpec(
        module="models.beats",
        backbone_class="BEATs",
        config_block=t4.BEATs,
        ssl_checkpoint_key="beats_checkpoint",
        block_pattern=r"encoder\.layers\.(\d+)\.",
        embed_dim_key="encoder.layer_norm.weight",
        mlp_in_key="encoder.layers.0.fc1.weight",
        heads_key="encoder.layers.0.self_attn.grep_a",  # (1, heads, 1, 1)
        optional_backbone_prefixes=("predictor.",),  # only in fine-tuned BEATs files; never used here
        feature_units_per_db=_NATURAL_LOG_PER_DB / (2.0 * 6.55582),  # ln Kaldi fbank, (x - 15.41663) / 13.11
        ssl_checkpoint="beats_as.pt",
        stage_checkpoints=("beats_stage1", "beats_stage2"),
        wrapper_defaults={"no_wrapper": True, "embed_pool": "int", "interpolation_mode": "nearest-exact"},
        frontend="Kaldi fbank 128 (25 ms / 10 ms, x*2^15, snip_edges), (x-15.41663)/(2*6.55582)",
        frontend_frames_10s=998,
        tokens_10s=496,  # 62 time steps x 8 frequency bands, time-major (index 8*t + f)
        token_hop_s=0.16,
        pretrainedsed_prefix="model.model.",  # its BEATs wrapper holds the official model as ``model``
        pretrainedsed_name="BEATs",
        tokens_per_step=8,
    ),
}
ARCHS = tuple(ARCH_SPECS)  # the built-in architectures (configs.t4.ARCHS names the same three)


def register_arch(name: str, spec: ArchSpec) -> None:
    """Add an architecture (``arch=<name>`` then builds, trains, stores and loads it like the built-in ones)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"architecture name {name!r} must be a lower-case identifier")
    if name in ARCH_SPECS:
        raise ValueError(f"architecture {name!r} is already registered")
    ARCH_SPECS[name] = spec


def unregister_arch(name: str) -> None:
    """Remove an architecture added with :func:`register_arch` (the built-in ones stay)."""
    if name in ARCHS:
        raise ValueError(f"{name!r} is built in and cannot be removed")
    ARCH_SPECS.pop(name, None)


def arch_names() -> tuple[str, ...]:
    """Every registered architecture, built-in first."""
    return tuple(ARCH_SPECS)


def arch_spec(arch: str) -> ArchSpec:
    if arch not in ARCH_SPECS:
        raise ValueError(f"arch={arch!r} is unknown; expected one of {', '.join(ARCH_SPECS)}")
    return ARCH_SPECS[arch]


def extra_arch_blocks() -> dict[str, type]:
    """Config blocks of registered architectures that ``configs`` does not know (for ``validate_config``)."""
    return {name: spec.config_block for name, spec in ARCH_SPECS.items() if name not in t4.ARCHS}


def split_wrapper_config(t4_wrapper: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split a reference ``t4_wrapper`` config into (model kwargs, checkpoint-init kwargs).

    ``name`` must be the reference's only wrapper class; ``model_init_id`` / ``model_init_mode`` go to
    the checkpoint loader (``models.loading``), everything else to ``SEDModel``.
    """
    model_kwargs = dict(t4_wrapper)
    name = model_kwargs.pop("name", WRAPPER_NAME)
    if name != WRAPPER_NAME:
        raise ValueError(f"t4_wrapper.name={name!r} is unknown; the only wrapper is {WRAPPER_NAME!r}")
    init_kwargs = {key: model_kwargs.pop(key) for key in WRAPPER_INIT_KEYS if key in model_kwargs}
    return model_kwargs, init_kwargs


__all__ = ["ARCHS", "ARCH_SPECS", "ArchSpec", "arch_names", "arch_spec", "register_arch", "unregister_arch",
           "extra_arch_blocks", "split_wrapper_config", "WRAPPER_INIT_KEYS"]
