"""Checkpoint loading: the released SED checkpoints and the foreign files that initialise a backbone.

Two jobs, kept apart:

* **Complete SED checkpoints** (``{atst,passt,beats}_stage{1,2}.ckpt`` of CPJKU/cpjku_dcase24 and the files
  our own training writes): Lightning files whose ``student`` / ``teacher`` entries are the SED model's
  state dict, key for key. :func:`load_sed_checkpoint` loads one of them strictly. Nothing else is read.
* **Backbone initialisation** when training starts from a pre-trained transformer:
  :func:`load_backbone` recognises the file format by telltale keys and hands it to one
  ``_convert_<source>`` function (timm's ``checkpoint_filter_fn`` pattern). Supported sources:

  ========================  ==========================================  =====================================
  source                    telltale                                    reference loader
  ========================  ==========================================  =====================================
  official BEATs            ``{"cfg": ..., "model": ...}``              microsoft/unilm ``beats/BEATs.py``
  audiossl ATST-Frame       ``state_dict``: ``model.teacher.encoder.*`` cpjku ``ATSTWrapper.load_atst``
  audiossl ATST C2F         ``state_dict``: ``encoder.encoder.frame_encoder.*``  (same)
  audiossl fine-tuned ATST  ``state_dict``: ``encoder.encoder.*``       (same)
  cpjku AudioSet-strong     ``state_dict``: ``net_strong.*``            cpjku ``AudiosetWrapper.load_model``
  PretrainedSED release     flat: ``model.*`` + ``strong_head.*``       fschmid56/PretrainedSED
  ========================  ==========================================  =====================================

Every converter is a pure function ``state_dict -> state_dict`` whose output is named like the SED
model's ``as_model`` sub-module: ``model.<backbone key>`` (ATST ``model.atst.*``) and, where the file has
the 527-class AudioSet frame head, ``head_linear_layer.*``. Renames are tables of ``(source prefix,
target prefix)`` rows (``None`` drops the key, with a reason); a key that no row matches is an error naming
it (torchtune ``convert_weights`` style). Loading is strict: one :class:`CheckpointError` lists every
missing and unexpected key and every shape mismatch, with the file path.

Files are read with :func:`safe_load`: ``torch.load(weights_only=True)`` plus an explicit allow-list of the
few non-tensor classes that Lightning checkpoints of Sacred runs contain. A file that needs anything else is
refused (no pickled code is executed), with the offending class names in the error.

Upstream code read for the key formats: CPJKU/cpjku_dcase24 (``models/wrapper.py``,
``models/atst/atst_model_wrapper.py``, ``ex_audioset_strong.py``), fschmid56/PretrainedSED
(``models/prediction_wrapper.py``), microsoft/unilm (``beats/BEATs.py``), Audio-WestlakeU/audiossl
(``methods/atstframe``).
"""
from __future__ import annotations

import logging
import os
import pathlib
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import configs
from data_util.atomic import atomic_path
from models.registry import ARCH_SPECS, arch_spec

log = logging.getLogger(__name__)

SED_MODES = ("student", "teacher")

# Names inside the SED model (fixed by the released checkpoints, see tests/fixtures/reference_t4).
AS_MODEL_PREFIX = "as_model."
BACKBONE_PREFIX = "model."  # inside as_model: the transformer
HEAD_PREFIX = "head_linear_layer."  # inside as_model: the 768 -> 527 AudioSet frame head (ATST, fPaSST)
# Wrapper prefixes added by DDP (leading "module.") and torch.compile (an "_orig_mod" key component):
# stripped from every key before anything else.
_DDP_PREFIX = "module."
_COMPILE_COMPONENT = "_orig_mod"

# Legacy (torch.nn.utils.weight_norm) vs. parametrized weight-norm names of BEATs' positional conv.
_BEATS_WEIGHT_NORM_RENAMES = {
    "encoder.pos_conv.0.weight_g": "encoder.pos_conv.0.parametrizations.weight.original0",
    "encoder.pos_conv.0.weight_v": "encoder.pos_conv.0.parametrizations.weight.original1",
}


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model; the message names the file."""


# --------------------------------------------------------------------------------------------------
# Safe reading
# --------------------------------------------------------------------------------------------------
def safe_globals() -> list:
    """Non-tensor classes a Lightning checkpoint of a Sacred run may legitimately contain.

    Found by saving Lightning 2.6 checkpoints (ModelCheckpoint, LR scheduler, mixed precision,
    ``save_hyperparameters``) and listing ``torch.serialization.get_unsafe_globals_in_checkpoint``:
    plain dict/list/tuple configs need nothing; a Sacred config passed as is brings ``ReadOnlyDict`` /
    ``ReadOnlyList``; paths and numpy values in hyper-parameters bring ``pathlib`` and numpy scalar,
    dtype and array reconstruction. All of these only rebuild data; none runs user code.
    """
    allowed: list = [
        pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath,
        np.dtype, np.ndarray,
    ]
    # numpy >= 2 moved the pickling helpers from numpy.core to numpy._core.
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None) or np.core.multiarray
    allowed += [multiarray.scalar, multiarray._reconstruct]
    allowed += sorted({type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGUSM"}, key=str)
    try:  # Sacred's read-only containers (a config passed to save_hyperparameters as is)
        # lazy: models do not depend on Sacred; only old checkpoints hold its containers
        from sacred.config.custom_containers import (
            ReadOnlyDict,
            ReadOnlyList,
        )

        allowed += [ReadOnlyDict, ReadOnlyList]
    except ImportError:  # pragma: no cover - sacred is a project requirement
        pass
    return allowed


def safe_load(path: str | os.PathLike) -> dict:
    """Read a checkpoint file onto the CPU without executing pickled code.

    ``torch.load(weights_only=True)`` with the allow-list of :func:`safe_globals`. Raises
    ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for a URL (never fetched), a truncated
    or non-checkpoint file, or one that needs a class outside the allow-list (named in the message).
    """
    if configs.is_url(path):
        raise CheckpointError(
            f"{path}: is a URL; checkpoints are read from local files only (a downloaded pickle could run code). "
            "Download it first (released files: `python download_resources.py`), then pass the local path."
        )
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = _unsafe_globals(path)
        if not _looks_like_torch_file(path):
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint (neither torch.save's zip format nor a pickle; "
                "a partial download or another kind of file?)"
            ) from e
        if unsafe or "weights_only" in str(e).lower() or "weights only" in str(e).lower():
            raise CheckpointError(
                f"{path}: refused to load: the file contains Python objects outside the safe allow-list "
                f"({', '.join(unsafe) or 'see the chained error'}). Loading it would execute pickled code. "
                "If you trust the file, re-save just its tensors in a separate session "
                "(torch.load(..., weights_only=False), then torch.save of the state dicts)."
            ) from e
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({e})") from e
    except Exception as e:  # noqa: BLE001 - a corrupt file fails anywhere inside the unpickler
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint (truncated or not a checkpoint file?): {e}"
        ) from e
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path}: expected a dict at the top level, got {type(checkpoint).__name__}")
    return dict(checkpoint)


# The first byte of a pickle of protocol 2 or later (torch.save's legacy format starts with one).
_PICKLE_PROTO_OPCODE = b"\x80"


def _looks_like_torch_file(path: pathlib.Path) -> bool:
    """torch.save writes a zip archive (or, in its legacy format, pickles): random bytes are neither."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == _PICKLE_PROTO_OPCODE


def _unsafe_globals(path: pathlib.Path) -> list[str]:
    """The classes a file needs beyond the allow-list (best effort, for the error message)."""
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in safe_globals()}
        return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return []


# --------------------------------------------------------------------------------------------------
# Key-mapping machinery
# --------------------------------------------------------------------------------------------------
# A rule maps a key prefix to a new prefix, or to None (drop). Rules are tried in order; first match wins.
Rule = tuple[str, "str | None"]


def strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove DDP's leading ``module.`` and torch.compile's ``_orig_mod.`` components from every key."""
    out = {}
    for key, value in state_dict.items():
        new_key = ".".join(part for part in key.split(".") if part != _COMPILE_COMPONENT)
        if new_key.startswith(_DDP_PREFIX):
            new_key = new_key[len(_DDP_PREFIX):]
        out[new_key] = value
    return out


def _apply_rules(state_dict: Mapping[str, Any], rules: Sequence[Rule], source: str) -> dict[str, Any]:
    """Rename every key by the first matching rule; a key no rule matches is an error naming it."""
    out: dict[str, Any] = {}
    unknown = []
    for key, value in state_dict.items():
        for old, new in rules:
            if key.startswith(old):
                if new is not None:
                    out[new + key[len(old):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} key(s) match no conversion rule: {unknown[:20]}"
            + (" ..." if len(unknown) > 20 else "")
            + f"; known prefixes: {[old for old, _ in rules]}"
        )
    return out


def _rename_beats_weight_norm(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Map the legacy BEATs weight-norm names (``weight_g``/``weight_v``) to the parametrized ones.

    Keys are matched by suffix so the rename works under any container prefix; other keys pass unchanged.
    """
    out = {}
    for key, value in state_dict.items():
        for legacy, current in _BEATS_WEIGHT_NORM_RENAMES.items():
            if key.endswith(legacy):
                key = key[: -len(legacy)] + current
                break
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# Converters: foreign file -> keys named like the SED model's ``as_model`` (``model.*``, ``head_linear_layer.*``)
# --------------------------------------------------------------------------------------------------
_AUDIOSSL_ATST_RULES: tuple[Rule, ...] = (
    ("model.teacher.encoder.cls_token", None),  # scene token of older FrameAST versions; unused
    ("model.teacher.encoder.norm.", "model.atst.norm_frame."),  # older name of the frame-level norm
    ("model.teacher.encoder.", "model.atst."),  # the EMA teacher encoder is the released backbone
    ("model.teacher.projector.", None),  # BYOL projector: SSL only
    ("model.teacher.predictor.", None),
    ("model.student.", None),  # the student branch: the reference uses the teacher
)

_ATST_C2F_RULES: tuple[Rule, ...] = (
    ("encoder.encoder.frame_encoder.", "model.atst."),
    ("encoder.encoder.teacher_module.", None),  # the distillation teacher of the C2F recipe
    ("head.", None),  # downstream classifier
)

_ATST_FINETUNED_RULES: tuple[Rule, ...] = (
    ("encoder.encoder.", "model.atst."),
    ("head.", None),  # downstream classifier
)

# cpjku ex_audioset_strong: the LightningModule holds ``net_weak`` and ``net_strong`` (and the mel
# front-end ``mel``, whose buffers are stored too). Two layouts of ``net_strong`` exist, told apart by
# the position of the transformer (cf. the reference's ``offset`` 1 / 2 in AudiosetWrapper.load_model):
# (A) net_strong = Task4RNNWrapper: ``net_strong.model`` is the AudiosetWrapper (transformer under
#     ``.model.model.``, the 527-class AudioSet head as ``.model.head_linear_layer``);
# (B) net_strong wraps the transformer directly (``net_strong.model.<backbone>``); its own heads
#     (447 AudioSet-strong classes) do not fit the SED model's 527-class head and are dropped, so the
#     head keeps its initial value as in the reference.
_CPJKU_STRONG_RULES_WITH_AS_WRAPPER: tuple[Rule, ...] = (
    ("net_strong.model.model.", "model."),
    ("net_strong.model.head_linear_layer.", "head_linear_layer."),
    ("net_strong.model.att_linear_layer.", None),  # weak attention head; deleted in the SED wrapper
    ("net_strong.rnn.", None),  # sequence model and heads of the AudioSet-strong recipe
    ("net_strong.sigmoid_dense.", None),
    ("net_strong.softmax_dense.", None),
    ("net_weak.", None),  # the weak-label branch shares the transformer; the strong one is used
    ("mel.", None),  # front-end buffers; ours are computed, not stored
)
_CPJKU_STRONG_RULES_BARE: tuple[Rule, ...] = (
    ("net_strong.model.", "model."),
    ("net_strong.", None),  # heads of the AudioSet-strong recipe (447 classes), see layout (B)
    ("net_weak.", None),
    ("mel.", None),
)

# PretrainedSED (PredictionsWrapper): ``model`` is the per-arch wrapper (ATST ``model.atst``, fPaSST
# ``model.fpasst`` or, in the released files, ``model.*`` directly; BEATs ``model.beats`` or, in the
# released files, ``model.model``), plus the AudioSet-strong heads.
_PRETRAINEDSED_RULES: dict[str, tuple[Rule, ...]] = {
    "atst_frame": (
        ("model.atst_mel.", None),  # front-end buffers
        ("model.atst.", "model.atst."),
    ),
    "fpasst": (
        ("model.mel.", None),  # front-end buffers
        ("model.fpasst.", "model."),
        ("model.", "model."),
    ),
    "beats": (
        ("model.beats.", "model."),
        ("model.model.", "model."),
    ),
}
_PRETRAINEDSED_HEAD_RULES: tuple[Rule, ...] = (
    ("strong_head.", None),  # 447 AudioSet-strong classes: not the SED model's 527-class head
    ("weak_head.", None),
    ("seq_model.", None),  # the RNN of PretrainedSED teacher models
)


def _convert_beats_official(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Official BEATs file ``{"cfg", "model"}``: backbone keys are the official ones (both weight-norm namings)."""
    model_state = _rename_beats_weight_norm(strip_wrapper_prefixes(checkpoint["model"]))
    return {BACKBONE_PREFIX + key: value for key, value in model_state.items()}


def _convert_audiossl_atst(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """audiossl ATST-Frame pre-training (``atstframe_base.ckpt`` = ``atst_as.ckpt``): the teacher encoder."""
    return _apply_rules(state_dict, _AUDIOSSL_ATST_RULES, "audiossl ATST-Frame")


def _convert_atst_c2f(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """audiossl ATST-C2F distillation file: the frame encoder; the teacher module is skipped."""
    return _apply_rules(state_dict, _ATST_C2F_RULES, "audiossl ATST-C2F")


def _convert_atst_finetuned(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """audiossl fine-tuned ATST-Frame (downstream LightningModule): ``encoder.encoder.*``."""
    return _apply_rules(state_dict, _ATST_FINETUNED_RULES, "audiossl fine-tuned ATST-Frame")


def _convert_cpjku_as_strong(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """cpjku ``{atst,passt}_as_strong.ckpt``: the strong branch's transformer (+ AudioSet head in layout A)."""
    has_as_wrapper = any(key.startswith("net_strong.model.model.") for key in state_dict)
    rules = _CPJKU_STRONG_RULES_WITH_AS_WRAPPER if has_as_wrapper else _CPJKU_STRONG_RULES_BARE
    converted = _apply_rules(state_dict, rules, "cpjku AudioSet-strong")
    return _rename_beats_weight_norm(converted)


def _convert_pretrainedsed(state_dict: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """PretrainedSED release (``{ATST-F,fpasst,BEATs}_{ssl,weak,strong_1}.pt``): flat ``model.*`` + heads."""
    rules = _PRETRAINEDSED_RULES[arch] + _PRETRAINEDSED_HEAD_RULES
    converted = _apply_rules(state_dict, rules, f"PretrainedSED ({arch})")
    return _rename_beats_weight_norm(converted)


# --------------------------------------------------------------------------------------------------
# Format detection and dispatch
# --------------------------------------------------------------------------------------------------
FORMATS = ("beats_official", "audiossl_atst", "atst_c2f", "atst_finetuned", "cpjku_as_strong", "pretrainedsed")


def is_sed_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """A complete SED checkpoint: ``student`` / ``teacher`` entries, or Lightning ``state_dict`` keys under them."""
    if any(mode in checkpoint for mode in SED_MODES):
        return True
    state_dict = checkpoint.get("state_dict")
    return isinstance(state_dict, Mapping) and any(
        key.startswith(f"{mode}.{AS_MODEL_PREFIX}") for key in strip_wrapper_prefixes(state_dict) for mode in SED_MODES
    )


def detect_format(checkpoint: Mapping[str, Any]) -> str:
    """Name the source format of a loaded file (one of ``FORMATS``) from its telltale keys."""
    if "model" in checkpoint and "cfg" in checkpoint and isinstance(checkpoint["model"], Mapping):
        return "beats_official"
    if is_sed_checkpoint(checkpoint):
        raise CheckpointError(
            "this is a complete SED checkpoint (student/teacher entries), not a backbone file: load it with "
            "t4_wrapper.model_init_id / pretrained_name (load_sed_checkpoint), not as <arch>.pretrained_name"
        )
    if isinstance(checkpoint.get("state_dict"), Mapping):
        keys = list(strip_wrapper_prefixes(checkpoint["state_dict"]))
        if any(k.startswith("net_strong.") for k in keys):
            return "cpjku_as_strong"
        if any(k.startswith("model.teacher.encoder.") for k in keys):
            return "audiossl_atst"
        if any(k.startswith("encoder.encoder.frame_encoder.") for k in keys):
            return "atst_c2f"
        if any(k.startswith("encoder.encoder.") for k in keys):
            return "atst_finetuned"
        raise CheckpointError(f"unknown Lightning checkpoint layout; first state_dict keys: {keys[:10]}")
    keys = list(strip_wrapper_prefixes(checkpoint))
    if keys and all(isinstance(checkpoint[k], torch.Tensor) for k in checkpoint) and any(
        k.startswith(("model.", "strong_head.", "weak_head.")) for k in keys
    ):
        return "pretrainedsed"
    raise CheckpointError(f"unknown checkpoint format; top-level keys: {keys[:10]}")


def convert_backbone_checkpoint(checkpoint: Mapping[str, Any], arch: str) -> tuple[str, dict[str, Any]]:
    """Detect the format of a loaded foreign file and convert it; returns ``(format, as_model state dict)``.

    Output keys are relative to the SED model's ``as_model``: ``model.<backbone key>`` and possibly
    ``head_linear_layer.*``. Raises :class:`CheckpointError` if the file holds another arch's backbone.
    """
    arch_spec(arch)  # a clear error for an unknown arch
    source_format = detect_format(checkpoint)
    if source_format == "beats_official":
        converted = _convert_beats_official(checkpoint)
    else:
        state_dict = strip_wrapper_prefixes(checkpoint.get("state_dict", checkpoint))
        if source_format == "audiossl_atst":
            converted = _convert_audiossl_atst(state_dict)
        elif source_format == "atst_c2f":
            converted = _convert_atst_c2f(state_dict)
        elif source_format == "atst_finetuned":
            converted = _convert_atst_finetuned(state_dict)
        elif source_format == "cpjku_as_strong":
            converted = _convert_cpjku_as_strong(state_dict)
        else:
            converted = _convert_pretrainedsed(state_dict, arch)
    found = [name for name, spec in ARCH_SPECS.items()
             if any(re.match(re.escape(BACKBONE_PREFIX) + spec.block_pattern, k) for k in converted)]
    if found and arch not in found:
        raise CheckpointError(f"the file holds a {'/'.join(found)} backbone ({source_format} format), but arch={arch!r}")
    return source_format, converted


def read_beats_cfg(path: str | os.PathLike) -> dict:
    """The ``cfg`` dict of an official BEATs file (architecture hyper-parameters; read it, don't assume)."""
    checkpoint = safe_load(path)
    if not isinstance(checkpoint.get("cfg"), Mapping):
        raise CheckpointError(f"{path}: not an official BEATs file (no 'cfg' entry); top-level keys: {list(checkpoint)[:10]}")
    return dict(checkpoint["cfg"])


# --------------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------------
def check_state_dict(
    expected: Mapping[str, Any],
    given: Mapping[str, Any],
    source: str,
    optional_prefixes: Sequence[str] = (),
) -> None:
    """Raise one :class:`CheckpointError` listing all missing / unexpected keys and shape mismatches.

    ``expected`` and ``given`` map key -> tensor (or anything with ``.shape``). Keys under
    ``optional_prefixes`` may be missing from ``given``.
    """
    missing = [k for k in expected if k not in given and not k.startswith(tuple(optional_prefixes))]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [f"{source}: the checkpoint does not fit the model."]
        if missing:
            parts.append(f"Missing keys ({len(missing)}): {missing}")
        if unexpected:
            parts.append(f"Unexpected keys ({len(unexpected)}): {unexpected}")
        if mismatched:
            parts.append(f"Shape mismatches ({len(mismatched)}): {mismatched}")
        raise CheckpointError("\n".join(parts))


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, Any], source: str, optional_prefixes: Sequence[str] = ()
) -> None:
    """Check names and shapes with :func:`check_state_dict`, then copy the tensors into ``module``."""
    check_state_dict(module.state_dict(), state_dict, source, optional_prefixes)
    module.load_state_dict(state_dict, strict=not optional_prefixes)


def removed_block_prefixes(module: nn.Module, prefix: str = "") -> list[str]:
    """Key prefixes (relative to ``module``) of transformer blocks removed by ``drop_top_layers``.

    Asks every sub-module that implements ``removed_block_prefixes()`` (the backbones) and puts its own
    position in front, so it works for a backbone and for the SED model that contains it.
    """
    prefixes: list[str] = []
    for name, sub in module.named_modules():
        method = getattr(sub, "removed_block_prefixes", None)
        if callable(method):
            base = prefix + (name + "." if name else "")
            prefixes += [base + p for p in method()]
    return sorted(set(prefixes))


def drop_keys_under(state_dict: Mapping[str, Any], prefixes: Sequence[str]) -> dict[str, Any]:
    if not prefixes:
        return dict(state_dict)
    kept = {k: v for k, v in state_dict.items() if not k.startswith(tuple(prefixes))}
    if len(kept) < len(state_dict):
        log.info("ignored %d keys of removed blocks (%s)", len(state_dict) - len(kept), ", ".join(prefixes))
    return kept


# --------------------------------------------------------------------------------------------------
# Complete SED checkpoints (stage 1 / stage 2)
# --------------------------------------------------------------------------------------------------
def sed_state_dict(checkpoint: Mapping[str, Any], mode: str = "student", source: str = "checkpoint") -> dict:
    """The SED model state dict of ``mode`` ("student" or "teacher") inside a loaded stage checkpoint.

    Prefers the ``student`` / ``teacher`` entry (written by the reference's and our ``on_save_checkpoint``);
    falls back to the LightningModule ``state_dict`` whose SED models are the attributes ``student`` and
    ``teacher`` (other entries there, e.g. front-end buffers ``mel.*``/``crnn_mel.*``, are ignored).
    """
    if mode not in SED_MODES:
        raise ValueError(f"mode must be one of {SED_MODES}, got {mode!r}")
    if isinstance(checkpoint.get(mode), Mapping):
        return _rename_beats_weight_norm(strip_wrapper_prefixes(checkpoint[mode]))
    lightning_state = checkpoint.get("state_dict")
    if isinstance(lightning_state, Mapping):
        lightning_state = strip_wrapper_prefixes(lightning_state)
        attribute = mode + "."
        selected = {k[len(attribute):]: v for k, v in lightning_state.items() if k.startswith(attribute)}
        if selected:
            return _rename_beats_weight_norm(selected)
    raise CheckpointError(
        f"{source}: no {mode!r} model in this file: expected a {mode!r} entry or 'state_dict' keys starting "
        f"with '{mode}.'; top-level entries: {list(checkpoint)[:10]}. Is it a backbone file? Then use "
        "<arch>.pretrained_name instead of t4_wrapper.model_init_id / pretrained_name."
    )


def arch_of_state_dict(state_dict: Mapping[str, Any]) -> str | None:
    """The backbone (a registered arch) of a SED model's state dict, from its block keys; None if it tells none."""
    found = [arch for arch, spec in ARCH_SPECS.items()
             if any(re.match(re.escape(AS_MODEL_PREFIX + BACKBONE_PREFIX) + spec.block_pattern, k) for k in state_dict)]
    return found[0] if len(found) == 1 else None


def check_same_arch(model: nn.Module, state_dict: Mapping[str, Any], source: str) -> None:
    """One-line :class:`CheckpointError` naming both archs when ``state_dict`` holds another backbone than
    ``model`` (instead of hundreds of missing and unexpected keys)."""
    held, built = arch_of_state_dict(state_dict), arch_of_state_dict(model.state_dict())
    if held and built and held != built:
        raise CheckpointError(f"{source} holds a {held} model, but the model was built with arch={built}: "
                              f"use arch={held} (with the settings it was trained with) or another checkpoint")


def save_sed_checkpoint(
    path: str | os.PathLike, student_sd: Mapping[str, torch.Tensor], teacher_sd: Mapping[str, torch.Tensor], **extra
) -> None:
    """Write ``{"student", "teacher", **extra}`` (the released layout) atomically: temp file, then rename."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "student": {k: v.detach().cpu() for k, v in student_sd.items()},
        "teacher": {k: v.detach().cpu() for k, v in teacher_sd.items()},
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


# --------------------------------------------------------------------------------------------------
# Backbone initialisation from foreign files
# --------------------------------------------------------------------------------------------------
@dataclass
class BackboneLoadInfo:
    """What :func:`load_backbone` did: the source format and whether the AudioSet head was loaded."""

    source_format: str
    head_loaded: bool
    ignored_keys: list[str] = field(default_factory=list)


def load_backbone(
    backbone: nn.Module, path: str | os.PathLike, arch: str, head: nn.Module | None = None,
    checkpoint: Mapping[str, Any] | None = None,
) -> BackboneLoadInfo:
    """Initialise a backbone (and optionally the SED model's 527-class AudioSet head) from a foreign file.

    ``backbone`` is the transformer module (``as_model.model`` of the SED model); ``head`` is
    ``as_model.head_linear_layer`` or None (BEATs without wrapper). The backbone is loaded strictly,
    except keys of blocks removed by ``drop_top_layers`` and the optional BEATs ``predictor``; the head is
    loaded strictly when the file has one, else it keeps its initial value (logged). ``checkpoint``: the file's
    content when the caller has read it already (``safe_load(path)``).
    """
    checkpoint = safe_load(path) if checkpoint is None else checkpoint
    source_format, converted = convert_backbone_checkpoint(checkpoint, arch)
    backbone_sd = {k[len(BACKBONE_PREFIX):]: v for k, v in converted.items() if k.startswith(BACKBONE_PREFIX)}
    head_sd = {k[len(HEAD_PREFIX):]: v for k, v in converted.items() if k.startswith(HEAD_PREFIX)}
    removed = removed_block_prefixes(backbone)
    ignored = sorted(k for k in backbone_sd if k.startswith(tuple(removed))) if removed else []
    backbone_sd = drop_keys_under(backbone_sd, removed)
    load_state_dict_strict(
        backbone, backbone_sd, f"{path} [{source_format} -> {arch} backbone]",
        optional_prefixes=arch_spec(arch).optional_backbone_prefixes,
    )
    head_loaded = False
    if head is not None and head_sd:
        load_state_dict_strict(head, head_sd, f"{path} [{source_format} -> AudioSet head]")
        head_loaded = True
    elif head is not None:
        log.info("%s has no 527-class AudioSet head: head_linear_layer keeps its initial value", path)
    elif head_sd:
        ignored += [HEAD_PREFIX + k for k in head_sd]
    log.info("initialised the %s backbone from %s (%s format)", arch, path, source_format)
    return BackboneLoadInfo(source_format=source_format, head_loaded=head_loaded, ignored_keys=ignored)


def load_pretrained_backbone(model: nn.Module, path: str | os.PathLike, arch: str) -> BackboneLoadInfo:
    """:func:`load_backbone` for a whole SED model: its ``as_model.model`` and, if it has one, the AudioSet
    head ``as_model.head_linear_layer`` (config ``<arch>.pretrained_name`` / ``atst_checkpoint`` /
    ``beats_checkpoint``)."""
    as_model = model.get_submodule(AS_MODEL_PREFIX.rstrip("."))
    head = getattr(as_model, HEAD_PREFIX.rstrip("."), None)
    return load_backbone(as_model.get_submodule(BACKBONE_PREFIX.rstrip(".")), path, arch, head=head)
