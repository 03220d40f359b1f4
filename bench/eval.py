"""End-to-end time of ``evaluate_predictions`` (the reference's ``eval_predictions``) at real scale.

Builds synthetic prediction files of the real sizes in the real dataset layout (in a temporary folder):
devtest 1,168 clips with the real devtest ground truth and durations (tests/fixtures/desed_devtest),
public eval 692 clips with the real public ground truth (tests/fixtures/sebbs_dcase2023task4a),
MAESTRO-real dev 3,474 chunks of 10 s at a 1 s hop from the 16 validation recordings
(tests/fixtures/maestro_splits; synthetic soft labels, 1.0 h in total) and ``--private-clips`` private eval
clips. Frame probabilities follow the ground truth (smoothed, with noise and false alarms) so that change
points and PSDS values are of a realistic kind.

Then times ``evaluate_predictions`` with the full 128-candidate cSEBBs grid (plus 5-fold cross-validation)
and compares our tuning with sebbs' own single-process tuning (``helpers.evaluation.csebbs.library_tune``) on the same
devtest scores: both single-process on the first ``--library-steps`` step-filter lengths (16 candidates
each; the library's full-grid time is extrapolated linearly, each step length costs the same; exact with
``--library-steps 8``), checking that both select the same parameters and values; and ours on the full
grid with all worker processes. Wall and CPU seconds are reported (CPU includes worker processes), since
wall time on a shared machine depends on the load.

    python -m bench.eval                     # all cores, library on 1 step length
    python -m bench.eval --num-jobs 1 --library-steps 8

Writes a table to stdout and JSON to ``bench/results/eval_cpu<N>.json``.

It also times ``store_predictions`` (``helpers.predictions.commands``), the step that writes those files: a
random-init checkpoint of ``--store-arch`` (``--store-size tiny``: the demo's tiny model, the default, quick on a
CPU; ``full``: the released sizes) runs over ``--store-clips`` synthetic 10 s 16 kHz wav clips written as the
devtest audio folder of a temporary dataset root (the other sets have no folder and are skipped). End to end
(model build and checkpoint load, audio reading, front-ends, model, HDF5 writing) in clips/s is compared with the
pure forward (front-ends + model on random in-memory audio batches of the same sizes, ``torch.inference_mode``);
one untimed forward batch first warms the process for both. Same device as ``store_predictions`` (CUDA when
available, else the CPU), float32; the two are timed ``--store-repeats`` times (default 3) alternately and the
fastest of each counts.

    python -m bench.eval --skip-eval --store-clips 32          # store timing only
    python -m bench.eval --skip-store                          # eval timing only

The store table goes to stdout and JSON to ``bench/results/eval_store_<device>_<arch>_<size>.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import tempfile
import time
import wave
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d, uniform_filter1d

import configs
from data_util.classes import CLASSES, DESED_CLASSES, MAESTRO_CLASSES
from data_util.layout import SETS
from data_util.prediction_files import NUM_FRAMES, read_predictions, write_predictions
from helpers.evaluation import csebbs
from helpers.evaluation.report import CSEBBsConfig, evaluate_predictions
from helpers.evaluation.scores import (
    frame_timestamps,
    read_durations,
    read_ground_truth,
    scores_from_probabilities,
    sigmoid,
)
from models.registry import ARCH_SPECS

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MAESTRO_VALIDATION_CHUNKS = 3474  # the reference's maestro_real_dev at a 1 s hop
CHUNK_SECONDS = 10
SMOOTHING_FRAMES = 5
NOISE = 0.3  # std of the frame noise before low-pass filtering
NOISE_SMOOTHING_FRAMES = 1.0  # gaussian sigma: about 60 local extrema per clip and class, as real outputs
FALSE_ALARM_RATE = 0.1  # per clip and class: a spurious bump
# store_predictions timing
STORE_SET = "devtest"  # the one set whose audio folder is written; store_predictions skips the others
STORE_SIZES = ("tiny", "full")
STORE_TINY_BATCH_SIZE = 16  # --store-size tiny on a CPU; full uses the recipe's batch_size (128)
STORE_CLIP_SECONDS = 10
STORE_SAMPLE_RATE = 16_000
STORE_NOISE_STD = 0.1  # amplitude of the synthetic clips (gaussian noise, PCM16)
STORE_OUT_NAME = "bench_store"


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished child processes (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p)).astype(np.float32)


def _probabilities(activity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plausible frame probabilities [N, T, K] from 0/1 activity: smoothed, noisy, with false alarms."""
    N, T, K = activity.shape
    target = activity.astype(np.float64)
    bumps = rng.random((N, K)) < FALSE_ALARM_RATE
    for n, k in zip(*np.nonzero(bumps)):
        start, length = rng.integers(0, T - 20), rng.integers(5, 20)
        target[n, start: start + length, k] = np.maximum(target[n, start: start + length, k], 0.7)
    smooth = uniform_filter1d(target, SMOOTHING_FRAMES, axis=1)
    level = rng.uniform(0.6, 0.95, (N, 1, K))
    noise = gaussian_filter1d(rng.normal(0, NOISE, target.shape), NOISE_SMOOTHING_FRAMES, axis=1)
    return np.clip(0.03 + level * smooth + noise * (0.3 + smooth), 0, 1)


def _activity(events: dict, ids: list[str], classes: list[str], stamps: np.ndarray) -> np.ndarray:
    act = np.zeros((len(ids), len(stamps) - 1, len(classes)), dtype=bool)
    centres = (stamps[:-1] + stamps[1:]) / 2
    index = {c: i for i, c in enumerate(classes)}
    for n, clip in enumerate(ids):
        for on, off, label in events.get(clip, []):
            if label in index:
                act[n, (centres >= on) & (centres < off), index[label]] = True
    return act


def _write_tsv(path: Path, table: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, sep="\t", index=False)


def _desed_set(name, gt_tsv, dur_tsv, root, preds, rng):
    gt = read_ground_truth(gt_tsv, keep_empty=True)
    ids = sorted(read_durations(dur_tsv))
    _write_tsv(root / SETS[name].labels, pd.read_csv(gt_tsv, sep="\t"))
    _write_tsv(root / SETS[name].durations, pd.read_csv(dur_tsv, sep="\t"))
    stamps = frame_timestamps(NUM_FRAMES)
    probs = np.zeros((len(ids), NUM_FRAMES, len(CLASSES)))
    probs[:, :, : len(DESED_CLASSES)] = _probabilities(_activity(gt, ids, list(DESED_CLASSES), stamps), rng)
    probs[:, :, len(DESED_CLASSES):] = rng.random((len(ids), NUM_FRAMES, len(MAESTRO_CLASSES))) * 0.1
    write_predictions(preds / f"{name}.hdf5", ids, _logit(probs), model="synthetic (bench.eval)")
    return len(ids)


def _maestro_set(root, preds, rng):
    recordings = [r.removesuffix(".txt") for r in
                  pd.read_csv(FIXTURES / "maestro_splits" / "validation_split.csv")["val"]]
    per_recording = MAESTRO_VALIDATION_CHUNKS // len(recordings)
    extra = MAESTRO_VALIDATION_CHUNKS - per_recording * len(recordings)
    durations = {r: per_recording + CHUNK_SECONDS - 1 + (1 if i < extra else 0) + 0.5
                 for i, r in enumerate(recordings)}
    rows, chunk_ids, probs = [], [], []
    stamps = frame_timestamps(NUM_FRAMES)
    for rec, duration in durations.items():
        seconds = math.ceil(duration)
        truth = np.zeros((seconds, len(MAESTRO_CLASSES)), dtype=bool)
        for k in range(len(MAESTRO_CLASSES)):  # a few long events per class
            for _ in range(rng.integers(2, 8)):
                start = rng.integers(0, seconds - 5)
                truth[start: start + rng.integers(3, 40), k] = True
        confidence = rng.uniform(0.3, 1.0, truth.shape)
        for onset in range(0, int(duration) - CHUNK_SECONDS + 1):
            cid = f"{rec}-{onset * 100:06d}-{(onset + CHUNK_SECONDS) * 100:06d}"
            chunk_ids.append(cid)
            window = truth[onset: onset + CHUNK_SECONDS]
            for s, k in zip(*np.nonzero(window)):
                rows.append((cid + ".wav", float(s), float(s + 1), MAESTRO_CLASSES[k], confidence[onset + s, k]))
            frame_seconds = np.minimum((stamps[:-1] + 0.032).astype(int), CHUNK_SECONDS - 1)
            chunk = np.zeros((NUM_FRAMES, len(CLASSES)), dtype=bool)
            chunk[:, len(DESED_CLASSES):] = window[frame_seconds]
            probs.append(chunk)
    probs = _probabilities(np.stack(probs), rng)
    _write_tsv(root / SETS["maestro_real_dev"].labels,
               pd.DataFrame(rows, columns=["filename", "onset", "offset", "event_label", "confidence"]))
    _write_tsv(root / SETS["maestro_real_dev"].durations,
               pd.DataFrame(list(durations.items()), columns=["filename", "duration"]))
    write_predictions(preds / "maestro_real_dev.hdf5", chunk_ids, _logit(probs), model="synthetic (bench.eval)")
    return len(chunk_ids)


def build(root: Path, preds: Path, private_clips: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    counts = {
        "devtest": _desed_set("devtest", FIXTURES / "desed_devtest" / "validation.tsv",
                              FIXTURES / "desed_devtest" / "validation_durations.tsv", root, preds, rng),
        "eval_public": _desed_set("eval_public", FIXTURES / "sebbs_dcase2023task4a" / "metadata" / "ground_truth.tsv",
                                  FIXTURES / "sebbs_dcase2023task4a" / "metadata" / "audio_durations.tsv",
                                  root, preds, rng),
        "maestro_real_dev": _maestro_set(root, preds, rng),
    }
    if private_clips:
        logits = _logit(rng.random((private_clips, NUM_FRAMES, len(CLASSES))) ** 3)
        write_predictions(preds / "eval_private.hdf5", [f"private_{i:05d}" for i in range(private_clips)], logits,
                          model="synthetic (bench.eval)")
        counts["eval_private"] = private_clips
    return counts


def library_comparison(root: Path, preds: Path, steps: int, num_jobs: int | None) -> dict:
    """Our tune vs sebbs' single-process tune on the devtest scores, first ``steps`` step-filter lengths."""
    names, logits = read_predictions(preds / "devtest.hdf5")
    scores = scores_from_probabilities(names, sigmoid(logits[:, :, : len(DESED_CLASSES)]), DESED_CLASSES)
    gt = read_ground_truth(root / SETS["devtest"].labels)
    dur = read_durations(root / SETS["devtest"].durations)
    grid = csebbs.CSEBBsGrid(step_filter_lengths=csebbs.STEP_FILTER_LENGTHS[:steps])
    full_grid = csebbs.CSEBBsGrid()
    classes = list(DESED_CLASSES)
    t0, c0 = time.perf_counter(), cpu_seconds()
    library, library_best = csebbs.library_tune(scores, gt, dur, classes=classes, grid=grid)
    library_s, library_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    t0, c0 = time.perf_counter(), cpu_seconds()
    single = csebbs.tune(scores, gt, dur, classes=classes, grid=grid, num_jobs=1, progress=False)
    single_s, single_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    jobs = csebbs.resolve_num_jobs(num_jobs)
    t0, c0 = time.perf_counter(), cpu_seconds()
    full = csebbs.tune(scores, gt, dur, classes=classes, grid=full_grid, num_jobs=jobs, progress=False)
    full_s, full_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    scale = len(full_grid.step_filter_lengths) / steps  # every step length costs about the same
    return {
        "subset_candidates": len(grid.candidates()),
        "library_single_process_s": library_s,
        "library_single_process_cpu_s": library_cpu,
        "ours_single_process_s": single_s,
        "ours_single_process_cpu_s": single_cpu,
        "same_parameters_and_values": single.predictor.to_dict() == library.to_dict() and single.best_values == library_best,
        "full_grid_candidates": len(full_grid.candidates()),
        "library_full_grid_s_extrapolated": library_s * scale if steps < len(full_grid.step_filter_lengths) else library_s,
        "ours_full_grid_s": full_s,
        "ours_full_grid_cpu_s": full_cpu,
        "ours_full_grid_num_jobs": jobs,
    }


# --------------------------------------------------------------------------------------------------
# store_predictions throughput
# --------------------------------------------------------------------------------------------------
def store_config(arch: str, size: str) -> dict:
    """The stage-2 config ``store_predictions`` gets: the demo's tiny model (``configs.demo_defaults``) or the
    released sizes (``configs.default_config``), random init (no backbone weights are read)."""
    if size not in STORE_SIZES:
        raise ValueError(f"store size {size!r} is not one of {STORE_SIZES}")
    config = configs.demo_defaults(2) if size == "tiny" else configs.default_config(2)
    config["arch"] = configs.require_arch(arch)
    config["t4_wrapper"].update(ARCH_SPECS[arch].wrapper_defaults)  # the released stage checkpoints' settings
    return config


def _write_clip(path: Path, audio: np.ndarray) -> None:
    """Mono 16 kHz PCM16 wav (the ``wave`` module: quick, no fsync)."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(STORE_SAMPLE_RATE)
        f.writeframes(pcm.tobytes())


def _write_clips(folder: Path, clips: int, rng: np.random.Generator) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    stems = [f"bench_{i:05d}" for i in range(clips)]
    for stem in stems:
        _write_clip(folder / f"{stem}.wav", rng.normal(0, STORE_NOISE_STD, STORE_CLIP_SECONDS * STORE_SAMPLE_RATE))
    return stems


def _synchronize(device) -> None:
    import torch  # lazy: the evaluation benchmarks run without torch; only the store benchmark needs it

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def store_throughput(clips: int = 64, arch: str = "atst_frame", size: str = "tiny", batch_size: int | None = None,
                     num_workers: int = 0, repeats: int = 3, workdir: Path | None = None, seed: int = 0,
                     echo: Callable[[str], None] | None = None) -> dict:
    """Clips/s of ``store_predictions`` end to end vs the pure forward of the same model, batch size and device.

    ``batch_size`` None: 16 for ``tiny``, the config's ``batch_size`` for ``full``. ``num_workers``: data-loader
    workers of the store path (``test.num_workers``). Store and forward are timed ``repeats`` times, alternately;
    the fastest of each counts. The synthetic data and checkpoint go to a temporary folder (or ``workdir``).
    Returns the timings and settings (the JSON of the store part).
    """
    import torch  # lazy: the evaluation benchmarks run without torch; only the store benchmark needs it

    # lazy: the model stack loads only for the store benchmark
    from helpers.predictions.commands import store_predictions
    from models.checkpoints import save_sed_checkpoint  # lazy: the model stack loads only for the store benchmark
    from models.factory import build_model  # lazy: the model stack loads only for the store benchmark
    from models.loading import load_sed_model  # lazy: the model stack loads only for the store benchmark

    if clips < 1 or repeats < 1:
        raise ValueError(f"store clips and repeats must be at least 1, got {clips} and {repeats}")
    config = store_config(arch, size)
    batch_size = int(batch_size or (STORE_TINY_BATCH_SIZE if size == "tiny" else config["batch_size"]))
    if batch_size < 1:
        raise ValueError(f"store batch size must be at least 1, got {batch_size}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as store_predictions
    console: list[str] = []
    echo = echo or console.append

    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        work = Path(workdir or tmp)
        root = work / "data"
        t0 = time.perf_counter()
        _write_clips(root / SETS[STORE_SET].audio, clips, np.random.default_rng(seed))
        checkpoint = work / "models" / f"{STORE_OUT_NAME}.ckpt"
        torch.manual_seed(seed)
        sed_model = build_model(config)
        save_sed_checkpoint(checkpoint, sed_model.state_dict(), sed_model.state_dict())
        num_parameters = sum(p.numel() for p in sed_model.parameters())
        del sed_model
        setup_s = time.perf_counter() - t0

        config.update(base_path=str(root), model_path=str(work / "models"), output_path=str(work / "predictions"),
                      pretrained_name=str(checkpoint), out_name=STORE_OUT_NAME, mode="student", overwrite=True,
                      batch_size=batch_size, predict_precision="32")
        config["test"]["num_workers"] = num_workers

        # The pure-forward model, loaded as store_predictions loads it; its first batch (not timed) also warms
        # the process for the store timing (CUDA context, allocator, kernel selection), so that both timings
        # are warm. Random audio in batches of the sizes the store's DataLoader makes, already on the device.
        t0 = time.perf_counter()
        model = load_sed_model(checkpoint, mode="student", config=config).to(device)
        _synchronize(device)
        model_load_s = time.perf_counter() - t0
        sizes = [batch_size] * (clips // batch_size) + ([clips % batch_size] if clips % batch_size else [])
        generator = torch.Generator().manual_seed(seed)
        audio = (torch.randn(max(sizes), STORE_CLIP_SECONDS * STORE_SAMPLE_RATE, generator=generator)
                 * STORE_NOISE_STD).to(device)
        with torch.inference_mode():
            t0 = time.perf_counter()
            model(audio[: sizes[0]]).float().cpu()
            _synchronize(device)
            warmup_s = time.perf_counter() - t0

        store_runs, forward_runs = [], []  # (wall s, CPU s) of each repeat, alternating store and forward
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), cpu_seconds()
            written = store_predictions(config, echo=echo)
            _synchronize(device)
            store_runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
            if list(written) != [STORE_SET]:
                raise RuntimeError(f"store_predictions wrote {sorted(written)}; expected only {STORE_SET!r}")
            names, _ = read_predictions(written[STORE_SET])
            if len(names) != clips:
                raise RuntimeError(f"{written[STORE_SET]} holds {len(names)} clips; expected {clips}")
            with torch.inference_mode():
                t0, c0 = time.perf_counter(), cpu_seconds()
                for n in sizes:
                    model(audio[:n]).float().cpu()
                _synchronize(device)
                forward_runs.append((time.perf_counter() - t0, cpu_seconds() - c0))

    # The fastest repeat of each: the least disturbed by other load on a shared machine.
    store_s, store_cpu = min(w for w, _ in store_runs), min(c for _, c in store_runs)
    forward_s, forward_cpu = min(w for w, _ in forward_runs), min(c for _, c in forward_runs)
    return {
        "arch": arch, "size": size, "clips": clips, "batch_size": batch_size, "num_workers": num_workers,
        "precision": "32", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (
            platform.processor() or platform.machine()),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "parameters": num_parameters,
        "setup_s": setup_s, "repeats": repeats, "store_runs_wall_cpu_s": store_runs,
        "forward_runs_wall_cpu_s": forward_runs,
        "store_s": store_s, "store_cpu_s": store_cpu, "store_clips_per_s": clips / store_s,
        "model_load_s": model_load_s, "forward_warmup_batch_s": warmup_s,
        "forward_s": forward_s, "forward_cpu_s": forward_cpu, "forward_clips_per_s": clips / forward_s,
        "store_over_forward_time": store_s / forward_s,
        "store_over_forward_cpu": store_cpu / forward_cpu,
        "overhead_fraction": 1 - forward_s / store_s,
        "console": console,
    }


def print_store_table(result: dict) -> None:
    print(f"\nstore_predictions vs pure forward: {result['arch']} ({result['size']}), {result['clips']} clips, "
          f"batch {result['batch_size']}, {result['device']} ({result['device_name']}), "
          f"{result['torch_threads']} threads, {result['num_workers']} loader workers, fp32, "
          f"fastest of {result['repeats']}")
    print(f"{'':<52}{'wall s':>10}{'CPU s':>10}{'clips/s':>10}")
    print(f"{'store_predictions (end to end, incl. model load)':<52}{result['store_s']:>10.2f}"
          f"{result['store_cpu_s']:>10.2f}{result['store_clips_per_s']:>10.1f}")
    print(f"{'pure forward (front-ends + model, in memory)':<52}{result['forward_s']:>10.2f}"
          f"{result['forward_cpu_s']:>10.2f}{result['forward_clips_per_s']:>10.1f}")
    print(f"{'model build + checkpoint load (in the store time)':<52}{result['model_load_s']:>10.2f}")
    print(f"{'first forward batch (warm-up, before both timings)':<52}{result['forward_warmup_batch_s']:>10.2f}")
    print(f"store / forward: {result['store_over_forward_time']:.2f}x wall, "
          f"{result['store_over_forward_cpu']:.2f}x CPU "
          f"(audio reading, model load and HDF5 writing: {100 * result['overhead_fraction']:.0f}% of the store "
          "wall time)")


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------
def run_eval(args: argparse.Namespace) -> None:
    """The ``evaluate_predictions`` timing (and the cSEBBs library comparison): table + JSON."""
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        work = args.workdir or Path(tmp)
        root, resources = work / "data", work / "resources"
        preds = resources / "predictions" / "synthetic"
        t0 = time.perf_counter()
        counts = build(root, preds, args.private_clips)
        build_s = time.perf_counter() - t0
        console: list[str] = []
        cfg = CSEBBsConfig(cross_validation_folds=args.folds, num_jobs=args.num_jobs)
        t0, c0 = time.perf_counter(), cpu_seconds()
        report = evaluate_predictions(preds, root, resources, cfg, echo=console.append)
        total_s, total_cpu = time.perf_counter() - t0, cpu_seconds() - c0
        comparison = library_comparison(root, preds, args.library_steps, args.num_jobs) if args.library_steps else {}

    result = {
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "num_jobs": csebbs.resolve_num_jobs(args.num_jobs), "counts": counts, "build_s": build_s,
        "evaluate_predictions_s": total_s, "evaluate_predictions_cpu_s": total_cpu,
        "load_average_at_end": os.getloadavg(), "stages_s": report["timings_s"], "console": console,
        "cross_validation_folds": args.folds, "library_comparison": comparison,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"eval_cpu{os.cpu_count()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    print("\n".join(console))
    print(f"\n{'stage':<40}{'seconds':>10}")
    for stage, seconds in report["timings_s"].items():
        print(f"{stage:<40}{seconds:>10.1f}")
    print(f"{'evaluate_predictions (end to end)':<40}{total_s:>10.1f}   ({total_cpu:.0f} CPU s)")
    if comparison:
        print(f"\ncSEBBs tuning on devtest (1,153 clips with events){'':<4}{'wall s':>10}{'CPU s':>10}")
        n = comparison["subset_candidates"]
        print(f"{f'sebbs single process, {n} candidates':<54}{comparison['library_single_process_s']:>10.1f}"
              f"{comparison['library_single_process_cpu_s']:>10.1f}")
        print(f"{f'ours single process, {n} candidates':<54}{comparison['ours_single_process_s']:>10.1f}"
              f"{comparison['ours_single_process_cpu_s']:>10.1f}")
        print(f"{'sebbs single process, 128 candidates (extrapolated)':<54}"
              f"{comparison['library_full_grid_s_extrapolated']:>10.1f}")
        print(f"{'ours, 128 candidates, ' + str(comparison['ours_full_grid_num_jobs']) + ' processes':<54}"
              f"{comparison['ours_full_grid_s']:>10.1f}{comparison['ours_full_grid_cpu_s']:>10.1f}")
        print(f"same parameters and values: {comparison['same_parameters_and_values']}")
    print(f"\nwritten {out}")



def run_store(args: argparse.Namespace) -> None:
    """The ``store_predictions`` timing: table + JSON."""
    result = store_throughput(args.store_clips, args.store_arch, args.store_size, args.store_batch_size,
                              args.store_workers, args.store_repeats,
                              workdir=args.workdir / "store" if args.workdir else None)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"eval_store_{result['device']}_{result['arch']}_{result['size']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_store_table(result)
    print(f"\nwritten {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-jobs", type=int, default=None, help="cSEBBs worker processes (default: all cores)")
    parser.add_argument("--library-steps", type=int, default=1, help="step lengths for the library comparison (0: skip)")
    parser.add_argument("--private-clips", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=csebbs.DEFAULT_FOLDS)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the synthetic data here")
    parser.add_argument("--skip-eval", action="store_true", help="do not time evaluate_predictions")
    parser.add_argument("--skip-store", action="store_true", help="do not time store_predictions")
    parser.add_argument("--store-arch", default="atst_frame", choices=configs.ARCHS)
    parser.add_argument("--store-size", default="tiny", choices=STORE_SIZES,
                        help="tiny: the demo's model (default); full: the released sizes")
    parser.add_argument("--store-clips", type=int, default=64, help="synthetic 10 s clips to predict")
    parser.add_argument("--store-batch-size", type=int, default=None,
                        help=f"default: {STORE_TINY_BATCH_SIZE} for tiny, the recipe's batch_size (128) for full")
    parser.add_argument("--store-workers", type=int, default=0, help="store data-loader workers (test.num_workers)")
    parser.add_argument("--store-repeats", type=int, default=3, help="timed runs of store and forward (fastest counts)")
    args = parser.parse_args()
    if args.skip_eval and args.skip_store:
        parser.error("--skip-eval and --skip-store together leave nothing to time")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not args.skip_eval:
        run_eval(args)
    if not args.skip_store:
        run_store(args)


if __name__ == "__main__":
    main()
