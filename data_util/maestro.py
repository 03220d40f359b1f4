"""MAESTRO-real specifics: chunk names, the train/validation split by recording, overlap-add helpers.

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
from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePath
from typing import Iterable, Mapping

import numpy as np

MAESTRO_SCENES: tuple[str, ...] = (
    "cafe_restaurant", "city_center", "grocery_store", "metro_station", "residential_area",
)
CENTISECONDS_PER_SECOND = 100
_CHUNK_NAME = re.compile(r"^(?P<recording>[^-]+)-(?P<onset>\d+)-(?P<offset>\d+)$")


@dataclass(frozen=True)
class ChunkName:
    """The parts of a MAESTRO chunk name."""

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
    return ChunkName(
        match["recording"],
        int(match["onset"]) / CENTISECONDS_PER_SECOND,
        int(match["offset"]) / CENTISECONDS_PER_SECOND,
    )


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


def group_chunks(names: Iterable[str]) -> dict[str, list[tuple[str, float]]]:
    """``{recording: [(chunk name, onset seconds), ...]}`` sorted by onset."""
    groups: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for name in names:
        groups[parse_chunk_name(name).recording].append((name, parse_chunk_name(name).onset))
    return {rec: sorted(chunks, key=lambda c: c[1]) for rec, chunks in sorted(groups.items())}


def chunk_hop(names: Iterable[str]) -> float:
    """The hop between consecutive chunks of the same recording, in seconds (1 s for train, 5 s for eval).

    Raises ``ValueError`` if recordings use different hops; returns 0.0 if no recording has two chunks.
    """
    hops = set()
    for chunks in group_chunks(names).values():
        onsets = [onset for _, onset in chunks]
        hops.update(round(b - a, 2) for a, b in zip(onsets, onsets[1:]))
    if len(hops) > 1:
        raise ValueError(f"MAESTRO chunks use several hops {sorted(hops)} s; expected one")
    return hops.pop() if hops else 0.0


def overlap_add(
    chunk_scores: Mapping[str, np.ndarray], recording_durations: Mapping[str, float], segment_length: float = 1.0
) -> dict[str, np.ndarray]:
    """Average per-chunk segment scores into per-recording segment scores (the DCASE MAESTRO protocol).

    ``chunk_scores[name]`` is [S, K] (S segments of ``segment_length`` s from the chunk onset). Each chunk is
    added at segment ``int(onset // segment_length)`` of its recording's array of ``ceil(duration /
    segment_length)`` rows, and every segment is divided by the number of chunks covering it (uncovered
    segments stay 0). Returns ``{recording: [ceil(duration/segment_length), K]}``.
    """
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for name, scores in chunk_scores.items():
        chunk = parse_chunk_name(name)
        if chunk.recording not in recording_durations:
            raise KeyError(f"no duration for MAESTRO recording {chunk.recording!r} (chunk {name!r})")
        num_segments = int(np.ceil(recording_durations[chunk.recording] / segment_length))
        if chunk.recording not in sums:
            sums[chunk.recording] = np.zeros((num_segments, scores.shape[1]), dtype=np.float64)
            counts[chunk.recording] = np.zeros((num_segments, 1), dtype=np.float64)
        start = int(chunk.onset // segment_length)
        stop = min(start + len(scores), num_segments)
        sums[chunk.recording][start:stop] += scores[: stop - start]
        counts[chunk.recording][start:stop] += 1
    return {rec: sums[rec] / np.maximum(counts[rec], 1) for rec in sums}
