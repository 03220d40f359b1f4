"""The AudioSet-strong model: shapes, PretrainedSED's checkpoint layout, files, start weights, the stage-1 chain."""
from __future__ import annotations

import re

import pytest
import torch

import configs
import configs.audioset_strong as as_config
from data_util.audioset_strong import ClassList, train_classes
from models import audioset_strong as asm
from models.checkpoints import CheckpointError, load_pretrained_backbone
from models.factory import build_model, build_transformer_frontend
from models.registry import ARCH_SPECS

ARCHS = ("atst_frame", "fpasst", "beats")
CLASSES = train_classes()
# the keys of PretrainedSED's release files (models/prediction_wrapper.py): the backbone as model.<...>
RELEASE_BACKBONE = {"atst_frame": r"^model\.atst\.", "fpasst": r"^model\.(blocks|cls_token|conv_in_1)",
                    "beats": r"^model\.model\.encoder\."}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(arch: str, **wrapper) -> dict:
    return as_config.resolve_config(as_config.NAMED_CONFIGS["demo"], {"arch": arch, "strong_wrapper": wrapper})


def _audio(batch: int = 2) -> torch.Tensor:
    return 0.1 * torch.randn(batch, 160_000, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seq_model_type", [None, "rnn"])
def test_shapes_and_release_layout(arch, seq_model_type):
    config = _config(arch, seq_model_type=seq_model_type)
    model = asm.build_as_strong_model(config, len(CLASSES)).eval()
    frontend = build_transformer_frontend(config).eval()
    with torch.no_grad():
        strong, weak = model(frontend(_audio()))
    assert strong.shape == (2, 447, 250) and weak.shape == (2, 447)
    layout = asm.to_pretrainedsed(model.state_dict(), arch)
    parts = {key.split(".")[0] for key in layout}
    assert parts == ({"model", "strong_head", "weak_head"} | ({"seq_model"} if seq_model_type else set()))
    backbone = [key for key in layout if key.startswith("model.")]
    assert all(re.match(RELEASE_BACKBONE[arch], k) for k in backbone if "blocks" in k or "layers" in k)
    if seq_model_type:
        assert "seq_model.rnn.weight_ih_l0" in layout and "seq_model.rnn.weight_hh_l1_reverse" in layout
    assert asm.detect_pretrainedsed_arch(layout) == arch
    back = asm.from_pretrainedsed(layout, arch)
    assert back.keys() == model.state_dict().keys()


def test_public_repo_names_read_as_release_names():
    model = asm.build_as_strong_model(_config("beats"), len(CLASSES))
    release = asm.to_pretrainedsed(model.state_dict(), "beats")
    public = {("model.beats." + k[len("model.model."):] if k.startswith("model.model.") else k): v
              for k, v in release.items()}
    assert asm.normalise_pretrainedsed(public).keys() == release.keys()


@pytest.mark.parametrize("arch", ARCHS)
def test_saved_file_reloads_to_the_same_outputs_and_starts_stage1(arch, tmp_path):
    config = _config(arch, seq_model_type="rnn")
    model = asm.build_as_strong_model(config, len(CLASSES)).eval()
    path = asm.save_pretrainedsed(tmp_path / f"{arch}.pt", model, arch=arch, classes=CLASSES, config=config)
    checkpoint = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in checkpoint.values())  # interchangeable with PretrainedSED's
    assert asm.read_sidecar(path)["classes"][0] == [CLASSES.mids[0], CLASSES.names[0]]
    loaded = asm.load_as_strong_model(path)
    frontend = build_transformer_frontend(config).eval()
    audio = _audio()
    with torch.no_grad():
        expected = model(frontend(audio))[0].transpose(1, 2)
        assert torch.allclose(loaded(audio), expected, atol=1e-5)
    assert loaded.class_names == CLASSES.names and loaded.mel_hop * loaded.net_pooling == 640
    # stage 1 of the T4 recipe starts from the file: <arch>.pretrained_name reads it as a backbone source
    stage1 = configs.merge_config(configs.demo_defaults(1), {"arch": arch})
    if arch == "beats":
        stage1["t4_wrapper"]["no_wrapper"] = True
    sed = build_model(stage1)
    info = load_pretrained_backbone(sed, path, arch)
    assert info.source_format == "pretrainedsed"
    for key, value in model.model.state_dict().items():
        assert torch.equal(sed.as_model.model.state_dict()[key], value), key


def test_file_without_sidecar_reads_as_a_release_file(tmp_path):
    config = _config("atst_frame")
    model = asm.build_as_strong_model(config, len(CLASSES))
    path = tmp_path / "ATST-F_strong_1.pt"
    torch.save(asm.to_pretrainedsed(model.state_dict(), "atst_frame"), path)
    loaded = asm.load_as_strong_model(path)  # sizes from the shapes, the 447 default classes
    assert loaded.class_names == CLASSES.names and loaded.config["atst_frame"]["embed_dim"] == 64
    small = asm.build_as_strong_model(config, 5)
    torch.save(asm.to_pretrainedsed(small.state_dict(), "atst_frame"), tmp_path / "five.pt")
    with pytest.raises(CheckpointError, match="no class list is stored"):
        asm.load_as_strong_model(tmp_path / "five.pt")
    five = ClassList(tuple(CLASSES.mids[:5]), tuple(CLASSES.names[:5]))
    assert asm.load_as_strong_model(tmp_path / "five.pt", classes=five).class_names == five.names


def test_start_weights_follow_pretrainedseds_rules(tmp_path):
    student_config, teacher_config = _config("atst_frame"), _config("atst_frame", seq_model_type="rnn")
    student = asm.build_as_strong_model(student_config, len(CLASSES))
    path = asm.save_pretrainedsed(tmp_path / "student.pt", student, arch="atst_frame", classes=CLASSES,
                                  config=student_config)
    same = asm.build_as_strong_model(student_config, len(CLASSES))
    assert asm.init_from_pretrained(same, path, "atst_frame") == ["backbone", "strong_head", "weak_head"]
    assert torch.equal(same.strong_head.weight, student.strong_head.weight)
    # a new sequence model on a file without one: backbone only, fresh heads (PretrainedSED's rule)
    teacher = asm.build_as_strong_model(teacher_config, len(CLASSES))
    assert asm.init_from_pretrained(teacher, path, "atst_frame") == ["backbone"]
    # another class count: that head keeps its initial value
    other = asm.build_as_strong_model(student_config, 10, 447)
    assert asm.init_from_pretrained(other, path, "atst_frame") == ["backbone", "weak_head"]


def test_every_arch_has_its_release_prefix():
    assert {a: s.pretrainedsed_prefix for a, s in ARCH_SPECS.items() if a in ARCHS} == {
        "atst_frame": "model.", "fpasst": "model.", "beats": "model.model."}
