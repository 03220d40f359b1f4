"""The HEAR 2021 API module: every checkpoint format loads, and the API's contract holds on any length, batched."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import configs
import configs.downstream as downstream_config
import hear_api
from models.checkpoints import CheckpointError, save_sed_checkpoint
from models.factory import build_frame_embedder, build_model, create_backbone
from models.frame_embedder import FrameClassifier
from models.loading import read_backbone
from tests.test_training import one_torch_thread  # noqa: F401 (autouse fixture)


def _same(embedder_state: dict, source: dict, prefix: str = "") -> None:
    for key, value in embedder_state.items():
        torch.testing.assert_close(value, source[prefix + key], msg=key)


def check_contract(model, num_audio: int, seconds: float) -> None:
    """The checks of the HEAR validator (hearvalidator.validate), on white noise."""
    audio = torch.rand(num_audio, int(seconds * model.sample_rate)) * 2 - 1
    embeddings, timestamps = hear_api.get_timestamp_embeddings(audio, model)
    assert embeddings.dtype == torch.float32 and embeddings.ndim == 3 and timestamps.ndim == 2
    assert embeddings.shape[0] == num_audio and embeddings.shape[:2] == timestamps.shape
    assert embeddings.shape[2] == model.timestamp_embedding_size
    diff = np.diff(timestamps.numpy())
    assert np.abs(diff - diff.mean()).max() <= 1 and diff.max() <= 50  # regular, at most 50 ms apart
    assert timestamps.min() <= diff.mean() and 1000 * seconds - 50 <= timestamps.max() <= 1000 * seconds
    scene = hear_api.get_scene_embeddings(audio, model)
    assert scene.dtype == torch.float32 and scene.shape == (num_audio, model.scene_embedding_size)


@pytest.mark.parametrize("arch", ["atst_frame", "fpasst", "beats"])
def test_api_contract_on_every_architecture(tiny_backbone_files, arch):
    fmt, path = tiny_backbone_files[arch]
    model = hear_api.load_model(path)
    assert model.sample_rate == 16_000 and isinstance(model.scene_embedding_size, int)
    assert model.timestamp_embedding_size == model.scene_embedding_size == 64
    for num_audio, seconds in ((2, 1.07), (2, 1.98), (2, 4.0), (4, 2.74), (1, 23.5)):
        check_contract(model, num_audio, seconds)
    # a batch gives each sound the embeddings it gets alone (ATST-Frame's 80 dB floor is per clip here)
    audio = torch.rand(3, 40_000) * 2 - 1
    audio[1] *= 0.01  # a quiet clip next to loud ones
    together, _ = hear_api.get_timestamp_embeddings(audio, model)
    alone, _ = hear_api.get_timestamp_embeddings(audio[1:2], model)
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-4)


def test_stage_checkpoint_student_or_teacher(tmp_path):
    config = configs.resolve_config(2, configs.demo_config(2), {"arch": "beats"})
    config["t4_wrapper"].update(no_wrapper=True, embed_pool="int")
    student, teacher = build_model(config).state_dict(), build_model(config).state_dict()
    path = tmp_path / "beats_stage2.ckpt"
    save_sed_checkpoint(path, student, teacher, config=config)
    for mode, state in (("student", student), ("teacher", teacher)):
        model = hear_api.load_model(path, mode=mode)
        _same(model.embedder.backbone.state_dict(), state, "as_model.model.")


def test_pretrainedsed_audioset_strong_and_official_files(tiny_backbone_files, tmp_path):
    weights = read_backbone(tiny_backbone_files["fpasst"][1])
    assert (weights.arch, weights.source_format) == ("fpasst", "pretrainedsed")
    assert weights.config["fpasst"]["num_heads"] == 1  # 64-wide heads, as the released files
    four_heads = hear_api.load_model(tiny_backbone_files["fpasst"][1], overrides={"backbone": {"num_heads": 4}})
    assert four_heads.embedder.config["fpasst"]["num_heads"] == 4  # what the shapes cannot show
    with pytest.raises(CheckpointError, match=r"fpasst.embed_dim=128 in the config, 64 in the checkpoint"):
        hear_api.load_model(tiny_backbone_files["fpasst"][1], overrides={"backbone": {"embed_dim": 128}})
    official = read_backbone(tiny_backbone_files["beats"][1])
    assert (official.arch, official.source_format, official.config["beats"]["num_heads"]) == \
        ("beats", "beats_official", 2)
    # cpjku AudioSet-strong (atst_as_strong.ckpt layout): the strong branch's transformer
    backbone = create_backbone("atst_frame", embed_dim=64, depth=2, num_heads=1)
    state = {f"net_strong.model.model.{k}": v for k, v in backbone.state_dict().items()}
    state.update({"net_strong.model.head_linear_layer.weight": torch.zeros(527, 64),
                  "net_strong.model.head_linear_layer.bias": torch.zeros(527),
                  "net_strong.rnn.rnn.weight_ih_l0": torch.zeros(3, 3), "mel.window": torch.zeros(3)})
    path = tmp_path / "atst_as_strong.ckpt"
    torch.save({"state_dict": state}, path)
    model = hear_api.load_model(path)
    assert model.embedder.source_format == "cpjku_as_strong"
    _same(model.embedder.backbone.state_dict(), backbone.state_dict())
    with pytest.raises(CheckpointError, match="holds a atst_frame backbone"):
        read_backbone(path, arch="beats")


def test_downstream_checkpoint(tmp_path):
    config = downstream_config.resolve(downstream_config.NAMED_CONFIGS["demo"], {"arch": "fpasst"})
    config["frames"]["hop_s"] = 0.02  # a run with 50 frames/s: the API keeps its frame rate
    classifier = FrameClassifier(build_frame_embedder(config, **config["frames"]), n_classes=3)
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in classifier.state_dict().items()}, "config": config,
                "labels": ["a", "b", "c"]}, path)
    model = hear_api.load_model(path)
    assert model.embedder.source_format == "downstream"
    _same(model.embedder.backbone.state_dict(), classifier.embedder.backbone.state_dict())
    embeddings, timestamps = hear_api.get_timestamp_embeddings(torch.zeros(1, 16_000), model)
    assert embeddings.shape == (1, 50, 64) and float(timestamps[0, 1] - timestamps[0, 0]) == pytest.approx(20.0)


def test_errors_name_the_problem(tiny_backbone_files, tmp_path):
    with pytest.raises(ValueError, match="needs a checkpoint file"):
        hear_api.load_model("")
    path = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="no backbone found"):
        hear_api.load_model(path)
    model = hear_api.load_model(tiny_backbone_files["atst_frame"][1])
    with pytest.raises(ValueError, match=r"audio must be a tensor \(n_sounds, n_samples\)"):
        hear_api.get_scene_embeddings(torch.zeros(16_000), model)


def test_the_tensorflow_stand_in_only_answers_the_module_question():
    import types

    from helpers.hear_validate import TENSORFLOW_STAND_IN

    tf = types.ModuleType("tensorflow")
    exec(compile(TENSORFLOW_STAND_IN, "tensorflow.py", "exec"), tf.__dict__)
    assert not isinstance(torch.nn.Linear(1, 1), tf.Module)
    with pytest.raises(AttributeError, match="stand-in for hearvalidator"):
        tf.random  # noqa: B018 - the validator's TensorFlow-only paths must fail loudly
