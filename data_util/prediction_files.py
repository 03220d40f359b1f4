"""Prediction / pseudo-label files: one HDF5 per data set holding frame-level strong logits.

Format (the contract of DESIGN.md, shared with the reference's ``store_predictions``):
- dataset ``filenames``: utf-8 stems (no ``.wav``), sorted;
- dataset ``strong_logits``: float32 [N, 156, 27] (logits, no sigmoid, no class mask);
- file attributes ``classes`` (the 27 class names in order), ``frame_hop`` (seconds, 0.064) and
  ``model`` (free text). Files without these attributes are the reference's format (its released
  pseudo-labels): they are read with the reference class order and a 0.064 s hop.

Writes are atomic (temporary file in the same folder, then ``os.replace``), so an interrupted run never
leaves a half-written file under the final name. ``PredictionFile`` opens the HDF5 lazily in the process
that first reads from it, which makes it safe to hand to DataLoader workers (h5py handles must not cross
a fork).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import h5py
import numpy as np

import configs
from data_util.classes import CLASSES, NUM_CLASSES
from data_util.atomic import atomic_path
from data_util.layout import PSEUDO_LABEL_SETS

log = logging.getLogger(__name__)

# Frame geometry of every prediction: 10 s at 16 kHz, STFT hop 256 samples, pooled by 4 -> 156 frames.
SAMPLE_RATE = 16000
CLIP_SECONDS = 10.0
SAMPLES_PER_FRAME = 256 * 4  # STFT hop x network pooling
NUM_FRAMES = int(int(CLIP_SECONDS * SAMPLE_RATE / 256) / 4)  # 156, as the reference's encoder computes it
FRAME_HOP_SECONDS = SAMPLES_PER_FRAME / SAMPLE_RATE  # 0.064
FRAME_HOP_TOLERANCE = 1e-6  # seconds; a file whose hop differs by more is rejected

FILENAMES_KEY = "filenames"
LOGITS_KEY = "strong_logits"
CLASSES_ATTR = "classes"
FRAME_HOP_ATTR = "frame_hop"
MODEL_ATTR = "model"


class PredictionFileError(ValueError):
    """A prediction file is unreadable, truncated or does not match the expected format."""


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _check_logits(path, strong_logits: np.ndarray, num_files: int) -> None:
    expected = (num_files, NUM_FRAMES, NUM_CLASSES)
    if strong_logits.ndim != 3 or strong_logits.shape != expected:
        raise PredictionFileError(
            f"{path}: '{LOGITS_KEY}' has shape {tuple(strong_logits.shape)}; expected {expected} "
            f"(files, {NUM_FRAMES} frames of {FRAME_HOP_SECONDS} s, {NUM_CLASSES} classes)"
        )


def _check_finite(path, strong_logits: np.ndarray, filenames: Sequence[str] | None = None) -> None:
    bad = ~np.isfinite(strong_logits)
    if bad.any():
        clip_index = int(np.argwhere(bad.reshape(len(strong_logits), -1).any(1))[0, 0]) if bad.ndim == 3 else 0
        which = f" (first in clip {filenames[clip_index]!r})" if filenames is not None and bad.ndim == 3 else ""
        raise PredictionFileError(
            f"{path}: {int(bad.sum())} non-finite (NaN/inf) logits{which}; the model diverged or the file is corrupt"
        )


def write_predictions(
    path: str | os.PathLike,
    filenames: Iterable[str],
    strong_logits: np.ndarray,
    *,
    model: str,
    extra_attrs: dict | None = None,
) -> Path:
    """Write a prediction file atomically; rows are sorted by filename (stems, ``.wav`` stripped).

    ``strong_logits``: float [N, 156, 27] logits in ``data_util.classes.CLASSES`` order.
    ``extra_attrs`` are stored as additional HDF5 attributes (e.g. the ensemble members).
    """
    path = Path(path)
    stems = [Path(_as_str(f)).stem if _as_str(f).endswith(".wav") else _as_str(f) for f in filenames]
    strong_logits = np.asarray(strong_logits, dtype=np.float32)
    _check_logits(path, strong_logits, len(stems))
    if len(set(stems)) != len(stems):
        duplicates = sorted({s for s in stems if stems.count(s) > 1})[:5]
        raise PredictionFileError(f"{path}: duplicate filenames {duplicates}; each clip must appear once")
    _check_finite(path, strong_logits, stems)
    order = np.argsort(np.asarray(stems, dtype=object), kind="stable")
    sorted_stems = [stems[i] for i in order]
    sorted_logits = strong_logits[order]

    with atomic_path(path) as tmp_name, h5py.File(tmp_name, "w") as f:
        f.create_dataset(FILENAMES_KEY, data=np.array(sorted_stems, dtype=h5py.string_dtype("utf-8")))
        f.create_dataset(LOGITS_KEY, data=sorted_logits)
        f.attrs[CLASSES_ATTR] = np.array(CLASSES, dtype=h5py.string_dtype("utf-8"))
        f.attrs[FRAME_HOP_ATTR] = FRAME_HOP_SECONDS
        f.attrs[MODEL_ATTR] = str(model)
        for key, value in (extra_attrs or {}).items():
            if key in (CLASSES_ATTR, FRAME_HOP_ATTR, MODEL_ATTR):
                raise ValueError(f"extra_attrs may not override the reserved attribute {key!r}")
            f.attrs[key] = value
    log.info("wrote %d clips to %s", len(sorted_stems), path)
    return path


def file_attributes(path: str | os.PathLike) -> dict[str, str]:
    """The scalar attributes of a prediction file as text (``model``, and what ``store_predictions`` records:
    ``checkpoint``, ``checkpoint_sha256``, ``arch``, ``mode``); raises ``PredictionFileError`` if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            return {key: _as_str(value) for key, value in f.attrs.items() if np.ndim(value) == 0}
    except OSError as e:
        raise PredictionFileError(f"{path}: cannot read it as a prediction file ({e})") from e


class PredictionFile:
    """Lazy, validated reader of one prediction file.

    The HDF5 is opened on first access in the current process (and re-opened after a fork), so an
    instance can be created in the main process and used inside DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"prediction file {self.path} does not exist")
        self._handle: h5py.File | None = None
        self._pid: int | None = None
        self._filenames: list[str] | None = None
        self._index: dict[str, int] | None = None
        self.model = ""

    # -- opening and validation ---------------------------------------------------------------
    def _file(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():
            self._handle = None  # a handle inherited through fork is unusable; never close it here
            self._open()
        return self._handle

    def _open(self) -> None:
        try:
            handle = h5py.File(self.path, "r")
        except OSError as e:
            raise PredictionFileError(
                f"cannot open prediction file {self.path}: {e} (truncated or not an HDF5 file? "
                f"delete it and write it again)"
            ) from e
        try:
            for key in (FILENAMES_KEY, LOGITS_KEY):
                if key not in handle:
                    raise PredictionFileError(
                        f"{self.path}: missing dataset {key!r}; found {sorted(handle.keys())}"
                    )
            filenames = [_as_str(f) for f in handle[FILENAMES_KEY][()]]
            _check_logits(self.path, handle[LOGITS_KEY], len(filenames))
            classes = tuple(_as_str(c) for c in handle.attrs.get(CLASSES_ATTR, CLASSES))
            if classes != CLASSES:
                raise PredictionFileError(
                    f"{self.path}: attribute 'classes' is {list(classes)}; expected the 27 classes of "
                    f"data_util.classes.CLASSES in order {list(CLASSES)}"
                )
            frame_hop = float(handle.attrs.get(FRAME_HOP_ATTR, FRAME_HOP_SECONDS))
            if abs(frame_hop - FRAME_HOP_SECONDS) > FRAME_HOP_TOLERANCE:
                raise PredictionFileError(
                    f"{self.path}: frame_hop is {frame_hop} s; expected {FRAME_HOP_SECONDS} s"
                )
            self.model = _as_str(handle.attrs.get(MODEL_ATTR, ""))
        except PredictionFileError:
            handle.close()
            raise
        except (OSError, KeyError, RuntimeError) as e:
            handle.close()
            raise PredictionFileError(f"cannot read prediction file {self.path}: {e} (truncated?)") from e
        self._handle, self._pid = handle, os.getpid()
        self._filenames = filenames
        self._index = {name: i for i, name in enumerate(filenames)}
        if len(self._index) != len(filenames):
            raise PredictionFileError(f"{self.path}: duplicate entries in {FILENAMES_KEY!r}")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None  # h5py handles do not pickle; the worker reopens
        state["_pid"] = None
        return state

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __enter__(self) -> "PredictionFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- access -------------------------------------------------------------------------------
    @property
    def filenames(self) -> list[str]:
        self._file()
        return list(self._filenames)

    def __len__(self) -> int:
        self._file()
        return len(self._filenames)

    def __contains__(self, stem: str) -> bool:
        self._file()
        return stem in self._index

    def logits(self, stem: str) -> np.ndarray:
        """float32 [156, 27] logits of one clip (stem without ``.wav``)."""
        handle = self._file()
        if stem not in self._index:
            raise KeyError(f"clip {stem!r} is not in prediction file {self.path} ({len(self._index)} clips)")
        try:
            clip_logits = np.asarray(handle[LOGITS_KEY][self._index[stem]], dtype=np.float32)
        except (OSError, RuntimeError) as e:
            raise PredictionFileError(f"cannot read clip {stem!r} from {self.path}: {e} (truncated?)") from e
        _check_finite(f"{self.path} clip {stem!r}", clip_logits)
        return clip_logits

    def all_logits(self) -> np.ndarray:
        """float32 [N, 156, 27] logits in the order of ``filenames``."""
        handle = self._file()
        try:
            strong_logits = np.asarray(handle[LOGITS_KEY][()], dtype=np.float32)
        except (OSError, RuntimeError) as e:
            raise PredictionFileError(f"cannot read {LOGITS_KEY!r} from {self.path}: {e} (truncated?)") from e
        _check_finite(self.path, strong_logits, self._filenames)
        return strong_logits


def read_predictions(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(filenames, strong_logits [N, 156, 27] float32) of a prediction file, validated."""
    with PredictionFile(path) as predictions:
        return predictions.filenames, predictions.all_logits()


# ------------------------------------------------------------------------------------------------ prediction folders
PREDICTION_SUFFIX = ".hdf5"


class PredictionCommandError(ValueError):
    """A user-facing problem of a prediction command or folder (unknown checkpoint, missing folder, bad key value)."""


def available_names(folder: Path, keep: Callable[[Path], bool]) -> str:
    """The names in ``folder`` that ``keep`` accepts, for error messages ("none" when there are none)."""
    names = sorted(p.stem if p.is_file() else p.name for p in folder.iterdir() if keep(p)) if folder.is_dir() else []
    return ", ".join(names) if names else "none"


def find_prediction_folder(name_or_path: str | os.PathLike, root: Path, what: str) -> Path:
    """A folder of prediction files given as a name in ``root`` or as a path."""
    candidates = [root / str(name_or_path), Path(name_or_path).expanduser()]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    available = available_names(root, lambda p: p.is_dir() and any(p.glob("*" + PREDICTION_SUFFIX)))
    raise PredictionCommandError(
        f"{what} {str(name_or_path)!r} not found: looked for {', '.join(str(c) for c in candidates)}; "
        f"prediction folders in {root}: {available}. Write them with `python -m ex_stage2 store_predictions` "
        "or `ensemble_predictions`."
    )


def resolve_pseudo_label_dir(config: Mapping) -> Path | None:
    """The folder of pseudo-label files (``<set>.hdf5``) for training, or None (iteration 1: none).

    ``pseudo_labels``: None → ``resources/pseudo-labels`` if that folder exists, else None; a name → the folder
    of that name in ``preds_path`` (default ``resources/predictions``, where store/ensemble write); a path → the
    path itself. A name or path that does not exist, or a folder without any pseudo-label set file
    (``data_util.layout.PSEUDO_LABEL_SETS``), is an error.
    """
    value = config.get("pseudo_labels")
    if value in (None, ""):
        return configs.PSEUDO_LABELS_DIR if configs.PSEUDO_LABELS_DIR.is_dir() else None
    folder = find_prediction_folder(value, configs.preds_dir(config), "pseudo_labels")
    if not any((folder / f"{name}{PREDICTION_SUFFIX}").is_file() for name in PSEUDO_LABEL_SETS):
        raise PredictionCommandError(
            f"pseudo_labels={str(value)!r}: {folder} holds none of the pseudo-label files "
            f"{', '.join(n + PREDICTION_SUFFIX for n in PSEUDO_LABEL_SETS)}"
        )
    return folder
