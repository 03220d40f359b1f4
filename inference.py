"""Sound event detection on any audio file: event tables, frame scores and a plot.

    python -m inference --audio_file recording.wav                       # atst_stage2, median filter
    python -m inference --audio_file folder/ --ensemble atst_stage2,passt_stage2,beats_stage2 --postprocess csebbs

Audio of any length, sample rate and channel count is read with ``data_util.audio.read_audio`` (mono by
channel mean, resampled to 16 kHz) and run through the SED model in sliding 10 s windows whose frame logits
are overlap-added onto the recording's 64 ms frame grid (``models.long_audio.predict_long``). An ensemble
averages the strong logits of its members. Post-processing is the class-wise median filter of the DCASE
baseline (``data_util.classes.MEDIAN_WINDOWS``), cSEBBs, or nothing; events are runs above ``--threshold``
(cSEBBs: boxes whose confidence reaches it). Outputs per input file, in ``<out>/<stem>/``:

- ``<stem>_events.tsv``: onset, offset, event_label, confidence (seconds, sorted by onset);
- ``<stem>_scores.tsv``: one row per 64 ms frame: onset, offset and the 27 class probabilities;
- ``<stem>_scores.hdf5``: the raw strong logits of every 10 s window in the prediction-file format of
  ``data_util.prediction_files`` (one window: named ``<stem>``; several: ``<stem>-<onset_cs:06d>-<offset_cs:06d>``,
  MAESTRO's chunk naming, so ``helpers.evaluation.maestro`` can re-assemble them);
- ``<stem>.png``: log-mel spectrogram, probability curves of the active classes, detected events.

Checkpoints are named (``atst_stage2`` -> ``resources/pretrained_models/atst_stage2.ckpt``) or given by path.
The architecture is read from the checkpoint itself: the backbone from its telltale keys, sizes (depth,
embedding width, MLP width, CRNN filters, GRU width, AudioSet head) from the state-dict shapes, and what
shapes cannot tell (attention heads of ATST / fPaSST, embedding pooling) from the training config stored in
the checkpoint (``hyper_parameters['config']``) when present, else from the released models' settings
(``models.registry.ARCH_SPECS[arch].wrapper_defaults``; 64-dim attention heads); see ``models.loading``.

AudioSet-strong models (``ex_audioset_strong``'s checkpoints and ``.pt`` exports, PretrainedSED's release files)
run the same way: their class list (447 AudioSet classes) and 40 ms frames come from the file
(``models.loading.load_inference_model``); their ``_scores.hdf5`` is in the KD-logit format of
``data_util.kd_logits`` (windows x classes x 250 frames) instead.

The reference has no inference command; its ``store_predictions`` runs only on the dataset's 10 s clips.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torchaudio
from torch import nn
from tqdm import tqdm

import configs
from data_util.atomic import atomic_path
from data_util.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, AudioReadError, read_audio
from data_util.classes import CLASSES
from data_util.kd_logits import write_strong_kd
from data_util.prediction_files import write_predictions
from helpers.errors import DEBUG_ENV, debug_enabled, user_message
from helpers.evaluation import postprocess
from models import long_audio, window_batches
from models.checkpoints import CheckpointError
from models.compile import compile_in_place
from models.factory import WaveformSED
from models.loading import HEAD_DIM, load_inference_model
from models.registry import arch_names

log = logging.getLogger("inference")

DEFAULT_OUT_DIR = Path("inference_out")
DEFAULT_HOP_SECONDS = 5.0
DEFAULT_BATCH_SIZE = 16
DEFAULT_THRESHOLD = 0.5
FRAME_HOP_SECONDS = long_audio.FRAME_HOP_SAMPLES / SAMPLE_RATE  # 0.064
WINDOW_SAMPLES = round(long_audio.WINDOW_SECONDS * SAMPLE_RATE)
CENTISECONDS = 100

# Plot layout.
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


class InferenceError(RuntimeError):
    """A user-facing problem (unknown model, no audio files, bad option); the message says what to do."""


# ---------------------------------------------------------------------------------------------------------
# Models: loaded by models.loading (name -> file -> architecture and sizes -> model)
# ---------------------------------------------------------------------------------------------------------
class SEDEnsemble(nn.Module):
    """Mean of the members' strong logits (each member computes its own front-ends)."""

    def __init__(self, members: Sequence[WaveformSED]):
        super().__init__()
        if not members:
            raise InferenceError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        outputs = {(tuple(m.class_names), m.mel_hop, m.net_pooling) for m in members}
        if len(outputs) > 1:
            raise InferenceError("the ensemble's models have different classes or frame rates; ensemble models "
                                 "trained for the same outputs (all SED models, or all AudioSet-strong models)")
        self.class_names, self.median_windows = members[0].class_names, members[0].median_windows
        self.mel_hop, self.net_pooling = members[0].mel_hop, members[0].net_pooling

    @property
    def name(self) -> str:
        return "+".join(member.name for member in self.members)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(wav).float() for member in self.members]).mean(0)  # (B, frames, 27)


def load_model(
    name_or_path: str | os.PathLike,
    *,
    mode: str = "student",
    arch: str | None = None,
    num_heads: int | None = None,
    embed_pool: str | None = None,
    interpolation_mode: str | None = None,
    models_dir: Path = configs.PRETRAINED_MODELS_DIR,
) -> WaveformSED:
    """The model a checkpoint holds (``models.loading.load_sed_model``); the options are the CLI's overrides of
    what the shapes cannot show, cross-checked against the file (``--arch`` names the expected architecture)."""
    overrides: dict[str, Any] = {}
    if arch is not None:
        overrides["arch"] = arch
    wrapper = {k: v for k, v in (("embed_pool", embed_pool), ("interpolation_mode", interpolation_mode)) if v}
    if wrapper:
        overrides["t4_wrapper"] = wrapper
    if num_heads is not None:
        overrides["backbone"] = {"num_heads": num_heads}
    return load_inference_model(name_or_path, mode=mode, overrides=overrides, model_dir=models_dir)


# ---------------------------------------------------------------------------------------------------------
# Prediction over a whole recording
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class WaveformPrediction:
    """Strong logits of one recording: overlap-added frames and the per-window logits they came from."""

    frame_logits: np.ndarray  # float32 [T, C] on the recording's frame grid (64 ms; AudioSet-strong models 40 ms)
    window_logits: np.ndarray  # float32 [W, frames, C], one row per 10 s window
    window_starts: list[int]  # samples
    num_samples: int
    # what the model's outputs are (the SED model's by default): classes, median windows, samples per frame
    class_names: tuple[str, ...] = CLASSES
    median_windows: tuple[int, ...] = WaveformSED.median_windows
    frame_hop_samples: int = long_audio.FRAME_HOP_SAMPLES

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE

    @property
    def timestamps(self) -> np.ndarray:
        """[T + 1] frame boundaries in seconds, the last one clipped to the duration."""
        frames = np.arange(len(self.frame_logits) + 1, dtype=np.float64)
        return np.minimum(frames * self.frame_hop_samples / SAMPLE_RATE, self.duration)


class _WindowRunner(nn.Module):
    """Adapter between ``long_audio.predict_long`` and a waveform model.

    ``predict_long`` calls ``model(cnn_frontend(w), transformer_frontend(w), return_strong_logits=True)``;
    with identity front-ends both arguments are the raw windows (kept on the CPU so long recordings do not
    fill the accelerator). Here each batch goes to the device (under bf16 autocast if asked), its logits come
    back as float32 on the CPU (the overlap-add runs there), are recorded per window and tick the progress bar.
    """

    def __init__(self, model: nn.Module, device: torch.device, bf16: bool, on_batch: Callable[[int], None]):
        super().__init__()
        self.model = model
        self.device = device
        self.bf16 = bf16
        self.on_batch = on_batch
        self.window_logits: list[torch.Tensor] = []

    def forward(self, windows: torch.Tensor, _same_windows: torch.Tensor, return_strong_logits: bool = True):
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(windows.to(self.device, non_blocking=True))
        logits = logits.float().cpu()  # (W, 156, 27)
        self.window_logits.append(logits)
        self.on_batch(len(logits))
        return logits


def predict_waveform(
    model: nn.Module,
    wav: np.ndarray,
    *,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    on_batch: Callable[[int], None] = lambda n: None,
) -> WaveformPrediction:
    """Strong logits of a mono 16 kHz waveform [N] of any length (sliding 10 s windows, overlap-add)."""
    num_samples = len(wav)
    _check_length(num_samples, model)
    runner = _WindowRunner(model, torch.device(device), bf16, on_batch)
    frame_logits = long_audio.predict_long(
        runner, nn.Identity(), nn.Identity(), torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)),
        hop_seconds, batch_size=batch_size, **_geometry(model),
    )
    starts = long_audio.window_starts(num_samples, WINDOW_SAMPLES, round(hop_seconds * SAMPLE_RATE))
    return WaveformPrediction(frame_logits=frame_logits.numpy(), window_logits=torch.cat(runner.window_logits).numpy(),
                              window_starts=starts, num_samples=num_samples, **_outputs(model))


def _geometry(model: nn.Module) -> dict:
    """The model's output frame: ``mel_hop`` x ``net_pooling`` samples (SED models 256 x 4, AudioSet-strong 160 x 4)."""
    return {"mel_hop": getattr(model, "mel_hop", long_audio.MEL_HOP),
            "net_pooling": getattr(model, "net_pooling", long_audio.NET_POOLING)}


def _outputs(model: nn.Module) -> dict:
    geometry = _geometry(model)
    return {"class_names": tuple(getattr(model, "class_names", CLASSES)),
            "median_windows": tuple(getattr(model, "median_windows", WaveformSED.median_windows)),
            "frame_hop_samples": geometry["mel_hop"] * geometry["net_pooling"]}


def _check_length(num_samples: int, model: nn.Module | None = None) -> None:
    geometry = _geometry(model)
    if long_audio.num_output_frames(num_samples, **geometry) < 1:
        frame_ms = geometry["mel_hop"] * geometry["net_pooling"] / SAMPLE_RATE * 1000
        raise InferenceError(f"the audio is {num_samples / SAMPLE_RATE * 1000:.0f} ms long: too short for one "
                             f"{frame_ms:.0f} ms output frame")


def predict_waveforms(
    model: nn.Module,
    wavs: Sequence[np.ndarray],
    *,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    on_batch: Callable[[int], None] = lambda n: None,
) -> list[WaveformPrediction]:
    """``predict_waveform`` for several recordings whose windows share batches (folder mode)."""
    for wav in wavs:
        _check_length(len(wav), model)
    runner = _WindowRunner(model, torch.device(device), bf16, on_batch)
    recordings = [torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)) for wav in wavs]
    results = window_batches.predict_recordings(lambda windows: runner(windows, windows), recordings, hop_seconds,
                                                batch_size=batch_size, **_geometry(model))
    return [WaveformPrediction(frame_logits=r.frame_logits.numpy(), window_logits=r.window_logits.numpy(),
                               window_starts=r.window_starts, num_samples=r.num_samples, **_outputs(model))
            for r in results]


def num_windows(num_samples: int, hop_seconds: float) -> int:
    return len(long_audio.window_starts(num_samples, WINDOW_SAMPLES, round(hop_seconds * SAMPLE_RATE)))


def window_names(stem: str, prediction: WaveformPrediction) -> list[str]:
    """Row names of the window logits: ``stem`` for one window, else MAESTRO chunk names (centiseconds)."""
    if len(prediction.window_starts) == 1:
        return [stem]
    names = []
    for start in prediction.window_starts:
        end = min(start + WINDOW_SAMPLES, prediction.num_samples)
        onset_cs = round(start * CENTISECONDS / SAMPLE_RATE)
        offset_cs = round(end * CENTISECONDS / SAMPLE_RATE)
        names.append(f"{stem}-{onset_cs:06d}-{offset_cs:06d}")
    return names


# ---------------------------------------------------------------------------------------------------------
# Post-processing and outputs
# ---------------------------------------------------------------------------------------------------------
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


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_events_tsv(path: Path, events: Sequence[postprocess.Event]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("onset\toffset\tevent_label\tconfidence\n")
            for onset, offset, label, confidence in events:
                f.write(f"{onset:.3f}\t{offset:.3f}\t{label}\t{confidence:.4f}\n")

    _atomic_write(path, write)


def write_scores_tsv(path: Path, probabilities: np.ndarray, timestamps: np.ndarray,
                     classes: Sequence[str] = CLASSES) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\t".join(["onset", "offset", *classes]) + "\n")
            for t, row in enumerate(probabilities):
                values = "\t".join(f"{p:.6f}" for p in row)
                f.write(f"{timestamps[t]:.3f}\t{timestamps[t + 1]:.3f}\t{values}\n")

    _atomic_write(path, write)


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
    _atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))


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


def process_file(
    audio_file: Path,
    out_dir: Path,
    model: nn.Module,
    *,
    model_description: str,
    postprocess_method: str = "median",
    threshold: float = DEFAULT_THRESHOLD,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    csebbs_predictor=None,
    progress: bool = True,
    plot: bool = True,
) -> FileResult:
    """Run ``model`` on one audio file and write its four outputs into ``out_dir``."""
    wav = read_audio(audio_file)
    with tqdm(total=num_windows(len(wav), hop_seconds), desc=audio_file.name, unit="window",
              disable=not progress, leave=False) as bar:
        prediction = predict_waveform(model, wav, hop_seconds=hop_seconds, batch_size=batch_size, device=device,
                                      bf16=bf16, on_batch=bar.update)
    return write_outputs(audio_file, out_dir, wav, prediction, model_description=model_description,
                         postprocess_method=postprocess_method, threshold=threshold,
                         csebbs_predictor=csebbs_predictor, plot=plot)


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


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------
def collect_audio_files(path: Path) -> list[tuple[Path, Path]]:
    """(audio file, output sub-folder relative to --out) for a file or every audio file under a folder."""
    if path.is_file():
        return [(path, Path(path.stem))]
    if not path.exists():
        raise InferenceError(f"--audio_file {path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise InferenceError(f"--audio_file {path}: the folder holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    outputs, seen = [], set()
    for f in files:
        relative = f.relative_to(path).with_suffix("")
        if relative in seen:  # x.wav next to x.flac
            relative = relative.with_name(f"{relative.name}_{f.suffix.lstrip('.').lower()}")
        seen.add(relative)
        outputs.append((f, relative))
    return outputs


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InferenceError("--device cuda was requested, but torch sees no CUDA GPU (use --device auto or cpu)")
    return torch.device(choice)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio_file", required=True, type=Path, help="an audio file or a folder of them")
    parser.add_argument("--model_name", default=None,
                        help="checkpoint name in resources/pretrained_models or a path "
                             f"(default: {configs.DEFAULT_MODEL})")
    parser.add_argument("--ensemble", default=None, help="comma-separated model names/paths: mean of their logits")
    parser.add_argument("--mode", choices=("student", "teacher"), default="student",
                        help="which weights of the checkpoint (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="decision threshold (default: %(default)s)")
    parser.add_argument("--postprocess", choices=postprocess.POSTPROCESS_CHOICES, default="median",
                        help="frame post-processing before thresholding (default: %(default)s)")
    parser.add_argument("--csebbs_params", type=Path, default=None,
                        help="JSON of tuned cSEBBs parameters (CSEBBsPredictor.to_dict()); default: sebbs' defaults")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR,
                        help="outputs go to <out>/<stem>/ (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when available (default: %(default)s)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPU)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model(s); falls back to eager execution with a warning if it fails")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="10 s windows per forward pass (default: %(default)s)")
    parser.add_argument("--hop_seconds", type=float, default=DEFAULT_HOP_SECONDS,
                        help="hop between 10 s windows; overlapping windows are averaged (default: %(default)s)")
    parser.add_argument("--arch", choices=arch_names(), default=None,
                        help="expected architecture (read from the checkpoint; a mismatch is an error)")
    parser.add_argument("--num_heads", type=int, default=None,
                        help="attention heads of ATST/fPaSST checkpoints without a stored config "
                             f"(default: width / {HEAD_DIM})")
    parser.add_argument("--embed_pool", choices=("aap", "int", "conv"), default=None,
                        help="override the embedding pooling (default: stored config, else the released setting)")
    parser.add_argument("--interpolation_mode", default=None, help="override t4_wrapper.interpolation_mode")
    parser.add_argument("--models_dir", type=Path, default=configs.PRETRAINED_MODELS_DIR,
                        help="where model names are looked up (default: %(default)s)")
    parser.add_argument("--no_plot", action="store_true", help="skip the PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error instead of one line (also: {DEBUG_ENV}=1)")
    return parser


def _validate(args: argparse.Namespace) -> list[str]:
    if args.model_name and args.ensemble:
        raise InferenceError("give either --model_name or --ensemble, not both")
    names = [n.strip() for n in args.ensemble.split(",") if n.strip()] if args.ensemble else [
        args.model_name or configs.DEFAULT_MODEL]
    if not names:
        raise InferenceError(f"--ensemble {args.ensemble!r} names no model")
    for name in names:  # a checkpoint is a pickle: never downloaded here (configs.refuse_url says how instead)
        configs.refuse_url(name, "--ensemble" if args.ensemble else "--model_name")
    if not 0.0 <= args.threshold <= 1.0:
        raise InferenceError(f"--threshold {args.threshold} must be within [0, 1]")
    if not FRAME_HOP_SECONDS <= args.hop_seconds <= long_audio.WINDOW_SECONDS:
        raise InferenceError(f"--hop_seconds {args.hop_seconds} must be in [{FRAME_HOP_SECONDS}, "
                             f"{long_audio.WINDOW_SECONDS:g}] (one output frame to one window)")
    if args.batch_size < 1:
        raise InferenceError(f"--batch_size {args.batch_size} must be >= 1")
    if args.csebbs_params is not None and args.postprocess != "csebbs":
        raise InferenceError("--csebbs_params needs --postprocess csebbs")
    return names


def run(args: argparse.Namespace) -> tuple[list[FileResult], list[tuple[Path, str]]]:
    """Everything ``main`` does: (results, failures). A single input file that cannot be read raises; in a
    folder, unreadable files are skipped and returned as (file, reason) failures."""
    names = _validate(args)
    inputs = collect_audio_files(args.audio_file)
    device = pick_device(args.device)
    bf16 = args.bf16
    if bf16 and device.type != "cuda":
        log.warning("--bf16 is for GPUs; running in float32 on %s", device)
        bf16 = False
    members = [load_model(name, mode=args.mode, arch=args.arch, num_heads=args.num_heads, embed_pool=args.embed_pool,
                          interpolation_mode=args.interpolation_mode, models_dir=args.models_dir) for name in names]
    if args.compile:
        for member in members:
            compile_in_place(member.model, member.name)
    model = (members[0] if len(members) == 1 else SEDEnsemble(members)).to(device).eval()
    description = f"{'ensemble ' if len(members) > 1 else ''}{'+'.join(m.name for m in members)} ({args.mode})"
    predictor = None
    if args.postprocess == "csebbs" and args.csebbs_params is not None:
        predictor = postprocess.load_csebbs_predictor(args.csebbs_params, model.class_names)
    options = dict(model_description=description, postprocess_method=args.postprocess, threshold=args.threshold,
                   csebbs_predictor=predictor, plot=not args.no_plot)
    if not args.audio_file.is_dir():
        (audio_file, relative), = inputs
        result = process_file(audio_file, args.out / relative, model, hop_seconds=args.hop_seconds,
                              batch_size=args.batch_size, device=device, bf16=bf16, progress=not args.quiet, **options)
        log.info("%s: %.1f s, %d events -> %s", audio_file, result.duration, result.num_events, result.out_dir)
        return [result], []
    # Folder: files are read in order and predicted in groups whose windows fill at least one batch, so short
    # files share forward passes (models.window_batches); unreadable or too-short files are skipped.
    results, failures = [], []
    group: list[tuple[Path, Path, np.ndarray]] = []

    def flush() -> None:
        total = sum(num_windows(len(wav), args.hop_seconds) for _, _, wav in group)
        with tqdm(total=total, desc=f"{len(group)} file(s)", unit="window", disable=args.quiet, leave=False) as bar:
            predictions = predict_waveforms(model, [wav for _, _, wav in group], hop_seconds=args.hop_seconds,
                                            batch_size=args.batch_size, device=device, bf16=bf16,
                                            on_batch=bar.update)
        for (audio_file, relative, wav), prediction in zip(group, predictions):
            result = write_outputs(audio_file, args.out / relative, wav, prediction, **options)
            log.info("%s: %.1f s, %d events -> %s", audio_file, result.duration, result.num_events, result.out_dir)
            results.append(result)
        group.clear()

    for audio_file, relative in inputs:
        try:
            wav = read_audio(audio_file)
            _check_length(len(wav))
        except (AudioReadError, InferenceError) as e:
            log.error("skipped %s: %s", audio_file, e)
            failures.append((audio_file, str(e)))
            continue
        group.append((audio_file, relative, wav))
        if sum(num_windows(len(w), args.hop_seconds) for _, _, w in group) >= args.batch_size:
            flush()
    if group:
        flush()
    return results, failures


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 all files done; 1 some files of a folder could not be read; 2 nothing done (an error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    try:
        results, failures = run(args)
    except (InferenceError, AudioReadError, CheckpointError, FileNotFoundError, ValueError) as e:
        if args.debug or debug_enabled():
            raise
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{result.audio_file}: {result.num_events} events -> {result.out_dir}")
    for audio_file, reason in failures:
        print(f"error: skipped {audio_file}: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
