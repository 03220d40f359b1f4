"""Readers for the tab-separated label files of the DCASE 2024 Task 4 data.

Formats (first line is a header; columns are found by name, extra columns are ignored):

- strong: ``filename onset offset event_label``; a row with only a filename lists a clip without events
  (the devtest tsv has 15 of these).
- soft (MAESTRO real): ``filename onset offset event_label confidence``.
- weak: ``filename event_labels`` with comma-joined labels (empty = no event).
- durations: ``filename duration`` (MAESTRO's lists stems of whole recordings, e.g. ``cafe_restaurant_07``).
- exclude lists / filename lists: ``filename``.

Every error names the file, and for a bad row its 1-based line number, the expected columns and the row.
Unknown event labels are errors (a typo in a label file would otherwise silently train a class to zero).
Same-class events that overlap or touch are kept as they are: the label encoder takes the maximum over
them (see ``data_util.datasets.encode_strong``), so they simply merge.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterator

from data_util.classes import CLASSES

STRONG_COLUMNS = ("filename", "onset", "offset", "event_label")
SOFT_COLUMNS = STRONG_COLUMNS + ("confidence",)
WEAK_COLUMNS = ("filename", "event_labels")
DURATION_COLUMNS = ("filename", "duration")
FILENAME_COLUMNS = ("filename",)
WEAK_LABEL_SEPARATOR = ","


class TsvFormatError(ValueError):
    """A label tsv has missing columns, a malformed row or an unknown label."""


@dataclass(frozen=True)
class Event:
    """One labelled sound event of a clip (seconds from the clip start)."""

    onset: float
    offset: float
    label: str
    confidence: float = 1.0


def read_strong_tsv(
    path: str | os.PathLike, *, soft: bool = False, known_labels: Collection[str] = CLASSES
) -> dict[str, list[Event]]:
    """Read a strong (or, with ``soft``, a MAESTRO soft) label tsv: ``{filename: [Event, ...]}``.

    Clips keep the order of their first row; clips listed without an event map to ``[]``.
    """
    columns = SOFT_COLUMNS if soft else STRONG_COLUMNS
    known = set(known_labels)
    clips: dict[str, list[Event]] = {}
    for line_no, row in _rows(path, columns):
        filename = row["filename"]
        events = clips.setdefault(filename, [])
        if row["onset"] == "" and row["offset"] == "" and row["event_label"] == "":
            continue  # clip without events
        onset = _number(path, line_no, row, "onset")
        offset = _number(path, line_no, row, "offset")
        if onset < 0 or offset < onset:
            raise TsvFormatError(
                f"{path}, line {line_no}: expected 0 <= onset <= offset, got onset={onset}, offset={offset}"
            )
        label = row["event_label"]
        _check_label(path, line_no, label, known)
        confidence = _number(path, line_no, row, "confidence") if soft else 1.0
        if soft and not 0.0 <= confidence <= 1.0:
            raise TsvFormatError(f"{path}, line {line_no}: confidence must be in [0, 1], got {confidence}")
        events.append(Event(onset, offset, label, confidence))
    return clips


def read_weak_tsv(path: str | os.PathLike, *, known_labels: Collection[str] = CLASSES) -> dict[str, list[str]]:
    """Read a weak label tsv: ``{filename: [label, ...]}`` in file order."""
    known = set(known_labels)
    clips: dict[str, list[str]] = {}
    for line_no, row in _rows(path, WEAK_COLUMNS):
        labels = [label for label in row["event_labels"].split(WEAK_LABEL_SEPARATOR) if label != ""]
        for label in labels:
            _check_label(path, line_no, label, known)
        if row["filename"] in clips:
            raise TsvFormatError(f"{path}, line {line_no}: clip {row['filename']!r} is listed twice")
        clips[row["filename"]] = labels
    return clips


def read_durations_tsv(path: str | os.PathLike) -> dict[str, float]:
    """Read a durations tsv: ``{filename: seconds}``."""
    durations = {}
    for line_no, row in _rows(path, DURATION_COLUMNS):
        duration = _number(path, line_no, row, "duration")
        if duration <= 0:
            raise TsvFormatError(f"{path}, line {line_no}: duration must be positive, got {duration}")
        durations[row["filename"]] = duration
    return durations


def read_filename_list(path: str | os.PathLike) -> list[str]:
    """Read a ``filename`` tsv (e.g. an exclude list), in file order without duplicates."""
    return list(dict.fromkeys(row["filename"] for _, row in _rows(path, FILENAME_COLUMNS)))


def _rows(path: str | os.PathLike, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, {column: value})`` for each non-empty data row, after checking the header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} does not exist")
    with open(path, encoding="utf-8", newline="") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
        missing = [c for c in columns if c not in header]
        if missing:
            raise TsvFormatError(
                f"{path}: expected tab-separated columns {list(columns)}, found {header} (missing {missing})"
            )
        positions = {c: header.index(c) for c in columns}
        needed = max(positions.values()) + 1
        for line_no, line in enumerate(handle, start=2):
            line = line.rstrip("\r\n")
            if line.strip() == "":
                continue
            fields = line.split("\t")
            if len(fields) < needed:  # trailing empty fields are legal (clips without events)
                fields += [""] * (needed - len(fields))
            row = {c: fields[i].strip() for c, i in positions.items()}
            if row["filename"] == "":
                raise TsvFormatError(f"{path}, line {line_no}: empty filename in row {line!r}")
            yield line_no, row


def _number(path, line_no: int, row: dict[str, str], column: str) -> float:
    try:
        value = float(row[column])
    except ValueError:
        raise TsvFormatError(
            f"{path}, line {line_no}: column {column!r} must be a number, got {row[column]!r} (row {row})"
        ) from None
    if not math.isfinite(value):
        raise TsvFormatError(f"{path}, line {line_no}: column {column!r} must be finite, got {row[column]!r}")
    return value


def _check_label(path, line_no: int, label: str, known: set[str]) -> None:
    if label not in known:
        raise TsvFormatError(
            f"{path}, line {line_no}: unknown event label {label!r}; expected one of data_util.classes.CLASSES"
        )
