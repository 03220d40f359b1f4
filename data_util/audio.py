"""Audio file reading, resampling and fixed-length clipping.

Every clip the system sees is mono float32 at 16 kHz, 10 s long (160,000 samples). Files are decoded with
``soundfile`` (libsndfile >= 1.1: wav, flac, ogg and mp3; ``torchaudio.load`` is not used because it moved
to torchcodec), multi-channel audio is averaged to mono, and any other sample rate is resampled with
``torchaudio.functional.resample`` (rational polyphase windowed-sinc; exact ratio for 44.1 kHz -> 16 kHz,
i.e. 441 -> 160). The reference system refused any rate other than 16 kHz; we resample instead.

A file that cannot be read (missing, empty, truncated, undecodable, or holding NaN/Inf samples) raises
:class:`AudioReadError` naming the file and the reason, so a crash hours into training points at the culprit,
and ``training.skip_unreadable`` / the inference command can skip it.
"""
from __future__ import annotations

import math
import os
import re
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch
import torchaudio

SAMPLE_RATE = 16000
CLIP_SECONDS = 10
CLIP_SAMPLES = SAMPLE_RATE * CLIP_SECONDS  # 160,000
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")

# torchaudio's Kaiser-windowed sinc; the reference used the same method for its impulse responses.
RESAMPLING_METHOD = "sinc_interp_kaiser"

# libsndfile repairs a WAV whose data chunk is shorter than its header claims and reports it in the
# log ("data : 64000 (should be 31978)"); we treat that as a truncated file.
_TRUNCATED_WAV_LOG = re.compile(r"^data\s*:\s*\d+\s*\(should be", re.MULTILINE)


class AudioReadError(RuntimeError):
    """An audio file could not be read; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str | None = None):
        self.path = str(path)
        if reason is None:  # rebuilt from its message alone (pickling; DataLoader workers re-raise that way)
            self.reason = self.path
            super().__init__(self.path)
            return
        self.reason = reason
        super().__init__(f"cannot read audio file {self.path}: {reason}")


class Clip(NamedTuple):
    """A fixed-length clip cut from a waveform."""

    audio: np.ndarray  # float32 [n]
    num_real: int  # samples of real audio in ``audio`` (the rest is zero padding)
    start: int  # index in the source waveform where the clip starts (non-zero only for random crops)


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float waveform [n] from ``orig_sr`` to ``target_sr`` (no-op if equal)."""
    if orig_sr == target_sr:
        return waveform
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    gcd = math.gcd(int(orig_sr), int(target_sr))  # torchaudio reduces the ratio the same way
    resampled = torchaudio.functional.resample(
        torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)),
        orig_freq=int(orig_sr) // gcd,
        new_freq=int(target_sr) // gcd,
        resampling_method=RESAMPLING_METHOD,
    )
    return resampled.numpy()


def read_audio(path: str | os.PathLike, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 [n] at ``target_sr`` (channel mean, resampled if needed).

    Raises :class:`AudioReadError` for a missing, empty, truncated or undecodable file.
    """
    waveform, sample_rate = _decode(path)
    if waveform.ndim == 2:
        waveform = waveform.mean(axis=1)  # [n, channels] -> [n]
    waveform = resample(waveform.astype(np.float32, copy=False), sample_rate, target_sr)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Header information (sample rate, frames, channels) of an audio file, with :class:`AudioReadError`."""
    _check_exists(path)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioReadError(path, f"not a decodable audio file ({error})") from error


def read_header(path: str | os.PathLike) -> sf._SoundFileInfo:
    """:func:`audio_info` of a file that has audio frames and is not truncated (what the header alone can tell;
    the data doctor samples files with it)."""
    info = audio_info(path)
    if info.frames == 0:
        raise AudioReadError(path, "file contains no audio frames")
    if _TRUNCATED_WAV_LOG.search(info.extra_info or ""):
        raise AudioReadError(path, "file is truncated (data chunk shorter than its header says)")
    return info


def pad_or_crop(
    waveform: np.ndarray, n: int = CLIP_SAMPLES, *, random_crop: bool, rng: np.random.Generator | None = None
) -> Clip:
    """Cut ``waveform`` [m] to exactly ``n`` samples.

    Shorter input is zero-padded at the end. Longer input is cropped: at a uniformly random start when
    ``random_crop`` (training; needs ``rng``), else from the beginning (evaluation must be deterministic; the
    reference also cropped randomly at evaluation). ``Clip.num_real`` is the number of real samples, the
    reference's ``padded_indx`` expressed in samples.
    """
    length = len(waveform)
    if length < n:
        padded = np.zeros(n, dtype=np.float32)
        padded[:length] = waveform
        return Clip(padded, length, 0)
    start = 0
    if random_crop and length > n:
        if rng is None:
            raise ValueError("pad_or_crop(random_crop=True) needs an rng (np.random.Generator)")
        start = int(rng.integers(0, length - n + 1))
    return Clip(np.ascontiguousarray(waveform[start:start + n], dtype=np.float32), n, start)


def _check_exists(path: str | os.PathLike) -> None:
    if not os.path.isfile(path):
        raise AudioReadError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise AudioReadError(path, "file is empty (0 bytes)")


def _decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a whole file to float32 [n] or [n, channels], checking for truncation and non-finite samples."""
    info = read_header(path)
    try:
        waveform, sample_rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioReadError(path, f"decoding failed, the file is probably truncated or corrupt ({error})") from error
    if len(waveform) == 0:
        raise AudioReadError(path, "file contains no audio frames")
    if len(waveform) < info.frames:  # e.g. an mp3 cut short: its header promises more frames
        raise AudioReadError(path, f"file is truncated: decoded {len(waveform)} of {info.frames} frames")
    finite = np.isfinite(waveform)
    if not finite.all():  # float wavs can hold NaN/Inf; they would turn every loss and score into NaN
        bad = int(finite.size - np.count_nonzero(finite))
        raise AudioReadError(path, f"contains {bad} non-finite samples (NaN/Inf) of {finite.size}")
    return waveform, sample_rate
