"""Frame probabilities -> detected sound events: class-wise median filter, thresholding, cSEBBs.

Inputs are frame-level probabilities ``[T, C]`` on a regular grid of ``frame_hop`` seconds (0.064 s for our
models) with ``timestamps`` ``[T + 1]`` giving the frame boundaries (the last one clipped to the audio
duration). Outputs are event lists ``[(onset, offset, event_label, confidence)]`` sorted by onset.

- :func:`median_filter`: one window length (in frames) per class, as the DCASE baseline and the reference's
  ``helpers/postprocess.ClassWiseMedianFilter`` (``scipy.ndimage.median_filter`` with its default
  ``reflect`` boundary); windows are ``data_util.classes.MEDIAN_WINDOWS``.
- :func:`threshold_events`: contiguous runs of frames with probability > threshold become events (the DCASE
  baseline's ``scores > threshold``); an event's confidence is its highest frame probability.
- :func:`csebbs_events`: cSEBBs (Ebbers et al., Interspeech 2024) via ``helpers.evaluation.csebbs`` and the ``sebbs``
  library; a box is detected when its confidence > threshold (as sebbs' ``detection_thresholding``).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

Event = tuple[float, float, str, float]  # onset s, offset s, label, confidence

POSTPROCESS_CHOICES = ("median", "csebbs", "none")


def median_filter(probabilities: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """Median-filter each class column of ``probabilities`` [T, C] over time with its own window (frames)."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(windows):
        raise ValueError(
            f"median_filter: {len(windows)} windows for probabilities of shape {probabilities.shape}; "
            "expected [frames, one class per window]"
        )
    bad = [w for w in windows if int(w) < 1]
    if bad:
        raise ValueError(f"median filter windows must be >= 1 frame, got {bad}")
    filtered = np.empty_like(probabilities)
    for c, window in enumerate(windows):
        filtered[:, c] = ndimage.median_filter(probabilities[:, c], size=int(window))
    return filtered


def threshold_events(
    probabilities: np.ndarray, timestamps: np.ndarray, classes: Sequence[str], threshold: float
) -> list[Event]:
    """Events from runs of frames with probability > ``threshold`` in ``probabilities`` [T, C].

    ``timestamps`` [T + 1] are the frame boundaries; an event spans from its first frame's onset to its last
    frame's offset. Sorted by onset, then label.
    """
    probabilities = np.asarray(probabilities)
    T, C = probabilities.shape
    if len(classes) != C or np.shape(timestamps) != (T + 1,):
        raise ValueError(
            f"threshold_events: probabilities {probabilities.shape} need {C} class names (got {len(classes)}) "
            f"and {T + 1} timestamps (got {np.shape(timestamps)})"
        )
    active = probabilities > threshold  # (T, C)
    padded = np.zeros((T + 2, C), dtype=np.int8)
    padded[1:-1] = active
    changes = np.diff(padded, axis=0)  # (T + 1, C): +1 where a run starts, -1 one past where it ends
    events: list[Event] = []
    for c, label in enumerate(classes):
        starts = np.flatnonzero(changes[:, c] == 1)
        stops = np.flatnonzero(changes[:, c] == -1)  # exclusive frame index
        for start, stop in zip(starts, stops):
            confidence = float(probabilities[start:stop, c].max())
            events.append((float(timestamps[start]), float(timestamps[stop]), label, confidence))
    return sort_events(events)


def sort_events(events: Sequence[Event]) -> list[Event]:
    """Events sorted by onset, then offset, then label."""
    return sorted(events, key=lambda e: (e[0], e[1], e[2]))


def default_csebbs_predictor(classes: Sequence[str]):
    """sebbs' ``CSEBBsPredictor`` with its default parameters (step filter 0.5 s, merge abs 1.0, rel 2.0)."""
    from sebbs.csebbs import CSEBBsPredictor  # lazy: sebbs loads only for cSEBBs post-processing

    return CSEBBsPredictor(sound_classes=list(classes))


def load_csebbs_predictor(path: str | os.PathLike, classes: Sequence[str]):
    """A ``CSEBBsPredictor`` for ``classes`` from a JSON file of ``CSEBBsPredictor.to_dict()`` (e.g. tuned).

    Per-class parameters (dicts) may cover only some classes (the reference tunes the 10 DESED classes):
    the other classes get sebbs' default value, with a warning naming them.
    """
    from sebbs.csebbs import CSEBBsPredictor  # lazy: sebbs loads only for cSEBBs post-processing

    path = Path(path)
    try:
        params = json.loads(path.read_text())  # tuned thresholds may be Infinity, which Python's json reads
    except FileNotFoundError as e:
        raise FileNotFoundError(f"cSEBBs parameter file not found: {path}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON file of cSEBBs parameters ({e})") from e
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a JSON object of cSEBBs parameters, got {type(params).__name__}")
    defaults = default_csebbs_predictor(classes).to_dict()
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"{path}: unknown cSEBBs parameter(s) {unknown}; expected keys among {sorted(defaults)}")
    for key in ("step_filter_length", "merge_threshold_abs", "merge_threshold_rel"):
        value = params.get(key, defaults[key])
        if isinstance(value, dict):
            missing = [c for c in classes if c not in value]
            if missing:
                log.warning("%s: %s has no value for %s; using sebbs' default %s", path, key, missing, defaults[key])
            value = {c: float(value.get(c, defaults[key])) for c in classes}
        params[key] = value
    params["detection_threshold"] = None  # the command's --threshold decides
    params["sound_classes"] = list(classes)
    return CSEBBsPredictor.from_dict(params)


def csebbs_events(
    probabilities: np.ndarray,
    timestamps: np.ndarray,
    classes: Sequence[str],
    threshold: float,
    predictor=None,
) -> list[Event]:
    """cSEBBs boxes of ``probabilities`` [T, C] whose confidence > ``threshold`` (default predictor if None)."""
    import pandas as pd  # lazy: as sebbs, for cSEBBs only

    from helpers.evaluation import csebbs  # lazy: as sebbs, for cSEBBs only

    probabilities = np.asarray(probabilities, dtype=np.float64)
    T, C = probabilities.shape
    if len(classes) != C or np.shape(timestamps) != (T + 1,):
        raise ValueError(
            f"csebbs_events: probabilities {probabilities.shape} need {C} class names and {T + 1} timestamps"
        )
    predictor = predictor or default_csebbs_predictor(classes)
    table = pd.DataFrame(
        np.column_stack((timestamps[:-1], timestamps[1:], probabilities)), columns=["onset", "offset", *classes]
    )
    clip_ids, boxes = csebbs.predict_boxes(predictor, {"clip": table}, list(classes))
    sebbs = csebbs.boxes_to_lists(boxes, clip_ids, list(classes))["clip"]
    events = [(float(on), float(off), str(label), float(conf)) for on, off, label, conf in sebbs if conf > threshold]
    return sort_events(events)


__all__ = ["Event", "POSTPROCESS_CHOICES", "median_filter", "threshold_events", "sort_events",
           "default_csebbs_predictor", "load_csebbs_predictor", "csebbs_events"]
