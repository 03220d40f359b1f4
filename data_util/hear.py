"""HEAR-format sound event detection tasks: the task reader, frame targets, training crops and whole-file sets.

The HEAR 2021 benchmark (hearbenchmark.com; layout written by hearbenchmark/hear-preprocess) stores a task as::

    <task>/task_metadata.json     {"task_name", "embedding_type": "event", "prediction_type": "multilabel",
                                   "splits": ["train", "valid", "test"] (or "fold00", ...), "sample_duration", ...}
    <task>/labelvocabulary.csv    header "idx,label", one row per class, idx 0..C-1
    <task>/<split>.json           {"<file>.wav": [{"label": str, "start": ms, "end": ms}, ...], ...}
    <task>/<sample rate>/<split>/<file>.wav

Only files listed in ``<split>.json`` belong to a split (HEAR embeds and scores exactly those). Frame targets follow
HEAR's ``get_labels_for_timestamps``: frame k (centre (k + 0.5)·hop) carries a label when the centre lies in
[start, end + 0.0001) ms of one of its events. Training takes random crops aligned to the frame grid (PretrainedSED's
``RandomCropDataset``, fschmid56/PretrainedSED ``data_util/dcase2016task2.py``), each file as often per epoch as it
holds crops; validation and test take whole files (windows and overlap-add happen in the model).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data_util.audio import AudioReadError, audio_info, read_audio
from data_util.datasets import MIXUP_BETA_ALPHA, WaveformMixDataset

SAMPLE_RATE = 16_000
METADATA = "task_metadata.json"
VOCABULARY = "labelvocabulary.csv"
END_TOLERANCE_MS = 0.0001  # HEAR adds it to an event's end so that a frame centred on the end still counts
MAX_LISTED = 10  # missing files named in one error


class HearTaskError(ValueError):
    """A HEAR task folder that cannot be used; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class HearFile:
    """One audio file of a split: where it is, its events (HEAR dicts, ms) and its length in samples."""

    split: str
    filename: str
    path: Path
    events: tuple[dict, ...]
    num_samples: int


@dataclass(frozen=True)
class HearTask:
    """A HEAR event task: its folder, metadata, label vocabulary (index order) and the files of the splits read."""

    path: Path
    metadata: dict
    labels: tuple[str, ...]
    files: Mapping[str, tuple[HearFile, ...]]  # split -> files, sorted by name
    sample_rate: int = SAMPLE_RATE

    @property
    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def select(self, splits: Sequence[str]) -> list[HearFile]:
        """The files of several splits (e.g. k-fold training folds), in split order."""
        return [f for split in splits for f in self.files[split]]

    def reference_events(self, splits: Sequence[str]) -> dict[str, list[dict]]:
        """``{filename: [events]}`` of the splits, as HEAR scores them (a file name must not repeat)."""
        events: dict[str, list[dict]] = {}
        for file in self.select(splits):
            if file.filename in events:
                raise HearTaskError(f"{file.filename} appears in more than one of the splits {list(splits)}")
            events[file.filename] = list(file.events)
        return events


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise HearTaskError(f"{path} is missing: a HEAR task folder needs {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HearTaskError(f"{path} is not valid JSON ({e})") from None


def read_vocabulary(path: Path) -> tuple[str, ...]:
    """Labels in index order from ``labelvocabulary.csv`` (header ``idx,label``; indices 0..C-1, each once)."""
    if not path.is_file():
        raise HearTaskError(f"{path} is missing: a HEAR task folder needs its label vocabulary (idx,label rows)")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"idx", "label"} <= set(rows[0]):
        raise HearTaskError(f"{path}: expected a header 'idx,label' and one row per label")
    try:
        by_index = {int(row["idx"]): str(row["label"]) for row in rows}
    except ValueError:
        raise HearTaskError(f"{path}: the idx column must hold integers") from None
    if sorted(by_index) != list(range(len(rows))):
        raise HearTaskError(f"{path}: idx must be 0..{len(rows) - 1}, each once; got {sorted(by_index)}")
    return tuple(by_index[i] for i in range(len(rows)))


def _check_events(path: Path, data, labels: set[str]) -> dict[str, tuple[dict, ...]]:
    if not isinstance(data, dict):
        raise HearTaskError(f"{path}: expected {{file name: [events]}}, got {type(data).__name__}")
    checked = {}
    for filename, events in data.items():
        good = []
        for event in events:
            try:
                label, start, end = str(event["label"]), float(event["start"]), float(event["end"])
            except (KeyError, TypeError, ValueError):
                raise HearTaskError(f"{path}: {filename}: every event needs 'label', 'start' and 'end' (ms), "
                                    f"got {event!r}") from None
            if label not in labels:
                raise HearTaskError(f"{path}: {filename}: label {label!r} is not in {VOCABULARY}")
            if end < start:
                raise HearTaskError(f"{path}: {filename}: event {event!r} ends before it starts")
            good.append({"label": label, "start": start, "end": end})
        checked[filename] = tuple(good)
    return checked


def read_task(path: str | os.PathLike, splits: Iterable[str], sample_rate: int = SAMPLE_RATE) -> HearTask:
    """Read and check a HEAR event task folder for ``splits`` (their json and audio lengths).

    One :class:`HearTaskError` for the first problem: a missing file (all missing audio files listed), a task that
    is not a multilabel event task, a split the metadata does not name, an event label outside the vocabulary.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise HearTaskError(f"task_path={str(path)!r} is not a folder; point it at a HEAR task folder holding "
                            f"{METADATA}, {VOCABULARY}, <split>.json and {sample_rate}/<split>/")
    metadata = _read_json(root / METADATA, "its metadata")
    kind = (metadata.get("embedding_type"), metadata.get("prediction_type"))
    if kind != ("event", "multilabel"):
        raise HearTaskError(f"{root / METADATA}: embedding_type={kind[0]!r}, prediction_type={kind[1]!r}; "
                            "only sound event detection tasks (event, multilabel) can be fine-tuned here")
    labels = read_vocabulary(root / VOCABULARY)
    named = metadata.get("splits")
    files: dict[str, tuple[HearFile, ...]] = {}
    missing: list[str] = []
    for split in dict.fromkeys(splits):
        if named is not None and split not in named:
            raise HearTaskError(f"{root / METADATA} names the splits {named}, not {split!r}: set the *_splits keys "
                                "to splits of this task")
        events = _check_events(root / f"{split}.json", _read_json(root / f"{split}.json", f"{split}.json"),
                               set(labels))
        audio_dir = root / str(sample_rate) / split
        split_files = []
        for filename in sorted(events):
            audio = audio_dir / filename
            if not audio.is_file():
                missing.append(str(audio))
                continue
            info = audio_info(audio)
            num_samples = round(info.frames * sample_rate / info.samplerate)
            split_files.append(HearFile(split, filename, audio, events[filename], num_samples))
        files[split] = tuple(split_files)
    if missing:
        listed = ", ".join(missing[:MAX_LISTED]) + (f" and {len(missing) - MAX_LISTED} more" if
                                                     len(missing) > MAX_LISTED else "")
        raise HearTaskError(f"{len(missing)} audio file(s) listed in the split json files are missing: {listed}. "
                            f"HEAR tasks keep {sample_rate} Hz audio in <task>/{sample_rate}/<split>/")
    return HearTask(root, metadata, labels, files, sample_rate)


# ------------------------------------------------------------------------------------------------ frame targets
def frame_targets(events: Iterable[Mapping], num_frames: int, hop_s: float, label_index: Mapping[str, int]) \
        -> np.ndarray:
    """Multi-hot targets float32 [C, num_frames]: frame k is active for a label when its centre (k + 0.5)·hop lies
    in [start, end + 0.0001) ms of one of the label's events (HEAR's ``get_labels_for_timestamps``)."""
    targets = np.zeros((len(label_index), num_frames), dtype=np.float32)
    centres_ms = (np.arange(num_frames) + 0.5) * hop_s * 1000.0
    for event in events:
        active = (centres_ms >= event["start"]) & (centres_ms < event["end"] + END_TOLERANCE_MS)
        targets[label_index[event["label"]], active] = 1.0
    return targets


def num_frames(num_samples: int, hop_s: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Frames of a file (the model's rule, ``models.frame_embedder.frame_count``): centres inside the file."""
    return max(1, math.floor(num_samples / (hop_s * sample_rate) + 0.5))


def _read(file: HearFile, sample_rate: int) -> np.ndarray:
    try:
        return read_audio(file.path, sample_rate)
    except AudioReadError as e:
        raise HearTaskError(f"{e}; re-create the task folder or remove the file from {file.split}.json") from None


class HearCropDataset(Dataset):
    """Training crops of ``crop_s`` seconds at random frame-aligned positions: ``{"audio" [S], "targets" [C, F],
    "filename"}``. A file appears ceil(length / crop) times per epoch (PretrainedSED: 12 crops of each 120 s file);
    shorter files and the end of the last crop are zero-padded (targets 0)."""

    def __init__(self, files: Sequence[HearFile], labels: Sequence[str], *, crop_s: float, hop_s: float,
                 sample_rate: int = SAMPLE_RATE):
        if not files:
            raise HearTaskError("no training file: the training splits list no audio")
        self.files = list(files)
        self.sample_rate = sample_rate
        self.hop_samples = hop_s * sample_rate
        self.crop_frames = round(crop_s / hop_s)
        self.crop_samples = round(crop_s * sample_rate)
        index = {label: i for i, label in enumerate(labels)}
        self.targets = [frame_targets(f.events, num_frames(f.num_samples, hop_s, sample_rate), hop_s, index)
                        for f in self.files]
        crops = [max(1, math.ceil(f.num_samples / self.crop_samples)) for f in self.files]
        self.file_of_item = np.repeat(np.arange(len(self.files)), crops)

    def __len__(self) -> int:
        return len(self.file_of_item)

    def __getitem__(self, item: int) -> dict:
        file_index = int(self.file_of_item[item])
        file, targets = self.files[file_index], self.targets[file_index]
        offset = int(torch.randint(max(1, targets.shape[1] - self.crop_frames + 1), ()))  # in frames
        audio = _read(file, self.sample_rate)
        start = round(offset * self.hop_samples)
        crop = np.zeros(self.crop_samples, dtype=np.float32)
        piece = audio[start:start + self.crop_samples]
        crop[:len(piece)] = piece
        crop_targets = np.zeros((targets.shape[0], self.crop_frames), dtype=np.float32)
        piece_targets = targets[:, offset:offset + self.crop_frames]
        crop_targets[:, :piece_targets.shape[1]] = piece_targets
        return {"audio": torch.from_numpy(crop), "targets": torch.from_numpy(crop_targets), "filename": file.filename}


class HearFileDataset(Dataset):
    """Whole files (validation, test): ``{"audio" [N], "targets" [C, frames], "filename"}``, one file per item."""

    def __init__(self, files: Sequence[HearFile], labels: Sequence[str], *, hop_s: float,
                 sample_rate: int = SAMPLE_RATE):
        self.files = list(files)
        self.labels = tuple(labels)
        self.hop_s = hop_s
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int) -> dict:
        file = self.files[item]
        audio = _read(file, self.sample_rate)
        index = {label: i for i, label in enumerate(self.labels)}
        targets = frame_targets(file.events, num_frames(len(audio), self.hop_s, self.sample_rate), self.hop_s, index)
        return {"audio": torch.from_numpy(audio), "targets": torch.from_numpy(targets), "filename": file.filename}


class HearWavmix(WaveformMixDataset):
    """Waveform mixing of training crops with probability ``p`` (PretrainedSED's ``MixupDataset``): a random partner
    crop, ``l ~ Beta(0.2, 0.2)``, ``l = max(l, 1 - l)``, DC removed; targets mixed with the same ``l``."""

    def __init__(self, dataset, p: float = 0.5, alpha: float = MIXUP_BETA_ALPHA):
        super().__init__(dataset, p, alpha)

    def mix_labels(self, mixed: dict, sample: dict, partner: dict, lam: float) -> None:
        mixed["targets"] = lam * sample["targets"] + (1.0 - lam) * partner["targets"]


__all__ = ["HearTask", "HearFile", "HearTaskError", "read_task", "read_vocabulary", "frame_targets", "num_frames",
           "HearCropDataset", "HearFileDataset", "HearWavmix", "SAMPLE_RATE"]
