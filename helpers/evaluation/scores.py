"""Logits -> sed_scores_eval score tables, and the ground-truth / duration readers of the evaluation.

sed_scores_eval represents a system output as ``dict[audio_id -> DataFrame]`` with columns
``onset, offset, <class...>``, one row per frame. For our 156 frames of 64 ms the frame boundaries are
``arange(157) * 1024 / 16000`` clipped at the nominal 10 s clip length (last offset 9.984 s). Like the
reference, the table always spans the nominal clip; the audio duration of shorter clips only enters
the metrics through the durations dict.

The tables are built directly with ``pd.DataFrame`` from one vectorised array, giving exactly what
``sed_scores_eval.base_modules.scores.create_score_dataframe`` gives (same dtypes, columns and values)
without its per-clip argument checks (``tests/test_metrics.py`` checks the equality).
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from data_util.classes import CLASSES, class_indices
from data_util.prediction_files import CLIP_SECONDS, SAMPLE_RATE, SAMPLES_PER_FRAME

ONSET, OFFSET = "onset", "offset"
Event = tuple[float, float, str]


def audio_id(filename: str) -> str:
    """The clip id sed_scores_eval uses: the file name without a ``.wav`` suffix."""
    return filename[: -len(".wav")] if filename.endswith(".wav") else filename


def frame_timestamps(num_frames: int, clip_seconds: float = CLIP_SECONDS) -> np.ndarray:
    """float64 [num_frames + 1] frame boundaries in seconds, clipped at ``clip_seconds``.

    Computed as ``frame * 1024 / 16000`` (one rounding), which equals the reference encoder's
    ``frame * 4 / (16000 / 256)`` and the decimal values written in score tsvs bit for bit.
    """
    frames = np.arange(num_frames + 1, dtype=np.float64)
    return np.clip(frames * SAMPLES_PER_FRAME / SAMPLE_RATE, 0.0, clip_seconds)


def sigmoid(strong_logits: np.ndarray) -> np.ndarray:
    """float32 sigmoid computed by torch, as the reference does (keeps its score values bit-identical)."""
    return torch.sigmoid(torch.from_numpy(np.ascontiguousarray(strong_logits, dtype=np.float32))).numpy()


def scores_from_probabilities(
    filenames: Sequence[str],
    probabilities: np.ndarray,
    class_names: Sequence[str],
    timestamps: np.ndarray | None = None,
) -> dict[str, pd.DataFrame]:
    """Score tables from probabilities [N, T, K] whose K columns are ``class_names``."""
    N, T, K = probabilities.shape
    if len(filenames) != N or len(class_names) != K:
        raise ValueError(
            f"{N} clips x {K} classes of scores but {len(filenames)} filenames and {len(class_names)} class names"
        )
    if timestamps is None:
        timestamps = frame_timestamps(T)
    if timestamps.shape != (T + 1,):
        raise ValueError(f"timestamps must have shape ({T + 1},), got {timestamps.shape}")
    table = np.empty((N, T, K + 2), dtype=np.float64)
    table[:, :, 0] = timestamps[:-1]
    table[:, :, 1] = timestamps[1:]
    table[:, :, 2:] = probabilities
    columns = [ONSET, OFFSET, *class_names]
    return {audio_id(name): pd.DataFrame(table[i], columns=columns) for i, name in enumerate(filenames)}


def scores_from_logits(
    filenames: Sequence[str],
    strong_logits: np.ndarray,
    classes: Sequence[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Score tables (sigmoid of ``strong_logits`` [N, 156, 27]) restricted to ``classes`` (default: all 27).

    ``strong_logits`` columns are in ``data_util.classes.CLASSES`` order; the tables' columns are in the
    order of ``classes``.
    """
    classes = list(CLASSES if classes is None else classes)
    if strong_logits.ndim != 3 or strong_logits.shape[-1] != len(CLASSES):
        raise ValueError(f"strong_logits must be [N, frames, {len(CLASSES)}], got {strong_logits.shape}")
    columns = class_indices(classes)
    return scores_from_probabilities(filenames, sigmoid(strong_logits[:, :, columns]), classes)


def select_classes(scores: dict[str, pd.DataFrame], classes: Sequence[str], ids: Iterable[str] | None = None):
    """Score tables restricted to ``ids`` (default: all) and the columns ``classes`` (in that order)."""
    keys = [ONSET, OFFSET, *classes]
    ids = scores.keys() if ids is None else ids
    missing = [i for i in ids if i not in scores]
    if missing:
        raise KeyError(f"{len(missing)} clips have no scores, e.g. {missing[:5]}")
    return {i: scores[i][keys] for i in ids}


# --------------------------------------------------------------------------------------------- #
# ground truth and durations
# --------------------------------------------------------------------------------------------- #
def merge_overlapping_events(events: Iterable[Event]) -> list[Event]:
    """Merge same-class events that overlap **or touch** (sed_scores_eval rejects both).

    Returns the events sorted by class (first appearance) and onset.
    """
    per_class: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for onset, offset, label in events:
        per_class[label].append((float(onset), float(offset)))
    merged: list[Event] = []
    for label, spans in per_class.items():
        current: list[float] | None = None
        for onset, offset in sorted(spans):
            if current is not None and onset <= current[1]:
                current[1] = max(current[1], offset)
                continue
            if current is not None:
                merged.append((current[0], current[1], label))
            current = [onset, offset]
        merged.append((current[0], current[1], label))
    return merged


def ground_truth_from_table(
    table: pd.DataFrame,
    *,
    classes: Iterable[str] | None = None,
    min_confidence: float | None = None,
    keep_empty: bool = False,
    source: str = "ground truth",
) -> dict[str, list[Event]]:
    """``dict[id -> [(onset, offset, label)]]`` from a strong-label table, same-class overlaps merged.

    Rows without a label (clips without events) give empty lists, kept only if ``keep_empty``.
    ``min_confidence`` keeps rows with ``confidence > min_confidence`` (MAESTRO soft labels).
    ``classes`` keeps only those labels.
    """
    required = ["filename", ONSET, OFFSET, "event_label"] + (["confidence"] if min_confidence is not None else [])
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(table.columns)}")
    events: dict[str, list[Event]] = {}
    labelled = table["event_label"].notna()
    if keep_empty:
        for name in table["filename"]:
            events.setdefault(audio_id(str(name)), [])
    keep = labelled
    if min_confidence is not None:
        keep = keep & (table["confidence"] > min_confidence)
    if classes is not None:
        keep = keep & table["event_label"].isin(list(classes))
    for name, onset, offset, label in zip(
        table["filename"][keep], table[ONSET][keep], table[OFFSET][keep], table["event_label"][keep]
    ):
        if not offset > onset:
            raise ValueError(f"{source}: event {label!r} of {name} has offset {offset} <= onset {onset}")
        events.setdefault(audio_id(str(name)), []).append((float(onset), float(offset), str(label)))
    return {clip: merge_overlapping_events(clip_events) for clip, clip_events in events.items()}


def read_ground_truth(
    path: str | os.PathLike,
    *,
    classes: Iterable[str] | None = None,
    min_confidence: float | None = None,
    keep_empty: bool = False,
) -> dict[str, list[Event]]:
    """Read a ``filename onset offset event_label [confidence]`` tsv (see ``ground_truth_from_table``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth tsv {path} does not exist")
    table = pd.read_csv(path, sep="\t")
    return ground_truth_from_table(
        table, classes=classes, min_confidence=min_confidence, keep_empty=keep_empty, source=str(path)
    )


def read_durations(path: str | os.PathLike) -> dict[str, float]:
    """``dict[id -> seconds]`` from a ``filename duration`` tsv (ids with or without ``.wav``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"durations tsv {path} does not exist")
    table = pd.read_csv(path, sep="\t")
    if not {"filename", "duration"} <= set(table.columns):
        raise ValueError(f"{path}: expected columns 'filename' and 'duration', found {list(table.columns)}")
    durations = {audio_id(str(n)): float(d) for n, d in zip(table["filename"], table["duration"])}
    bad = [k for k, d in durations.items() if not (math.isfinite(d) and d > 0)]
    if bad:
        raise ValueError(f"{path}: non-positive or missing durations for {bad[:5]}")
    return durations
