"""Checkpoint loading (models/checkpoints.py): safe reading, released SED checkpoints, foreign backbone files.

Converters are tested on synthetic state dicts built from the released key lists
(tests/fixtures/reference_t4/<arch>/wrapper_state_dict.json): each key gets a distinct one-element tensor,
so a test sees both the renamed keys and that every tensor went to the right place. Loading is tested on
small modules built from the same key lists (shrunken shapes) and on tiny real models through ``models.registry``.
"""
from __future__ import annotations

import json
import os
import pathlib
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from models import checkpoints as ckpt
from models import factory
from models import loading
from models.checkpoints import CheckpointError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "reference_t4"
ARCHS = ("atst_frame", "fpasst", "beats")
AS_MODEL = "as_model."
BACKBONE_IN_AS_MODEL = "model."
HEAD_KEYS = ("head_linear_layer.weight", "head_linear_layer.bias")
# Backbone key prefix inside as_model.model: ATST keys live under the FrameAST attribute ``atst``.
ATST_INNER = "atst."
LEGACY_BEATS = {
    "encoder.pos_conv.0.parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
    "encoder.pos_conv.0.parametrizations.weight.original1": "encoder.pos_conv.0.weight_v",
}


# ------------------------------------------------------------------------------------------ helpers
def wrapper_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released SED state dict of ``arch``."""
    with open(FIXTURES / arch / "wrapper_state_dict.json") as f:
        return {k: tuple(v) for k, v in json.load(f).items()}


def as_model_keys(arch: str) -> list[str]:
    """Keys relative to ``as_model`` (``model.*`` and, for ATST/fPaSST, ``head_linear_layer.*``)."""
    return [k[len(AS_MODEL):] for k in wrapper_shapes(arch) if k.startswith(AS_MODEL)]


def backbone_keys(arch: str) -> list[str]:
    """Keys of the backbone module (``as_model.model``), e.g. ``atst.blocks.0.norm1.weight``."""
    return [k[len(BACKBONE_IN_AS_MODEL):] for k in as_model_keys(arch) if k.startswith(BACKBONE_IN_AS_MODEL)]


def tagged(keys) -> dict[str, torch.Tensor]:
    """A distinct one-element tensor per key (value = position), to follow tensors through renames."""
    return {k: torch.tensor([float(i)]) for i, k in enumerate(keys)}


def assert_same_tensors(converted: dict, expected: dict) -> None:
    assert sorted(converted) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(converted[key], value), key


class ShapeModule(nn.Module):
    """A module whose state dict has exactly the given keys and shapes (nested by dots), zero-filled."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], removed_prefixes: tuple[str, ...] = ()):
        super().__init__()
        self._removed = list(removed_prefixes)
        for key, shape in shapes.items():
            *path, leaf = key.split(".")
            module = self
            for name in path:
                if name not in module._modules:
                    module.add_module(name, nn.Module())
                module = module._modules[name]
            module.register_parameter(leaf, nn.Parameter(torch.zeros(shape), requires_grad=False))

    def removed_block_prefixes(self) -> list[str]:
        return self._removed


def small(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(d, 3) for d in shape)


# ------------------------------------------------------------------------------------------ safe_load
def test_safe_load_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        ckpt.safe_load(path)


def test_safe_load_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "full.ckpt"
    torch.save({"student": {"w": torch.randn(100, 100)}}, path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
        ckpt.safe_load(truncated)


def test_safe_load_non_checkpoint_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.txt"):
        ckpt.safe_load(path)


class _Payload:
    """Unpickling this object creates a directory: a stand-in for arbitrary code in a malicious file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_safe_load_refuses_pickled_code_without_running_it(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "malicious.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": _Payload(str(marker))}, path)

    with pytest.raises(CheckpointError, match="refused.*malicious.ckpt|malicious.ckpt.*refused") as info:
        ckpt.safe_load(path)
    assert "os.makedirs" in str(info.value) or "posix.makedirs" in str(info.value) or "makedirs" in str(info.value)
    assert not marker.exists()

    # The payload is live: a plain unpickle would have executed it.
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_safe_load_accepts_lightning_sacred_contents(tmp_path):
    from sacred.config.custom_containers import ReadOnlyDict, ReadOnlyList

    config = ReadOnlyDict({"arch": "atst_frame", "batch_sizes": ReadOnlyList([3, 3, 3]), "lr": 1e-3})
    checkpoint = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {"student.dense.weight": torch.ones(2, 2)},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/obj_metric'}": {"best_model_score": torch.tensor(0.5),
                                                                       "dirpath": "outputs"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999)}]}],
        "hyper_parameters": {
            "config": config,
            "root": pathlib.Path("/data/dcase"),
            "seed": np.int64(42),
            "ratio": np.float64(0.9),
            "dtype": np.dtype("float32"),
            "window": np.arange(3.0),
        },
    }
    path = tmp_path / "lightning.ckpt"
    torch.save(checkpoint, path)
    loaded = ckpt.safe_load(path)
    hp = loaded["hyper_parameters"]
    assert hp["config"]["batch_sizes"] == [3, 3, 3]
    assert hp["root"] == pathlib.Path("/data/dcase")
    assert hp["seed"] == 42 and hp["ratio"] == 0.9 and hp["dtype"] == np.float32
    np.testing.assert_array_equal(hp["window"], np.arange(3.0))
    assert torch.equal(loaded["state_dict"]["student.dense.weight"], torch.ones(2, 2))


# ------------------------------------------------------------------------------------------ SED checkpoints
def _small_sed_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    return {k: small(s) for k, s in wrapper_shapes(arch).items()}


def _filled(shapes: dict[str, tuple[int, ...]], value: float) -> dict[str, torch.Tensor]:
    return {k: torch.full(s, value) for k, s in shapes.items()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["student", "teacher"])
def test_sed_checkpoint_round_trip(tmp_path, arch, mode):
    shapes = _small_sed_shapes(arch)
    path = tmp_path / f"{arch}_stage2.ckpt"
    ckpt.save_sed_checkpoint(path, _filled(shapes, 1.0), _filled(shapes, 2.0), epoch=7)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind

    model = ShapeModule(shapes)
    loading.load_sed_checkpoint(model, path, mode=mode)
    expected = 1.0 if mode == "student" else 2.0
    for key, value in model.state_dict().items():
        assert torch.all(value == expected), key
    assert ckpt.safe_load(path)["epoch"] == 7


def test_sed_checkpoint_from_lightning_state_dict_with_wrapper_prefixes(tmp_path):
    """No student/teacher entries: read the LightningModule state dict (attributes ``student``/``teacher``)."""
    shapes = _small_sed_shapes("fpasst")
    state = {f"student._orig_mod.{k}": torch.full(s, 1.0) for k, s in shapes.items()}
    state |= {f"teacher.{k}": torch.full(s, 2.0) for k, s in shapes.items()}
    state |= {"crnn_mel.mel_scale.fb": torch.zeros(3, 3), "mel.window": torch.zeros(3)}  # front-end buffers
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}, path)
    model = ShapeModule(shapes)
    loading.load_sed_checkpoint(model, path, mode="teacher")
    assert all(torch.all(v == 2.0) for v in model.state_dict().values())
    loading.load_sed_checkpoint(model, path, mode="student")
    assert all(torch.all(v == 1.0) for v in model.state_dict().values())


def test_sed_checkpoint_accepts_legacy_beats_weight_norm_names(tmp_path):
    shapes = _small_sed_shapes("beats")
    legacy = {}
    for key, shape in shapes.items():
        for current, old in LEGACY_BEATS.items():
            key = key.replace(current, old)
        legacy[key] = torch.full(shape, 3.0)
    path = tmp_path / "beats_stage1.ckpt"
    ckpt.save_sed_checkpoint(path, legacy, legacy)
    model = ShapeModule(shapes)
    loading.load_sed_checkpoint(model, path)
    assert all(torch.all(v == 3.0) for v in model.state_dict().values())


def test_sed_checkpoint_mismatch_lists_all_missing_and_unexpected_keys_and_the_file(tmp_path):
    shapes = _small_sed_shapes("atst_frame")
    state = _filled(shapes, 1.0)
    del state["dense.weight"], state["as_model.model.atst.blocks.3.norm1.bias"]
    state["dense.extra"] = torch.zeros(1)
    state["as_model.model.atst.blocks.12.norm1.bias"] = torch.zeros(3)
    path = tmp_path / "atst_stage1.ckpt"
    ckpt.save_sed_checkpoint(path, state, state)
    with pytest.raises(CheckpointError) as info:
        loading.load_sed_checkpoint(ShapeModule(shapes), path)
    message = str(info.value)
    assert str(path) in message
    for key in ("dense.weight", "as_model.model.atst.blocks.3.norm1.bias", "dense.extra",
                "as_model.model.atst.blocks.12.norm1.bias"):
        assert key in message
    assert "Missing keys (2)" in message and "Unexpected keys (2)" in message


def test_sed_checkpoint_shape_mismatch_is_named(tmp_path):
    shapes = _small_sed_shapes("atst_frame")
    state = _filled(shapes, 1.0)
    state["dense.weight"] = torch.zeros(5, 5)
    path = tmp_path / "atst_stage1.ckpt"
    ckpt.save_sed_checkpoint(path, state, state)
    with pytest.raises(CheckpointError, match=r"dense\.weight: checkpoint \(5, 5\) vs model \(3, 3\)"):
        loading.load_sed_checkpoint(ShapeModule(shapes), path)


def test_sed_checkpoint_without_requested_model_is_a_clear_error(tmp_path):
    path = tmp_path / "backbone.ckpt"
    torch.save({"cfg": {}, "model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="no 'teacher' model"):
        loading.load_sed_checkpoint(ShapeModule({"w": (1,)}), path, mode="teacher")


def test_drop_top_layers_ignores_removed_blocks(tmp_path):
    full = _small_sed_shapes("atst_frame")
    removed = ("as_model.model.atst.blocks.10.", "as_model.model.atst.blocks.11.")
    kept = {k: s for k, s in full.items() if not k.startswith(removed)}
    path = tmp_path / "atst_stage2.ckpt"
    ckpt.save_sed_checkpoint(path, _filled(full, 1.0), _filled(full, 2.0))

    model = ShapeModule(kept)
    model.as_model.model.removed_block_prefixes = lambda: ["atst.blocks.10.", "atst.blocks.11."]
    loading.load_sed_checkpoint(model, path)
    assert all(torch.all(v == 1.0) for v in model.state_dict().values())

    with pytest.raises(CheckpointError, match=r"Unexpected keys \(22\)"):  # without the filter: 2 blocks x 11
        loading.load_sed_checkpoint(ShapeModule(kept), path)


# ------------------------------------------------------------------------------------------ converters
def _convert(checkpoint, arch):
    return ckpt.convert_backbone_checkpoint(checkpoint, arch)


def _expected_as_model(arch: str, values: dict[str, torch.Tensor], with_head: bool) -> dict[str, torch.Tensor]:
    """The converter output that a foreign file whose backbone tensors are ``values`` must give."""
    out = {BACKBONE_IN_AS_MODEL + k: v for k, v in values.items()}
    if with_head:
        out |= HEAD_TENSORS
    return out


HEAD_TENSORS = {"head_linear_layer.weight": torch.tensor([-1.0]), "head_linear_layer.bias": torch.tensor([-2.0])}


@pytest.mark.parametrize("legacy_names", [True, False])
def test_convert_official_beats_both_weight_norm_namings(legacy_names):
    values = tagged(backbone_keys("beats"))
    model_state = {(LEGACY_BEATS.get(k, k) if legacy_names else k): v for k, v in values.items()}
    assert ("encoder.pos_conv.0.weight_g" in model_state) == legacy_names
    fmt, converted = _convert({"cfg": {"encoder_layers": 12}, "model": model_state}, "beats")
    assert fmt == "beats_official"
    assert_same_tensors(converted, _expected_as_model("beats", values, with_head=False))
    # exactly the released as_model keys (BEATs has no AudioSet head in the SED model)
    assert sorted(converted) == sorted(as_model_keys("beats"))


def _atst_backbone_values() -> dict[str, torch.Tensor]:
    return tagged(backbone_keys("atst_frame"))


def _frame_ast(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``atst.``: the FrameAST keys as audiossl names them."""
    return {k[len(ATST_INNER):]: v for k, v in values.items()}


@pytest.mark.parametrize("old_norm_name", [True, False])
def test_convert_audiossl_atst_teacher_encoder(old_norm_name):
    values = _atst_backbone_values()
    state = {}
    for key, value in _frame_ast(values).items():
        if old_norm_name:
            key = key.replace("norm_frame.", "norm.")
        state["model.teacher.encoder." + key] = value
        state["model.student.encoder." + key] = torch.tensor([99.0])  # must not be used
    state["model.teacher.encoder.cls_token"] = torch.zeros(1)
    state["model.teacher.projector.mlp.0.weight"] = torch.zeros(1)
    state["model.student.predictor.mlp.0.weight"] = torch.zeros(1)
    fmt, converted = _convert({"state_dict": state, "epoch": 3}, "atst_frame")
    assert fmt == "audiossl_atst"
    assert_same_tensors(converted, _expected_as_model("atst_frame", values, with_head=False))


def test_convert_atst_c2f_and_finetuned():
    values = _atst_backbone_values()
    c2f = {"encoder.encoder.frame_encoder." + k: v for k, v in _frame_ast(values).items()}
    c2f |= {"encoder.encoder.teacher_module.blocks.0.norm1.weight": torch.zeros(1), "head.linear.weight": torch.zeros(1)}
    fmt, converted = _convert({"state_dict": c2f}, "atst_frame")
    assert fmt == "atst_c2f"
    assert_same_tensors(converted, _expected_as_model("atst_frame", values, with_head=False))

    finetuned = {"encoder.encoder." + k: v for k, v in _frame_ast(values).items()}
    finetuned |= {"head.linear.weight": torch.zeros(1), "head.linear.bias": torch.zeros(1)}
    fmt, converted = _convert({"state_dict": finetuned}, "atst_frame")
    assert fmt == "atst_finetuned"
    assert_same_tensors(converted, _expected_as_model("atst_frame", values, with_head=False))


@pytest.mark.parametrize("arch", ["atst_frame", "fpasst"])
def test_convert_cpjku_as_strong_with_audioset_wrapper(arch):
    """net_strong = Task4RNNWrapper: transformer under net_strong.model.model, head under net_strong.model."""
    values = tagged(backbone_keys(arch))
    state = {"net_strong.model.model." + k: v for k, v in values.items()}
    state |= {"net_strong.model." + k: v for k, v in HEAD_TENSORS.items()}
    state |= {"net_strong.model.att_linear_layer.weight": torch.zeros(1), "net_strong.rnn.rnn.weight_ih_l0": torch.zeros(1),
              "net_strong.sigmoid_dense.weight": torch.zeros(1), "net_strong.softmax_dense.bias": torch.zeros(1),
              "mel.window": torch.zeros(1)}
    state |= {"net_weak.model." + k: torch.tensor([99.0]) for k in values}  # the weak branch: not used
    fmt, converted = _convert({"state_dict": state}, arch)
    assert fmt == "cpjku_as_strong"
    assert_same_tensors(converted, _expected_as_model(arch, values, with_head=True))
    assert sorted(converted) == sorted(as_model_keys(arch))  # exactly the released as_model keys


@pytest.mark.parametrize("arch", ["atst_frame", "fpasst"])
def test_convert_cpjku_as_strong_without_audioset_wrapper(arch):
    """net_strong.model is the transformer (the reference's offset-1 case): no 527-class head to load."""
    values = tagged(backbone_keys(arch))
    state = {"net_strong._orig_mod.model." + k: v for k, v in values.items()}
    state |= {"net_strong.strong_head.weight": torch.zeros(1), "net_strong.weak_head.bias": torch.zeros(1)}
    fmt, converted = _convert({"state_dict": state}, arch)
    assert fmt == "cpjku_as_strong"
    assert_same_tensors(converted, _expected_as_model(arch, values, with_head=False))


@pytest.mark.parametrize(
    "arch, file_prefix",
    [("atst_frame", "model."), ("fpasst", "model."), ("fpasst", "model.fpasst."), ("beats", "model.model."),
     ("beats", "model.beats.")],
)
def test_convert_pretrainedsed_flat_files(arch, file_prefix):
    values = tagged(backbone_keys(arch))
    state = {file_prefix + (LEGACY_BEATS.get(k, k) if arch == "beats" else k): v for k, v in values.items()}
    state |= {"strong_head.weight": torch.zeros(447, 1), "strong_head.bias": torch.zeros(447),
              "weak_head.weight": torch.zeros(527, 1), "weak_head.bias": torch.zeros(527)}
    if arch == "atst_frame":
        state["model.atst_mel.mel_transform.mel_scale.fb"] = torch.zeros(1)
    fmt, converted = _convert(state, arch)
    assert fmt == "pretrainedsed"
    assert_same_tensors(converted, _expected_as_model(arch, values, with_head=False))


def test_converter_unknown_key_is_an_error_naming_it():
    state = {"model.teacher.encoder." + k: v for k, v in _frame_ast(_atst_backbone_values()).items()}
    state["model.mystery.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"model\.mystery\.weight"):
        _convert({"state_dict": state}, "atst_frame")


def test_converter_rejects_wrong_arch_and_complete_sed_checkpoints():
    state = {"model.teacher.encoder." + k: v for k, v in _frame_ast(_atst_backbone_values()).items()}
    with pytest.raises(CheckpointError, match="atst_frame backbone.*arch='beats'"):
        _convert({"state_dict": state}, "beats")
    with pytest.raises(CheckpointError, match="complete SED checkpoint"):
        _convert({"student": {"dense.weight": torch.zeros(1)}, "teacher": {}}, "atst_frame")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        _convert({"weights": torch.zeros(1)}, "atst_frame")


def test_read_beats_cfg(tmp_path):
    path = tmp_path / "beats_as.pt"
    cfg = {"encoder_layers": 12, "encoder_embed_dim": 768, "deep_norm": True, "finetuned_model": True}
    torch.save({"cfg": cfg, "model": {}, "label_dict": {0: "/m/09x0r"}}, path)
    assert ckpt.read_beats_cfg(path) == cfg
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not an official BEATs file"):
        ckpt.read_beats_cfg(other)


# ------------------------------------------------------------------------------------------ load_backbone
def _small_backbone_and_head(arch: str, removed: tuple[str, ...] = ()):
    shapes = {k: small(s) for k, s in wrapper_shapes(arch).items()}
    backbone = ShapeModule(
        {k[len(AS_MODEL + BACKBONE_IN_AS_MODEL):]: s for k, s in shapes.items()
         if k.startswith(AS_MODEL + BACKBONE_IN_AS_MODEL) and not k[len(AS_MODEL + BACKBONE_IN_AS_MODEL):].startswith(removed)},
        removed_prefixes=removed,
    )
    head_shapes = {k[len(AS_MODEL) + len("head_linear_layer."):]: s for k, s in shapes.items()
                   if k.startswith(AS_MODEL + "head_linear_layer.")}
    head = ShapeModule(head_shapes) if head_shapes else None
    full_backbone_shapes = {k[len(AS_MODEL + BACKBONE_IN_AS_MODEL):]: s for k, s in shapes.items()
                            if k.startswith(AS_MODEL + BACKBONE_IN_AS_MODEL)}
    return backbone, head, full_backbone_shapes, {k: s for k, s in shapes.items() if "head_linear_layer" in k}


def test_load_backbone_official_beats_file(tmp_path):
    backbone, head, shapes, _ = _small_backbone_and_head("beats")
    model_state = {LEGACY_BEATS.get(k, k): torch.full(s, 5.0) for k, s in shapes.items() if not k.startswith("predictor.")}
    path = tmp_path / "BEATs_iter3_plus_AS2M.pt"  # SSL file: no predictor, which stays at its initial value
    torch.save({"cfg": {"encoder_layers": 12}, "model": model_state}, path)
    info = ckpt.load_backbone(backbone, path, "beats", head=head)
    assert info.source_format == "beats_official" and not info.head_loaded
    for key, value in backbone.state_dict().items():
        assert torch.all(value == (0.0 if key.startswith("predictor.") else 5.0)), key


def test_load_backbone_cpjku_strong_loads_audioset_head_and_honours_drop_top_layers(tmp_path):
    removed = ("blocks.10.", "blocks.11.")
    backbone, head, shapes, head_shapes = _small_backbone_and_head("fpasst", removed)
    state = {"net_strong.model.model." + k: torch.full(s, 4.0) for k, s in shapes.items()}
    state |= {"net_strong.model." + k[len(AS_MODEL):]: torch.full(s, 6.0) for k, s in head_shapes.items()}
    path = tmp_path / "passt_as_strong.ckpt"
    torch.save({"state_dict": state, "epoch": 1}, path)
    info = ckpt.load_backbone(backbone, path, "fpasst", head=head)
    assert info.head_loaded and info.source_format == "cpjku_as_strong"
    assert len(info.ignored_keys) == 2 * 12  # two removed blocks, 12 keys each
    assert all(torch.all(v == 4.0) for v in backbone.state_dict().values())
    assert all(torch.all(v == 6.0) for v in head.state_dict().values())


def test_load_backbone_mismatch_names_keys_and_file(tmp_path):
    backbone, head, shapes, _ = _small_backbone_and_head("atst_frame")
    state = {"model.teacher.encoder." + k[len(ATST_INNER):]: torch.zeros(s) for k, s in shapes.items()}
    del state["model.teacher.encoder.pos_embed"]
    state["model.teacher.encoder.mask_embed"] = torch.zeros(1, 1, 7)
    path = tmp_path / "atst_as.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_backbone(backbone, path, "atst_frame", head=head)
    message = str(info.value)
    assert str(path) in message and "atst.pos_embed" in message and "atst.mask_embed: checkpoint (1, 1, 7)" in message


# ------------------------------------------------------------------------------------------ real models
TINY_BACKBONE = {"embed_dim": 64, "depth": 2, "num_heads": 2}


@pytest.fixture
def registry():
    return factory


def _tiny_model(registry, arch: str, **backbone_kwargs) -> nn.Module:
    no_wrapper = arch == "beats"
    return registry.create_model(arch, backbone_kwargs={**TINY_BACKBONE, **backbone_kwargs}, no_wrapper=no_wrapper)


def _randomised(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random values for every floating tensor; keys that share one tensor (BEATs' relative-position
    table, held by all layers) get one value, as in a real state dict."""
    generator = torch.Generator().manual_seed(seed)
    by_storage: dict[int, torch.Tensor] = {}
    out = {}
    for key, value in module.state_dict().items():
        if not value.is_floating_point():
            out[key] = value.clone()
            continue
        if value.data_ptr() not in by_storage:
            by_storage[value.data_ptr()] = torch.randn(value.shape, generator=generator)
        out[key] = by_storage[value.data_ptr()]
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_real_model_keys_are_the_released_keys(registry, arch):
    """Full-size model built on the meta device: its state dict fits the released key/shape list exactly."""
    with torch.device("meta"):
        model = registry.create_model(arch, no_wrapper=arch == "beats")
    released = {k: torch.empty(s, device="meta") for k, s in wrapper_shapes(arch).items()}
    ckpt.check_state_dict(model.state_dict(), released, source=f"released {arch} key list")


@pytest.mark.parametrize("arch", ARCHS)
def test_real_model_sed_checkpoint_round_trip(registry, tmp_path, arch):
    source = _tiny_model(registry, arch)
    student, teacher = _randomised(source, 0), _randomised(source, 1)
    path = tmp_path / f"{arch}_stage1.ckpt"
    ckpt.save_sed_checkpoint(path, student, teacher)
    target = _tiny_model(registry, arch)
    loading.load_sed_checkpoint(target, path, mode="teacher")
    for key, value in target.state_dict().items():
        assert torch.equal(value, teacher[key]), key


@pytest.mark.parametrize("arch", ARCHS)
def test_real_model_drop_top_layers_loads_full_checkpoint(registry, tmp_path, arch):
    full = _tiny_model(registry, arch)
    student = _randomised(full, 2)
    path = tmp_path / f"{arch}_stage2.ckpt"
    ckpt.save_sed_checkpoint(path, student, student)
    dropped = _tiny_model(registry, arch, drop_top_layers=1)
    loading.load_sed_checkpoint(dropped, path)
    for key, value in dropped.state_dict().items():
        assert torch.equal(value, student[key]), key


def _foreign_file(arch: str, backbone_state: dict, head_state: dict) -> dict:
    """A foreign file of the main format of each arch, holding the given tensors."""
    if arch == "beats":
        return {"cfg": {"encoder_layers": 2}, "model": {LEGACY_BEATS.get(k, k): v for k, v in backbone_state.items()}}
    if arch == "atst_frame":
        return {"state_dict": {"model.teacher.encoder." + k[len(ATST_INNER):].replace("norm_frame.", "norm."): v
                               for k, v in backbone_state.items()}}
    state = {"net_strong.model.model." + k: v for k, v in backbone_state.items()}
    state |= {"net_strong.model.head_linear_layer." + k: v for k, v in head_state.items()}
    return {"state_dict": state}


@pytest.mark.parametrize("arch", ARCHS)
def test_real_model_backbone_init_from_foreign_file(registry, tmp_path, arch):
    model = _tiny_model(registry, arch)
    backbone, as_model = model.as_model.model, model.as_model
    head = getattr(as_model, "head_linear_layer", None)
    backbone_state = _randomised(backbone, 3)
    head_state = _randomised(head, 4) if head is not None else {}
    path = tmp_path / "foreign.ckpt"
    torch.save(_foreign_file(arch, backbone_state, head_state), path)
    info = ckpt.load_backbone(backbone, path, arch, head=head)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, backbone_state[key]), key
    assert info.head_loaded == (arch == "fpasst")
    if arch == "fpasst":
        for key, value in head.state_dict().items():
            assert torch.equal(value, head_state[key]), key


# ------------------------------------------------------------------------------------------ real Lightning file
def test_real_lightning_checkpoint_of_a_sacred_config_loads_safely(tmp_path):
    """A checkpoint written by Lightning itself (callbacks, optimizer, scheduler, mixed precision and a
    Sacred ReadOnlyDict config in hyper_parameters) passes safe_load, and its student/teacher load."""
    import pytorch_lightning as pl  # a locked dependency: its absence is an error, not a skip
    from sacred.config.custom_containers import ReadOnlyDict, ReadOnlyList

    class TinySystem(pl.LightningModule):
        def __init__(self, config):
            super().__init__()
            self.save_hyperparameters()
            self.student = nn.Linear(4, 2)
            self.teacher = nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            loss = self.student(batch[0]).square().mean()
            self.log("val/obj_metric", loss)
            return loss

        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.student.parameters(), lr=1e-3)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
            return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

        def on_save_checkpoint(self, checkpoint):
            checkpoint["student"] = self.student.state_dict()
            checkpoint["teacher"] = self.teacher.state_dict()

    config = ReadOnlyDict({"arch": "atst_frame", "training": ReadOnlyDict({"batch_sizes": ReadOnlyList([3, 3])})})
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 4)), batch_size=2)
    callback = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val/obj_metric", mode="max", save_last=True)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         precision="bf16-mixed", callbacks=[callback], default_root_dir=tmp_path)
    system = TinySystem(config)
    trainer.fit(system, data)

    path = tmp_path / "last.ckpt"
    with pytest.raises(pickle.UnpicklingError, match="ReadOnlyDict"):  # the allow-list is what makes it load
        torch.load(path, weights_only=True)
    assert ckpt.safe_load(path)["hyper_parameters"]["config"]["training"]["batch_sizes"] == [3, 3]
    target = nn.Linear(4, 2)
    loading.load_sed_checkpoint(target, path, mode="student")
    assert torch.equal(target.weight, system.student.weight.detach())


def test_resolve_checkpoint_by_name_and_path(tmp_path, monkeypatch):
    import configs

    monkeypatch.setattr(configs, "PRETRAINED_MODELS_DIR", tmp_path)
    (tmp_path / "atst_stage1.ckpt").write_bytes(b"x")
    (tmp_path / "beats_as.pt").write_bytes(b"x")
    assert loading.resolve_checkpoint("atst_stage1") == (tmp_path / "atst_stage1.ckpt").resolve()
    assert loading.resolve_checkpoint("beats_as.pt") == (tmp_path / "beats_as.pt").resolve()
    assert loading.resolve_checkpoint(tmp_path / "beats_as") == (tmp_path / "beats_as.pt").resolve()
    with pytest.raises(FileNotFoundError, match="passt_stage2"):
        loading.resolve_checkpoint("passt_stage2")


@pytest.mark.parametrize("arch", ARCHS)
def test_load_pretrained_backbone_into_real_sed_model(registry, tmp_path, arch):
    model = _tiny_model(registry, arch)
    backbone_state = _randomised(model.as_model.model, 5)
    head = getattr(model.as_model, "head_linear_layer", None)
    head_state = _randomised(head, 6) if head is not None else {}
    path = tmp_path / "pretrained.ckpt"
    torch.save(_foreign_file(arch, backbone_state, head_state), path)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("as_model.")}
    ckpt.load_pretrained_backbone(model, path, arch)
    for key, value in model.as_model.model.state_dict().items():
        assert torch.equal(value, backbone_state[key]), key
    for key, value in before.items():  # the CRNN part is untouched
        assert torch.equal(model.state_dict()[key], value), key
