"""Frame embeddings of bare backbones: tokens -> frames, long audio in windows, layer-wise learning-rate decay."""
from __future__ import annotations

import pytest
import torch

import configs
import configs.downstream as downstream_config
from models.factory import build_frame_embedder
from models.frame_embedder import (
    FrameClassifier,
    frame_centres_ms,
    sequence_to_frames,
    steps_to_frames,
    tokens_to_steps,
)
from models.param_groups import layer_decay_groups
from models.registry import ARCH_SPECS
from tests.test_training import one_torch_thread  # noqa: F401 (autouse fixture)

ARCHS = ("atst_frame", "fpasst", "beats")


def tiny_config(arch: str, **frames) -> dict:
    return downstream_config.resolve(downstream_config.NAMED_CONFIGS["demo"], {"arch": arch, "frames": frames})


def embedder(arch: str, **frames):
    config = tiny_config(arch, **frames)
    torch.manual_seed(0)
    return build_frame_embedder(config, **config["frames"]).eval()


def test_time_steps_are_interpolated_at_the_frame_centres():
    steps = torch.arange(5.0)[None, :, None]  # step t has value t, centred at (t + 0.5) * 0.16 s
    frames = steps_to_frames(steps, 0.16, 20, 0.04)[0, :, 0]
    # frame k at (k + 0.5) * 0.04 s lies at step position (k + 0.5) / 4 - 0.5 (clamped to the ends)
    expected = ((torch.arange(20.0) + 0.5) / 4 - 0.5).clamp(0, 4)
    torch.testing.assert_close(frames, expected)
    tokens = torch.arange(16.0).reshape(1, 16, 1)  # 2 steps x 8 frequency tokens, time-major
    torch.testing.assert_close(tokens_to_steps(tokens, 8)[0, :, 0], torch.tensor([3.5, 11.5]))
    with pytest.raises(ValueError, match="whole number of time steps"):
        tokens_to_steps(torch.zeros(1, 10, 1), 8)


def test_sequence_pooling_is_pretrainedseds_rule():
    tokens = torch.randn(2, 496, 3)
    pooled = sequence_to_frames(tokens, 250)
    torch.testing.assert_close(pooled, torch.nn.functional.adaptive_avg_pool1d(tokens.transpose(1, 2), 250)
                               .transpose(1, 2))
    short = torch.randn(1, 62, 3)
    torch.testing.assert_close(sequence_to_frames(short, 250), torch.nn.functional.interpolate(
        short.transpose(1, 2), size=250, mode="linear").transpose(1, 2))
    exact = tokens[:, :250]
    assert sequence_to_frames(exact, 250) is exact


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", ["time", "sequence"])
def test_any_length_gives_the_frames_inside_it(arch, pooling):
    model = embedder(arch, token_pooling=pooling)
    with torch.no_grad():
        for samples, frames in ((17_120, 27), (31_680, 50), (160_000, 250), (400_000, 625)):
            out = model(0.1 * torch.randn(2, samples))
            assert out.shape == (2, frames, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    if arch != "beats":  # one token per 40 ms step: both poolings leave the tokens as they are
        features = model.features(0.1 * torch.randn(1, 160_000))
        torch.testing.assert_close(model.frames_from_features(features), model.backbone(features))


def test_long_audio_runs_in_windows_that_are_overlap_added():
    model = embedder("beats")  # no batch statistics in its front-end: windows are independent
    audio = 0.1 * torch.randn(1, 25 * 16_000)
    with torch.no_grad():
        whole = model(audio)
        windows = [audio[:, s:s + 160_000] for s in (0, 160_000, 320_000)]  # the last one 5 s, zero-padded
        pieces = [model(torch.nn.functional.pad(w, (0, 160_000 - w.shape[1]))) for w in windows]
        torch.testing.assert_close(whole, torch.cat(pieces, dim=1)[:, :625])
        overlapped = model(audio, window_hop_s=5.0)
        second = model(audio[:, 80_000:240_000])  # the window starting at 5 s
    # frames 125 .. 249 (5 .. 10 s) are covered by the windows starting at 0 s and 5 s: their mean
    torch.testing.assert_close(overlapped[:, 125:250], (pieces[0][:, 125:250] + second[:, :125]) / 2)
    with pytest.raises(ValueError, match="window hop"):
        model(audio, window_hop_s=12.0)


def test_classifier_head_and_timestamps():
    model = FrameClassifier(embedder("atst_frame"), n_classes=5).eval()
    with torch.no_grad():
        logits = model(0.1 * torch.randn(3, 48_000))
    assert logits.shape == (3, 75, 5)
    torch.testing.assert_close(frame_centres_ms(3, 0.04), torch.tensor([20.0, 60.0, 100.0]))


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_decay_groups_follow_pretrainedsed(arch):
    config = configs.merge_config(tiny_config(arch), {arch: {"depth": 3}})
    backbone = build_frame_embedder(config).backbone
    groups = layer_decay_groups(backbone, lr=1.0, decay=0.5, weight_decay=0.01, prefix="x.")
    by_name = {g["name"]: g for g in groups}
    # [final norm (BEATs: predictor), block 2, block 1, block 0, embeddings]: exponents 1, 1, 2, 3, 3
    assert by_name["pt1"]["lr"] == 0.5 and by_name["pt2"]["lr"] == 0.25 and by_name["pt3"]["lr"] == 0.125
    assert by_name["pt4"]["lr"] == 0.125
    if "pt0" in by_name:
        assert by_name["pt0"]["lr"] == 0.5
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in backbone.parameters()) and len(set(ids)) == len(ids)
    assert all(g["weight_decay"] == 0.01 for g in groups)


def test_registry_knows_each_backbones_time_steps():
    assert {a: (ARCH_SPECS[a].token_hop_s, ARCH_SPECS[a].tokens_per_step) for a in ARCHS} == \
        {"atst_frame": (0.04, 1), "fpasst": (0.04, 1), "beats": (0.16, 8)}
    assert ARCH_SPECS["beats"].tokens_10s == 62 * ARCH_SPECS["beats"].tokens_per_step
