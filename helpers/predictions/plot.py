"""The inference plot of one recording: log-mel spectrogram, probability curves of the active classes, events."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchaudio

from data_util.atomic import atomic_path
from data_util.audio import SAMPLE_RATE
from data_util.classes import CLASSES
from helpers.evaluation import postprocess

PLOT_MAX_CLASSES = 10
PLOT_MIN_CLASSES = 3
PLOT_MAX_SPEC_FRAMES = 4000  # spectrogram columns drawn at most (longer audio: larger hop)
PLOT_SPEC_MELS = 64
PLOT_SPEC_N_FFT = 1024
PLOT_SPEC_MIN_HOP = 160
PLOT_TOP_DB = 80.0
PLOT_DPI = 100
PLOT_MIN_WIDTH = 10.0  # inches; longer audio gets wider plots up to PLOT_MAX_WIDTH
PLOT_MAX_WIDTH = 24.0
PLOT_SECONDS_PER_EXTRA_INCH = 10.0
PLOT_PANEL_INCHES = 3.0  # spectrogram and probability panels
PLOT_EVENT_AXES_INCHES = 0.6  # event panel: axes decoration plus one row per class
PLOT_EVENT_ROW_INCHES = 0.3


def plot_classes(probabilities: np.ndarray, events: Sequence[postprocess.Event],
                 classes: Sequence[str] = CLASSES) -> list[int]:
    """Class indices to plot: those with events, topped up to PLOT_MIN_CLASSES by peak probability, at most
    PLOT_MAX_CLASSES (highest peaks first)."""
    peaks = probabilities.max(axis=0)
    with_events = {list(classes).index(label) for _, _, label, _ in events}
    by_peak = [int(c) for c in np.argsort(-peaks, kind="stable")]
    chosen = [c for c in by_peak if c in with_events]
    chosen += [c for c in by_peak if c not in with_events][: max(0, PLOT_MIN_CLASSES - len(chosen))]
    return chosen[:PLOT_MAX_CLASSES]


def log_mel_for_plot(wav: np.ndarray) -> tuple[np.ndarray, float]:
    """(dB log-mel [mels, frames], hop seconds) with a hop chosen so at most PLOT_MAX_SPEC_FRAMES frames."""
    hop = max(PLOT_SPEC_MIN_HOP, math.ceil(len(wav) / PLOT_MAX_SPEC_FRAMES))
    mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=PLOT_SPEC_N_FFT, hop_length=hop,
                                               n_mels=PLOT_SPEC_MELS)(torch.from_numpy(wav))
    db = torchaudio.transforms.AmplitudeToDB(top_db=PLOT_TOP_DB)(mel)
    return db.numpy(), hop / SAMPLE_RATE


def write_plot(path: Path, wav: np.ndarray, probabilities: np.ndarray, timestamps: np.ndarray,
               events: Sequence[postprocess.Event], *, threshold: float, title: str,
               class_names: Sequence[str] = CLASSES) -> None:
    """Spectrogram (top), probability curves of the active classes (middle), detected events (bottom)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib only for --plot
    from matplotlib.figure import Figure  # lazy: matplotlib only for --plot

    duration = len(wav) / SAMPLE_RATE
    names = list(class_names)
    classes = plot_classes(probabilities, events, names)
    colors = [f"C{i % PLOT_MAX_CLASSES}" for i in range(len(classes))]  # matplotlib's 10-colour cycle
    width = min(PLOT_MAX_WIDTH, max(PLOT_MIN_WIDTH, PLOT_MIN_WIDTH + duration / PLOT_SECONDS_PER_EXTRA_INCH))
    event_rows = max(1, len(classes))
    event_height = PLOT_EVENT_AXES_INCHES + PLOT_EVENT_ROW_INCHES * event_rows
    figure = Figure(figsize=(width, 2 * PLOT_PANEL_INCHES + event_height), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    spec_ax, prob_ax, event_ax = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [PLOT_PANEL_INCHES, PLOT_PANEL_INCHES, event_height]})

    db, spec_hop = log_mel_for_plot(wav)
    spec_ax.imshow(db, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                   extent=(0.0, db.shape[1] * spec_hop, 0, db.shape[0]))
    spec_ax.set_ylabel("mel bin")
    spec_ax.set_title(title, fontsize=11)

    centres = (timestamps[:-1] + timestamps[1:]) / 2
    for color, c in zip(colors, classes):
        prob_ax.plot(centres, probabilities[:, c], color=color, linewidth=1.2, label=names[c])
    prob_ax.axhline(threshold, color="0.4", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
    prob_ax.set_ylim(0.0, 1.02)
    prob_ax.set_ylabel("probability")
    prob_ax.grid(alpha=0.3)
    prob_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)

    row_of = {c: row for row, c in enumerate(classes)}
    for onset, offset, label, _ in events:
        c = names.index(label)
        if c in row_of:
            event_ax.broken_barh([(onset, offset - onset)], (row_of[c] - 0.4, 0.8), color=colors[row_of[c]])
    event_ax.set_yticks(range(len(classes)), [names[c] for c in classes], fontsize=9)
    event_ax.set_ylim(-0.6, event_rows - 0.4)
    event_ax.invert_yaxis()
    event_ax.set_xlim(0.0, duration)
    event_ax.set_xlabel("time [s]")
    event_classes = {label for _, _, label, _ in events}
    if len(event_classes) > len(classes):
        event_ax.set_title(f"{len(events)} detected events in {len(event_classes)} classes; the {len(classes)} "
                           "classes with the highest peaks are shown", fontsize=10)
    else:
        event_ax.set_title(f"{len(events)} detected events", fontsize=10)
    if not events:
        event_ax.text(0.5, 0.5, "no events detected", transform=event_ax.transAxes, ha="center", va="center")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


__all__ = ["plot_classes", "log_mel_for_plot", "write_plot"]
