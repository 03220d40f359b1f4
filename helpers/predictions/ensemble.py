"""Ensembling prediction files: the (weighted) mean of strong logits of several models, per data set.

The reference requires identical ``filenames`` order in every file (its files came from a glob, so the
order depended on the file system). Here clips are aligned by name, so any order works; different clip
sets, class lists or frame hops are refused with an error naming the files. The result is written
atomically with the members recorded in the ``model`` and ``members`` attributes and the weights used
(normalised to sum 1) in the ``weights`` attribute. These files are also the next iteration's pseudo-labels.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from data_util.prediction_files import PredictionFile, write_predictions

log = logging.getLogger(__name__)


class EnsembleError(ValueError):
    """The prediction files of an ensemble do not describe the same clips."""


def normalised_weights(weights: Sequence[float] | None, count: int) -> np.ndarray:
    """``weights`` (None: equal) for ``count`` files as float64 summing to 1; ValueError naming the values when
    their number is wrong, one is negative or not finite, or they sum to 0."""
    if weights is None:
        weights = [1.0] * count
    if len(weights) != count:
        raise ValueError(f"{len(weights)} ensemble weights {list(weights)} for {count} prediction files")
    values = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise ValueError(f"ensemble weights must be non-negative with a positive sum, got {values.tolist()}")
    return values / values.sum()


def ensemble_logits(paths: Sequence[str | os.PathLike], weights: Sequence[float] | None = None):
    """(filenames sorted, mean logits [N, 156, 27] float32) of the prediction files ``paths``.

    ``weights`` (one per file, normalised to sum 1) default to equal weights. Every file is validated
    (shape, classes, frame hop, finite values) by ``PredictionFile``.
    """
    if len(paths) == 0:
        raise ValueError("ensemble_logits needs at least one prediction file")
    weights = normalised_weights(weights, len(paths))
    equal = bool(np.all(weights == weights[0]))

    reference_names: list[str] | None = None
    total: np.ndarray | None = None
    for path, weight in zip(paths, weights):
        with PredictionFile(path) as predictions:
            names = predictions.filenames
            logits = predictions.all_logits()
        order = np.argsort(np.asarray(names, dtype=object), kind="stable")
        names = [names[i] for i in order]
        logits = logits[order]
        if reference_names is None:
            reference_names = names
            # equal weights: float32 running sum / M, bit-identical to the reference's np.mean over a stack
            total = np.zeros(logits.shape, dtype=np.float32 if equal else np.float64)
        elif names != reference_names:
            only_first = sorted(set(reference_names) - set(names))
            only_this = sorted(set(names) - set(reference_names))
            raise EnsembleError(
                f"{path} and {paths[0]} hold different clips: {len(only_first)} only in the first "
                f"(e.g. {only_first[:3]}), {len(only_this)} only in {Path(path).name} (e.g. {only_this[:3]})"
            )
        total += logits if equal else weight * logits
    if equal:
        return reference_names, total / np.float32(len(paths))
    return reference_names, total.astype(np.float32)


def ensemble_files(
    paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    weights: Sequence[float] | None = None,
    model: str | None = None,
) -> Path:
    """Write the ensemble of ``paths`` to ``out_path`` (atomically) and return it.

    Attributes besides the format's own: ``members`` (JSON list of ``paths``) and ``weights`` (float64, the
    normalised weight of each member in ``paths`` order; equal weights are recorded too).
    """
    names, logits = ensemble_logits(paths, weights)
    description = model or "ensemble mean of logits: " + ", ".join(str(p) for p in paths)
    extra = {"members": json.dumps([str(p) for p in paths]), "weights": normalised_weights(weights, len(paths))}
    log.info("ensemble of %d files -> %s (%d clips)", len(paths), out_path, len(names))
    return write_predictions(out_path, names, logits, model=description, extra_attrs=extra)
