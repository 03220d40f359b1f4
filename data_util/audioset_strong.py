"""AudioSet-strong data: class lists, the prepared dataset's fields, label encoding, datasets and sample weights.

The temporally-strong labels of AudioSet (Hershey et al., ICASSP 2021) on the AudioSet clips, as used to
pre-train the transformers of the DCASE 2024 Task 4 system (Schmid et al., "Effective Pre-Training of Audio
Transformers for Sound Event Detection", ICASSP 2025, arXiv 2409.09546; code fschmid56/PretrainedSED).

- **Prepared dataset** (``python -m ex_audioset_strong prepare_data``, :mod:`data_util.audioset_strong_prepare`):
  a Hugging Face ``datasets.DatasetDict`` saved to disk with the splits ``balanced_train``, ``unbalanced_train``
  and ``eval``; one row per clip with ``filename`` (``Y<YouTube id>.mp3``), ``mp3_bytes`` (the encoded file),
  ``events`` (``onset``, ``offset``, ``event_label``, ``event_label_id``), ``labels`` / ``label_ids`` (the weak
  labels), ``filepath`` and ``duration`` (seconds of audio). These are PretrainedSED's field names (plus
  ``duration``), so a dataset built with its ``hf_dataset_gen/audioset_strong.py`` reads here as well.
- **Classes**: training uses the 447 classes with strong training labels (``audioset_classes/strong_train.tsv``,
  or a list of your own: ``training_strong.classes``); events of other classes are ignored in training.
- **Frames**: labels and outputs on 250 frames of 40 ms per 10 s clip (160-sample front-end hop x 4 frames per
  token, the rate of ATST-Frame and fPaSST tokens; BEATs' 496 tokens are pooled to 250). An event covers frames
  ``floor(onset / 0.04)`` up to ``ceil(offset / 0.04)`` (exclusive), clipped to the clip, as PretrainedSED's
  encoder; overlapping or touching events of one class are merged first.
- **Audio**: mp3 decoded with soundfile (libsndfile >= 1.1), mono, resampled to 16 kHz, a random 10 s crop in
  training (labels shifted with it; PretrainedSED shifted only the audio), the first 10 s at evaluation,
  zero-padded when shorter.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from data_util.audio import CLIP_SAMPLES, SAMPLE_RATE, AudioReadError, pad_or_crop, resample
from data_util.atomic import atomic_path
from data_util.datasets import WaveformMixDataset
from data_util.kd_logits import StrongKDLogits, WeakKDLogits

log = logging.getLogger(__name__)

CLASS_LIST_DIR = Path(__file__).resolve().parent / "audioset_classes"
TRAIN_CLASSES_FILE = CLASS_LIST_DIR / "strong_train.tsv"
ALL_STRONG_CLASSES_FILE = CLASS_LIST_DIR / "strong_all.tsv"
WEAK_CLASSES_FILE = CLASS_LIST_DIR / "weak.tsv"

SPLITS = ("balanced_train", "unbalanced_train", "eval")
TRAIN_SPLITS = ("balanced_train", "unbalanced_train")
EVAL_SPLIT = "eval"
FIELDS = ("filename", "mp3_bytes", "events", "labels", "label_ids", "filepath", "duration")

FRAME_HOP_SAMPLES = 640  # 40 ms: the front-ends' 160-sample hop x 4 frames per token
FRAME_HOP_SECONDS = FRAME_HOP_SAMPLES / SAMPLE_RATE
NUM_FRAMES = CLIP_SAMPLES // FRAME_HOP_SAMPLES  # 250 per 10 s clip
CLIP_ID_PREFIX = "Y"  # AudioSet clip names are "Y" + YouTube id
WAVMIX_BETA = 2.0  # PretrainedSED's waveform mixing draws Beta(2, 2)
SAMPLE_WEIGHT_OFFSET = 30  # balanced sampler: class weight 1000 / (active frames + 30)
SAMPLE_WEIGHT_SCALE = 1000.0


# ------------------------------------------------------------------------------------------------ classes
@dataclass(frozen=True)
class ClassList:
    """An ordered list of AudioSet classes (MID and display name); the position is the output index."""

    mids: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        if len(self.mids) != len(self.names):
            raise ValueError(f"{len(self.mids)} MIDs but {len(self.names)} display names")
        for what, values in (("MID", self.mids), ("display name", self.names)):
            seen = set()
            duplicates = sorted({v for v in values if v in seen or seen.add(v)})
            if duplicates:
                raise ValueError(f"class list has duplicate {what}s: {duplicates[:5]}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def index(self) -> dict[str, int]:
        """Display name -> output index."""
        return {name: i for i, name in enumerate(self.names)}

    def as_rows(self) -> list[list[str]]:
        return [[mid, name] for mid, name in zip(self.mids, self.names)]

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[str]]) -> "ClassList":
        rows = [tuple(row) for row in rows]
        return cls(tuple(r[0] for r in rows), tuple(r[1] for r in rows))


def read_class_list(path: str | os.PathLike) -> ClassList:
    """A tsv with columns ``mid`` and ``display_name`` (a header row naming them; further columns ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = {"mid", "display_name"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: needs the columns mid and display_name (tab-separated, with a header); "
                             f"found {reader.fieldnames}")
        rows = [(row["mid"], row["display_name"]) for row in reader]
    if not rows:
        raise ValueError(f"{path}: the class list is empty")
    return ClassList.from_rows(rows)


def train_classes(path: str | os.PathLike | None = None) -> ClassList:
    """The training label space: ``path`` or the 447 AudioSet-strong training classes."""
    return read_class_list(path or TRAIN_CLASSES_FILE)


def weak_classes() -> ClassList:
    """The 527 weak AudioSet classes, in the order of the HDF5 ``target`` vectors and the weak KD logits."""
    return read_class_list(WEAK_CLASSES_FILE)


def read_mid_names(path: str | os.PathLike | None = None) -> dict[str, str]:
    """MID -> display name: the official ``mid_to_display_name.tsv`` (with or without a header) or ours."""
    path = Path(path or ALL_STRONG_CLASSES_FILE)
    names = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or (line_no == 1 and row[:2] == ["mid", "display_name"]):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{line_no}: expected 'mid<TAB>display name', got {row!r}")
            names[row[0]] = row[1]
    return names


# ------------------------------------------------------------------------------------------------ names
def clip_id(name: str) -> str:
    """``Y<YouTube id>`` of an ``audio_name`` / ``filename`` (folders and the extension removed)."""
    stem = name.rsplit("/", 1)[-1]
    return stem[: -len(".mp3")] if stem.endswith(".mp3") else stem


def segment_clip_id(segment_id: str) -> str:
    """The clip of a strong-label segment id ``<YouTube id>_<start ms>``: ``Y<YouTube id>``."""
    return CLIP_ID_PREFIX + segment_id.rsplit("_", 1)[0]


# ------------------------------------------------------------------------------------------------ labels
Event = tuple[float, float, str]  # onset s, offset s, display name


def merge_overlapping(events: Iterable[Event]) -> list[Event]:
    """Events with overlapping or touching events of the same class merged, sorted by (label, onset)."""
    merged: list[list] = []
    for onset, offset, label in sorted(events, key=lambda e: (e[2], e[0], e[1])):
        if merged and merged[-1][2] == label and onset <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], offset)
        else:
            merged.append([onset, offset, label])
    return [(float(a), float(b), c) for a, b, c in merged]


def encode_strong(events: Iterable[Event], class_index: Mapping[str, int], num_frames: int = NUM_FRAMES,
                  frame_hop: float = FRAME_HOP_SECONDS) -> np.ndarray:
    """Frame labels float32 [C, num_frames]; events of classes outside ``class_index`` are ignored."""
    strong = np.zeros((len(class_index), num_frames), dtype=np.float32)
    for onset, offset, label in events:
        row = class_index.get(label)
        if row is None:
            continue
        first = int(np.clip(math.floor(onset / frame_hop), 0, num_frames))
        stop = int(np.clip(math.ceil(offset / frame_hop - 1e-9), 0, num_frames))
        strong[row, first:stop] = 1.0
    return strong


def row_events(events: Mapping | Sequence) -> list[Event]:
    """The ``events`` field of a dataset row (a dict of lists, or a list of dicts) as merged event tuples."""
    if isinstance(events, Mapping):
        rows = zip(events.get("onset", ()), events.get("offset", ()), events.get("event_label", ()))
    else:
        rows = ((e["onset"], e["offset"], e["event_label"]) for e in events)
    return merge_overlapping((float(a), float(b), str(c)) for a, b, c in rows)


def weak_target(label_ids: Iterable[str], weak_index: Mapping[str, int]) -> np.ndarray:
    """float32 [527] of a clip's weak label MIDs (``label_ids``); MIDs outside the weak list are ignored."""
    target = np.zeros(len(weak_index), dtype=np.float32)
    for mid in label_ids:
        if mid in weak_index:
            target[weak_index[mid]] = 1.0
    return target


# ------------------------------------------------------------------------------------------------ audio
def decode_mp3(data: bytes, name: str, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 [n] at ``target_sr`` from encoded audio bytes (mp3 or anything libsndfile reads)."""
    try:
        waveform, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioReadError(name, f"cannot decode the stored audio bytes ({error})") from error
    if len(waveform) == 0:
        raise AudioReadError(name, "the stored audio holds no frames")
    return resample(waveform.mean(axis=1), sample_rate, target_sr)


def encoded_duration(data: bytes) -> float:
    """Seconds of audio in encoded bytes (from the header, without decoding)."""
    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate


# ------------------------------------------------------------------------------------------------ datasets
def load_dataset_dict(path: str | os.PathLike):
    """The prepared ``DatasetDict`` at ``path`` (one clear error naming the fix when it is missing)."""
    import datasets  # lazy: the Hugging Face stack loads only where the prepared dataset is read

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"no prepared AudioSet-strong dataset at {path}: run `python -m ex_audioset_strong prepare_data "
            f"with source_path=<folder with the PaSST HDF5 files and strong tsvs> dataset_path={path}`")
    dataset_dict = datasets.load_from_disk(str(path))
    missing = [split for split in SPLITS if split not in dataset_dict]
    if missing:
        raise ValueError(f"{path}: the prepared dataset lacks the split(s) {missing}; prepare it again")
    return dataset_dict


class AudioSetStrongDataset(Dataset):
    """Sample dicts from rows of the prepared dataset (``datasets.Dataset`` or a list of row dicts).

    A sample: ``audio`` float32 [160000]; ``strong`` float32 [C, 250] (the classes of ``classes``); ``weak``
    float32 [527]; ``kd_strong`` [C, 250] and ``weak_kd`` [527] (teacher probabilities, zeros when no KD file
    is given, with ``has_kd``); ``filename`` (``Y<id>``); evaluation samples also ``duration`` (seconds).
    """

    def __init__(self, rows, classes: ClassList, *, training: bool, strong_kd: StrongKDLogits | None = None,
                 weak_kd: WeakKDLogits | None = None, durations: Mapping[str, float] | None = None):
        self.rows = rows
        self.classes = classes
        self.class_index = classes.index
        self.weak_index = {mid: i for i, mid in enumerate(weak_classes().mids)}
        self.training = training
        self.strong_kd = strong_kd
        self.weak_kd = weak_kd
        self.durations = dict(durations or {})
        if strong_kd is not None and strong_kd.num_classes != len(classes):
            raise ValueError(f"the KD logit file {strong_kd.path} has {strong_kd.num_classes} classes; the training "
                             f"class list has {len(classes)}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[int(index)]
        name = clip_id(row["filename"])
        waveform = decode_mp3(row["mp3_bytes"], name)
        needs_crop = self.training and len(waveform) > CLIP_SAMPLES
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item())) if needs_crop else None
        clip = pad_or_crop(waveform, CLIP_SAMPLES, random_crop=needs_crop, rng=rng)
        shift = clip.start / SAMPLE_RATE
        events = [(a - shift, b - shift, c) for a, b, c in row_events(row["events"])]
        sample = {
            "audio": torch.from_numpy(clip.audio),
            "strong": torch.from_numpy(encode_strong(events, self.class_index)),
            "weak": torch.from_numpy(weak_target(row.get("label_ids") or (), self.weak_index)),
            "filename": name,
        }
        frame_shift = round(clip.start / FRAME_HOP_SAMPLES)
        kd = self.strong_kd.probabilities(name, frame_shift) if self.strong_kd is not None else None
        sample["kd_strong"] = torch.from_numpy(kd) if kd is not None else torch.zeros_like(sample["strong"])
        weak_kd = self.weak_kd.probabilities(name) if self.weak_kd is not None else None
        sample["weak_kd"] = torch.from_numpy(weak_kd) if weak_kd is not None else torch.zeros_like(sample["weak"])
        sample["has_kd"] = kd is not None
        if not self.training:
            listed = self.durations.get(name)
            stored = row.get("duration")
            sample["duration"] = float(listed if listed is not None else stored if stored is not None
                                       else clip.num_real / SAMPLE_RATE)
        return sample


class WavMixDataset(WaveformMixDataset):
    """PretrainedSED's waveform mixing (``wavmix_p``): partner and coefficient as :class:`WaveformMixDataset` with
    ``l ~ Beta(2, 2)``; the labels, weak labels and teacher probabilities mix with the same ``l``."""

    MIXED_KEYS = ("strong", "weak", "kd_strong", "weak_kd")

    def __init__(self, dataset: Dataset, p: float, beta: float = WAVMIX_BETA):
        super().__init__(dataset, p, beta)

    def mix_labels(self, mixed: dict, sample: dict, partner: dict, lam: float) -> None:
        for key in self.MIXED_KEYS:
            mixed[key] = lam * sample[key] + (1.0 - lam) * partner[key]
        mixed["has_kd"] = bool(sample["has_kd"] and partner["has_kd"])


# ------------------------------------------------------------------------------------------------ sample weights
def class_frame_counts(rows_events: Iterable, classes: ClassList) -> np.ndarray:
    """float32 [N, C]: active label frames of each class in each clip (from the ``events`` column only)."""
    index = classes.index
    counts = [encode_strong(row_events(events), index).sum(axis=1) for events in rows_events]
    return np.stack(counts).astype(np.float32) if counts else np.zeros((0, len(classes)), dtype=np.float32)


def balanced_sample_weights(frame_counts: np.ndarray, offset: float = SAMPLE_WEIGHT_OFFSET) -> np.ndarray:
    """PretrainedSED's temporal-count balancing: w_c = 1000 / (Σ_clips frames_c + offset); a clip weighs
    Σ_c frames_c · w_c (a clip without events of the training classes weighs 0 and is never drawn)."""
    per_class = SAMPLE_WEIGHT_SCALE / (frame_counts.sum(axis=0, dtype=np.float64) + offset)
    return (frame_counts.astype(np.float64) @ per_class).astype(np.float64)


def cached_sample_weights(dataset_path: str | os.PathLike, split_rows: Sequence, classes: ClassList,
                          offset: float = SAMPLE_WEIGHT_OFFSET) -> np.ndarray:
    """:func:`balanced_sample_weights` of the training rows, computed once and cached next to the dataset
    (``sample_weights_<classes>_<rows>_offset<offset>.npy``, written atomically)."""
    digest = hashlib.sha1("\n".join(classes.mids).encode()).hexdigest()[:10]
    key = f"{len(classes)}classes-{digest}_{sum(len(r) for r in split_rows)}rows"
    path = Path(dataset_path) / f"sample_weights_{key}_offset{offset:g}.npy"
    if path.is_file():
        weights = np.load(path)
        if len(weights) == sum(len(r) for r in split_rows):
            return weights
    log.info("computing the balanced sampler's weights (once; cached in %s)", path)
    counts = np.concatenate([class_frame_counts(rows["events"], classes) for rows in split_rows])
    weights = balanced_sample_weights(counts, offset)
    try:
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, weights)
    except OSError as error:  # a read-only dataset folder: use the weights without caching them
        log.warning("cannot cache the sampler weights in %s: %s", path, error)
    return weights


def ground_truth(rows, name_key: str = "filename") -> dict[str, list[Event]]:
    """``{Y<id>: merged events}`` of rows (``events`` column only; every class, as the labels hold them)."""
    names = rows[name_key]
    return {clip_id(name): row_events(events) for name, events in zip(names, rows["events"])}


def read_durations_csv(path: str | os.PathLike) -> dict[str, float]:
    """PretrainedSED's ``eval_durations.csv``: rows ``Y<id>,<seconds>`` without a header."""
    durations = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            try:
                durations[clip_id(row[0])] = float(row[1])
            except (IndexError, ValueError) as error:
                raise ValueError(f"{path}:{line_no}: expected 'Y<id>,<seconds>', got {row!r}") from error
    return durations


__all__ = ["ClassList", "read_class_list", "train_classes", "weak_classes", "read_mid_names", "clip_id",
           "segment_clip_id", "merge_overlapping", "encode_strong", "row_events", "weak_target", "decode_mp3",
           "encoded_duration", "load_dataset_dict", "AudioSetStrongDataset", "WavMixDataset",
           "class_frame_counts", "balanced_sample_weights", "cached_sample_weights", "ground_truth",
           "read_durations_csv", "SPLITS", "TRAIN_SPLITS", "EVAL_SPLIT", "NUM_FRAMES", "FRAME_HOP_SECONDS",
           "FRAME_HOP_SAMPLES"]
