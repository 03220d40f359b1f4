"""ATST-Frame and fPaSST: front-ends, backbones, golden values and reference fixtures.

Golden values were computed by the public reference implementations (PretrainedSED 1aa47e4 around audiossl
ATST-Frame, cpjku_dcase24 9b5cb78 fPaSST) with the deterministic fill below; the front-end fixtures in
``fixtures/reference_t4`` by CPJKU/cpjku_dcase24. Provenance: ``tests/fixtures/README.md`` (Golden values).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models import atst_frame, fpasst
from models.atst_frame import ATSTFrame, ATSTMel
from models.fpasst import FPaSST, PaSSTMel
from models.vit import set_use_sdpa

FIXTURES = Path(__file__).parent / "fixtures" / "reference_t4"
SR = 16_000
TINY = dict(embed_dim=64, depth=4, num_heads=2)
# fPaSST's golden and fixture front-ends use the DCASE'24 command line setting fmax_aug_range=2000 (fmax 7000 Hz)
PASST_MEL_CFG = dict(fmax_aug_range=2000)

GOLDEN = {
    "atst_frame": dict(
        frontend_shape=(1, 1, 64, 1001), frontend=(-0.429890, 0.303615, 0.605760, 0.405422),
        backbone_shape=(1, 250, 768), backbone=(0.000245, 1.002564, -1.536563, 0.130125),
        first4=(-1.536563, -0.115003, 1.320398, 0.226714), spot=1.472618),
    "fpasst": dict(
        frontend_shape=(1, 1, 128, 1000), frontend=(-1.821258, 0.936455, -2.323619, 0.496698),
        backbone_shape=(1, 250, 768), backbone=(-0.000516, 1.002075, -1.266577, -0.533251),
        first4=(-1.266577, -0.256617, 1.470549, -0.306386), spot=1.657609),
}
ATOL = 1e-4


def deterministic_fill_(module: nn.Module) -> None:
    """The golden fill (tests/fixtures/README.md): key i of sorted(state_dict) gets sin(0.7 * arange(n) + i), scaled (1 + 0.1x for LN weights)."""
    layer_norm_weights = {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, nn.LayerNorm)}
    state = module.state_dict()
    filled = {}
    for i, key in enumerate(sorted(state)):
        base = np.sin(0.7 * np.arange(state[key].numel(), dtype=np.float64) + i)
        value = 1 + 0.1 * base if key in layer_norm_weights else 0.02 * base
        filled[key] = torch.from_numpy(value.astype(np.float32)).reshape(state[key].shape)
    module.load_state_dict(filled)


def chirp(seconds: float = 10.0) -> torch.Tensor:
    """The golden input: a 100 Hz chirp (+700 Hz/s) plus a 440 Hz tone, [1, N] float32."""
    t = np.arange(int(seconds * SR)) / SR
    x = 0.1 * np.sin(2 * np.pi * (100 * t + 350 * t ** 2)) + 0.05 * np.sin(2 * np.pi * 440 * t)
    return torch.from_numpy(x.astype(np.float32))[None]


def make_frontend(arch: str) -> nn.Module:
    return atst_frame.build_frontend() if arch == "atst_frame" else fpasst.build_frontend(**PASST_MEL_CFG)


def make_backbone(arch: str, **kwargs) -> nn.Module:
    return ATSTFrame(**kwargs) if arch == "atst_frame" else FPaSST(**kwargs)


def transformer(model: nn.Module) -> nn.Module:
    """The module whose keys the golden fill uses (FrameAST inside ATSTFrame; FPaSST itself)."""
    return model.atst if isinstance(model, ATSTFrame) else model


@pytest.fixture(scope="module", params=["atst_frame", "fpasst"])
def golden_model(request):
    with torch.device("meta"):  # skip the (slow) random init: every value is overwritten by the fill
        model = make_backbone(request.param)
    model = model.to_empty(device="cpu").eval()
    deterministic_fill_(transformer(model))
    return request.param, model


# --- structure -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch, n_keys, n_params", [("atst_frame", 138, 85_419_264), ("fpasst", 159, 88_421_632)])
def test_keys_shapes_and_parameter_counts(arch, n_keys, n_params):
    with torch.device("meta"):  # shapes only: no memory, no init
        model = make_backbone(arch)
    state = model.state_dict()
    assert len(state) == n_keys
    assert sum(p.numel() for p in model.parameters()) == n_params
    # keys and shapes of the released checkpoints: the wrapper's ``as_model.model.*`` entries (minus the head)
    released = json.loads((FIXTURES / arch / "wrapper_state_dict.json").read_text())
    prefix = "as_model.model."
    expected = {key[len(prefix):]: shape for key, shape in released.items() if key.startswith(prefix)}
    assert {key: list(value.shape) for key, value in state.items()} == expected
    assert model.embed_dim == 768 and model.depth == 12


@pytest.mark.parametrize("arch", ["atst_frame", "fpasst"])
def test_frontend_has_no_state_and_runs_in_float32_under_autocast(arch):
    frontend = make_frontend(arch)
    assert len(frontend.state_dict()) == 0 and len(list(frontend.parameters())) == 0
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        spec = frontend(torch.randn(2, SR) * 0.1)
    assert spec.dtype == torch.float32


@pytest.mark.parametrize("arch, frames_10s, frames_5s", [("atst_frame", 1001, 501), ("fpasst", 1000, 500)])
def test_frontend_frame_counts(arch, frames_10s, frames_5s):
    frontend = make_frontend(arch).eval()
    n_mels = 64 if arch == "atst_frame" else 128
    assert frontend(torch.randn(2, 10 * SR) * 0.1).shape == (2, 1, n_mels, frames_10s)
    assert frontend(torch.randn(1, 5 * SR) * 0.1).shape == (1, 1, n_mels, frames_5s)


# --- numbers of the reference ----------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["atst_frame", "fpasst"])
def test_frontend_matches_reference_fixture(arch):
    audio = torch.from_numpy(np.load(FIXTURES / "audio.npy"))
    expected = np.load(FIXTURES / arch / "outputs.npz")["frontend"]
    ours = make_frontend(arch).eval()(audio).numpy()
    assert ours.shape == expected.shape
    assert np.linalg.norm(ours - expected) / np.linalg.norm(expected) < 1e-5  # measured <= 2.9e-6 (fPaSST)


def _stats(x: torch.Tensor) -> tuple[float, float, float, float]:
    flat = x.flatten()
    return x.mean().item(), x.std().item(), flat[0].item(), flat[-1].item()


def test_golden_values(golden_model):
    arch, model = golden_model
    golden = GOLDEN[arch]
    spec = make_frontend(arch).eval()(chirp())
    assert tuple(spec.shape) == golden["frontend_shape"]
    np.testing.assert_allclose(_stats(spec), golden["frontend"], atol=ATOL)
    with torch.no_grad():
        emb = model(spec)
    assert tuple(emb.shape) == golden["backbone_shape"]
    np.testing.assert_allclose(_stats(emb), golden["backbone"], atol=ATOL)
    np.testing.assert_allclose(emb[0, 0, :4].numpy(), golden["first4"], atol=ATOL)
    assert emb[0, 123, 456].item() == pytest.approx(golden["spot"], abs=ATOL)


def test_sdpa_matches_eager_attention(golden_model):
    arch, model = golden_model
    spec = make_frontend(arch).eval()(chirp(seconds=1.0))
    with torch.no_grad():
        fused = model(spec)
        set_use_sdpa(model, False)
        try:
            eager = model(spec)
        finally:
            set_use_sdpa(model, True)
    assert (fused - eager).abs().max().item() < 1e-5


# --- ATST front-end: the batch-wide top_db floor ---------------------------------------------------------

def test_atst_top_db_is_batch_wide_by_default_and_per_clip_on_request():
    generator = torch.Generator().manual_seed(0)
    quiet = 1e-4 * torch.randn(1, 2 * SR, generator=generator)
    loud = 0.5 * torch.randn(1, 2 * SR, generator=generator)
    quiet[:, SR:] *= 1e-4  # a quiet clip with a > 80 dB range, so the floor matters for it
    batch = torch.cat([quiet, loud])

    batch_wide = ATSTMel()
    assert not torch.allclose(batch_wide(quiet)[0], batch_wide(batch)[0], atol=1e-3)  # the loud clip leaks in
    assert torch.equal(batch_wide(loud)[0], batch_wide(batch)[1])  # the loudest clip sets the floor

    per_clip = ATSTMel(per_sample_top_db=True)
    assert torch.allclose(per_clip(quiet)[0], per_clip(batch)[0], atol=1e-6)
    assert torch.allclose(per_clip(loud)[0], per_clip(batch)[1], atol=1e-6)


def test_atst_mel_matrix_and_frame_limit_are_the_pretrained_models():
    """64 HTK mels 60-7800 Hz at 16 kHz on a 1024-point FFT, bit for bit as torchaudio builds them; 10 s at a 10 ms
    hop with centre padding is 1001 frames, the chunk length of long inputs."""
    import torchaudio

    expected = torchaudio.functional.melscale_fbanks(n_freqs=513, f_min=60.0, f_max=7800.0, n_mels=64,
                                                     sample_rate=16_000, norm=None, mel_scale="htk")
    assert torch.equal(ATSTMel().mel_fb, expected)
    assert atst_frame.MAX_FRAMES == 1 + 10 * SR // atst_frame.HOP_LENGTH == ATSTMel()(torch.zeros(1, 10 * SR)).shape[-1]


def test_atst_per_clip_front_end_equals_torchaudio_on_each_clip_with_the_clamps():
    """``per_sample_top_db=True``: each clip as torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB(top_db=80)`` on
    that clip alone (an independent implementation), clamped to [-50, 80] dB and scaled with the fixed MinMax. The
    loud clip exceeds 80 dB (the upper clamp acts), the quiet one spans more than 80 dB (its own floor acts)."""
    import torchaudio

    generator = torch.Generator().manual_seed(0)
    loud = 3e3 * torch.randn(1, SR, generator=generator)
    quiet = 1e-3 * torch.randn(1, SR, generator=generator)
    quiet[:, SR // 2:] *= 1e-5
    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=atst_frame.N_FFT, hop_length=atst_frame.HOP_LENGTH,
                                               f_min=atst_frame.F_MIN, f_max=atst_frame.F_MAX,
                                               n_mels=atst_frame.N_MELS)
    to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=atst_frame.TOP_DB)
    batch = torch.cat([loud, quiet])
    out = ATSTMel(per_sample_top_db=True)(batch)
    for i, clip in enumerate(batch):
        db = to_db(mel(clip))  # [64, T]: torchaudio floors a 2-D input at its own maximum - 80 dB
        span = db.amax() - db.amin()
        assert (db.amax() > atst_frame.DB_CLAMP_MAX) if i == 0 else (span >= atst_frame.TOP_DB - 1e-3)
        db = db.clamp(atst_frame.DB_CLAMP_MIN, atst_frame.DB_CLAMP_MAX)
        expected = (db - atst_frame.DB_NORM_MIN) / (atst_frame.DB_NORM_MAX - atst_frame.DB_NORM_MIN) * 2 - 1
        torch.testing.assert_close(out[i, 0], expected, atol=1e-4, rtol=0)


# --- fPaSST front-end: band-limit augmentation ------------------------------------------------------------

def test_passt_fmax_none_and_cached_eval_matrix():
    assert PaSSTMel(fmax_aug_range=2000).fmax == 7000
    assert PaSSTMel().fmax == 8000  # range 1: sr // 2 - 0
    frontend = PaSSTMel(fmin_aug_range=10, fmax_aug_range=1000).eval()
    wav = 0.1 * torch.randn(2, SR)
    assert torch.equal(frontend(wav), frontend(wav))  # no random draws in eval
    assert torch.equal(frontend._current_mel_basis(), frontend.mel_basis)


def test_passt_frequency_augmentation_only_in_training():
    wav = 0.1 * torch.randn(2, SR, generator=torch.Generator().manual_seed(1))
    frontend = PaSSTMel(fmin_aug_range=10, fmax_aug_range=1000)
    evaluation = frontend.eval()(wav)

    frontend.train()
    torch.manual_seed(3)
    first = frontend(wav)
    torch.manual_seed(3)
    fmin = 0.0 + torch.randint(10, (1,)).item()  # the reference's draw order: fmin, then fmax
    fmax = 7500.0 + 500 - torch.randint(1000, (1,)).item()
    assert (fmin, fmax) != (0.0, 7500.0)
    expected = PaSSTMel(fmin=fmin, fmax=fmax).eval()(wav)
    assert torch.allclose(first, expected, atol=1e-6)
    assert not torch.allclose(first, evaluation, atol=1e-3)

    no_aug = PaSSTMel().train()  # ranges of 1: training equals evaluation
    assert torch.equal(no_aug(wav), no_aug.eval()(wav))


@pytest.mark.parametrize("fmin_range, fmax_range", [(10, 1), (1, 1000), (10, 1000)])
def test_passt_training_band_is_recomputed_when_either_edge_moves(fmin_range, fmax_range):
    """One edge drawn away from its default is enough for a new mel matrix (the other kept)."""
    frontend = PaSSTMel(fmin_aug_range=fmin_range, fmax_aug_range=fmax_range).train()
    moved = 0
    for seed in range(6):
        torch.manual_seed(seed)
        fmin = frontend.fmin + torch.randint(fmin_range, (1,)).item()
        fmax = frontend.fmax + fmax_range // 2 - torch.randint(fmax_range, (1,)).item()
        moved += (fmin, fmax) != (frontend.fmin, frontend.fmax)
        torch.manual_seed(seed)
        assert torch.equal(frontend._current_mel_basis(), frontend._mel_basis(fmin, fmax)), (seed, fmin, fmax)
    assert moved >= 3


def test_passt_training_band_follows_the_module_device():
    frontend = PaSSTMel(fmin_aug_range=10, fmax_aug_range=1000).to("meta").train()
    torch.manual_seed(0)
    assert frontend._current_mel_basis().device.type == "meta"


def test_passt_same_padding_by_hand():
    """``padding="same"``: reflect-pad (win - hop) // 2 = 120 samples on each side, frames without centring:
    frame t is the n_fft = 512 samples from 160 t, weighted by the 400-sample periodic Hann window centred in them
    (torch.stft's zero-padded window), as numpy computes it here."""
    wav = 0.1 * torch.randn(1, 4000, generator=torch.Generator().manual_seed(2))
    out = PaSSTMel(padding="same").eval()(wav)[0, 0].double().numpy()  # [128, T]
    x = wav[0].double().numpy()
    x = x[1:] - fpasst.PREEMPHASIS * x[:-1]
    x = np.pad(x, (120, 120), mode="reflect")
    window = np.zeros(512)
    window[56:456] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = np.stack([x[t * 160: t * 160 + 512] * window for t in range(1 + (len(x) - 512) // 160)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [T, 257]
    mel = PaSSTMel().mel_basis.double().numpy() @ power.T
    expected = (np.log(np.maximum(mel, fpasst.LOG_FLOOR)) + fpasst.FAST_NORM_SHIFT) / fpasst.FAST_NORM_SCALE
    assert out.shape == expected.shape == (128, 24)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_passt_window_shape_and_odd_sample_rate():
    assert torch.equal(PaSSTMel(periodic_window=False).window, torch.hann_window(400, periodic=False))
    assert torch.equal(PaSSTMel().window, torch.hann_window(400, periodic=True))
    assert PaSSTMel(sr=11_025).fmax == 5512.0  # sr // 2 - fmax_aug_range // 2


def test_passt_masking_in_training_is_one_band_and_one_span_for_the_whole_batch():
    """``freqm`` / ``timem``: torchaudio's masking with ``iid_masks=False`` (the reference): in training, one
    frequency band and one time span set to 0 (log domain, before the fast normalisation) for every clip."""
    wav = 0.1 * torch.randn(3, SR, generator=torch.Generator().manual_seed(4))
    frontend = PaSSTMel(freqm=48, timem=40)
    clean = frontend.eval()(wav)
    frontend.train()
    masked_value = (0.0 + fpasst.FAST_NORM_SHIFT) / fpasst.FAST_NORM_SCALE
    rows = columns = 0
    for seed in range(4):
        torch.manual_seed(seed)
        out = frontend(wav)
        masked = out != clean  # [3, 1, 128, T]
        assert torch.all(out[masked] == masked_value)
        assert torch.equal(masked[0], masked[1]) and torch.equal(masked[0], masked[2])  # one mask for the batch
        full_rows, full_columns = masked[0, 0].all(1), masked[0, 0].all(0)
        assert torch.equal(masked[0, 0], full_rows[:, None] | full_columns[None, :])  # whole bands and spans only
        rows, columns = rows + int(full_rows.sum()), columns + int(full_columns.sum())
    assert rows > 0 and columns > 0


def test_passt_defaults_have_no_masking_and_accept_a_full_window():
    frontend = PaSSTMel()
    assert isinstance(frontend.freqm, nn.Identity) and isinstance(frontend.timem, nn.Identity)
    assert PaSSTMel(win_length=None).win_length == 512  # None: the FFT size
    assert PaSSTMel(win_length=512).window.shape == (512,)  # a window as long as the FFT is allowed


@pytest.mark.parametrize("settings, message", [
    ({"n_fft": [512, 1024]}, r"passt_mel\.n_fft=\[512, 1024\]: only one STFT resolution"),
    ({"win_length": [400, 800]}, r"passt_mel\.win_length=\[400, 800\]: only one STFT resolution"),
    ({"win_length": 600}, r"passt_mel\.win_length=600 must not exceed passt_mel\.n_fft=512"),
    ({"fmin_aug_range": 0}, r"passt_mel\.fmin_aug_range=0 must be >= 1"),
    ({"fmax_aug_range": 0}, r"passt_mel\.fmax_aug_range=0 must be >= 1"),
    ({"padding": "valid"}, r"passt_mel\.padding='valid' must be 'center' or 'same'"),
    ({"htk": True}, r"passt_mel\.htk=True has no effect"),
    ({"norm": 2}, r"passt_mel\.norm=2 has no effect"),
    ({"trainable": True}, r"passt_mel\.trainable=True has no effect"),
])
def test_passt_errors_name_the_key_and_value(settings, message):
    with pytest.raises(ValueError, match=message):
        PaSSTMel(**settings)


def test_passt_rejects_unsupported_settings():
    with pytest.raises(ValueError, match="fmax_aug_range"):
        PaSSTMel(fmax_aug_range=0)
    with pytest.raises(ValueError, match="htk"):
        PaSSTMel(htk=True)
    with pytest.raises(ValueError, match="n_fft"):
        PaSSTMel(n_fft=[512, 1024], win_length=[400, 800])
    with pytest.raises(ValueError, match="frame_patchout"):
        FPaSST(frame_patchout=300)


# --- tiny variants: training, dropping layers, LR groups, long inputs ------------------------------------

@pytest.mark.parametrize("arch", ["atst_frame", "fpasst"])
def test_tiny_forward_backward(arch):
    torch.manual_seed(0)
    model = make_backbone(arch, **TINY, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1).train()
    frontend = make_frontend(arch).train()
    emb = model(frontend(0.1 * torch.randn(2, 3 * SR)))
    assert emb.shape == (2, 75, 64) and torch.isfinite(emb).all()
    emb.square().mean().backward()
    for name, param in model.named_parameters():
        if name.endswith("mask_embed"):  # the SSL mask token is not used by forward
            continue
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("arch, final_norm", [("atst_frame", "norm_frame"), ("fpasst", "norm")])
def test_drop_top_layers_equals_first_blocks_of_full_model(arch, final_norm):
    torch.manual_seed(0)
    full = make_backbone(arch, **TINY).eval()
    reduced = make_backbone(arch, **TINY, drop_top_layers=1).eval()
    assert reduced.depth == 3
    prefix = "atst." if arch == "atst_frame" else ""
    assert reduced.removed_block_prefixes() == [f"{prefix}blocks.3."]
    state = {k: v for k, v in full.state_dict().items()
             if not any(k.startswith(p) for p in reduced.removed_block_prefixes())}
    reduced.load_state_dict(state)  # strict: exactly the full model minus the removed block

    truncated = copy.deepcopy(full)
    net = transformer(truncated)
    net.blocks = net.blocks[:3]  # the full model's first L - k blocks, then its final norm
    assert hasattr(net, final_norm)
    spec = make_frontend(arch).eval()(0.1 * torch.randn(1, 2 * SR))
    with torch.no_grad():
        assert torch.equal(reduced(spec), truncated(spec))
        assert not torch.allclose(reduced(spec), full(spec))
    with pytest.raises(ValueError, match="drop_top_layers"):
        make_backbone(arch, **TINY, drop_top_layers=4)


@pytest.mark.parametrize("arch, final_norm, embedding_key",
                         [("atst_frame", "atst.norm_frame.weight", "atst.pos_embed"),
                          ("fpasst", "norm.weight", "conv_in_1.weight")])
@pytest.mark.parametrize("drop_top_layers", [0, 2])
def test_lr_groups_cover_every_parameter_once(arch, final_norm, embedding_key, drop_top_layers):
    model = make_backbone(arch, embed_dim=64, depth=12, num_heads=2, drop_top_layers=drop_top_layers)
    groups = model.lr_groups()
    assert len(groups) == model.depth + 2
    flat = [name for group in groups for name in group]
    assert sorted(flat) == sorted(name for name, _ in model.named_parameters())
    assert len(flat) == len(set(flat))
    assert final_norm in groups[0] and embedding_key in groups[-1]
    prefix = "atst.blocks." if arch == "atst_frame" else "blocks."
    for position, block in enumerate(range(model.depth - 1, -1, -1), start=1):  # top block first
        assert groups[position] and all(name.startswith(f"{prefix}{block}.") for name in groups[position])


def test_atst_long_input_is_chunked_like_consecutive_10s_segments():
    torch.manual_seed(0)
    model = ATSTFrame(**TINY).eval()
    spec = ATSTMel()(0.1 * torch.randn(1, 25 * SR))  # [1, 1, 64, 2501]
    with torch.no_grad():
        out = model(spec)
        chunks = [model.atst(spec[..., 0:1001]), model.atst(spec[..., 1000:2001]), model.atst(spec[..., 2000:])]
        assert out.shape == (1, 2501 // 4, 64)
        assert torch.allclose(out, torch.cat(chunks, dim=1), atol=1e-6)
        # a remainder shorter than one patch yields no token
        assert model(spec[..., :2001]).shape == (1, 500, 64)
        assert torch.allclose(model(spec[..., :2001]), torch.cat(chunks[:2], dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="ATSTFrame"):
        model.atst(spec)  # the bare transformer refuses instead of crashing on the positions


def test_fpasst_long_input_is_chunked_in_10s_pieces():
    torch.manual_seed(0)
    model = FPaSST(**TINY).eval()
    spec = PaSSTMel()(0.1 * torch.randn(1, 25 * SR))  # [1, 1, 128, 2500]
    with torch.no_grad():
        out = model(spec)
        chunks = [model(spec[..., 0:1000]), model(spec[..., 1000:2000]), model(spec[..., 2000:])]
        assert out.shape == (1, 625, 64)
        assert torch.allclose(out, torch.cat(chunks, dim=1), atol=1e-6)
        assert model(spec[..., :1001]).shape == (1, 251, 64)


def test_fpasst_short_input_positions_first_in_eval_random_in_training():
    torch.manual_seed(0)
    model = FPaSST(**TINY)
    spec = PaSSTMel()(0.1 * torch.randn(1, 5 * SR))  # 125 tokens < 250 positions
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(spec), model(spec))
        model.train()  # no dropout configured: only the position offset is random
        outputs = [model(spec) for _ in range(4)]
    assert any(not torch.allclose(outputs[0], o) for o in outputs[1:])
