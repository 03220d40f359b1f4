"""Synthetic demo dataset in the real DCASE 2024 Task 4 folder layout.

``python -m data_util.demo --out demo_data [--preset tiny|small] [--seed 0] [--workers 2]`` writes every set of
``data_util.layout.SETS`` under ``--out`` (16 kHz mono PCM16 wav + tsvs in the real formats) and the
resources-side files under ``<out>/resources/`` (external strong split tsvs, exclude lists, device impulse
responses). The experiments then run on it with ``base_path=<out>`` and ``resources_dir=<out>/resources``.

Content: every one of the 27 classes has its own synthesizer with a distinct time-frequency signature
(pitched tones, AM/FM patterns, noise bands, clicks and pulse trains, chirps; see ``CLASS_SOUNDS`` and
``docs/DATA_LAYOUT.md``). Events of random length and level overlap on pink/brown background noise. DESED
clips only contain the 10 DESED classes, MAESTRO recordings only the 17 MAESTRO classes (so class masking
matters). MAESTRO recordings (one scene each) are cut like the DCASE 2024 baseline's
``dprep/download_prep_maestro.py`` does it: 10 s windows, hop 1 s (train) or ``--maestro-val-hop``
(validation), a shorter last chunk when the recording does not end on a window, chunk names
``<recording>-<onset_cs:06d>-<offset_cs:06d>.wav``, events per chunk relative to the chunk, clipped to it,
with their ``confidence``; the durations tsv is per recording (stem, no ``.wav``).

Everything is deterministic given the seed: each clip draws from its own random stream
(``numpy`` SeedSequence of seed, stream and index), so the bytes do not depend on ``--workers``.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import shutil
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import fft as sp_fft
from scipy import signal as sp_signal

from data_util.atomic import atomic_write_text
from data_util.classes import CLASSES, DESED_CLASSES, MAESTRO_CLASSES
from data_util.layout import EXCLUDE_LISTS, SETS
from data_util.tsv import Event

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ORIGINAL_SAMPLE_RATE = 44100  # the 44.1 kHz originals, as DESED ships them
CLIP_SECONDS = 10.0
CLIP_SAMPLES = int(CLIP_SECONDS * SAMPLE_RATE)
MS = SAMPLE_RATE // 1000  # durations are whole milliseconds so that tsv values equal audio lengths exactly
CS = SAMPLE_RATE // 100  # MAESTRO chunk names count centiseconds

MAX_PARTIAL_HZ = 7600.0  # keep synthesized partials below Nyquist (8 kHz)
EDGE_FADE_S = 0.01  # raised-cosine fade at event borders (no clicks at on/offsets)
PEAK_LIMIT = 0.9  # a mixture louder than this is scaled down before PCM16 conversion
PCM16_SCALE = 32767

BACKGROUND_DBFS_RANGE = (-42.0, -30.0)  # RMS of the pink/brown background noise
EVENT_SNR_DB_RANGE = (3.0, 18.0)  # event RMS over background RMS (DESED clips)
SHORT_CLIP_FRACTION = 0.2  # real (AudioSet) clips are sometimes shorter than 10 s
SHORT_CLIP_SECONDS = (6.0, 9.9)
EVENTS_PER_CLIP = (1, 4)

MAESTRO_WINDOW_S = 10  # MAESTRO chunking (DESED_task dprep/download_prep_maestro.py)
MAESTRO_TRAIN_HOP_S = 1
MAESTRO_SCENES: dict[str, tuple[str, ...]] = {
    # scene -> classes that occur in it; the union is all 17 MAESTRO classes
    "cafe_restaurant": ("cutlery and dishes", "furniture dragging", "people talking", "children voices",
                        "coffee machine", "footsteps"),
    "city_center": ("people talking", "footsteps", "large_vehicle", "car", "brakes_squeaking", "birds_singing",
                    "wind_blowing", "children voices"),
    "grocery_store": ("cash register beeping", "shopping cart", "people talking", "announcement", "footsteps",
                      "children voices"),
    "metro_station": ("metro leaving", "metro approaching", "announcement", "footsteps", "people talking",
                      "door opens/closes"),
    "residential_area": ("car", "birds_singing", "wind_blowing", "footsteps", "children voices", "large_vehicle",
                         "people talking"),
}
MAESTRO_SECONDS_PER_EVENT = 4.0  # extra events (beyond one per scene class) per second of recording
MAESTRO_HIGH_CONFIDENCE = (0.6, 1.0)  # clearly audible events (ground truth: confidence > 0.5)
MAESTRO_LOW_CONFIDENCE = (0.1, 0.5)  # faint / ambiguous events, played 12 dB quieter
MAESTRO_LOW_CONFIDENCE_P = 0.25
MAESTRO_LOW_CONFIDENCE_ATTENUATION_DB = 12.0

DEVICE_NAMES = ("demo_headset", "demo_laptop", "demo_phone")
IRS_PER_DEVICE = 2
DEMO_MANIFEST = "demo_manifest.json"
RESOURCES_SUBDIR = "resources"
EXCLUDED_PER_LIST = 2  # real demo files listed in each resources/exclude/*.tsv

# ---------------------------------------------------------------------------------------------------------------------
# Signal primitives (all vectorised over samples; ``n`` is a length in samples at SAMPLE_RATE)
# ---------------------------------------------------------------------------------------------------------------------


def _seconds(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _shaped_noise(rng: np.random.Generator, n: int, gain_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """White noise filtered in the frequency domain by ``gain_fn(freqs_hz)``."""
    n_fft = sp_fft.next_fast_len(max(n, 2), real=True)
    spectrum = sp_fft.rfft(rng.standard_normal(n_fft))
    spectrum *= gain_fn(sp_fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE))
    return sp_fft.irfft(spectrum, n_fft)[:n]


def _band_noise(rng: np.random.Generator, n: int, low_hz: float, high_hz: float) -> np.ndarray:
    return _shaped_noise(rng, n, lambda f: ((f >= low_hz) & (f <= high_hz)).astype(float))


def _colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """1/f^exponent power spectrum: exponent 1 = pink, 2 = brown (20 Hz floor, no DC)."""
    return _shaped_noise(rng, n, lambda f: np.where(f > 0, np.maximum(f, 20.0) ** (-exponent / 2), 0.0))


def _slow_envelope(rng: np.random.Generator, n: int, max_rate_hz: float) -> np.ndarray:
    """A random envelope in (0, 1) that varies no faster than ``max_rate_hz`` (interpolated control points)."""
    n_points = int(n / SAMPLE_RATE * 2 * max_rate_hz) + 2
    control = np.tanh(rng.standard_normal(n_points))
    return 0.5 + 0.5 * np.interp(np.linspace(0, n_points - 1, n), np.arange(n_points), control)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    padded = np.concatenate([np.zeros(width), x])
    cumulative = np.cumsum(padded)
    return (cumulative[width:] - cumulative[:-width]) / width


def _square_gate(n: int, rate_hz: float, duty: float, ramp_s: float = 0.005) -> np.ndarray:
    """On/off gating at ``rate_hz`` (on for ``duty`` of each period, starting on), with soft edges."""
    gate = ((_seconds(n) * rate_hz) % 1.0 < duty).astype(float)
    return _moving_average(gate, int(ramp_s * SAMPLE_RATE))


WAVETABLE_SIZE = 4096  # one period of a harmonic waveform; read with linear interpolation


def _harmonic_stack(f0_hz: np.ndarray | float, n: int, amplitudes) -> np.ndarray:
    """Sum of harmonics k*f0 with the given amplitudes (k = 1, 2, ...); partials above MAX_PARTIAL_HZ dropped.

    Wavetable synthesis: one period is built once, then read at the running phase (cost independent of the
    number of harmonics).
    """
    f0 = np.broadcast_to(np.asarray(f0_hz, dtype=float), (n,))
    top = float(f0.max()) if n else 0.0
    amplitudes = np.asarray(amplitudes, dtype=float)
    harmonics = np.arange(1, amplitudes.size + 1)
    keep = harmonics * top <= MAX_PARTIAL_HZ
    grid = np.arange(WAVETABLE_SIZE + 1) / WAVETABLE_SIZE  # closed period for interpolation
    table = (amplitudes[keep, None] * np.sin(2 * np.pi * harmonics[keep, None] * grid[None, :])).sum(axis=0)
    cycles = np.cumsum(f0) / SAMPLE_RATE  # phase in periods
    return np.interp(cycles % 1.0, grid, table)


def _geometric(n_harmonics: int, rolloff: float) -> np.ndarray:
    return rolloff ** np.arange(n_harmonics)


def _partials(n: int, freqs_hz, amplitudes) -> np.ndarray:
    """Fixed-frequency sinusoids (inharmonic partials)."""
    t = _seconds(n)
    return sum(a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs_hz, amplitudes))


def _onset_times(rng: np.random.Generator, n: int, rate_hz: float, jitter: float) -> np.ndarray:
    """Roughly periodic times (s) at ``rate_hz`` with relative jitter, starting at 0."""
    period = 1.0 / rate_hz
    base = np.arange(0.0, n / SAMPLE_RATE, period)
    times = base + rng.uniform(0, jitter * period, size=base.size)
    times[0] = 0.0
    return times[times < n / SAMPLE_RATE]


def _poisson_times(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    count = max(1, rng.poisson(rate_hz * n / SAMPLE_RATE))
    return np.sort(rng.uniform(0, n / SAMPLE_RATE, size=count))


def _burst_envelope(n: int, times_s: np.ndarray, length_s) -> np.ndarray:
    """Hann-shaped bursts of ``length_s`` (scalar or per burst) starting at ``times_s``."""
    envelope = np.zeros(n)
    lengths = np.broadcast_to(np.asarray(length_s, dtype=float), times_s.shape)
    for start_s, burst_s in zip(times_s, lengths):
        start, width = int(start_s * SAMPLE_RATE), max(2, int(burst_s * SAMPLE_RATE))
        stop = min(n, start + width)
        if stop > start:
            envelope[start:stop] = np.maximum(envelope[start:stop], np.hanning(width)[: stop - start])
    return envelope


def _impacts(rng: np.random.Generator, n: int, times_s: np.ndarray, low_hz: float, high_hz: float,
             decay_s: float) -> np.ndarray:
    """Decaying band-limited noise bursts (clicks, clinks, thumps) at ``times_s``."""
    impulses = np.zeros(n)
    positions = np.clip((times_s * SAMPLE_RATE).astype(int), 0, max(n - 1, 0))
    impulses[positions] = rng.uniform(0.5, 1.0, size=positions.size)
    kernel_n = max(8, int(5 * decay_s * SAMPLE_RATE))
    kernel = _band_noise(rng, kernel_n, low_hz, high_hz) * np.exp(-_seconds(kernel_n) / decay_s)
    return sp_signal.fftconvolve(impulses, kernel)[:n]


def _voice(rng: np.random.Generator, n: int, f0_range: tuple[float, float], syllable_rate_hz: float,
           formants_hz=(500.0, 1500.0, 2500.0)) -> np.ndarray:
    """Speech-like: voiced harmonics with a wandering f0, formant-weighted, gated into syllables."""
    f0 = f0_range[0] + (f0_range[1] - f0_range[0]) * _slow_envelope(rng, n, 3.0)
    harmonic_freqs = np.arange(1, 41) * f0.mean()
    amplitudes = 0.05 + sum(np.exp(-(((harmonic_freqs - f) / 250.0) ** 2)) for f in formants_hz)
    voiced = _harmonic_stack(f0, n, amplitudes / np.arange(1, 41) ** 0.5)
    starts = _onset_times(rng, n, syllable_rate_hz, jitter=0.5)
    syllables = _burst_envelope(n, starts, rng.uniform(0.12, 0.3, size=starts.size))
    return voiced * syllables + 0.02 * _band_noise(rng, n, 2000, 6000) * syllables


def _sweeps(n: int, rate_hz: float, start_hz: float, stop_hz: float, sweep_s: float) -> np.ndarray:
    """Repeated sweeps (start -> stop within ``sweep_s``), one every 1/rate_hz seconds."""
    t = _seconds(n)
    position = (t * rate_hz) % 1.0 / rate_hz  # seconds since the current period started
    inside = position < sweep_s
    freq = np.where(inside, start_hz + (stop_hz - start_hz) * np.clip(position / sweep_s, 0, 1), start_hz)
    tone = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE)
    return tone * _moving_average(inside.astype(float), int(0.004 * SAMPLE_RATE))


# ---------------------------------------------------------------------------------------------------------------------
# One synthesizer per class: (rng, n_samples) -> waveform (any level; the mixer sets the level)
# ---------------------------------------------------------------------------------------------------------------------


def _alarm_bell(rng, n):
    return _partials(n, (1000.0, 2400.0, 3900.0), (1.0, 0.6, 0.35)) * _square_gate(n, 8.0, 0.5)


def _blender(rng, n):
    return _band_noise(rng, n, 400, 2000) * (1 + 0.8 * np.sin(2 * np.pi * 35.0 * _seconds(n)))


def _cat(rng, n):
    meow_s, period_s = 0.7, 1.1
    times = np.arange(0.0, n / SAMPLE_RATE, period_s)
    position = ((_seconds(n) % period_s) / meow_s).clip(0, 1)
    f0 = 450 + 350 * np.sin(np.pi * position)  # arched pitch contour of each meow
    return _harmonic_stack(f0, n, _geometric(8, 0.6)) * _burst_envelope(n, times, meow_s)


def _dishes(rng, n):
    return _impacts(rng, n, _poisson_times(rng, n, 5.0), 2500, 6000, decay_s=0.03)


def _dog(rng, n):
    times = _onset_times(rng, n, 2.5, jitter=0.4)
    bark = _harmonic_stack(300.0 + 40 * rng.standard_normal(), n, _geometric(15, 0.8))
    return (bark + 0.3 * _band_noise(rng, n, 300, 3000)) * _burst_envelope(n, times, 0.12)


def _shaver(rng, n):
    return _harmonic_stack(110.0, n, 1.0 / np.arange(1, 46))  # sawtooth-like buzz


def _frying(rng, n):
    crackle = _impacts(rng, n, _poisson_times(rng, n, 30.0), 1000, 7500, decay_s=0.003)
    return _band_noise(rng, n, 3000, 7500) + 3.0 * crackle


def _running_water(rng, n):
    return _band_noise(rng, n, 800, 3000) * _slow_envelope(rng, n, 15.0)


def _speech(rng, n):
    return _voice(rng, n, (110.0, 180.0), syllable_rate_hz=4.0)


def _vacuum(rng, n):
    return _band_noise(rng, n, 150, 1000) + 0.15 * _partials(n, (1800.0,), (1.0,))


def _cutlery(rng, n):
    return _impacts(rng, n, _poisson_times(rng, n, 10.0), 3000, 5000, decay_s=0.015)


def _furniture(rng, n):
    roughness = _slow_envelope(rng, n, 10.0) ** 2
    squeak = _partials(n, (900.0,), (1.0,)) * _slow_envelope(rng, n, 3.0)
    return (_band_noise(rng, n, 600, 1500) + 0.3 * squeak) * roughness


def _people_talking(rng, n):
    return sum(_voice(rng, n, (f0, f0 + 60.0), syllable_rate_hz=4.0) for f0 in rng.uniform(100, 200, size=3))


def _children(rng, n):
    return _voice(rng, n, (280.0, 380.0), syllable_rate_hz=5.0, formants_hz=(900.0, 2200.0, 3300.0))


def _coffee_machine(rng, n):
    return _band_noise(rng, n, 2000, 3500) + 0.5 * _harmonic_stack(100.0, n, _geometric(6, 0.7))


def _footsteps(rng, n):
    return _impacts(rng, n, _onset_times(rng, n, 2.0, jitter=0.15), 60, 500, decay_s=0.04)


def _large_vehicle(rng, n):
    engine = _harmonic_stack(45.0 + 5 * _slow_envelope(rng, n, 0.5), n, _geometric(6, 0.8))
    return _band_noise(rng, n, 30, 250) + 0.5 * engine


def _car(rng, n):
    t = _seconds(n)
    swell = np.exp(-0.5 * ((t - t[-1] / 2) / (0.25 * t[-1] + 1e-3)) ** 2)  # pass-by: louder in the middle
    return _band_noise(rng, n, 300, 1500) * (0.2 + swell)


def _brakes(rng, n):
    f0 = 3800.0 + 60.0 * np.sin(2 * np.pi * 5.0 * _seconds(n))
    return _harmonic_stack(f0, n, (1.0, 0.3))


def _cash_register(rng, n):
    return _partials(n, (2500.0,), (1.0,)) * _burst_envelope(n, _onset_times(rng, n, 1.5, jitter=0.2), 0.12)


def _announcement(rng, n):
    chime = _partials(n, (660.0, 880.0), (1.0, 0.8)) * np.exp(-_seconds(n) / 0.4)
    voice = _voice(rng, n, (140.0, 170.0), syllable_rate_hz=3.0, formants_hz=(700.0, 1200.0, 2600.0))
    return 2.0 * chime + voice


def _shopping_cart(rng, n):
    return _impacts(rng, n, _onset_times(rng, n, 25.0, jitter=0.5), 800, 2500, decay_s=0.008)


def _metro(rng, n, start_hz, stop_hz):
    f0 = np.linspace(start_hz, stop_hz, n)
    return _harmonic_stack(f0, n, _geometric(4, 0.5)) + 0.5 * _band_noise(rng, n, 40, 300)


def _metro_leaving(rng, n):
    return _metro(rng, n, 150.0, 500.0)  # rising whine


def _metro_approaching(rng, n):
    return _metro(rng, n, 1000.0, 500.0)  # falling whine


def _door(rng, n):
    thump = _impacts(rng, n, np.array([0.0]), 50, 400, decay_s=0.08)
    latch = _impacts(rng, n, np.array([min(0.25, 0.5 * n / SAMPLE_RATE)]), 2000, 4000, decay_s=0.01)
    return thump + 0.6 * latch


def _wind(rng, n):
    gusts = 0.1 + _slow_envelope(rng, n, 0.7) ** 2
    return _band_noise(rng, n, 200, 800) * gusts


def _birds(rng, n):
    return _sweeps(n, 6.0, 7000.0, 5000.0, sweep_s=0.08) * (0.3 + _slow_envelope(rng, n, 1.0))


@dataclass(frozen=True)
class ClassSound:
    """How the demo renders one class: synthesizer, event length range (s), signature in words."""

    synth: Callable[[np.random.Generator, int], np.ndarray]
    min_s: float
    max_s: float
    signature: str


CLASS_SOUNDS: dict[str, ClassSound] = {
    "Alarm_bell_ringing": ClassSound(_alarm_bell, 0.8, 4.0, "partials 1.0/2.4/3.9 kHz gated on/off at 8 Hz"),
    "Blender": ClassSound(_blender, 2.0, 8.0, "noise 0.4-2 kHz, amplitude-modulated at 35 Hz"),
    "Cat": ClassSound(_cat, 0.6, 2.5, "0.7 s meows: harmonics with arched f0 450-800 Hz"),
    "Dishes": ClassSound(_dishes, 0.5, 3.0, "sparse clinks (5/s), 2.5-6 kHz, 30 ms decay"),
    "Dog": ClassSound(_dog, 0.4, 2.0, "120 ms barks at 2.5/s, rich harmonics of ~300 Hz"),
    "Electric_shaver_toothbrush": ClassSound(_shaver, 2.0, 8.0, "steady sawtooth buzz at 110 Hz"),
    "Frying": ClassSound(_frying, 3.0, 10.0, "hiss 3-7.5 kHz with dense crackle (30/s)"),
    "Running_water": ClassSound(_running_water, 2.0, 10.0, "noise 0.8-3 kHz with fast random fluctuation (15 Hz)"),
    "Speech": ClassSound(_speech, 0.8, 4.0, "voiced syllables (4/s), f0 110-180 Hz, formants 0.5/1.5/2.5 kHz"),
    "Vacuum_cleaner": ClassSound(_vacuum, 3.0, 10.0, "steady noise 150-1000 Hz plus a 1.8 kHz whine"),
    "cutlery and dishes": ClassSound(_cutlery, 1.0, 6.0, "dense clinks (10/s), 3-5 kHz, 15 ms decay"),
    "furniture dragging": ClassSound(_furniture, 0.8, 3.0,
                                     "scrape: noise 0.6-1.5 kHz + 900 Hz squeak, rough 10 Hz envelope"),
    "people talking": ClassSound(_people_talking, 3.0, 12.0, "babble of 3 voices, f0 100-260 Hz"),
    "children voices": ClassSound(_children, 2.0, 8.0, "voiced syllables (5/s), f0 280-380 Hz"),
    "coffee machine": ClassSound(_coffee_machine, 3.0, 10.0, "hiss 2-3.5 kHz plus 100 Hz hum"),
    "footsteps": ClassSound(_footsteps, 1.5, 6.0, "low thumps (60-500 Hz) at 2/s"),
    "large_vehicle": ClassSound(_large_vehicle, 4.0, 15.0, "rumble 30-250 Hz plus 45 Hz engine harmonics"),
    "car": ClassSound(_car, 2.0, 8.0, "pass-by: noise 0.3-1.5 kHz swelling in the middle"),
    "brakes_squeaking": ClassSound(_brakes, 0.5, 2.0, "squeal at 3.8 kHz with 5 Hz vibrato"),
    "cash register beeping": ClassSound(_cash_register, 0.5, 3.0, "120 ms pure 2.5 kHz beeps at 1.5/s"),
    "announcement": ClassSound(_announcement, 3.0, 8.0, "660/880 Hz chime, then slow speech (3/s) f0 140-170 Hz"),
    "shopping cart": ClassSound(_shopping_cart, 1.5, 6.0, "rattle: clicks at 25/s, 0.8-2.5 kHz"),
    "metro leaving": ClassSound(_metro_leaving, 5.0, 15.0, "whine rising 150->500 Hz over low rumble"),
    "metro approaching": ClassSound(_metro_approaching, 5.0, 15.0, "whine falling 1000->500 Hz over low rumble"),
    "door opens/closes": ClassSound(_door, 0.4, 1.2, "low thump (50-400 Hz) then a 2-4 kHz latch click"),
    "wind_blowing": ClassSound(_wind, 4.0, 15.0, "noise 200-800 Hz in slow gusts (< 0.7 Hz)"),
    "birds_singing": ClassSound(_birds, 1.0, 6.0, "80 ms chirps sweeping 7->5 kHz, 6/s"),
}


def describe_classes() -> str:
    """The class -> sound table as markdown (pasted into docs/DATA_LAYOUT.md)."""
    lines = ["| class | domain | event length (s) | signature |", "|---|---|---|---|"]
    for name in CLASSES:
        sound = CLASS_SOUNDS[name]
        domain = "DESED" if name in DESED_CLASSES else "MAESTRO"
        lines.append(f"| {name} | {domain} | {sound.min_s:g}-{sound.max_s:g} | {sound.signature} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Presets and the expected files per set
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """How many clips each set gets. MAESTRO recording lengths are fixed (centiseconds) so counts are static."""

    clips: dict[str, int]  # DESED-style sets (and eval_private) -> number of clips
    external_strong_val: int  # external strong clips in the eval split (same folder as the train split)
    maestro_train_cs: tuple[int, ...]  # one recording per entry, scenes assigned round-robin
    maestro_val_cs: tuple[int, ...]


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        clips=dict(synth_train=12, strong_train=8, external_strong_train=8, weak_train=12, unlabeled_train=12,
                   synth_val=8, devtest=8, eval_public=8, eval_private=8),
        external_strong_val=6,
        # 2 recordings per scene so that the reference's 90/10 split by recording keeps one per scene for training
        maestro_train_cs=(1150, 1225, 1180, 1300, 1210, 1260, 1175, 1240, 1195, 1275),
        maestro_val_cs=(1420, 1390, 1450, 1405, 1430),
    ),
    "small": Preset(
        clips=dict(synth_train=300, strong_train=150, external_strong_train=100, weak_train=150,
                   unlabeled_train=300, synth_val=80, devtest=80, eval_public=60, eval_private=60),
        external_strong_val=60,
        maestro_train_cs=(3650, 4120, 3380, 4475, 3910, 3025, 4260, 3540, 4790, 3170),
        maestro_val_cs=(3460, 3820, 3110, 4050, 3650),
    ),
}

SETS_WITH_ORIGINALS: tuple[str, ...] = ("weak_train",)  # also written at 44.1 kHz into SetSpec.original_audio
REAL_CLIP_SETS = ("strong_train", "external_strong_train", "weak_train", "unlabeled_train", "devtest",
                  "eval_public", "eval_private")  # AudioSet-style names, sometimes shorter than 10 s


def maestro_chunk_bounds(n_samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Sample bounds of the chunks of one recording, as DESED_task's MAESTRO preparation cuts them.

    Full windows every ``hop`` samples, then one shorter chunk from the next hop position to the end when the
    last full window stops before the end of the recording.
    """
    bounds = [(start, start + window) for start in range(0, n_samples - window + 1, hop)]
    last_end = bounds[-1][1] if bounds else 0
    if last_end < n_samples:
        bounds.append((bounds[-1][0] + hop if bounds else 0, n_samples))
    return bounds


def _hop_samples(hop_s: float) -> int:
    """A chunk hop in samples; it must be a whole number of centiseconds (chunk names count centiseconds)."""
    hop = round(hop_s * SAMPLE_RATE)
    if hop <= 0 or abs(hop_s * SAMPLE_RATE - hop) > 1e-6 or hop % CS:
        raise ValueError(f"the MAESTRO chunk hop must be a positive multiple of 0.01 s, got {hop_s!r}")
    return hop


def expected_counts(preset: str, maestro_val_hop: float = MAESTRO_TRAIN_HOP_S) -> dict[str, int]:
    """Audio files per set (its 16 kHz folder) that ``generate`` writes for ``preset``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; expected one of {sorted(PRESETS)}")
    spec = PRESETS[preset]
    counts = {name: spec.clips[name] for name in spec.clips}
    counts["external_strong_train"] += spec.external_strong_val
    counts["external_strong_val"] = counts["external_strong_train"]  # one shared audio folder

    def n_chunks(durations_cs, hop_s):
        return sum(len(maestro_chunk_bounds(cs * CS, MAESTRO_WINDOW_S * SAMPLE_RATE, _hop_samples(hop_s)))
                   for cs in durations_cs)

    counts["maestro_real_train"] = n_chunks(spec.maestro_train_cs, MAESTRO_TRAIN_HOP_S)
    counts["maestro_real_dev"] = n_chunks(spec.maestro_val_cs, maestro_val_hop)
    return {name: counts[name] for name in SETS}


EXPECTED_COUNTS: dict[str, dict[str, int]] = {name: expected_counts(name) for name in PRESETS}

# ---------------------------------------------------------------------------------------------------------------------
# Rendering one clip / one recording (run in worker processes)
# ---------------------------------------------------------------------------------------------------------------------

# Random streams: each clip's generator is keyed by (seed, stream, index) so results do not depend on scheduling.
_STREAMS = ("names",) + tuple(SETS) + ("maestro_train_recordings", "maestro_val_recordings", "dirs")
_PLAN, _RENDER = 1, 2


def _rng(seed: int, stream: str, kind: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS.index(stream), kind, index])



def render_events(rng: np.random.Generator, n_samples: int, labels: tuple[str, ...], snr_db_range, *,
                   confidences: tuple[float, ...] | None = None) -> tuple[np.ndarray, list[Event]]:
    """Background noise plus one event per label at a random time, length and level."""
    background = _colored_noise(rng, n_samples, exponent=rng.choice([1.0, 2.0]))
    background_rms = 10 ** (rng.uniform(*BACKGROUND_DBFS_RANGE) / 20)
    mixture = background * (background_rms / (background.std() + 1e-12))
    duration_s = n_samples / SAMPLE_RATE
    events = []
    for i, label in enumerate(labels):
        sound = CLASS_SOUNDS[label]
        length_s = min(rng.uniform(sound.min_s, sound.max_s), duration_s)
        onset_s = np.clip(rng.uniform(-0.2 * length_s, duration_s - 0.3 * length_s), 0.0, duration_s - 0.05)
        start = int(round(onset_s * 1000)) * MS
        stop = min(n_samples, start + int(round(length_s * 1000)) * MS)
        if stop - start < 2 * MS:
            continue
        waveform = sound.synth(rng, stop - start)
        fade = min(int(EDGE_FADE_S * SAMPLE_RATE), (stop - start) // 2)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
        waveform[:fade] *= ramp
        waveform[len(waveform) - fade:] *= ramp[::-1]
        snr_db = rng.uniform(*snr_db_range)
        confidence = 1.0 if confidences is None else confidences[i]
        if confidence <= 0.5:
            snr_db -= MAESTRO_LOW_CONFIDENCE_ATTENUATION_DB
        gain = background_rms * 10 ** (snr_db / 20) / (waveform.std() + 1e-12)
        mixture[start:stop] += gain * waveform
        events.append(Event(start / SAMPLE_RATE, stop / SAMPLE_RATE, label, confidence))
    peak = np.abs(mixture).max()
    if peak > PEAK_LIMIT:
        mixture *= PEAK_LIMIT / peak
    return mixture, events


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Mono PCM16 wav. (The ``wave`` module: soundfile syncs every file to disk, which is 10x slower here.)"""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * PCM16_SCALE).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def _to_original_rate(audio: np.ndarray) -> np.ndarray:
    """16 kHz -> 44.1 kHz (polyphase, 441/160), for the 44.1 kHz originals."""
    return sp_signal.resample_poly(audio, ORIGINAL_SAMPLE_RATE // 100, SAMPLE_RATE // 100)


@dataclass(frozen=True)
class ClipJob:
    seed: int
    stream: str
    index: int
    path: Path
    n_samples: int
    labels: tuple[str, ...]
    original_path: Path | None = None  # also write a 44.1 kHz copy here


def render_clip(job: ClipJob) -> list[Event]:
    """Write one 16 kHz clip (and its 44.1 kHz original if asked); return its events."""
    rng = _rng(job.seed, job.stream, _RENDER, job.index)
    audio, events = render_events(rng, job.n_samples, job.labels, EVENT_SNR_DB_RANGE)
    write_wav(job.path, audio)
    if job.original_path is not None:
        write_wav(job.original_path, _to_original_rate(audio), ORIGINAL_SAMPLE_RATE)
    return events


@dataclass(frozen=True)
class RecordingJob:
    seed: int
    stream: str
    index: int
    stem: str
    scene: str
    n_samples: int
    hop: int  # samples
    audio_dir: Path


def _soft_label(rng: np.random.Generator, clear: bool) -> float:
    """A MAESTRO-like annotator agreement in 0.1 steps: high for clear events, sometimes low otherwise."""
    faint = not clear and rng.uniform() < MAESTRO_LOW_CONFIDENCE_P
    return round(float(rng.uniform(*(MAESTRO_LOW_CONFIDENCE if faint else MAESTRO_HIGH_CONFIDENCE))), 1)


def render_recording(job: RecordingJob) -> list[tuple[str, Event]]:
    """Synthesize one long MAESTRO recording, write its chunks; return (chunk filename, chunk-relative event)."""
    rng = _rng(job.seed, job.stream, _RENDER, job.index)
    scene_classes = MAESTRO_SCENES[job.scene]
    n_events = len(scene_classes) + round(job.n_samples / SAMPLE_RATE / MAESTRO_SECONDS_PER_EVENT)
    # every scene class once with a clear label (so each set has ground truth for it), then random ones
    labels = tuple(str(c) for c in rng.permutation(scene_classes)) + tuple(
        str(c) for c in rng.choice(scene_classes, n_events - len(scene_classes)))
    confidences = tuple(_soft_label(rng, clear=i < len(scene_classes)) for i in range(n_events))
    audio, events = render_events(rng, job.n_samples, labels, EVENT_SNR_DB_RANGE, confidences=confidences)
    rows = []
    for start, stop in maestro_chunk_bounds(job.n_samples, MAESTRO_WINDOW_S * SAMPLE_RATE, job.hop):
        name = f"{job.stem}-{start // CS:06d}-{stop // CS:06d}.wav"
        write_wav(job.audio_dir / name, audio[start:stop])
        chunk_start, chunk_len = start / SAMPLE_RATE, (stop - start) / SAMPLE_RATE
        overlapping = [e for e in events if e.onset < stop / SAMPLE_RATE and e.offset > chunk_start]
        for event in sorted(overlapping, key=lambda e: e.onset):
            rows.append((name, Event(max(0.0, event.onset - chunk_start), min(chunk_len, event.offset - chunk_start),
                                     event.label, event.confidence)))
    return rows


def _render(job):
    return render_clip(job) if isinstance(job, ClipJob) else render_recording(job)


# ---------------------------------------------------------------------------------------------------------------------
# Planning (main process): names, lengths and classes of every clip, then tsvs
# ---------------------------------------------------------------------------------------------------------------------

_YOUTUBE_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def _audioset_names(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    """AudioSet-style names ``Y<11-char id>_<start>.000_<start+10>.000.wav``, unique across the tree, sorted."""
    names = []
    while len(names) < count:
        video_id = "".join(rng.choice(_YOUTUBE_ID_CHARS, 11))
        start = int(rng.integers(0, 30)) * 10
        name = f"Y{video_id}_{start}.000_{start + 10}.000.wav"
        if name not in taken:
            taken.add(name)
            names.append(name)
    return sorted(names)


def _balanced_labels(rng: np.random.Generator, classes: tuple[str, ...], n_clips: int) -> list[tuple[str, ...]]:
    """Per clip 1-4 distinct classes, drawn by cycling through shuffled class lists (every class appears)."""
    pool: list[str] = []  # the rest of the current shuffled cycle; drawn from the end
    out = []
    for _ in range(n_clips):
        n_events = int(rng.integers(EVENTS_PER_CLIP[0], EVENTS_PER_CLIP[1] + 1))
        labels: list[str] = []
        while len(labels) < n_events:
            # a clip's classes stay distinct (no same-class overlap inside a clip)
            usable = [i for i in range(len(pool) - 1, -1, -1) if pool[i] not in labels]
            if not usable:
                pool = [str(c) for c in rng.permutation(classes)] + pool
                continue
            labels.append(pool.pop(usable[0]))
        out.append(tuple(labels))
    return out


def _clip_jobs(seed: int, set_name: str, count: int, folder: Path, names_rng, taken, original_folder):
    plan = _rng(seed, set_name, _PLAN)
    if set_name in REAL_CLIP_SETS:
        names = _audioset_names(names_rng, count, taken)
    else:  # DESED soundscapes are numbered
        names = [f"{i}.wav" for i in range(count)]
    labels = _balanced_labels(plan, DESED_CLASSES, count)
    if set_name == "eval_private":  # the 2024 evaluation set mixes DESED-like and MAESTRO-like clips
        maestro_labels = _balanced_labels(plan, MAESTRO_CLASSES, count)
        labels = [maestro_labels[i] if i % 2 else labels[i] for i in range(count)]
    jobs = []
    for i, (name, clip_labels) in enumerate(zip(names, labels)):
        n_samples = CLIP_SAMPLES
        if set_name in REAL_CLIP_SETS and plan.uniform() < SHORT_CLIP_FRACTION:
            n_samples = int(round(plan.uniform(*SHORT_CLIP_SECONDS) * 1000)) * MS
        original = original_folder / name if original_folder is not None else None
        jobs.append(ClipJob(seed, set_name, i, folder / name, n_samples, clip_labels, original))
    return jobs


def _format_time(seconds: float) -> str:
    return f"{seconds:.3f}"


def _write_tsv(path: Path, header: tuple[str, ...], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(v) for v in row) + "\n")


def _strong_rows(jobs, results):
    return [(job.path.name, _format_time(e.onset), _format_time(e.offset), e.label)
            for job, events in zip(jobs, results) for e in sorted(events, key=lambda e: (e.onset, e.label))]


def _duration_rows(jobs):
    return [(job.path.name, _format_time(job.n_samples / SAMPLE_RATE)) for job in jobs]


def _impulse_response(rng: np.random.Generator) -> np.ndarray:
    """A short device response: direct path, a resonance and a decaying noise tail (20-150 ms)."""
    n = int(rng.uniform(0.02, 0.15) * SAMPLE_RATE)
    t = _seconds(n)
    resonance = np.sin(2 * np.pi * rng.uniform(500, 4000) * t) * np.exp(-t / rng.uniform(0.002, 0.01))
    tail = rng.standard_normal(n) * np.exp(-t / rng.uniform(0.005, 0.03))
    response = 0.3 * resonance + 0.2 * tail
    response[0] = 1.0
    return response / np.abs(response).max() * PEAK_LIMIT


def _run(jobs, workers: int):
    if workers <= 1 or len(jobs) < 2:
        return [_render(job) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_render, jobs, chunksize=max(1, len(jobs) // (8 * workers)))


def _recording_jobs(seed: int, root: Path, spec: Preset, maestro_val_hop: float) -> dict[str, list[RecordingJob]]:
    """MAESTRO recordings of both sets: scenes round-robin, named ``<scene>_<nn>`` (validation from 50 on)."""
    scenes = tuple(MAESTRO_SCENES)
    jobs: dict[str, list[RecordingJob]] = {}
    for set_name, stream, durations, hop_s, first_number in (
            ("maestro_real_train", "maestro_train_recordings", spec.maestro_train_cs, MAESTRO_TRAIN_HOP_S, 0),
            ("maestro_real_dev", "maestro_val_recordings", spec.maestro_val_cs, maestro_val_hop, 50)):
        folder = root / SETS[set_name].audio
        folder.mkdir(parents=True, exist_ok=True)
        jobs[set_name] = []
        for i, duration_cs in enumerate(durations):
            scene = scenes[i % len(scenes)]
            stem = f"{scene}_{first_number + i // len(scenes):02d}"
            jobs[set_name].append(RecordingJob(seed, stream, i, stem, scene, duration_cs * CS, _hop_samples(hop_s),
                                               folder))
    return jobs


def _write_desed_tsvs(root: Path, resources: Path, seed: int, spec: Preset, clip_jobs, clip_events) -> None:
    strong_header = ("filename", "onset", "offset", "event_label")
    for set_name in ("synth_train", "strong_train", "synth_val", "devtest", "eval_public"):
        rows = _strong_rows(clip_jobs[set_name], clip_events[set_name])
        _write_tsv(root / SETS[set_name].labels, strong_header, rows)
    for set_name in ("synth_val", "devtest", "eval_public", "eval_private"):
        _write_tsv(root / SETS[set_name].durations, ("filename", "duration"), _duration_rows(clip_jobs[set_name]))
    _write_tsv(root / SETS["weak_train"].labels, ("filename", "event_labels"),
               [(job.path.name, ",".join(sorted({e.label for e in events})))
                for job, events in zip(clip_jobs["weak_train"], clip_events["weak_train"])])
    # external strong: one audio folder, a train/eval split of tsvs and one durations tsv, all in resources/
    jobs, events = clip_jobs["external_strong_train"], clip_events["external_strong_train"]
    val_rng = _rng(seed, "external_strong_val", _PLAN)
    in_val = set(val_rng.choice(len(jobs), spec.external_strong_val, replace=False).tolist())
    for set_name, want_val in (("external_strong_train", False), ("external_strong_val", True)):
        chosen = [i for i in range(len(jobs)) if (i in in_val) == want_val]
        _write_tsv(resources / SETS[set_name].labels, strong_header,
                   _strong_rows([jobs[i] for i in chosen], [events[i] for i in chosen]))
    _write_tsv(resources / SETS["external_strong_train"].durations, ("filename", "duration"), _duration_rows(jobs))


def _write_maestro_tsvs(root: Path, recording_jobs, chunk_rows) -> None:
    for set_name in ("maestro_real_train", "maestro_real_dev"):
        _write_tsv(root / SETS[set_name].labels, ("filename", "onset", "offset", "event_label", "confidence"),
                   [(name, _format_time(e.onset), _format_time(e.offset), e.label, f"{e.confidence:.1f}")
                    for name, e in sorted(chunk_rows[set_name], key=lambda row: row[0])])
    # one durations tsv for all recordings (train and validation), by stem, like development_metadata.csv
    recordings = recording_jobs["maestro_real_train"] + recording_jobs["maestro_real_dev"]
    _write_tsv(root / SETS["maestro_real_dev"].durations, ("filename", "duration"),
               sorted((job.stem, _format_time(job.n_samples / SAMPLE_RATE)) for job in recordings))


def _write_resources(resources: Path, seed: int, clip_jobs) -> None:
    """Exclude lists naming real demo clips, and the device impulse responses."""
    exclude_rng = _rng(seed, "names", _PLAN, 1)
    for set_name, relative in EXCLUDE_LISTS.items():
        names = sorted(job.path.name for job in clip_jobs[set_name])
        excluded = sorted(exclude_rng.choice(names, EXCLUDED_PER_LIST, replace=False).tolist())
        _write_tsv(resources / relative, ("filename",), [(name,) for name in excluded])
    dirs_rng = _rng(seed, "dirs", _PLAN)
    for device in DEVICE_NAMES:
        (resources / "dirs" / device).mkdir(parents=True, exist_ok=True)
        for i in range(IRS_PER_DEVICE):
            write_wav(resources / "dirs" / device / f"{device}_ir{i}.wav", _impulse_response(dirs_rng))


def clear_output_dir(root: Path, manifest: str, overwrite: bool) -> None:
    """Make way for a generated tree at ``root``: an empty or missing folder is fine; an earlier tree (it holds
    ``manifest``) is deleted when ``overwrite``; anything else is refused."""
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty; pass overwrite=True (--overwrite) to replace a demo tree")
        if not (root / manifest).is_file():
            raise FileExistsError(f"{root} is not empty and holds no {manifest}: refusing to delete it")
        shutil.rmtree(root)


def demo_tree_state(root, preset: str, seed: int, maestro_val_hop: float = MAESTRO_TRAIN_HOP_S) -> str:
    """What is at ``root``: "empty" (missing or empty folder), "complete" (a finished demo tree of this preset,
    seed and MAESTRO validation hop whose audio folders hold the counts of its manifest), "different" (a finished
    demo tree of another preset / seed / hop), "incomplete" (a demo tree whose generation did not finish, or
    whose files were removed since), or "foreign" (files without a readable demo manifest: not ours to delete).
    """
    root = Path(root)
    if not root.exists() or not any(root.iterdir()):
        return "empty"
    try:
        manifest = json.loads((root / DEMO_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "foreign"
    if not isinstance(manifest, dict) or manifest.get("generator") != "data_util.demo":
        return "foreign"
    # manifests written before the "complete" flag existed were only written at the end of a generation
    if not manifest.get("complete", True):
        return "incomplete"
    wanted = {"preset": preset, "seed": seed, "maestro_val_hop": maestro_val_hop}
    if any(manifest.get(key) != value for key, value in wanted.items()):
        return "different"
    found = {name: sum(1 for _ in (root / spec_set.audio).glob("*.wav")) for name, spec_set in SETS.items()}
    if found != manifest.get("counts") or found != expected_counts(preset, maestro_val_hop):
        return "incomplete"
    return "complete"


def _write_manifest(root: Path, preset: str, seed: int, maestro_val_hop: float, counts: dict, complete: bool) -> None:
    manifest = {"generator": "data_util.demo", "preset": preset, "seed": seed, "maestro_val_hop": maestro_val_hop,
                "counts": counts, "complete": complete}
    atomic_write_text(root / DEMO_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def generate(out_dir, preset: str = "tiny", seed: int = 0, *, workers: int = 1,
             maestro_val_hop: float = MAESTRO_TRAIN_HOP_S, overwrite: bool = False, reuse: bool = False) -> dict[str, int]:
    """Write the demo dataset under ``out_dir`` (resources-side files under ``out_dir/resources``).

    Returns the number of audio files written per set (keys of ``SETS``; the two external strong sets share
    one folder and report its total), equal to ``expected_counts(preset, maestro_val_hop)``.

    A non-empty ``out_dir`` is refused unless ``overwrite`` (replace any demo tree) or ``reuse`` (keep a complete
    tree of the same preset, seed and hop as it is; replace an incomplete or different demo tree). A folder
    without a demo manifest is never deleted. The manifest is written first with ``"complete": false`` and
    rewritten with ``true`` at the end, so an interrupted generation is recognised as incomplete.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; expected one of {sorted(PRESETS)}")
    _hop_samples(maestro_val_hop)  # validate before touching the disk
    root = Path(out_dir)
    state = demo_tree_state(root, preset, seed, maestro_val_hop)
    if state == "complete" and reuse:
        log.info("%s already holds the complete %s demo dataset (seed %d): reused", root, preset, seed)
        return expected_counts(preset, maestro_val_hop)
    if state != "empty":
        if state == "foreign":
            raise FileExistsError(f"{root} is not empty and holds no {DEMO_MANIFEST}: refusing to delete it")
        if not (overwrite or reuse):
            raise FileExistsError(f"{root} is not empty; pass overwrite=True (--overwrite) to replace a demo tree "
                                  "or reuse=True (--reuse) to keep a complete one")
        log.info("%s holds a%s demo tree: regenerating it", root,
                 {"complete": " complete", "different": " different", "incomplete": "n incomplete"}[state])
        shutil.rmtree(root)
    resources = root / RESOURCES_SUBDIR
    spec = PRESETS[preset]
    root.mkdir(parents=True, exist_ok=True)
    _write_manifest(root, preset, seed, maestro_val_hop, expected_counts(preset, maestro_val_hop), complete=False)

    names_rng, taken = _rng(seed, "names", _PLAN), set()
    clip_jobs: dict[str, list[ClipJob]] = {}
    for set_name, count in spec.clips.items():
        folder = root / SETS[set_name].audio
        folder.mkdir(parents=True, exist_ok=True)
        original = root / SETS[set_name].original_audio if set_name in SETS_WITH_ORIGINALS else None
        if original is not None:
            original.mkdir(parents=True, exist_ok=True)
        if set_name == "external_strong_train":  # the eval split's clips share the folder
            count += spec.external_strong_val
        clip_jobs[set_name] = _clip_jobs(seed, set_name, count, folder, names_rng, taken, original)
    recording_jobs = _recording_jobs(seed, root, spec, maestro_val_hop)

    all_jobs = [job for jobs in clip_jobs.values() for job in jobs] + \
               [job for jobs in recording_jobs.values() for job in jobs]
    results = iter(_run(all_jobs, workers))  # in job order
    clip_events = {name: [next(results) for _ in jobs] for name, jobs in clip_jobs.items()}
    chunk_rows = {name: [row for _ in jobs for row in next(results)] for name, jobs in recording_jobs.items()}

    _write_desed_tsvs(root, resources, seed, spec, clip_jobs, clip_events)
    _write_maestro_tsvs(root, recording_jobs, chunk_rows)
    _write_resources(resources, seed, clip_jobs)
    counts = {name: sum(1 for _ in (root / spec_set.audio).glob("*.wav")) for name, spec_set in SETS.items()}
    _write_manifest(root, preset, seed, maestro_val_hop, counts, complete=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_util.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="dataset root to create (resources go to <out>/resources)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes rendering clips in parallel")
    parser.add_argument("--maestro-val-hop", type=float, default=MAESTRO_TRAIN_HOP_S,
                        help="chunk hop (s) of the MAESTRO validation recordings (the final DCASE data: 5)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace an existing demo tree at --out")
    existing.add_argument("--reuse", action="store_true",
                          help="keep a complete demo tree of the same preset, seed and hop at --out; "
                               "regenerate an incomplete or different one (what `make demo` does)")
    parser.add_argument("--describe", action="store_true", help="print the class -> sound table and exit")
    args = parser.parse_args(argv)
    if args.describe:
        print(describe_classes())
        return 0
    if not args.out:
        parser.error("--out is required")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    if args.reuse and demo_tree_state(args.out, args.preset, args.seed, args.maestro_val_hop) == "complete":
        log.info("%s already holds the complete %s demo dataset (seed %d, %s): kept as it is (--overwrite "
                 "regenerates it)", args.out, args.preset, args.seed, DEMO_MANIFEST)
        return 0
    try:
        counts = generate(args.out, args.preset, args.seed, workers=args.workers,
                          maestro_val_hop=args.maestro_val_hop, overwrite=args.overwrite, reuse=args.reuse)
    except FileExistsError as error:
        parser.exit(1, f"{parser.prog}: {error}\n")
    log.info("wrote the %s demo dataset (seed %d) to %s in %.1f s: %s", args.preset, args.seed, args.out,
             time.perf_counter() - started, ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
