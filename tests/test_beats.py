"""BEATs: batched Kaldi fbank front-end, released key layout, golden values and reference-fixture equivalence."""
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torchaudio.compliance import kaldi

from models.beats import (
    BEATs,
    BEATsConfig,
    BEATsFbank,
    LEGACY_KEY_RENAMES,
    build_frontend,
    relative_position_bucket,
)

FIXTURES = Path(__file__).parent / "fixtures" / "reference_t4"
WRAPPER_PREFIX = "as_model.model."  # the backbone's prefix inside the released SED state dicts
BIAS_KEY = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
TINY = dict(embed_dim=64, depth=3, num_heads=4, patch_embed_dim=32, conv_pos=16, conv_pos_groups=4,
            predictor_classes=5)


def _release_manifest() -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of the BEATs backbone in the released stage checkpoints, in order."""
    manifest = json.loads((FIXTURES / "beats" / "wrapper_state_dict.json").read_text())
    return [(k[len(WRAPPER_PREFIX):], tuple(v)) for k, v in manifest.items() if k.startswith(WRAPPER_PREFIX)]


def _reference_fill(manifest: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """The fixture README's deterministic fill rule, applied through the wrapper's key names."""
    state = {}
    for key, shape in manifest:
        rng = np.random.default_rng(zlib.crc32((WRAPPER_PREFIX + key).encode()))
        value = 0.02 * rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1 and key.endswith("weight"):
            value = 1 + value
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return state


def _per_clip_torchaudio_fbank(wav: torch.Tensor) -> torch.Tensor:
    """The reference front-end: one torchaudio Kaldi fbank per clip, normalised, frequency first."""
    fbanks = [
        kaldi.fbank(clip[None] * 2**15, num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10)
        for clip in wav
    ]
    fbank = (torch.stack(fbanks) - 15.41663) / (2 * 6.55582)  # (B, T, 128)
    return fbank.transpose(1, 2).unsqueeze(1)


def _chirp() -> torch.Tensor:
    """Input of the golden values (tests/fixtures/README.md): 10 s chirp + 440 Hz tone, (1, 160000)."""
    t = np.arange(160000) / 16000
    x = 0.1 * np.sin(2 * np.pi * (100 * t + 350 * t**2)) + 0.05 * np.sin(2 * np.pi * 440 * t)
    return torch.from_numpy(x.astype(np.float32))[None]


# --- relative position buckets ---------------------------------------------------------------------------
# Spot values hand-computed from the bucket definition (tests/fixtures/README.md), e.g. +100 -> 160 + 80 + 7 = 247.


@pytest.mark.parametrize(
    "relative, bucket",
    [(0, 0), (1, 161), (10, 170), (79, 239), (80, 240), (100, 247), (495, 303), (800, 319), (5000, 319),
     (-1, 1), (-80, 80), (-495, 143), (-5000, 159)],
)
def test_bucket_spot_values(relative, bucket):
    assert relative_position_bucket(torch.tensor([relative]), 320, 800).item() == bucket


def test_bucket_table_is_cached_per_length():
    model = BEATs(**TINY)
    table = model.encoder.bucket_table(7, torch.device("cpu"))
    assert table is model.encoder.bucket_table(7, torch.device("cpu"))
    assert table.shape == (7, 7)
    assert table[2, 5].item() == 163 and table[5, 2].item() == 3  # [query, key]: key − query
    assert model.encoder.bucket_table(9, torch.device("cpu")).shape == (9, 9)


# --- front-end -------------------------------------------------------------------------------------------


def test_batched_fbank_equals_per_clip_torchaudio():
    generator = torch.Generator().manual_seed(0)
    wav = 0.3 * torch.randn(3, 24000, generator=generator)
    wav[1] *= 1e-3  # a quiet clip: the log floor and low bands are sensitive to rounding
    wav[2, :4000] = 0.0  # digital silence hits the eps floor
    ours = BEATsFbank()(wav)
    torch.testing.assert_close(ours, _per_clip_torchaudio_fbank(wav), atol=1e-4, rtol=0)


def test_fbank_matches_reference_fixture():
    audio = torch.from_numpy(np.load(FIXTURES / "audio.npy"))
    expected = torch.from_numpy(np.load(FIXTURES / "beats" / "outputs.npz")["frontend"])
    ours = BEATsFbank()(audio)
    assert ours.shape == expected.shape == (2, 1, 128, 998)
    assert ((ours - expected).norm() / expected.norm()).item() < 1e-5  # measured 2.0e-6; README: <= 4e-6
    torch.testing.assert_close(ours, _per_clip_torchaudio_fbank(audio), atol=1e-4, rtol=0)


def test_mel_matrix_equals_torchaudio_kaldi_banks():
    banks, _ = kaldi.get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)  # (128, 256)
    expected = torch.nn.functional.pad(banks, (0, 1)).t()  # zero Nyquist row, (257, 128)
    torch.testing.assert_close(BEATsFbank().mel_matrix, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("seconds, frames", [(10, 998), (5, 498)])
def test_fbank_frame_counts(seconds, frames):
    frontend = build_frontend()
    assert frontend(torch.zeros(1, 16000 * seconds)).shape == (1, 1, 128, frames)
    assert frontend.num_frames(16000 * seconds) == frames


def test_fbank_has_no_state_and_ignores_autocast():
    frontend = BEATsFbank()
    assert list(frontend.parameters()) == [] and frontend.state_dict() == {}
    wav = 0.1 * torch.randn(2, 8000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = frontend(wav)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, frontend(wav))
    with pytest.raises(ValueError, match="at least 400 samples"):
        frontend(torch.zeros(1, 399))
    assert frontend(0.1 * torch.randn(1, 400)).shape == (1, 1, 128, 1)  # exactly one window: one frame
    assert frontend.num_mel_bins == 128


@pytest.mark.parametrize("frame_length_ms, win_length, n_fft", [(25.0, 400, 512), (32.0, 512, 512),
                                                               (16.0625, 257, 512), (16.0, 256, 256)])
def test_fbank_fft_size_is_the_window_rounded_up_to_a_power_of_two(frame_length_ms, win_length, n_fft):
    frontend = BEATsFbank(frame_length_ms=frame_length_ms)
    assert (frontend.win_length, frontend.n_fft) == (win_length, n_fft)


# --- released layout -------------------------------------------------------------------------------------


def test_state_dict_matches_release_key_for_key():
    model = BEATs()
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == _release_manifest()
    assert len(ours) == 252
    without_predictor = BEATs(predictor_classes=0).state_dict()
    assert len(without_predictor) == 250 and not any(k.startswith("predictor.") for k in without_predictor)


def test_parameter_count():
    model = BEATs(predictor_classes=0)
    assert sum(p.numel() for p in model.parameters()) == 90_311_792
    # The state dict repeats the shared 320 x 12 bias table in layers 1-11.
    assert sum(v.numel() for v in model.state_dict().values()) == 90_311_792 + 11 * 320 * 12
    summary = json.loads((FIXTURES / "summary.json").read_text())
    assert sum(p.numel() for p in BEATs().parameters()) == summary["archs"]["beats"]["n_params_backbone"]


def test_relative_bias_is_one_shared_table():
    model = BEATs(**TINY)
    tables = {id(model.state_dict(keep_vars=True)[BIAS_KEY.format(i)]) for i in range(3)}
    assert len(tables) == 1
    bias_names = [n for n, _ in model.named_parameters() if "relative_attention_bias" in n]
    assert bias_names == [BIAS_KEY.format(0)]
    # Loading copies that differ keeps the last layer's copy, like torch's load_state_dict on the reference.
    state = model.state_dict()
    for i in range(3):
        state[BIAS_KEY.format(i)] = torch.full_like(state[BIAS_KEY.format(i)], float(i))
    model.load_state_dict(state)
    assert torch.all(model.encoder.layers[0].self_attn.relative_attention_bias.weight == 2.0)


def test_legacy_weight_norm_names_load():
    model = BEATs(**TINY)
    state = model.state_dict()
    legacy = {}
    for key, value in state.items():
        old = {v: k for k, v in LEGACY_KEY_RENAMES.items()}.get(key, key)
        legacy[old] = torch.randn_like(value)
    assert "encoder.pos_conv.0.weight_g" in legacy
    model.load_state_dict(legacy)
    loaded = model.state_dict()
    torch.testing.assert_close(loaded[LEGACY_KEY_RENAMES["encoder.pos_conv.0.weight_v"]],
                               legacy["encoder.pos_conv.0.weight_v"])


# --- numerical equivalence -------------------------------------------------------------------------------


def test_golden_values():
    """Reference values (tests/fixtures/README.md): deterministic sin fill in official naming, all bias copies = layer 0's fill."""
    model = BEATs(predictor_classes=0).eval()
    official = {v: k for k, v in LEGACY_KEY_RENAMES.items()}
    shapes = {official.get(k, k): tuple(v.shape) for k, v in model.state_dict().items()}
    state = {}
    for index, key in enumerate(sorted(shapes)):
        base = np.sin(0.7 * np.arange(int(np.prod(shapes[key])), dtype=np.float64) + index)
        value = 1 + 0.1 * base if key.endswith("layer_norm.weight") else 0.02 * base
        state[key] = torch.from_numpy(value.astype(np.float32).reshape(shapes[key]))
    for i in range(1, 12):
        state[BIAS_KEY.format(i)] = state[BIAS_KEY.format(0)].clone()
    model.load_state_dict(state)  # weight_g / weight_v go through the legacy-name hook

    with torch.no_grad():
        spec = BEATsFbank()(_chirp())
        tokens = model(spec)
    assert spec.shape == (1, 1, 128, 998)
    np.testing.assert_allclose(
        [spec.mean(), spec.std(), spec.flatten()[0], spec.flatten()[-1]],
        [-0.760313, 0.507854, -0.154000, -0.403778], atol=1e-4)
    assert tokens.shape == (1, 496, 768)
    np.testing.assert_allclose(
        [tokens.mean(), tokens.std(), tokens.flatten()[0], tokens.flatten()[-1], tokens[0, 123, 456]],
        [0.003428, 0.996011, -1.787378, 0.686821, 0.078295], atol=2e-4)
    np.testing.assert_allclose(tokens[0, 0, :4], [-1.787378, -0.199428, 0.163203, 0.647575], atol=2e-4)


def test_backbone_matches_reference_fixture():
    """Released key names, README fill rule, fixture audio clip 0: backbone tokens to rel 1e-5 (measured 2e-6)."""
    model = BEATs().eval()
    model.load_state_dict(_reference_fill(_release_manifest()))
    audio = torch.from_numpy(np.load(FIXTURES / "audio.npy"))[:1]
    expected = torch.from_numpy(np.load(FIXTURES / "beats" / "outputs.npz")["backbone"])[:1]
    with torch.no_grad():
        tokens = model(BEATsFbank()(audio))
    assert tokens.shape == expected.shape == (1, 496, 768)
    assert ((tokens - expected).norm() / expected.norm()).item() < 1e-5


def _randomised_tiny(**overrides) -> BEATs:
    torch.manual_seed(0)
    model = BEATs(**{**TINY, **overrides})
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "grep_a" in name or "relative_attention_bias" in name:
                param.normal_(0.0, 1.0)  # make the gate and the bias matter
    return model


def test_sdpa_matches_eager():
    spec = torch.randn(2, 1, 128, 200)
    model = _randomised_tiny().eval()
    with torch.no_grad():
        fused = model(spec)
        for layer in model.encoder.layers:
            layer.self_attn.use_sdpa = False
        eager = model(spec)
    assert (fused - eager).abs().max().item() < 1e-5


def test_tiny_forward_backward():
    model = _randomised_tiny().train()
    spec = torch.randn(2, 1, 128, 498)  # 5 s
    tokens = model(spec)
    assert tokens.shape == (2, 31 * 8, 64)
    assert torch.isfinite(tokens).all()
    tokens.square().mean().backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert without_grad == ["predictor.weight", "predictor.bias"]  # the predictor only holds released weights


def test_tiny_under_autocast():
    model = _randomised_tiny().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = model(torch.randn(1, 1, 128, 160))
    assert tokens.shape == (1, 80, 64) and torch.isfinite(tokens.float()).all()


def test_pool_frequency_averages_each_time_steps_frequency_tokens():
    torch.manual_seed(0)
    interleaved = _randomised_tiny().eval()
    pooled = BEATs(**TINY, pool_frequency=True).eval()
    assert pooled.state_dict().keys() == interleaved.state_dict().keys()  # no parameters: same checkpoints
    pooled.load_state_dict(interleaved.state_dict())
    spec = torch.randn(2, 1, 128, 160)  # 10 time steps x 8 frequency patches
    with torch.no_grad():
        tokens, frames = interleaved(spec), pooled(spec)
    assert tokens.shape == (2, 80, 64) and frames.shape == (2, 10, 64)
    torch.testing.assert_close(frames, tokens.view(2, 10, 8, 64).mean(dim=2))
    torch.testing.assert_close(frames[:, 3], tokens[:, 24:32].mean(dim=1))  # index 8·t + f: time step 3


# --- layer dropping, parameter groups, cfg ---------------------------------------------------------------


def test_drop_top_layers_equals_intermediate_output():
    full = _randomised_tiny().eval()
    kept = BEATs(**TINY, drop_top_layers=1).eval()
    assert kept.depth == 2 and kept.removed_block_prefixes() == ["encoder.layers.2."]
    state = {k: v for k, v in full.state_dict().items()
             if not any(k.startswith(p) for p in kept.removed_block_prefixes())}
    kept.load_state_dict(state)
    captured = {}
    full.encoder.layers[1].register_forward_hook(lambda module, args, out: captured.setdefault("out", out))
    spec = torch.randn(1, 1, 128, 96)
    with torch.no_grad():
        full(spec)
        torch.testing.assert_close(kept(spec), captured["out"])
    assert BEATs(drop_top_layers=2, predictor_classes=0).removed_block_prefixes() == [
        "encoder.layers.10.", "encoder.layers.11."]
    with pytest.raises(ValueError, match="drop_top_layers"):
        BEATs(**TINY, drop_top_layers=3)


@pytest.mark.parametrize("drop, predictor_classes", [(0, 5), (1, 5), (0, 0)])
def test_lr_groups_cover_every_parameter_once(drop, predictor_classes):
    model = BEATs(**{**TINY, "predictor_classes": predictor_classes}, drop_top_layers=drop)
    groups = model.lr_groups()
    assert len(groups) == model.depth + 2
    flat = [name for group in groups for name in group]
    assert sorted(flat) == sorted(n for n, _ in model.named_parameters())
    assert len(flat) == len(set(flat))
    assert groups[0] == (["predictor.weight", "predictor.bias"] if predictor_classes else [])
    assert all(n.startswith(f"encoder.layers.{model.depth - 1}.") for n in groups[1])
    assert BIAS_KEY.format(0) in groups[-2]
    assert "patch_embedding.weight" in groups[-1] and "encoder.pos_conv.0.bias" in groups[-1]


def test_from_cfg(caplog):
    official = {"input_patch_size": 16, "embed_dim": 512, "conv_bias": False, "encoder_layers": 2,
                "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4,
                "activation_fn": "gelu", "deep_norm": True, "layer_norm_first": False,
                "relative_position_embedding": True, "gru_rel_pos": True, "num_buckets": 320, "max_distance": 800,
                "conv_pos": 16, "conv_pos_groups": 4, "finetuned_model": False, "encoder_layerdrop": 0.05,
                "some_fairseq_leftover": 1}
    with caplog.at_level(logging.WARNING):
        model = BEATs.from_cfg(official)
    assert "some_fairseq_leftover" in caplog.text
    assert model.depth == 2 and model.embed_dim == 64 and model.predictor is None
    assert model.encoder.layerdrop == 0.05
    assert model.encoder.layers[0].fc1.out_features == 128
    assert model.encoder.layers[0].deep_norm_alpha == pytest.approx(4**0.25)
    assert BEATsConfig().max_distance == 800 and BEATs.from_cfg({}).predictor is not None
    with pytest.raises(ValueError, match="layer_norm_first"):
        BEATs.from_cfg({"layer_norm_first": True})


def test_random_init_is_finite_and_weight_equals_v():
    """A freshly built BEATs (no checkpoint: the demo trains from scratch) must produce finite outputs."""
    torch.manual_seed(0)
    model = BEATs(embed_dim=64, depth=2, num_heads=2, patch_embed_dim=32).eval()
    conv = model.encoder.pos_conv[0]
    params = conv.parametrizations["weight"]
    assert torch.isfinite(params.original1).all()
    torch.testing.assert_close(conv.weight(), params.original1)
    spec = torch.randn(1, 1, 128, 200)
    with torch.no_grad():
        out = model(spec)
    assert torch.isfinite(out).all()
