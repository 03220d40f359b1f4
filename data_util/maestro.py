"""MAESTRO-real specifics: chunk names and the train/validation split by recording.

Re-assembling chunk scores into recordings for evaluation lives in ``helpers/evaluation/maestro.py``.

The DCASE data ships the long MAESTRO recordings as 10 s chunks named
``<recording>-<onset_cs:06d>-<offset_cs:06d>.wav`` (onset/offset in centiseconds of the recording),
e.g. ``cafe_restaurant_07-000100-001100.wav`` = seconds 1..11 of ``cafe_restaurant_07``. The recording id
is everything before the first ``-``; the scene is the recording id without its trailing ``_<number>``.

``split_maestro`` reproduces the reference's split of ``maestro_real_train`` into training and validation
recordings exactly (same seed -> same recordings): one legacy ``numpy.random.RandomState(seed)`` shuffles
the recordings of each scene in turn (scenes in the fixed order below, recordings in order of first
appearance in the tsv) and the first ``int(split * n)`` of each scene go to training. The reference seeded
numpy's global generator; we use a local one with the same stream.
"""
from __future__ import annotations

import re
from pathlib import PurePath
from typing import Iterable, NamedTuple

import numpy as np

MAESTRO_SCENES: tuple[str, ...] = (
    "cafe_restaurant", "city_center", "grocery_store", "metro_station", "residential_area",
)
CENTISECONDS_PER_SECOND = 100
_CHUNK_NAME = re.compile(r"^(?P<recording>.+)-(?P<onset>\d+)-(?P<offset>\d+)$")


class ChunkName(NamedTuple):
    """The parts of a MAESTRO chunk name (unpacks as ``recording, onset, offset``)."""

    recording: str
    onset: float  # seconds from the recording start
    offset: float


def parse_chunk_name(name: str) -> ChunkName:
    """Parse ``<recording>-<onset_cs>-<offset_cs>[.wav]`` (a stem or a filename, with or without folder)."""
    stem = PurePath(name).name
    stem = stem[: -len(PurePath(stem).suffix)] if PurePath(stem).suffix in (".wav", ".flac", ".mp3") else stem
    match = _CHUNK_NAME.match(stem)
    if match is None:
        raise ValueError(
            f"MAESTRO chunk name {name!r} does not match '<recording>-<onset_cs:06d>-<offset_cs:06d>'"
        )
    onset = int(match["onset"]) / CENTISECONDS_PER_SECOND
    offset = int(match["offset"]) / CENTISECONDS_PER_SECOND
    if not offset > onset:
        raise ValueError(f"MAESTRO chunk name {name!r}: offset {offset} s <= onset {onset} s")
    return ChunkName(match["recording"], onset, offset)


def recording_id(name: str) -> str:
    """Recording of a chunk name (everything before the first ``-``, as the reference)."""
    return PurePath(name).name.split("-")[0]


def scene_of(name: str) -> str:
    """Acoustic scene of a chunk or recording name (``cafe_restaurant_07-...`` -> ``cafe_restaurant``)."""
    return "_".join(recording_id(name).split("_")[:-1])


def split_maestro(filenames: Iterable[str], split: float = 0.9, seed: int = 42) -> tuple[list[str], list[str]]:
    """Split chunk filenames into (train, validation) by recording within each scene, as the reference.

    ``filenames`` in tsv order (repeats allowed); both outputs keep that order without repeats.
    Raises ``ValueError`` for a chunk whose scene is not one of ``MAESTRO_SCENES``.
    """
    if not 0.0 <= split <= 1.0:
        raise ValueError(f"maestro_split must be in [0, 1], got {split}")
    names = list(dict.fromkeys(filenames))
    unknown = sorted({scene_of(n) for n in names} - set(MAESTRO_SCENES))
    if unknown:
        raise ValueError(f"MAESTRO chunks with unknown scene(s) {unknown}; expected scenes {list(MAESTRO_SCENES)}")
    rng = np.random.RandomState(seed)  # legacy stream = the reference's np.random.seed(seed) + shuffle
    train_recordings: set[str] = set()
    for scene in MAESTRO_SCENES:
        recordings = np.array(list(dict.fromkeys(recording_id(n) for n in names if scene_of(n) == scene)))
        rng.shuffle(recordings)
        train_recordings.update(recordings[: int(split * len(recordings))].tolist())
    train = [n for n in names if recording_id(n) in train_recordings]
    valid = [n for n in names if recording_id(n) not in train_recordings]
    return train, valid
