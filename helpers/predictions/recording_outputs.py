"""The outputs of one recording's prediction: post-processed probabilities, events and their files.

Per recording, in its output folder: ``<stem>_events.tsv`` (onset, offset, event_label, confidence),
``<stem>_scores.tsv`` (one row per output frame: onset, offset, class probabilities), ``<stem>_scores.hdf5`` (the
raw window logits in the prediction-file format of ``data_util.prediction_files``; AudioSet-strong models: the
KD-logit format of ``data_util.kd_logits``) and ``<stem>.png`` (``helpers.predictions.plot``). Every file is
written atomically.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from data_util.atomic import atomic_path
from data_util.audio import SAMPLE_RATE
from data_util.classes import CLASSES
from data_util.kd_logits import write_strong_kd
from data_util.prediction_files import write_predictions
from helpers.evaluation import postprocess
from helpers.predictions.plot import write_plot
from helpers.predictions.recording import WaveformPrediction, window_names

DEFAULT_THRESHOLD = 0.5


def frame_probabilities(prediction: WaveformPrediction, method: str) -> np.ndarray:
    """Sigmoid of the frame logits [T, C], median-filtered per class (the model's windows) when ``method == 'median'``."""
    probabilities = torch.sigmoid(torch.from_numpy(prediction.frame_logits)).numpy()
    if method == "median":
        probabilities = postprocess.median_filter(probabilities, prediction.median_windows)
    return probabilities


def detect_events(probabilities: np.ndarray, timestamps: np.ndarray, method: str, threshold: float,
                  csebbs_predictor=None, classes: Sequence[str] = CLASSES) -> list[postprocess.Event]:
    if method == "csebbs":
        return postprocess.csebbs_events(probabilities, timestamps, classes, threshold, csebbs_predictor)
    return postprocess.threshold_events(probabilities, timestamps, classes, threshold)


def write_events_tsv(path: Path, events: Sequence[postprocess.Event]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("onset\toffset\tevent_label\tconfidence\n")
            for onset, offset, label, confidence in events:
                f.write(f"{onset:.3f}\t{offset:.3f}\t{label}\t{confidence:.4f}\n")

    with atomic_path(path) as tmp:
        write(tmp)


def write_scores_tsv(path: Path, probabilities: np.ndarray, timestamps: np.ndarray,
                     classes: Sequence[str] = CLASSES) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\t".join(["onset", "offset", *classes]) + "\n")
            for t, row in enumerate(probabilities):
                values = "\t".join(f"{p:.6f}" for p in row)
                f.write(f"{timestamps[t]:.3f}\t{timestamps[t + 1]:.3f}\t{values}\n")

    with atomic_path(path) as tmp:
        write(tmp)


def write_scores_hdf5(path: Path, stem: str, prediction: WaveformPrediction, model_description: str) -> None:
    if prediction.class_names != CLASSES:  # AudioSet-strong models: the KD-logit format (windows, classes, frames)
        write_strong_kd(path, window_names(stem, prediction), prediction.window_logits.transpose(0, 2, 1),
                        classes=prediction.class_names, model=model_description,
                        frame_hop=prediction.frame_hop_samples / SAMPLE_RATE)
        return
    write_predictions(path, window_names(stem, prediction), prediction.window_logits, model=model_description,
                      extra_attrs={"duration": prediction.duration,
                                   "window_hop": float(np.diff(prediction.window_starts).min() / SAMPLE_RATE)
                                   if len(prediction.window_starts) > 1 else 0.0})


@dataclasses.dataclass
class FileResult:
    """Where the outputs of one audio file went, and what was found."""

    audio_file: Path
    out_dir: Path
    events_tsv: Path
    scores_tsv: Path
    scores_hdf5: Path
    plot: Path
    duration: float
    num_events: int


def write_outputs(audio_file: Path, out_dir: Path, wav: np.ndarray, prediction: WaveformPrediction, *,
                  model_description: str, postprocess_method: str = "median", threshold: float = DEFAULT_THRESHOLD,
                  csebbs_predictor=None, plot: bool = True) -> FileResult:
    """Post-process one recording's prediction and write its four outputs into ``out_dir``."""
    stem = audio_file.stem
    probabilities = frame_probabilities(prediction, postprocess_method)
    timestamps = prediction.timestamps
    events = detect_events(probabilities, timestamps, postprocess_method, threshold, csebbs_predictor,
                           prediction.class_names)
    result = FileResult(audio_file=audio_file, out_dir=out_dir, events_tsv=out_dir / f"{stem}_events.tsv",
                        scores_tsv=out_dir / f"{stem}_scores.tsv", scores_hdf5=out_dir / f"{stem}_scores.hdf5",
                        plot=out_dir / f"{stem}.png", duration=prediction.duration, num_events=len(events))
    write_events_tsv(result.events_tsv, events)
    write_scores_tsv(result.scores_tsv, probabilities, timestamps, prediction.class_names)
    write_scores_hdf5(result.scores_hdf5, stem, prediction, model_description)
    if plot:
        write_plot(result.plot, wav, probabilities, timestamps, events, threshold=threshold,
                   title=f"{audio_file.name} - {model_description} - {postprocess_method}",
                   class_names=prediction.class_names)
    return result


__all__ = ["DEFAULT_THRESHOLD", "frame_probabilities", "detect_events", "write_events_tsv", "write_scores_tsv",
           "write_scores_hdf5", "FileResult", "write_outputs"]
