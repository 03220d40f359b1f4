"""Audio reading, resampling, padding/cropping and the prepare_data resampling tool."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from data_util import layout
from data_util.audio import CLIP_SAMPLES, AudioReadError, pad_or_crop, read_audio, resample
from data_util.prepare import main as prepare_main
from data_util.prepare import prepare_data

SR = 16000


def sine(freq: float, seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    mono = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


def test_read_mono_16k_wav_is_unchanged(tmp_path):
    x = sine(440, 1.0, SR)
    sf.write(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    y = read_audio(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.shape == (SR,)
    np.testing.assert_array_equal(y, x)


def test_read_stereo_averages_channels(tmp_path):
    x = np.stack([np.full(800, 0.2, np.float32), np.full(800, -0.6, np.float32)], axis=1)
    sf.write(tmp_path / "s.wav", x, SR, subtype="FLOAT")
    y = read_audio(tmp_path / "s.wav")
    assert y.shape == (800,)
    np.testing.assert_allclose(y, -0.2, atol=1e-7)


@pytest.mark.parametrize("orig_sr", [44100, 22050, 48000, 8000])
def test_resampling_keeps_length_and_frequency(tmp_path, orig_sr):
    sf.write(tmp_path / "r.wav", sine(1000, 2.0, orig_sr, channels=2), orig_sr, subtype="FLOAT")
    y = read_audio(tmp_path / "r.wav")
    assert y.shape == (2 * SR,)  # exact length: 44100 -> 16000 is the rational ratio 441/160
    expected = sine(1000, 2.0, SR) * 0.75  # channel mean of amplitudes 0.5 and 1.0 (x0.5 scale)
    middle = slice(SR // 2, 3 * SR // 2)  # away from the filter's edge effects
    np.testing.assert_allclose(y[middle], expected[middle], atol=5e-3)


def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(10, np.float32), 0, SR)


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_read_compressed_formats(tmp_path, fmt):
    path = tmp_path / f"c.{fmt}"
    sf.write(path, sine(500, 1.0, 44100), 44100)
    y = read_audio(path)
    assert y.dtype == np.float32 and abs(len(y) - SR) < SR * 0.01
    assert 0.2 < np.abs(y[SR // 4: 3 * SR // 4]).max() < 0.7


def _truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not audio" * 50), "not a decodable audio file"),
        (lambda p: (sf.write(p, sine(300, 1.0, SR), SR), _truncate(p)), "truncated"),
        (lambda p: (sf.write(p, np.zeros((0,), np.float32), SR)), "no audio frames"),
    ],
    ids=["missing", "empty", "undecodable", "truncated_wav", "zero_frames"],
)
def test_bad_wav_files_raise_audio_read_error_naming_the_file(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioReadError, match=reason) as info:
        read_audio(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_truncated_compressed_files_raise(tmp_path, fmt):
    path = tmp_path / f"t.{fmt}"
    sf.write(path, (np.random.default_rng(0).standard_normal(3 * SR) * 0.1).astype(np.float32), SR)
    _truncate(path)
    with pytest.raises(AudioReadError, match="truncated") as info:
        read_audio(path)
    assert str(path) in str(info.value)


def test_pad_short_clip():
    x = np.ones(1000, np.float32)
    clip = pad_or_crop(x, 4000, random_crop=True, rng=np.random.default_rng(0))
    assert clip.audio.shape == (4000,) and clip.num_real == 1000 and clip.start == 0
    assert clip.audio[:1000].sum() == 1000 and not clip.audio[1000:].any()


def test_crop_long_clip_deterministic_and_random():
    x = np.arange(CLIP_SAMPLES + 5000, dtype=np.float32)
    first = pad_or_crop(x, random_crop=False)
    assert first.start == 0 and first.num_real == CLIP_SAMPLES and first.audio[0] == 0
    starts = {pad_or_crop(x, random_crop=True, rng=np.random.default_rng(s)).start for s in range(20)}
    assert len(starts) > 1 and all(0 <= s <= 5000 for s in starts)
    clip = pad_or_crop(x, random_crop=True, rng=np.random.default_rng(3))
    assert clip.audio[0] == clip.start and len(clip.audio) == CLIP_SAMPLES
    again = pad_or_crop(x, random_crop=True, rng=np.random.default_rng(3))
    assert again.start == clip.start
    with pytest.raises(ValueError, match="rng"):
        pad_or_crop(x, random_crop=True, rng=None)


def test_exact_length_untouched():
    x = np.random.default_rng(0).standard_normal(CLIP_SAMPLES).astype(np.float32)
    clip = pad_or_crop(x, random_crop=True, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(clip.audio, x)
    assert clip.num_real == CLIP_SAMPLES


# -- prepare_data ----------------------------------------------------------------------------------
def _originals(root, name="weak_train", files=("a.wav", "b.wav")):
    folder = root / layout.SETS[name].original_audio
    folder.mkdir(parents=True)
    for i, f in enumerate(files):
        sf.write(folder / f, sine(300 + 100 * i, 1.0, 44100, channels=2), 44100)
    return folder


def test_prepare_data_resamples_skips_and_is_atomic(tmp_path):
    _originals(tmp_path)
    result = prepare_data(tmp_path, sets=["weak_train"], workers=0, progress=False)
    assert (result.converted, result.skipped, result.failed) == (2, 0, {})
    target = tmp_path / layout.SETS["weak_train"].audio
    assert sorted(p.name for p in target.iterdir()) == ["a.wav", "b.wav"]  # no temporary files left
    info = sf.info(str(target / "a.wav"))
    assert (info.samplerate, info.channels, info.frames) == (SR, 1, SR)
    again = prepare_data(tmp_path, sets=["weak_train"], workers=0, progress=False)
    assert (again.converted, again.skipped) == (0, 2)


def test_prepare_data_reports_bad_files_and_missing_sets(tmp_path):
    folder = _originals(tmp_path)
    (folder / "broken.wav").write_bytes(b"garbage" * 20)
    result = prepare_data(tmp_path, sets=["weak_train", "synth_train"], workers=2, progress=False)
    assert result.converted == 2 and list(result.failed) == [str(folder / "broken.wav")]
    assert "broken.wav" in result.failed[str(folder / "broken.wav")]
    assert result.missing_sets == ["synth_train"]
    assert not (tmp_path / layout.SETS["weak_train"].audio / "broken.wav").exists()


def test_prepare_data_unknown_set(tmp_path):
    with pytest.raises(KeyError, match="unknown set"):
        prepare_data(tmp_path, sets=["nope"], workers=0)


def test_prepare_cli(tmp_path, capsys):
    _originals(tmp_path)
    assert prepare_main(["--dataset-root", str(tmp_path), "--sets", "weak_train", "--workers", "1"]) == 0
    assert "converted 2" in capsys.readouterr().out
