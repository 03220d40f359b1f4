"""The one checkpoint loader: a checkpoint file or name -> the model it holds, built by ``models.factory``.

    load_sed_model("atst_stage2")                                    # inference: everything from the file
    load_sed_model(path, mode="teacher", config=resolved_config)     # store_predictions: cross-checked
    load_sed_model(path, overrides={"atst_frame": {"num_heads": 4}}) # a setting the shapes cannot show

What a SED checkpoint holds is read, in this order: the sizes its tensors' shapes show (architecture, depth,
width, MLP ratio, BEATs heads, CNN filters and activation, GRU width and layers, AudioSet head, conv pooling);
the training config stored in the file (our Lightning checkpoints) for what shapes cannot show (attention heads,
``embed_pool``, ``interpolation_mode``, front-end settings); else the released models' settings
(``ARCH_SPECS[arch].wrapper_defaults``, 64-dim heads). A config given by the caller is cross-checked against the
shapes: every disagreement is listed in one error. Every file goes through the safe ``weights_only`` reader
(``models.checkpoints.safe_load``): no checkpoint source can execute code.

The transformer alone, from any of those files or a backbone file (``read_backbone`` / ``load_backbone_weights``;
``load_frame_embedder`` for the HEAR API), serves downstream fine-tuning and the embeddings API.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import configs
from models.checkpoints import (
    BACKBONE_PREFIX,
    CheckpointError,
    check_same_arch,
    convert_backbone_checkpoint,
    drop_keys_under,
    is_sed_checkpoint,
    load_state_dict_strict,
    removed_block_prefixes,
    safe_load,
    sed_state_dict,
    strip_wrapper_prefixes,
)
from models.factory import WaveformSED, build_frame_embedder, build_waveform_model
from models.frame_embedder import FRAME_HOP_S, WINDOW_S, FrameEmbedder
from models.registry import ARCH_SPECS, arch_spec, extra_arch_blocks

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = configs.CHECKPOINT_SUFFIXES
HEAD_DIM = 64  # attention head width of every released backbone (768 = 12 x 64)
BACKBONE = "as_model.model."
HEAD_WEIGHT = "as_model.head_linear_layer.weight"
# Keys whose shapes define the model (CRNN filters, GRU, classifier); a file without them is no complete SED model.
SPEC_KEYS = ("cnn.cnn.conv0.weight", "rnn.rnn.weight_ih_l0", "cat_tf.weight", "dense.weight")
# Blocks of a training config that describe the model (the rest is about training).
MODEL_BLOCKS = ("t4_wrapper", "mel", "scaler", "passt_mel")
# t4_wrapper keys that the shapes cannot show; a released stage checkpoint run with other values gets a warning.
WRAPPER_SETTINGS_CHECKED = ("embed_pool", "interpolation_mode")
DOWNLOAD_HINT = ("Download the released checkpoints with `python download_resources.py` (e.g. `python "
                 "download_resources.py stage2`), or pass the path of a .ckpt file.")


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint name that is neither a file nor a name in the models folder."""


# ------------------------------------------------------------------------------------------------ names
def available_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Names of the checkpoint files in ``folder`` (without suffix), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())


def resolve_checkpoint(name_or_path: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path:
    """A checkpoint given by path, or by name in ``folder`` (default ``resources/pretrained_models``; ``.ckpt`` /
    ``.pt`` tried), as every config key and command names one (``t4_wrapper.model_init_id``, ``pretrained_name``,
    ``<arch>.pretrained_name``, ``ckpt_path``, ``--model_name``); ``model_path`` sets the folder."""
    folder = Path(folder) if folder else configs.PRETRAINED_MODELS_DIR
    try:
        return configs.resolve_resource(name_or_path, folder, suffixes=CHECKPOINT_SUFFIXES)
    except FileNotFoundError:
        present = ", ".join(available_checkpoints(folder)) or "none"
        raise CheckpointNotFoundError(
            f"unknown model {str(name_or_path)!r}: it is neither a checkpoint file nor a name in {folder} "
            f"(available there: {present}). {DOWNLOAD_HINT}"
        ) from None


def stored_config(checkpoint: Mapping[str, Any]) -> dict:
    """The training config saved in a checkpoint (Lightning ``hyper_parameters['config']``, or
    ``hyper_parameters`` / ``config`` holding an ``arch`` key); ``{}`` for the released files, which have none."""
    hyper = checkpoint.get("hyper_parameters")
    candidates = []
    if isinstance(hyper, Mapping):
        candidates += [hyper.get("config"), hyper]
    candidates.append(checkpoint.get("config"))
    for candidate in candidates:
        if isinstance(candidate, Mapping) and "arch" in candidate:
            return dict(candidate)
    return {}


# ------------------------------------------------------------------------------------------------ shapes
def _indices(state_dict: Mapping[str, Any], pattern: str) -> set[int]:
    regex = re.compile(pattern)
    return {int(m.group(1)) for key in state_dict if (m := regex.match(key))}


def _count(state_dict: Mapping[str, Any], pattern: str) -> int:
    found = _indices(state_dict, pattern)
    return max(found) + 1 if found else 0


def detect_arch(state_dict: Mapping[str, Any], source: str = "checkpoint", prefix: str = BACKBONE) -> str:
    """The backbone of a state dict (a SED model's by default; ``prefix``: where the backbone's keys start), from its
    transformer-block keys (any registered architecture)."""
    found = [arch for arch, spec in ARCH_SPECS.items()
             if _count(state_dict, "^" + re.escape(prefix) + spec.block_pattern)]
    if len(found) != 1:
        expected = ", ".join(f"'{prefix}{spec.block_pattern}' ({arch})" for arch, spec in ARCH_SPECS.items())
        raise CheckpointError(
            f"{source}: cannot tell the backbone from the keys (found blocks of {found or 'no known backbone'}); "
            f"expected keys like {expected}; first keys: {list(state_dict)[:5]}"
        )
    return found[0]


def backbone_sizes(state_dict: Mapping[str, Any], arch: str, prefix: str = BACKBONE,
                   source: str = "checkpoint") -> dict:
    """What the shapes of a backbone's keys (below ``prefix``) show: ``embed_dim``, ``depth`` (the blocks present),
    ``mlp_ratio`` and, where a tensor shows it (BEATs), ``num_heads``."""
    spec = arch_spec(arch)
    needed = [prefix + k for k in (spec.embed_dim_key, spec.mlp_in_key, spec.heads_key) if k]
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise CheckpointError(f"{source}: not a complete {arch} backbone: the state dict lacks {missing} "
                              "(a truncated or foreign file?)")
    embed_dim = int(state_dict[prefix + spec.embed_dim_key].shape[-1])
    sizes = {"embed_dim": embed_dim, "depth": _count(state_dict, "^" + re.escape(prefix) + spec.block_pattern),
             "mlp_ratio": state_dict[prefix + spec.mlp_in_key].shape[0] / embed_dim}
    if spec.heads_key is not None:
        sizes["num_heads"] = int(state_dict[prefix + spec.heads_key].shape[1])
    return sizes


def shape_settings(state_dict: Mapping[str, Any], arch: str, source: str = "checkpoint") -> dict:
    """What the shapes of a SED state dict of ``arch`` show, as config values: ``{arch: {...}, "t4_wrapper": {...}}``.

    ``<arch>.depth`` here is the number of blocks present (``depth - drop_top_layers`` of the model that saved it).
    """
    spec = arch_spec(arch)
    needed = [*SPEC_KEYS, *(BACKBONE + k for k in (spec.embed_dim_key, spec.mlp_in_key, spec.heads_key) if k)]
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise CheckpointError(f"{source}: not a complete {arch} SED model: the state dict lacks {missing} "
                              "(a backbone-only, truncated or foreign file?)")
    backbone = backbone_sizes(state_dict, arch, source=source)
    embed_dim = backbone["embed_dim"]
    wrapper = {
        "nclass": int(state_dict["dense.weight"].shape[0]),
        "n_in_channel": int(state_dict["cnn.cnn.conv0.weight"].shape[1]),
        "nb_filters": [int(state_dict[f"cnn.cnn.conv{i}.weight"].shape[0])
                       for i in range(_count(state_dict, r"^cnn\.cnn\.conv(\d+)\.weight$"))],
        "n_RNN_cell": int(state_dict["cat_tf.weight"].shape[0]),
        "n_layers_RNN": _count(state_dict, r"^rnn\.rnn\.weight_ih_l(\d+)$"),
        "embedding_size": embed_dim,
        "no_wrapper": HEAD_WEIGHT not in state_dict,
    }
    if any(k.startswith("cnn.cnn.cg0.") for k in state_dict):
        wrapper["activation"] = "cg"
    elif any(k.startswith("cnn.cnn.glu0.") for k in state_dict):
        wrapper["activation"] = "glu"
    if HEAD_WEIGHT in state_dict:
        wrapper["audioset_classes"] = int(state_dict[HEAD_WEIGHT].shape[0])
    if any(k.startswith("pool_conv.") for k in state_dict):
        wrapper["embed_pool"] = "conv"
    return {arch: backbone, "t4_wrapper": wrapper}


def _present_blocks(config: Mapping, arch: str) -> int:
    block = config[arch]
    return int(block["depth"]) - int(block.get("drop_top_layers", 0))


def _disagreements(config: Mapping, shapes: Mapping, arch: str) -> list[str]:
    found = []
    if config.get("arch") not in (None, arch):
        found.append(f"arch={config['arch']} in the config, {arch} in the checkpoint")
        return found
    for block, values in shapes.items():
        for key, value in values.items():
            if block not in config or key not in config[block]:
                continue
            have = _present_blocks(config, arch) if (block, key) == (arch, "depth") else config[block][key]
            same = list(have) == list(value) if isinstance(value, list) else have == value
            if not same:
                shown = f"{block}.depth - {block}.drop_top_layers" if (block, key) == (arch, "depth") else \
                    f"{block}.{key}"
                found.append(f"{shown}={have!r} in the config, {value!r} in the checkpoint")
    return found


def check_fits(config: Mapping, state_dict: Mapping[str, Any], source: str) -> str:
    """The architecture of ``state_dict``; one ``CheckpointError`` listing every setting of ``config`` that the
    checkpoint's shapes contradict (instead of a long list of mismatched keys)."""
    arch = detect_arch(state_dict, source)
    if config.get("arch") not in (None, arch):
        raise CheckpointError(f"{source} holds a {arch} model, but the config has arch={config['arch']}: use "
                              f"arch={arch} (with the settings it was trained with) or another checkpoint")
    found = _disagreements(config, shape_settings(state_dict, arch, source), arch)
    if found:
        raise CheckpointError(f"{source} does not fit the model built from the config: " + "; ".join(found)
                              + ". Pass the settings the checkpoint was trained with "
                                "(e.g. BEATs stage checkpoints: t4_wrapper.no_wrapper=1).")
    return arch


def checkpoint_config(state_dict: Mapping[str, Any], *, stored: Mapping | None = None,
                      overrides: Mapping | None = None, config: Mapping | None = None,
                      source: str = "checkpoint") -> dict:
    """The complete (validated) config of the model a SED state dict was saved from.

    ``config``: a resolved config to build with, cross-checked against the shapes (``store_predictions``).
    Without it: the stage-2 defaults, the model blocks of the ``stored`` training config, the released
    settings of the arch, then the shapes. ``overrides`` (a partial config, e.g. the inference CLI's
    ``--num_heads``) apply last and are cross-checked too.
    """
    if config is not None:
        arch = check_fits(config, state_dict, source)
        resolved = copy.deepcopy(dict(config))
    else:
        arch = detect_arch(state_dict, source)
        spec = arch_spec(arch)
        resolved = configs.default_config(2)
        for name, block in extra_arch_blocks().items():
            resolved[name] = configs.schema.tree(block())
        stored = dict(stored or {})
        resolved["arch"] = arch
        configs.merge_config(resolved["t4_wrapper"], dict(spec.wrapper_defaults))
        for block in MODEL_BLOCKS + (arch,):
            if isinstance(stored.get(block), Mapping):
                configs.merge_config(resolved[block], copy.deepcopy(dict(stored[block])))
        shapes = shape_settings(state_dict, arch, source)
        if "num_heads" not in shapes[arch] and not (isinstance(stored.get(arch), Mapping)
                                                    and "num_heads" in stored[arch]):
            shapes[arch]["num_heads"] = max(1, shapes[arch]["embed_dim"] // HEAD_DIM)
        shapes[arch]["drop_top_layers"] = 0
        configs.merge_config(resolved, shapes)
    if overrides:
        overrides = dict(overrides)
        if "backbone" in overrides:
            overrides[arch] = {**dict(overrides.get(arch, {})), **overrides.pop("backbone")}
        resolved = _with(resolved, overrides)
        found = _disagreements(resolved, shape_settings(state_dict, arch, source), arch)
        if found:
            raise CheckpointError(f"{source}: the requested settings contradict the checkpoint: " + "; ".join(found))
    heads = resolved[arch]["num_heads"]
    if resolved[arch]["embed_dim"] % heads:
        raise CheckpointError(f"{source}: embedding width {resolved[arch]['embed_dim']} is not divisible by "
                              f"{heads} attention heads ({arch}.num_heads)")
    try:
        configs.validate_config(resolved, 2, extra_arch_blocks())
    except configs.ConfigError as e:
        raise CheckpointError(f"{source}: {e}") from None
    return resolved


def _with(config: Mapping, overrides: Mapping) -> dict:
    return configs.merge_config(copy.deepcopy(dict(config)), copy.deepcopy(dict(overrides)))


# ------------------------------------------------------------------------------------------------ loading
def load_sed_weights(model, state_dict: Mapping[str, Any], source: str) -> None:
    """Copy a SED state dict into ``model`` strictly (names and shapes); keys of transformer blocks removed by the
    backbone's ``drop_top_layers`` are ignored."""
    kept = drop_keys_under(state_dict, removed_block_prefixes(model))
    load_state_dict_strict(model, kept, source=source)


def load_sed_checkpoint(model, path: str | os.PathLike, mode: str = "student", config: Mapping | None = None) -> None:
    """Load the ``mode`` ("student"/"teacher") weights of a stage checkpoint into a built ``model`` (training:
    ``t4_wrapper.model_init_id``, the ``test`` command); with ``config``, settings the file contradicts are listed
    first in one error."""
    checkpoint = safe_load(path)
    state_dict = sed_state_dict(checkpoint, mode, source=str(path))
    check_same_arch(model, state_dict, str(path))
    if config is not None:
        check_fits(config, state_dict, str(path))
    load_sed_weights(model, state_dict, source=f"{path} [{mode}]")
    log.info("loaded %s weights from %s", mode, path)


def _warn_unusual_wrapper(config: Mapping, path: Path) -> None:
    """A released stage checkpoint run with other settings than it was trained with (they load, but change the
    outputs)."""
    spec = arch_spec(config["arch"])
    if path.stem not in spec.stage_checkpoints:
        return
    wrapper = config["t4_wrapper"]
    different = {k: (wrapper[k], v) for k, v in spec.wrapper_defaults.items()
                 if k in WRAPPER_SETTINGS_CHECKED and wrapper[k] != v}
    if different:
        log.warning("%s was trained with %s; the config has %s", path.name,
                    ", ".join(f"t4_wrapper.{k}={v[1]}" for k, v in different.items()),
                    ", ".join(f"t4_wrapper.{k}={v[0]}" for k, v in different.items()))


def _warn_name_mismatch(path: Path, arch: str) -> None:
    for name, spec in ARCH_SPECS.items():
        prefixes = {stage.split("_")[0] for stage in spec.stage_checkpoints}
        if name != arch and any(path.stem.lower().startswith(p) for p in prefixes):
            log.warning("%s: the name suggests %s, but the checkpoint holds a %s model; using %s",
                        path, name, arch, arch)


def load_inference_model(source: str | os.PathLike, *, mode: str = "student", overrides: Mapping | None = None,
                         model_dir: str | os.PathLike | None = None):
    """The model a file holds, whatever it is: a SED checkpoint (:func:`load_sed_model`, 27 classes) or an
    AudioSet-strong model (``models.audioset_strong``: a training checkpoint of ``ex_audioset_strong``, its ``.pt``
    export or a PretrainedSED release file, 447 classes). Both wrappers map waveforms to strong logits and carry
    ``class_names``, ``median_windows`` and their frame geometry."""
    # lazy: models.audioset_strong builds on this module (resolve_checkpoint), so it is imported at call time
    from models.audioset_strong import as_strong_model_from_checkpoint, is_as_strong_file

    path = resolve_checkpoint(source, model_dir)
    checkpoint = safe_load(path)
    if is_as_strong_file(checkpoint):
        if overrides:
            log.warning("%s is an AudioSet-strong model: the SED overrides %s do not apply", path, dict(overrides))
        return as_strong_model_from_checkpoint(checkpoint, path)
    return _sed_model_from_checkpoint(checkpoint, path, mode=mode, overrides=overrides)


def load_sed_model(source: str | os.PathLike, *, mode: str = "student", config: Mapping | None = None,
                   overrides: Mapping | None = None, model_dir: str | os.PathLike | None = None) -> WaveformSED:
    """Build the model a SED checkpoint holds and load its ``mode`` weights strictly (one read of the file).

    ``source``: a path, or a name in ``model_dir`` (default ``resources/pretrained_models``). ``config`` and
    ``overrides``: see :func:`checkpoint_config`. Returns the waveform -> strong-logits wrapper in eval mode.
    """
    path = resolve_checkpoint(source, model_dir)
    return _sed_model_from_checkpoint(safe_load(path), path, mode=mode, config=config, overrides=overrides)


def _sed_model_from_checkpoint(checkpoint: Mapping[str, Any], path: Path, *, mode: str, config: Mapping | None = None,
                               overrides: Mapping | None = None) -> WaveformSED:
    state_dict = sed_state_dict(checkpoint, mode, source=str(path))
    resolved = checkpoint_config(state_dict, stored=stored_config(checkpoint), overrides=overrides, config=config,
                                 source=str(path))
    arch = resolved["arch"]
    if config is not None:
        _warn_unusual_wrapper(resolved, path)
    else:
        _warn_name_mismatch(path, arch)
    model = build_waveform_model(resolved, name=path.stem)
    load_sed_weights(model.model, state_dict, source=f"{path} [{mode}]")
    log.info("loaded %s (%s, %s, depth %d, width %d)", path, arch, mode, resolved[arch]["depth"],
             resolved[arch]["embed_dim"])
    return model.eval()


# ------------------------------------------------------------------------------------------------ backbones
# Our downstream checkpoints (helpers.training.downstream): the LightningModule's ``model`` is a FrameClassifier.
DOWNSTREAM_BACKBONE = "model.embedder.backbone."
# Config blocks that describe a bare backbone and its front-end (both the T4 and the downstream configs have them).
BACKBONE_BLOCKS = ("passt_mel",)


@dataclasses.dataclass
class BackboneWeights:
    """A backbone's weights read from any checkpoint the project loads, and the settings to build it with.

    ``source_format``: "sed" (a stage checkpoint: its ``mode`` model's transformer), "downstream" (our downstream
    fine-tuning) or one of ``models.checkpoints.FORMATS`` (AudioSet-strong, PretrainedSED, official BEATs,
    audiossl ATST files). ``state_dict``: the backbone's own keys. ``config``: ``{"arch", <arch>: block,
    "passt_mel": block}`` (the sizes the shapes show, the rest from the file's stored config or the defaults).
    ``stored``: the training config saved in the file ({} for foreign files).
    """

    path: Path
    arch: str
    source_format: str
    state_dict: dict
    config: dict
    stored: dict


def _backbone_config(arch: str, sizes: Mapping, stored: Mapping) -> dict:
    """The backbone blocks with defaults, the stored config's values, then the sizes the shapes show."""
    config = {"arch": arch, arch: configs.schema.tree(arch_spec(arch).config_block()),
              "passt_mel": configs.schema.tree(configs.t4.PasstMel())}
    for block in (arch,) + BACKBONE_BLOCKS:
        if isinstance(stored.get(block), Mapping):
            configs.merge_config(config[block], copy.deepcopy(dict(stored[block])))
    sizes = dict(sizes)
    if "num_heads" not in sizes and not (isinstance(stored.get(arch), Mapping) and "num_heads" in stored[arch]):
        sizes["num_heads"] = max(1, sizes["embed_dim"] // HEAD_DIM)
    configs.merge_config(config[arch], {**sizes, "drop_top_layers": 0})  # depth = the blocks present
    return config


def _foreign_backbone(checkpoint: Mapping, arch: str | None, source: str) -> tuple[str, str, dict]:
    """(arch, format, backbone state dict) of a backbone file; without ``arch``, the one architecture whose
    conversion succeeds and whose blocks the result holds."""
    errors = {}
    for candidate in ([arch] if arch else list(ARCH_SPECS)):
        try:
            source_format, converted = convert_backbone_checkpoint(checkpoint, candidate)
        except CheckpointError as e:
            errors[candidate] = str(e)
            continue
        state_dict = {k[len(BACKBONE_PREFIX):]: v for k, v in converted.items() if k.startswith(BACKBONE_PREFIX)}
        if _count(state_dict, "^" + arch_spec(candidate).block_pattern):
            return candidate, source_format, state_dict
        errors[candidate] = "no transformer block of this architecture after conversion"
    raise CheckpointError(f"{source}: no backbone found: " + "; ".join(f"as {a}: {e}" for a, e in errors.items()))


def read_backbone(source: str | os.PathLike, *, arch: str | None = None, mode: str = "student",
                  model_dir: str | os.PathLike | None = None) -> BackboneWeights:
    """The transformer of any checkpoint the project loads: a stage checkpoint (the ``mode`` model's transformer),
    our downstream checkpoints, or a backbone file (AudioSet-strong, PretrainedSED, official BEATs, audiossl ATST).

    ``source``: a path or a name in ``model_dir``. ``arch``: the architecture it must hold (None: detected).
    """
    path = resolve_checkpoint(source, model_dir)
    checkpoint = safe_load(path)
    stored = stored_config(checkpoint)
    lightning_state = checkpoint.get("state_dict")
    lightning_state = strip_wrapper_prefixes(lightning_state) if isinstance(lightning_state, Mapping) else {}
    if is_sed_checkpoint(checkpoint):
        sed = sed_state_dict(checkpoint, mode, source=str(path))
        found, source_format = detect_arch(sed, str(path)), "sed"
        state_dict = {k[len(BACKBONE):]: v for k, v in sed.items() if k.startswith(BACKBONE)}
        stored = checkpoint_config(sed, stored=stored, source=str(path))  # the backbone's settings, checked
    elif any(k.startswith(DOWNSTREAM_BACKBONE) for k in lightning_state):
        state_dict = {k[len(DOWNSTREAM_BACKBONE):]: v for k, v in lightning_state.items()
                      if k.startswith(DOWNSTREAM_BACKBONE)}
        found, source_format = detect_arch(state_dict, str(path), prefix=""), "downstream"
    else:
        found, source_format, state_dict = _foreign_backbone(checkpoint, arch, str(path))
    if arch is not None and found != arch:
        raise CheckpointError(f"{path} holds a {found} backbone ({source_format} checkpoint), but arch={arch!r}")
    config = _backbone_config(found, backbone_sizes(state_dict, found, prefix="", source=str(path)), stored)
    return BackboneWeights(path, found, source_format, state_dict, config, stored)


def _backbone_disagreements(config: Mapping, weights: BackboneWeights) -> list[str]:
    arch = weights.arch
    shown = backbone_sizes(weights.state_dict, arch, prefix="")
    wanted = dict(config[arch])
    found = []
    for key, value in shown.items():
        have = int(wanted["depth"]) - int(wanted.get("drop_top_layers", 0)) if key == "depth" else wanted.get(key)
        if have is not None and have != value:
            name = f"{arch}.depth - {arch}.drop_top_layers" if key == "depth" else f"{arch}.{key}"
            found.append(f"{name}={have!r} in the config, {value!r} in the checkpoint")
    return found


def load_backbone_weights(backbone, weights: BackboneWeights, config: Mapping | None = None) -> None:
    """Copy ``weights`` into a built ``backbone`` strictly (names and shapes); keys of blocks removed by
    ``drop_top_layers`` and the arch's optional keys (BEATs' predictor) may be absent. With ``config``, the sizes
    the config asks for and the file shows are compared first (one error listing every disagreement)."""
    if config is not None:
        if config.get("arch") not in (None, weights.arch):
            raise CheckpointError(f"{weights.path} holds a {weights.arch} backbone, but arch={config['arch']!r}")
        found = _backbone_disagreements(config, weights)
        if found:
            raise CheckpointError(f"{weights.path} does not fit the backbone built from the config: "
                                  + "; ".join(found) + ". Set these keys to the checkpoint's values.")
    kept = drop_keys_under(weights.state_dict, removed_block_prefixes(backbone))
    load_state_dict_strict(backbone, kept, source=f"{weights.path} [{weights.source_format} -> {weights.arch}]",
                           optional_prefixes=arch_spec(weights.arch).optional_backbone_prefixes)
    log.info("loaded the %s backbone from %s (%s)", weights.arch, weights.path, weights.source_format)


def load_frame_embedder(source: str | os.PathLike, *, mode: str = "student", overrides: Mapping | None = None,
                        model_dir: str | os.PathLike | None = None, hop_s: float | None = None,
                        window_s: float | None = None, token_pooling: str | None = None) -> FrameEmbedder:
    """The backbone of any checkpoint (see :func:`read_backbone`) with its front-end, as a ``FrameEmbedder`` in
    eval mode (the HEAR API's model). ``overrides``: a partial config for what shapes cannot show (e.g.
    ``{"backbone": {"num_heads": 4}}``), cross-checked against the shapes. ``hop_s`` / ``window_s`` /
    ``token_pooling``: None takes the downstream run's ``frames`` settings for our downstream checkpoints, else
    40 ms / 10 s / "time"."""
    weights = read_backbone(source, mode=mode, model_dir=model_dir)
    config = weights.config
    if overrides:
        overrides = dict(overrides)
        if "backbone" in overrides:
            overrides[weights.arch] = {**dict(overrides.get(weights.arch, {})), **overrides.pop("backbone")}
        config = _with(config, overrides)
    frames = weights.stored.get("frames", {}) if weights.source_format == "downstream" else {}
    embedder = build_frame_embedder(
        config, hop_s=hop_s or frames.get("hop_s", FRAME_HOP_S), window_s=window_s or frames.get("window_s", WINDOW_S),
        token_pooling=token_pooling or frames.get("token_pooling", "time"))
    load_backbone_weights(embedder.backbone, weights, config)
    embedder.name = weights.path.stem
    embedder.source_format = weights.source_format
    embedder.config = config
    return embedder.eval()


__all__ = ["CHECKPOINT_SUFFIXES", "CheckpointNotFoundError", "available_checkpoints", "resolve_checkpoint",
           "stored_config", "detect_arch", "shape_settings", "check_fits", "checkpoint_config", "load_sed_weights",
           "load_sed_checkpoint", "load_sed_model", "load_inference_model", "backbone_sizes", "BackboneWeights",
           "read_backbone", "load_backbone_weights", "load_frame_embedder"]
