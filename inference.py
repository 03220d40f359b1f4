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
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import configs
from data_util.audio import AUDIO_EXTENSIONS, AudioReadError, read_audio
from helpers.errors import DEBUG_ENV, debug_enabled, user_message
from helpers.evaluation import postprocess
from helpers.predictions.recording import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_HOP_SECONDS,
    FRAME_HOP_SECONDS,
    InferenceError,
    SEDEnsemble,
    check_length,
    load_model,
    num_windows,
    predict_waveform,
    predict_waveforms,
)
from helpers.predictions.recording_outputs import DEFAULT_THRESHOLD, FileResult, write_outputs
from models import long_audio
from models.checkpoints import CheckpointError
from models.compile import compile_in_place
from models.loading import HEAD_DIM
from models.registry import arch_names

log = logging.getLogger("inference")

DEFAULT_OUT_DIR = Path("inference_out")


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
            check_length(len(wav))
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
