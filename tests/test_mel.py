"""The CNN branch's mel front-end (models/mel.py) against torchaudio and by hand, beyond the released settings.

The released settings are checked against the reference's own features in ``test_sed_model.py``
(``fixtures/reference_t4/cnn_features.npy``); here every other configuration the ``mel`` / ``scaler`` config
blocks allow is checked against an independent computation.
"""
from __future__ import annotations

import pytest
import torch
import torchaudio

from models.mel import CNNMel

SR = 16_000


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(SR) / SR
    tone = 0.3 * torch.sin(2 * torch.pi * 440 * t)
    return torch.stack([tone + 0.01 * torch.randn(SR, generator=generator), 0.05 * torch.randn(SR, generator=generator)])


def test_non_default_mel_settings_equal_torchaudio(wav):
    """win_length None (= n_fft), f_max None (= sr / 2), a periodic Hann window by name, power 2."""
    ours = CNNMel(sample_rate=22_050, n_fft=1024, win_length=None, hop_length=160, f_min=50.0, f_max=None, n_mels=64,
                  window_fn="hann_window", wkwargs={"periodic": True}, power=2.0)
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=22_050, n_fft=1024, win_length=1024, hop_length=160, f_min=50.0, f_max=11_025.0, n_mels=64,
        window_fn=torch.hann_window, wkwargs={"periodic": True}, power=2.0, center=True, pad_mode="reflect",
        norm=None, mel_scale="htk")
    torch.testing.assert_close(ours.mel_amplitude(wav), reference(wav).unsqueeze(1), rtol=1e-4, atol=1e-4)


def test_default_mel_settings_equal_torchaudio(wav):
    """The reference's ``mel`` block: n_fft = win = 2048, hop 256, 0-8000 Hz, 128 mels, Hamming non-periodic, power 1."""
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=2048, win_length=2048, hop_length=256, f_min=0.0, f_max=8000.0, n_mels=128,
        window_fn=torch.hamming_window, wkwargs={"periodic": False}, power=1.0)
    torch.testing.assert_close(CNNMel().mel_amplitude(wav), reference(wav).unsqueeze(1), rtol=1e-4, atol=1e-4)


def _mel_with_range() -> torch.Tensor:
    """A linear mel (2, 1, 4, 5) spanning values below the 1e-5 floor and above 80 dB (1e4)."""
    values = torch.tensor([1e-7, 1e-5, 3e-4, 1e-2, 1.0, 10.0, 1e3, 1e4, 1e5, 2e6], dtype=torch.float64)
    first = values.repeat(2)[:20].reshape(1, 1, 4, 5)
    return torch.cat((first, 0.5 * first.flip(-1)), dim=0).float()


def _db(mel: torch.Tensor) -> torch.Tensor:
    return (20 * torch.log10(mel.double().clamp(min=1e-5))).clamp(-50, 80)


def test_normalize_minmax_by_hand():
    mel = _mel_with_range()
    db = _db(mel)
    low, high = db.amin(dim=(2, 3), keepdim=True), db.amax(dim=(2, 3), keepdim=True)
    expected = (db - low) / (high - low + 1e-8) * 2 - 1
    torch.testing.assert_close(CNNMel().normalize(mel), expected.float())
    assert CNNMel().normalize(mel).dtype == torch.float32


def test_normalize_mean_standard_and_dims_by_hand():
    mel = _mel_with_range()
    db = _db(mel)
    torch.testing.assert_close(CNNMel(normtype="mean").normalize(mel),
                               (db - db.mean(dim=(2, 3), keepdim=True)).float())
    centred = db - db.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(CNNMel(normtype="standard").normalize(mel),
                               (centred / (db.std(dim=(2, 3), keepdim=True) + 1e-8)).float())
    per_band = CNNMel(dims=(3,)).normalize(mel)  # min-max over time only, per mel band
    low, high = db.amin(dim=3, keepdim=True), db.amax(dim=3, keepdim=True)
    torch.testing.assert_close(per_band, ((db - low) / (high - low + 1e-8) * 2 - 1).float())


def test_window_names_and_bad_values():
    assert torch.equal(CNNMel(window_fn="Hamming").window, torch.hamming_window(2048, periodic=False))
    assert torch.equal(CNNMel(window_fn="blackman_window", wkwargs={}).window, torch.blackman_window(2048))
    hann = CNNMel(window_fn=torch.hann_window, n_fft=512, win_length=512, n_mels=32).window
    assert torch.equal(hann, torch.hann_window(512, periodic=False))
    with pytest.raises(ValueError, match=r"mel.power=0"):
        CNNMel(power=0)
    with pytest.raises(ValueError, match=r"scaler.normtype='max'"):
        CNNMel(normtype="max")
    assert CNNMel().state_dict() == {} and CNNMel(power=2).power == 2.0


def test_window_shorter_than_n_fft_equals_torchaudio(wav):
    """win_length < n_fft (a 1024-sample window centred in 2048 FFT points), as torchaudio pads it."""
    ours = CNNMel(n_fft=2048, win_length=1024, hop_length=256)
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=2048, win_length=1024, hop_length=256, f_min=0.0, f_max=8000.0, n_mels=128,
        window_fn=torch.hamming_window, wkwargs={"periodic": False}, power=1.0, center=True, pad_mode="reflect",
        norm=None, mel_scale="htk")
    torch.testing.assert_close(ours.mel_amplitude(wav), reference(wav).unsqueeze(1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("normtype", ["standard", "minmax"])
def test_scaler_adds_its_epsilon_to_a_tiny_spread(normtype):
    """A clip whose dB values spread by ~1e-8 (the epsilon's size): the reference adds 1e-8 to the std / range."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 4e-8
    scaled = CNNMel(normtype=normtype)._scale(x).double()
    x = x.double()
    if normtype == "standard":
        expected = (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-8)
    else:
        expected = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), keepdim=True) + 1e-8) * 2 - 1
    torch.testing.assert_close(scaled, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("power", [1.5, 3.0])
def test_other_powers_equal_torchaudio(wav, power):
    """Powers other than 1 (magnitude) and 2 (power) take |X|^power from |X|² as torchaudio does."""
    ours = CNNMel(power=power)
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=2048, win_length=2048, hop_length=256, f_min=0.0, f_max=8000.0, n_mels=128,
        window_fn=torch.hamming_window, wkwargs={"periodic": False}, power=power, center=True, pad_mode="reflect",
        norm=None, mel_scale="htk")
    torch.testing.assert_close(ours.mel_amplitude(wav), reference(wav).unsqueeze(1), rtol=1e-4, atol=1e-3)


def test_defaults_are_the_reference_mel_block():
    """``CNNMel()`` = the reference's ``mel`` / ``scaler`` blocks: 16 kHz, 2048-point Hamming (non-periodic),
    hop 256, 128 HTK mels 0-8000 Hz without filter normalisation, magnitude, per-clip min-max over (F, T)."""
    frontend = CNNMel()
    assert (frontend.sample_rate, frontend.n_fft, frontend.win_length, frontend.hop_length, frontend.n_mels,
            frontend.power, frontend.normtype, frontend.dims) == (16_000, 2048, 2048, 256, 128, 1.0, "minmax", (2, 3))
    expected = torchaudio.functional.melscale_fbanks(n_freqs=1025, f_min=0.0, f_max=8000.0, n_mels=128,
                                                     sample_rate=16_000, norm=None, mel_scale="htk")
    assert torch.equal(frontend.mel_matrix, expected.float())
    assert torch.equal(frontend.window, torch.hamming_window(2048, periodic=False))


def test_f_max_below_nyquist_reaches_the_mel_matrix():
    expected = torchaudio.functional.melscale_fbanks(n_freqs=1025, f_min=0.0, f_max=7000.0, n_mels=128,
                                                     sample_rate=16_000, norm=None, mel_scale="htk")
    assert torch.equal(CNNMel(f_max=7000.0).mel_matrix, expected.float())
