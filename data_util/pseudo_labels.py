"""Pseudo-labels of a training set: the sigmoid of a previous iteration's (ensembled) logits.

Pseudo-label files are prediction files (``data_util.prediction_files``): ``<folder>/<set>.hdf5`` with
``strong_logits`` [N, 156, 27] per clip stem. A :class:`PseudoLabels` object looks up one set's file;
the HDF5 is opened lazily in the process that reads it (safe in DataLoader workers).

Iteration 1 has no pseudo-labels: without a folder (or, when allowed, without the set's file) every
lookup returns zeros and ``has_pseudo=False``; the training step then skips the pseudo-label loss for
those clips. The reference required the files and could not run iteration 1 without dummy files.

A file that exists but lacks a clip of the data set is an error, raised when the dataset is built
(:meth:`PseudoLabels.check_covers`), not hours into training.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from data_util.classes import NUM_CLASSES

log = logging.getLogger(__name__)

NUM_FRAMES = 156
PSEUDO_LABEL_SUFFIX = ".hdf5"
MAX_LISTED_MISSING = 10


class PseudoLabels:
    """Pseudo-label lookup for the clips of one set (``set_name``).

    ``folder=None`` means "no pseudo-labels". If the folder is given but ``<folder>/<set_name>.hdf5`` does
    not exist, ``allow_missing_file`` decides: zeros (True) or ``FileNotFoundError`` (False).
    """

    def __init__(self, folder: str | os.PathLike | None, set_name: str, *, allow_missing_file: bool = False):
        self.set_name = set_name
        self.path: Path | None = None
        self._file = None  # data_util.prediction_files.PredictionFile, reopened lazily per process
        if folder is None:
            return
        path = Path(folder) / f"{set_name}{PSEUDO_LABEL_SUFFIX}"
        if path.is_file():
            self.path = path
        elif not allow_missing_file:
            raise FileNotFoundError(
                f"pseudo-label file {path} for set {set_name!r} does not exist; write it with "
                f"`ex_stage2 store_predictions` / `ensemble_predictions`, or train without pseudo-labels "
                f"(training.use_pseudo_labels=False)"
            )
        else:
            log.warning("no pseudo-label file %s: set %s trains without pseudo-labels", path, set_name)

    @property
    def available(self) -> bool:
        return self.path is not None

    def _predictions(self):
        if self._file is None:
            from data_util.prediction_files import PredictionFile  # lazy: keeps data_util importable on its own

            self._file = PredictionFile(self.path)
        return self._file

    def check_covers(self, stems: Iterable[str]) -> None:
        """Raise ``KeyError`` listing the clips of the data set that the pseudo-label file lacks."""
        if not self.available:
            return
        predictions = self._predictions()
        missing = [stem for stem in stems if stem not in predictions]
        if missing:
            raise KeyError(
                f"pseudo-label file {self.path} lacks {len(missing)} clip(s) of set {self.set_name!r}, e.g. "
                f"{missing[:MAX_LISTED_MISSING]}; the file was written for other data (regenerate it with "
                f"store_predictions on this dataset)"
            )

    def lookup(self, stem: str) -> tuple[np.ndarray, bool]:
        """``(pseudo [27, 156] float32 probabilities, has_pseudo)`` of one clip."""
        if not self.available:
            return np.zeros((NUM_CLASSES, NUM_FRAMES), dtype=np.float32), False
        logits = self._predictions().logits(stem)  # [156, 27]
        probabilities = torch.sigmoid(torch.from_numpy(logits)).numpy()  # float32, as the reference
        return np.ascontiguousarray(probabilities.T), True  # [156, 27] -> [27, 156]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None  # each worker opens its own handle
        return state
