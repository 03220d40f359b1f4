"""The AudioSet-strong model: transformer -> 250 frames -> optional BiGRU -> strong and weak heads.

PretrainedSED's ``PredictionsWrapper`` (Schmid et al., ICASSP 2025, arXiv 2409.09546; fschmid56/PretrainedSED
``models/prediction_wrapper.py``), written from its description: the backbone's token sequence [B, T_tok, D] is
average-pooled (T_tok > 250, BEATs' 496 tokens) or linearly interpolated (T_tok < 250) to 250 frames of 40 ms;
teachers add a bidirectional GRU (``seq_model``), students none; ``strong_head`` maps every frame to the
strong classes (447), ``weak_head`` maps the time average to the weak classes.

Attribute names are the checkpoint keys of PretrainedSED's release files, so files written here and theirs are
interchangeable (``to_pretrainedsed`` / ``from_pretrainedsed``): ``model.<backbone key>`` for ATST-Frame
(``model.atst.*``) and fPaSST, ``model.model.<official key>`` for BEATs (``ArchSpec.pretrainedsed_prefix``),
``seq_model.rnn.*``, ``strong_head.*``, ``weak_head.*``; nothing else (front-end buffers are computed). Next to a
file ``<name>.pt`` we write ``<name>.json`` with the architecture, sizes and class list (what the shapes cannot
show); a file without it is read as a released one (447 classes, 64-dim attention heads).
Stage 1 of the T4 recipe starts from such a file with ``<arch>.pretrained_name=<file>`` (``models.checkpoints``
reads the layout as a backbone source).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import configs.audioset_strong as as_config
from data_util.atomic import atomic_path, atomic_write_text
from data_util.audioset_strong import ClassList, train_classes
from models.checkpoints import (
    CheckpointError,
    check_state_dict,
    drop_keys_under,
    load_backbone,
    removed_block_prefixes,
    safe_load,
)
from models.crnn import BidirectionalGRU
from models.factory import backbone_kwargs, build_transformer_frontend, create_backbone
from models.loading import HEAD_DIM, backbone_sizes, resolve_checkpoint
from models.registry import ARCH_SPECS, arch_spec

log = logging.getLogger(__name__)

SEQ_LEN = 250  # 40 ms frames per 10 s clip
FRONTEND_HOP = 160  # samples per front-end frame (10 ms)
FRAMES_PER_OUTPUT = 4  # front-end frames per output frame
PARTS = ("model.", "seq_model.", "strong_head.", "weak_head.")
LIGHTNING_PREFIX = "net."  # the model's attribute in the training system (helpers.training.audioset_strong)
SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "t4sed AudioSet-strong model, PretrainedSED layout"
_PUBLIC_REPO_PREFIXES = {"model.fpasst.": "model.", "model.beats.": "model.model."}  # PretrainedSED's repo code


class ASStrongModel(nn.Module):
    """Backbone + sequence model + heads; ``forward(features)`` -> (strong logits [B, C, 250], weak logits [B, Cw])."""

    def __init__(self, backbone: nn.Module, *, n_classes_strong: int, n_classes_weak: int | None = None,
                 seq_len: int = SEQ_LEN, seq_model_type: str | None = None, rnn_layers: int = 2, rnn_dim: int = 2048,
                 rnn_dropout: float = 0.0):
        super().__init__()
        embed_dim = getattr(backbone, "embed_dim", None)
        if embed_dim is None:
            raise ValueError("ASStrongModel: the backbone has no `embed_dim` attribute")
        self.model = backbone
        self.seq_len = seq_len
        if seq_model_type == "rnn":
            self.seq_model = BidirectionalGRU(n_in=embed_dim, n_hidden=rnn_dim, dropout=rnn_dropout,
                                              num_layers=rnn_layers)
            features = 2 * rnn_dim
        elif seq_model_type is None:
            self.seq_model = nn.Identity()
            features = embed_dim
        else:
            raise ValueError(f"strong_wrapper.seq_model_type={seq_model_type!r}; expected 'rnn' or None")
        self.strong_head = nn.Linear(features, n_classes_strong)
        self.weak_head = nn.Linear(features, n_classes_weak or n_classes_strong)

    def frames(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone tokens brought to ``seq_len`` frames and through the sequence model: (B, seq_len, F)."""
        tokens = self.model(features)  # (B, T_tok, D)
        if tokens.shape[1] > self.seq_len:
            tokens = F.adaptive_avg_pool1d(tokens.transpose(1, 2), self.seq_len).transpose(1, 2)
        elif tokens.shape[1] < self.seq_len:
            tokens = F.interpolate(tokens.transpose(1, 2), size=self.seq_len, mode="linear").transpose(1, 2)
        return self.seq_model(tokens)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.frames(features)
        return self.strong_head(frames).transpose(1, 2), self.weak_head(frames.mean(dim=1))  # [B, C, T], [B, Cw]


class ASStrongWaveform(nn.Module):
    """Front-end + model: waveforms [B, N] at 16 kHz -> strong logits [B, frames, C] (time first, as ``WaveformSED``).

    ``class_names`` and the frame geometry (``mel_hop`` x ``net_pooling`` samples per output frame) tell the
    inference CLI how to label and place the outputs.
    """

    mel_hop = FRONTEND_HOP
    net_pooling = FRAMES_PER_OUTPUT

    def __init__(self, model: ASStrongModel, frontend: nn.Module, classes: ClassList, name: str = "",
                 config: Mapping | None = None):
        super().__init__()
        self.model = model
        self.frontend = frontend
        self.classes = classes
        self.class_names = tuple(classes.names)
        self.name = name
        self.config = dict(config or {})
        window = int(self.config.get("median_window", as_config.AudioSetStrong.median_window))
        self.median_windows = (window,) * len(classes)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        strong, _ = self.model(self.frontend(audio))
        return strong.transpose(1, 2)


def build_as_strong_model(config: Mapping, n_classes_strong: int, n_classes_weak: int | None = None) -> ASStrongModel:
    """The model of ``config["arch"]`` with the ``strong_wrapper`` settings (random init)."""
    wrapper = config["strong_wrapper"]
    return ASStrongModel(create_backbone(config["arch"], **backbone_kwargs(config)), n_classes_strong=n_classes_strong,
                         n_classes_weak=n_classes_weak, seq_model_type=wrapper["seq_model_type"],
                         rnn_layers=wrapper["rnn_layers"], rnn_dim=wrapper["rnn_dim"],
                         rnn_dropout=wrapper["rnn_dropout"])


# ------------------------------------------------------------------------------------------------ layout
def to_pretrainedsed(state_dict: Mapping[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Our state dict -> PretrainedSED's release layout (only the backbone prefix differs, for BEATs)."""
    prefix = arch_spec(arch).pretrainedsed_prefix
    return {(prefix + k[len("model."):] if k.startswith("model.") else k): v.detach().cpu()
            for k, v in state_dict.items()}


def normalise_pretrainedsed(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """PretrainedSED's public-repo names (``model.fpasst.*``, ``model.beats.*``) -> its release names."""
    out = {}
    for key, value in state_dict.items():
        for old, new in _PUBLIC_REPO_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def detect_pretrainedsed_arch(state_dict: Mapping[str, Any], source: str = "checkpoint") -> str:
    """The architecture of a PretrainedSED-layout state dict, from its transformer-block keys."""
    found = [arch for arch, spec in ARCH_SPECS.items()
             if any(re.match("^" + re.escape(spec.pretrainedsed_prefix) + spec.block_pattern, k) for k in state_dict)]
    if len(found) != 1:
        raise CheckpointError(f"{source}: cannot tell the backbone of this AudioSet-strong file (blocks of "
                              f"{found or 'no known backbone'}); first keys: {list(state_dict)[:5]}")
    return found[0]


def from_pretrainedsed(state_dict: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """PretrainedSED layout (release or public-repo names) -> our state dict; front-end buffers are dropped."""
    prefix = arch_spec(arch).pretrainedsed_prefix
    out = {}
    for key, value in normalise_pretrainedsed(state_dict).items():
        if key.startswith(prefix):
            out["model." + key[len(prefix):]] = value
        elif key.startswith(("seq_model.", "strong_head.", "weak_head.")):
            out[key] = value
        elif not key.startswith(("model.atst_mel.", "model.mel.")):  # front-end buffers of PretrainedSED's wrappers
            raise CheckpointError(f"unexpected key {key!r} in an AudioSet-strong file of arch {arch}")
    return out


# ------------------------------------------------------------------------------------------------ files
def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(SIDECAR_SUFFIX)


def model_settings(config: Mapping, n_classes_weak: int) -> dict:
    """What the sidecar records to rebuild the model: the arch block, ``strong_wrapper``, the front-end blocks."""
    arch = config["arch"]
    settings = {arch: dict(config[arch]), "strong_wrapper": dict(config["strong_wrapper"], n_classes_weak=n_classes_weak)}
    for name in ("passt_mel", "atst_frame"):
        if name in config and name != arch:
            settings[name] = dict(config[name])
    return copy.deepcopy(settings)


def save_pretrainedsed(path: str | os.PathLike, model: ASStrongModel, *, arch: str, classes: ClassList,
                       config: Mapping, description: str = "") -> Path:
    """Write ``path`` (a flat dict of tensors in PretrainedSED's layout) and its ``.json`` sidecar, atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(to_pretrainedsed(model.state_dict(), arch), tmp)
    sidecar = {"format": SIDECAR_FORMAT, "arch": arch, "classes": classes.as_rows(), "frame_hop": 0.04,
               "config": model_settings(config, model.weak_head.out_features), "description": description}
    atomic_write_text(sidecar_path(path), json.dumps(sidecar, indent=1) + "\n")
    return path


def read_sidecar(path: str | os.PathLike) -> dict | None:
    candidate = sidecar_path(path)
    if not candidate.is_file():
        return None
    try:
        content = json.loads(candidate.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{candidate}: not valid JSON ({error}); delete it or write it again") from error
    return content if content.get("format") == SIDECAR_FORMAT else None


def lightning_model_state(checkpoint: Mapping[str, Any]) -> dict | None:
    """The model's state dict inside a training checkpoint of ``ex_audioset_strong`` (None for other files)."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping) or not any(k.startswith(LIGHTNING_PREFIX + "model.") for k in state):
        return None
    return {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}


def is_as_strong_file(checkpoint: Mapping[str, Any]) -> bool:
    """A training checkpoint of ours, or a flat file with AudioSet-strong heads (ours or PretrainedSED's)."""
    if lightning_model_state(checkpoint) is not None:
        return True
    return bool(checkpoint) and all(isinstance(v, torch.Tensor) for v in checkpoint.values()) and \
        "strong_head.weight" in checkpoint


def _load_parts(model: ASStrongModel, state: Mapping[str, Any], source: str) -> list[str]:
    """Heads and sequence model from ``state`` where the file has them with the same shapes (PretrainedSED's rules:
    a file without a sequence model gives a new one fresh heads too; a head of another class count stays fresh)."""
    loaded = []
    has_seq = any(k.startswith("seq_model.") for k in state)
    wants_seq = not isinstance(model.seq_model, nn.Identity)
    for prefix in PARTS[1:]:
        module = getattr(model, prefix.rstrip("."))
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        expected = module.state_dict()
        if not part or (wants_seq and not has_seq):
            continue
        fits = part.keys() == expected.keys() and all(tuple(part[k].shape) == tuple(expected[k].shape) for k in part)
        if fits:
            module.load_state_dict(part)
            loaded.append(prefix.rstrip("."))
        else:
            log.info("%s: %s does not fit this model (other sizes or classes); it keeps its initial value", source,
                     prefix.rstrip("."))
    return loaded


def init_from_pretrained(model: ASStrongModel, path: str | os.PathLike, arch: str) -> list[str]:
    """Start weights from ``path``: the backbone from any format ``models.checkpoints`` reads (strictly), plus the
    heads / sequence model of an AudioSet-strong file where they fit. Returns the parts loaded."""
    checkpoint = safe_load(path)
    lightning = lightning_model_state(checkpoint)
    if lightning is not None:  # a training checkpoint of ours: as if exported
        checkpoint = to_pretrainedsed(lightning, arch)
    info = load_backbone(model.model, path, arch, checkpoint=checkpoint)
    loaded = ["backbone"]
    if info.source_format == "pretrainedsed":
        loaded += _load_parts(model, from_pretrainedsed(checkpoint, arch), str(path))
    log.info("start weights from %s (%s format): %s", path, info.source_format, ", ".join(loaded))
    return loaded


def _config_from_shapes(state: Mapping[str, Any], arch: str, sidecar: Mapping | None) -> dict:
    """The model blocks of a default ``ex_audioset_strong`` config, then the sidecar's settings, then the shapes."""
    config = as_config.default_config()
    config["arch"] = arch
    for name, settings in ((sidecar or {}).get("config") or {}).items():
        if isinstance(config.get(name), dict):
            config[name].update(settings)
    shapes = backbone_sizes(state, arch, prefix="model.")
    if "num_heads" not in shapes and not (sidecar and "num_heads" in (sidecar.get("config") or {}).get(arch, {})):
        shapes["num_heads"] = max(1, shapes["embed_dim"] // HEAD_DIM)
    config[arch].update(shapes, drop_top_layers=0)
    wrapper = config["strong_wrapper"]
    if "seq_model.rnn.weight_ih_l0" in state:
        wrapper.update(seq_model_type="rnn", rnn_dim=int(state["seq_model.rnn.weight_hh_l0"].shape[1]),
                       rnn_layers=len([k for k in state if re.fullmatch(r"seq_model\.rnn\.weight_ih_l\d+", k)]))
    else:
        wrapper["seq_model_type"] = None
    wrapper["n_classes_weak"] = int(state["weak_head.weight"].shape[0])
    return config


def load_as_strong_model(source: str | os.PathLike, *, model_dir: str | os.PathLike | None = None,
                         classes: ClassList | None = None) -> ASStrongWaveform:
    """The AudioSet-strong model a file holds (our training checkpoint, our ``.pt`` or a PretrainedSED release
    file), with its front-end and class list, in eval mode. Classes: ``classes``, else the checkpoint's, else the
    sidecar's, else the 447 training classes when the strong head has 447 outputs."""
    path = resolve_checkpoint(source, model_dir)
    return as_strong_model_from_checkpoint(safe_load(path), path, classes=classes)


def as_strong_model_from_checkpoint(checkpoint: Mapping[str, Any], path: Path,
                                    classes: ClassList | None = None) -> ASStrongWaveform:
    """:func:`load_as_strong_model` for a file already read (``safe_load``)."""
    state = lightning_model_state(checkpoint)
    sidecar = None
    if state is not None:
        stored = dict(checkpoint.get("config") or {})
        arch = stored.get("arch")
        if arch not in ARCH_SPECS:
            raise CheckpointError(f"{path}: a training checkpoint without its config's arch; export it again")
        sidecar = {"config": {k: v for k, v in stored.items() if k in (arch, "strong_wrapper", "passt_mel")},
                   "classes": checkpoint.get("classes")}
    elif "strong_head.weight" in checkpoint:
        flat = normalise_pretrainedsed(checkpoint)
        arch = detect_pretrainedsed_arch(flat, str(path))
        state = from_pretrainedsed(flat, arch)
        sidecar = read_sidecar(path)
    else:
        raise CheckpointError(f"{path}: not an AudioSet-strong model (no strong_head and no training state of "
                              "ex_audioset_strong); first keys: " + str(list(checkpoint)[:5]))
    config = _config_from_shapes(state, arch, sidecar)
    n_strong = int(state["strong_head.weight"].shape[0])
    if classes is None and sidecar and sidecar.get("classes"):
        classes = ClassList.from_rows(sidecar["classes"])
    if classes is None:
        classes = train_classes()
        if len(classes) != n_strong:
            raise CheckpointError(f"{path}: the strong head has {n_strong} outputs and no class list is stored with it "
                                  f"(no {sidecar_path(path).name}); the default list has {len(classes)} classes")
    if len(classes) != n_strong:
        raise CheckpointError(f"{path}: {len(classes)} class names for a strong head of {n_strong} outputs")
    model = build_as_strong_model(config, n_strong, config["strong_wrapper"]["n_classes_weak"])
    kept = drop_keys_under(state, removed_block_prefixes(model))
    check_state_dict(model.state_dict(), kept, str(path))
    model.load_state_dict(kept)
    log.info("loaded the AudioSet-strong %s model %s (%d classes)", arch, path, n_strong)
    return ASStrongWaveform(model, build_transformer_frontend(config), classes, name=path.stem, config=config).eval()


__all__ = ["ASStrongModel", "ASStrongWaveform", "build_as_strong_model", "to_pretrainedsed", "from_pretrainedsed",
           "normalise_pretrainedsed", "detect_pretrainedsed_arch", "save_pretrainedsed", "read_sidecar",
           "sidecar_path", "lightning_model_state", "is_as_strong_file", "init_from_pretrained",
           "load_as_strong_model", "as_strong_model_from_checkpoint", "SEQ_LEN"]
