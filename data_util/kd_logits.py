"""Knowledge-distillation targets of AudioSet-strong pre-training: stored teacher (ensemble) logits.

- **Strong KD file** (PretrainedSED's ``--pseudo_labels_file``; its ensemble's file is Zenodo record 14626113):
  HDF5 with ``filenames`` (``Y<YouTube id>``, utf-8) and ``strong_logits`` float16 [N, C, 250] (classes before
  frames, C = the 447 training classes). Files written here add the attributes ``classes`` (display names),
  ``frame_hop`` (0.04 s) and ``model``; files without them are read as PretrainedSED's (447 classes, 40 ms).
  A clip is looked up as ``Y<id>`` or ``<id>`` (PretrainedSED stripped ".mp3" with ``rstrip``, a character-set
  strip that also eats a trailing m, p or 3 of the id; here the suffix is removed).
- **Weak KD file** (the reference's ``passt_enemble_logits_mAP_495.npy`` + ``fname_to_index.pkl`` of the
  EfficientAT release): a ``.npy`` of logits [N, 527] and a mapping YouTube id -> row. The mapping is a pickle:
  it is read with an unpickler that builds plain containers, strings and numbers only and refuses any other
  class, so no code in the file can run; a ``.json`` mapping works as well.

Readers open their file lazily in the process that reads (DataLoader workers re-open after a fork).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np

from data_util.atomic import atomic_path

log = logging.getLogger(__name__)

FILENAMES_KEY = "filenames"
LOGITS_KEY = "strong_logits"
CLASSES_ATTR = "classes"
FRAME_HOP_ATTR = "frame_hop"
MODEL_ATTR = "model"
KD_DTYPE = np.float16  # PretrainedSED's file stores float16 (447 x 250 logits per clip)
ENSEMBLE_CHUNK = 512  # rows averaged at a time (bounded memory for 100k-clip files)


class KDFileError(ValueError):
    """A knowledge-distillation file that is missing, malformed or does not fit the training setup."""


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _youtube_id(name: str) -> str:
    """A clip name without folders and without the ``.mp3`` suffix (``a/Yabc.mp3`` -> ``Yabc``)."""
    name = name.rsplit("/", 1)[-1]
    name = name[: -len(".mp3")] if name.endswith(".mp3") else name
    return name


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float32)))).astype(np.float32)


# ------------------------------------------------------------------------------------------------ strong
class StrongKDLogits:
    """Lazy reader of a strong KD file: teacher probabilities per clip."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise KDFileError(f"KD logit file {self.path} does not exist (training_strong.kd_logits); make one with "
                              "`python -m ex_audioset_strong store_predictions` or download PretrainedSED's")
        self._handle = None
        self._pid = None
        with h5py.File(self.path, "r") as f:
            for key in (FILENAMES_KEY, LOGITS_KEY):
                if key not in f:
                    raise KDFileError(f"{self.path}: missing dataset {key!r}; found {sorted(f.keys())}")
            shape = f[LOGITS_KEY].shape
            names = [_text(n) for n in f[FILENAMES_KEY][()]]
            if len(shape) != 3 or shape[0] != len(names):
                raise KDFileError(f"{self.path}: {LOGITS_KEY!r} has shape {shape}; expected ({len(names)}, classes, "
                                  "frames)")
            self.classes = tuple(_text(c) for c in f.attrs[CLASSES_ATTR]) if CLASSES_ATTR in f.attrs else None
            self.model = _text(f.attrs.get(MODEL_ATTR, ""))
        self.num_classes, self.num_frames = int(shape[1]), int(shape[2])
        self.filenames = names
        self._row = {}
        for i, name in enumerate(names):
            self._row.setdefault(_youtube_id(name), i)

    def __len__(self) -> int:
        return len(self.filenames)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None  # h5py handles do not cross processes
        return state

    def _file(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._handle

    def row(self, name: str) -> int | None:
        """Row of a clip (``Y<id>``, ``Y<id>.mp3`` or ``<id>``), None when the file has no entry for it."""
        key = _youtube_id(name)
        for candidate in (key, key[1:] if key.startswith("Y") else "Y" + key):
            if candidate in self._row:
                return self._row[candidate]
        return None

    def __contains__(self, name: str) -> bool:
        return self.row(name) is not None

    def logits(self, name: str) -> np.ndarray | None:
        """float32 [C, T] logits of a clip, None when absent."""
        row = self.row(name)
        if row is None:
            return None
        return np.asarray(self._file()[LOGITS_KEY][row], dtype=np.float32)

    def probabilities(self, name: str, frame_shift: int = 0) -> np.ndarray | None:
        """float32 [C, T] sigmoid of the teacher logits, moved ``frame_shift`` frames earlier (a training crop that
        starts later in the clip); frames past the end repeat the last one. None when the clip is absent."""
        logits = self.logits(name)
        if logits is None:
            return None
        if frame_shift > 0:
            tail = np.repeat(logits[:, -1:], min(frame_shift, logits.shape[1]), axis=1)
            logits = np.concatenate([logits[:, frame_shift:], tail], axis=1)[:, : logits.shape[1]]
        return _sigmoid(logits)

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None


class StrongKDWriter:
    """Writes a strong KD file row by row (bounded memory for 100k clips): rows sorted by clip name, logits float16.

    ``with StrongKDWriter(path, names, classes=..., num_frames=250, model=...) as writer: writer.write(names, logits)``;
    every clip must be written once; the file appears under ``path`` only when the block ends without an error.
    """

    def __init__(self, path: str | os.PathLike, names: Sequence[str], *, classes: Sequence[str], num_frames: int,
                 model: str, frame_hop: float):
        self.path = Path(path)
        self.names = sorted(_text(n) for n in names)
        if len(set(self.names)) != len(self.names):
            duplicates = sorted({n for n in self.names if self.names.count(n) > 1})[:3]
            raise KDFileError(f"{self.path}: duplicate clip names, e.g. {duplicates}")
        self.position = {name: i for i, name in enumerate(self.names)}
        self.classes, self.num_frames = list(classes), int(num_frames)
        self.model, self.frame_hop = str(model), float(frame_hop)
        self.written = np.zeros(len(self.names), dtype=bool)

    def __enter__(self) -> "StrongKDWriter":
        self._atomic = atomic_path(self.path, suffix=".hdf5")
        self._file = h5py.File(self._atomic.__enter__(), "w")
        self._file.create_dataset(FILENAMES_KEY, data=np.array(self.names, dtype=h5py.string_dtype("utf-8")))
        shape = (len(self.names), len(self.classes), self.num_frames)
        self._logits = self._file.create_dataset(LOGITS_KEY, shape=shape, dtype=KD_DTYPE, chunks=(1, *shape[1:]))
        self._file.attrs[CLASSES_ATTR] = np.array(self.classes, dtype=h5py.string_dtype("utf-8"))
        self._file.attrs[FRAME_HOP_ATTR] = self.frame_hop
        self._file.attrs[MODEL_ATTR] = self.model
        return self

    def write(self, names: Sequence[str], logits: np.ndarray) -> None:
        """Store logits [B, C, T] of clips ``names``."""
        logits = np.asarray(logits)
        if logits.shape[1:] != (len(self.classes), self.num_frames) or len(logits) != len(names):
            raise KDFileError(f"{self.path}: logits of shape {logits.shape} for {len(names)} clips; expected "
                              f"({len(names)}, {len(self.classes)}, {self.num_frames})")
        if not np.isfinite(logits).all():
            raise KDFileError(f"{self.path}: the logits of {list(names)[:3]}... hold NaN or inf values")
        for name, row in zip(names, logits):
            index = self.position[_text(name)]
            self._logits[index] = row.astype(KD_DTYPE)
            self.written[index] = True

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and not self.written.all():
                missing = [n for n, done in zip(self.names, self.written) if not done]
                exc = KDFileError(f"{self.path}: {len(missing)} clips were never written, e.g. {missing[:3]}")
        finally:
            self._file.close()
        if exc_type is None and exc is not None:
            self._atomic.__exit__(type(exc), exc, None)
            raise exc
        self._atomic.__exit__(exc_type, exc, tb)
        if exc_type is None:
            log.info("wrote KD logits of %d clips to %s", len(self.names), self.path)


def write_strong_kd(path: str | os.PathLike, filenames: Sequence[str], strong_logits: np.ndarray, *,
                    classes: Sequence[str], model: str, frame_hop: float) -> Path:
    """Write a strong KD file atomically from logits [N, C, T] in memory (rows sorted by name, float16)."""
    logits = np.asarray(strong_logits)
    if logits.ndim != 3 or logits.shape[0] != len(filenames):
        raise KDFileError(f"{path}: logits of shape {logits.shape} for {len(filenames)} clips; expected "
                          "(clips, classes, frames)")
    with StrongKDWriter(path, filenames, classes=classes, num_frames=logits.shape[2], model=model,
                        frame_hop=frame_hop) as writer:
        writer.write(filenames, logits)
    return Path(path)


def ensemble_strong_kd(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                       weights: Sequence[float] | None = None) -> Path:
    """The weighted mean of the logits of several strong KD files (same clips and classes) into ``out_path``."""
    readers = [StrongKDLogits(p) for p in paths]
    if not readers:
        raise KDFileError("ensemble_predictions needs at least one KD file")
    weights = np.full(len(readers), 1.0 / len(readers)) if weights is None else \
        np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    first = readers[0]
    for reader in readers[1:]:
        if sorted(reader.filenames) != sorted(first.filenames):
            raise KDFileError(f"{reader.path} and {first.path} hold different clips; an ensemble needs the same clips")
        if (reader.num_classes, reader.num_frames) != (first.num_classes, first.num_frames) or \
                (reader.classes and first.classes and reader.classes != first.classes):
            raise KDFileError(f"{reader.path} and {first.path} have different classes or frames")
    names = sorted(first.filenames)
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(FILENAMES_KEY, data=np.array(names, dtype=h5py.string_dtype("utf-8")))
        data = f.create_dataset(LOGITS_KEY, shape=(len(names), first.num_classes, first.num_frames), dtype=KD_DTYPE,
                                chunks=(1, first.num_classes, first.num_frames))
        for start in range(0, len(names), ENSEMBLE_CHUNK):
            chunk = names[start:start + ENSEMBLE_CHUNK]
            total = np.zeros((len(chunk), first.num_classes, first.num_frames), dtype=np.float32)
            for weight, reader in zip(weights, readers):
                total += weight * np.stack([reader.logits(name) for name in chunk])
            data[start:start + len(chunk)] = total.astype(KD_DTYPE)
        if first.classes:
            f.attrs[CLASSES_ATTR] = np.array(first.classes, dtype=h5py.string_dtype("utf-8"))
        f.attrs[FRAME_HOP_ATTR] = 10.0 / first.num_frames
        f.attrs[MODEL_ATTR] = "ensemble of " + ", ".join(str(Path(p).name) for p in paths)
    for reader in readers:
        reader.close()
    log.info("wrote the ensemble of %d KD files (%d clips) to %s", len(readers), len(names), out_path)
    return out_path


# ------------------------------------------------------------------------------------------------ weak
class _DataOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, strings and numbers (numpy scalars included); refuses every other class, so
    unpickling cannot run code. A name -> index mapping pickled with ``pickle.dump`` needs nothing else."""

    ALLOWED = {("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: the mapping file may only hold plain data")


def read_index_mapping(path: str | os.PathLike) -> dict[str, int]:
    """A name -> row mapping from a pickle (read safely, see :class:`_DataOnlyUnpickler`) or a JSON file."""
    path = Path(path)
    if not path.is_file():
        raise KDFileError(f"weak KD index mapping {path} does not exist (training_weak.kd_index)")
    try:
        if path.suffix == ".json":
            mapping = json.loads(path.read_text(encoding="utf-8"))
        else:
            with open(path, "rb") as f:
                mapping = _DataOnlyUnpickler(f).load()
    except (pickle.UnpicklingError, json.JSONDecodeError, EOFError, ValueError) as error:
        raise KDFileError(f"{path}: not a readable name -> index mapping ({error})") from error
    if not isinstance(mapping, Mapping):
        raise KDFileError(f"{path}: expected a dict name -> row index, got {type(mapping).__name__}")
    return {_youtube_id(_text(k)): int(v) for k, v in mapping.items()}


class WeakKDLogits:
    """Weak teacher probabilities [527] per clip from a ``.npy`` logit matrix and a name -> row mapping."""

    def __init__(self, logits_path: str | os.PathLike, index_path: str | os.PathLike, num_classes: int):
        self.path = Path(logits_path)
        if not self.path.is_file():
            raise KDFileError(f"weak KD logits {self.path} do not exist (training_weak.kd_logits)")
        self.index = read_index_mapping(index_path)
        shape = np.load(self.path, mmap_mode="r").shape
        if len(shape) != 2 or shape[1] != num_classes:
            raise KDFileError(f"{self.path}: weak logits of shape {shape}; expected (clips, {num_classes})")
        bad = [name for name, row in self.index.items() if not 0 <= row < shape[0]][:3]
        if bad:
            raise KDFileError(f"{index_path}: rows of {bad} lie outside the {shape[0]} rows of {self.path}")
        self._logits = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_logits"] = None
        return state

    def row(self, name: str) -> int | None:
        key = _youtube_id(name)
        for candidate in (key, key[1:] if key.startswith("Y") else "Y" + key):
            if candidate in self.index:
                return self.index[candidate]
        return None

    def probabilities(self, name: str) -> np.ndarray | None:
        row = self.row(name)
        if row is None:
            return None
        if self._logits is None:
            self._logits = np.load(self.path, mmap_mode="r")
        return _sigmoid(np.asarray(self._logits[row]))


def write_weak_kd(logits_path: str | os.PathLike, index_path: str | os.PathLike, names: Iterable[str],
                  logits: np.ndarray) -> None:
    """Write weak logits [N, 527] (``.npy``) and the YouTube id -> row mapping (pickle of a plain dict)."""
    names = [_youtube_id(n) for n in names]
    names = [n[1:] if n.startswith("Y") else n for n in names]  # the reference's keys: ids without the "Y"
    with atomic_path(logits_path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(logits, dtype=np.float32))
    with atomic_path(index_path, suffix=".pkl") as tmp, open(tmp, "wb") as f:
        pickle.dump({name: i for i, name in enumerate(names)}, f)


__all__ = ["KDFileError", "StrongKDLogits", "StrongKDWriter", "write_strong_kd", "ensemble_strong_kd", "read_index_mapping",
           "WeakKDLogits", "write_weak_kd"]
