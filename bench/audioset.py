"""AudioSet-strong: data throughput against the model step, and the cost of the PSDS evaluation.

Part 1, data (``--part data``): clips/s of one data-loading worker (one process, one thread) reading training
samples of the prepared dataset (mp3 decode, resampling to 16 kHz, label encoding, KD lookup), with the decode and
resample steps timed apart; against clips/s of one training step of the model (front-end + forward + backward,
``--arch``, ``--size tiny|full``, ``--batch-size``; CUDA if available, else CPU). The ratio is the number of workers
the step needs. Runs on the demo source set (``data_util.demo_audioset``, converted into /tmp if absent) or, with
``--dataset-path``, a real prepared dataset.

Part 2, evaluation (``--part eval``): time and peak memory of ``helpers.evaluation.audioset_strong.evaluate``
(PSDS1 pooled and macro, segment pAUROC) on a synthetic eval-sized set: ``--clips`` (16,900 as the real eval set)
x 250 frames x ``--classes`` (407) float32 scores, events drawn like the real labels (``--events-per-clip``, mean
8.3 on the real eval set), in a fresh process whose peak resident memory (``ru_maxrss``) is reported with the
size of the score array itself. ``--class-chunk`` sets the number of classes per sed_scores_eval call.

    python -m bench.audioset --part data --size tiny
    python -m bench.audioset --part eval --clips 1690 --class-chunk 16

Prints a table and writes JSON to ``bench/results/audioset_<part>_..._torch<version>_cpu<N>.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import configs
import configs.audioset_strong as as_config
from data_util import audioset_strong as asd
from data_util import demo_audioset
from data_util.audioset_strong_prepare import prepare_audioset_strong
from data_util.kd_logits import StrongKDLogits
from helpers.evaluation.audioset_strong import evaluate
from models.audioset_strong import build_as_strong_model
from models.factory import build_transformer_frontend

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEMO_ROOT = Path("/tmp/t4_audioset_strong_demo_{preset}")
FRAMES = 250
FRAME_HOP = 0.04
REAL_EVAL_CLIPS = 16_900
REAL_EVAL_CLASSES = 407
REAL_EVENTS_PER_CLIP = 8.3  # AudioSet-strong eval: ~140k events over 16,935 clips
MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------------ data
def ensure_demo(preset: str) -> Path:
    root = Path(str(DEMO_ROOT).format(preset=preset))
    if not (root / "dataset" / "dataset_dict.json").is_file():
        demo_audioset.generate(root / "source", preset=preset, seed=0, overwrite=True)
        prepare_audioset_strong(root / "source", root / "dataset", workers=1, progress=False, overwrite=True)
    return root


def data_throughput(dataset_path: Path, kd_file: Path | None, clips: int) -> dict:
    rows = asd.load_dataset_dict(dataset_path)["balanced_train"]
    kd = StrongKDLogits(kd_file) if kd_file is not None else None
    dataset = asd.AudioSetStrongDataset(rows, asd.train_classes(), training=True, strong_kd=kd)
    indices = [i % len(rows) for i in range(clips)]
    dataset[indices[0]]  # warm-up (class lists, first decode)
    decode = resample_only = 0.0
    for i in indices:
        data = rows[i]["mp3_bytes"]
        start = time.perf_counter()
        waveform, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        decoded = time.perf_counter()
        asd.resample(waveform.mean(axis=1), rate, asd.SAMPLE_RATE)
        decode += decoded - start
        resample_only += time.perf_counter() - decoded
    start = time.perf_counter()
    for i in indices:
        dataset[i]
    total = time.perf_counter() - start
    return {"clips": clips, "sample_rate_of_source": int(rate), "clips_per_s": clips / total,
            "ms_per_clip": 1000 * total / clips, "decode_ms": 1000 * decode / clips,
            "resample_ms": 1000 * resample_only / clips, "kd_lookup": kd is not None}


def model_step(arch: str, size: str, batch_size: int, steps: int, device: torch.device) -> dict:
    updates = {"arch": arch, "strong_wrapper": {"seq_model_type": None}}
    if size == "tiny":
        updates[arch] = dict(configs.TINY_BACKBONE) if arch != "fpasst" else {"embed_dim": 64, "depth": 2,
                                                                                "num_heads": 2}
    config = as_config.resolve_config(updates)
    model = build_as_strong_model(config, 447).to(device).train()
    frontend = build_transformer_frontend(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    audio = 0.1 * torch.randn(batch_size, 160_000, device=device)
    labels = torch.zeros(batch_size, 447, FRAMES, device=device)
    times = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            strong, _ = model(frontend(audio))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(strong.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    return {"arch": arch, "size": size, "batch_size": batch_size, "device": device.type, "step_s": step_s,
            "clips_per_s": batch_size / step_s, "parameters": sum(p.numel() for p in model.parameters())}


# ------------------------------------------------------------------------------------------------ evaluation
def synthetic_eval_set(clips: int, classes: int, events_per_clip: float, seed: int = 0):
    """Scores [clips, 250, classes] float32 that rise inside the events, events, durations."""
    rng = np.random.default_rng(seed)
    names = [f"Y{i:06d}" for i in range(clips)]
    class_names = [f"class_{c:03d}" for c in range(classes)]
    scores = np.empty((clips, FRAMES, classes), dtype=np.float32)
    truth, durations = {}, {}
    for i, name in enumerate(names):
        scores[i] = np.repeat(rng.random((FRAMES // 10, classes), dtype=np.float32), 10, axis=0) * 0.6
        events = []
        for _ in range(max(1, rng.poisson(events_per_clip))):
            c = int(rng.integers(classes))
            onset = round(float(rng.uniform(0.0, 9.0)), 3)
            offset = round(min(10.0, onset + float(rng.exponential(2.0)) + 0.1), 3)
            events.append((onset, offset, class_names[c]))
            scores[i, int(onset / FRAME_HOP):int(np.ceil(offset / FRAME_HOP)), c] += rng.uniform(0.3, 1.0)
        truth[name] = events
        durations[name] = 10.0
    return scores, names, class_names, truth, durations


def _eval_child(clips, classes, events_per_clip, class_chunk, num_jobs, queue) -> None:
    try:
        _eval_measure(clips, classes, events_per_clip, class_chunk, num_jobs, queue)
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which would otherwise wait forever
        queue.put({"error": f"{type(error).__name__}: {error}"})
        raise


def _eval_measure(clips, classes, events_per_clip, class_chunk, num_jobs, queue) -> None:
    scores, names, class_names, truth, durations = synthetic_eval_set(clips, classes, events_per_clip)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = evaluate(scores, names, class_names, truth, durations, class_chunk=class_chunk, num_jobs=num_jobs)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    queue.put({"clips": clips, "classes": classes, "class_chunk": class_chunk, "num_jobs": num_jobs, "eval_s": seconds,
               "peak_rss_mib": peak / 1024, "rss_before_eval_mib": before / 1024,
               "scores_mib": scores.nbytes / MIB, "psds1": result.psds1,
               "psds1_macro_averaged": result.psds1_macro_averaged, "pauroc": result.pauroc,
               "evaluated_clips": result.num_clips})


def eval_cost(clips: int, classes: int, events_per_clip: float, class_chunk: int, num_jobs: int = 1) -> dict:
    context = multiprocessing.get_context("spawn")  # a fresh process: its peak memory is the evaluation's
    queue = context.Queue()
    process = context.Process(target=_eval_child, args=(clips, classes, events_per_clip, class_chunk, num_jobs, queue))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(f"the evaluation process failed: {result['error']}")
    return result


# ------------------------------------------------------------------------------------------------ main
def _write(part: str, label: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"audioset_{part}_{label}_torch{torch.__version__.split('+')[0]}_cpu{os.cpu_count()}.json"
    meta = {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine()}
    out.write_text(json.dumps({"meta": meta, **payload}, indent=1) + "\n")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("data", "eval"), default="data")
    parser.add_argument("--preset", default="tiny", help="demo preset of the data part (ignored with --dataset-path)")
    parser.add_argument("--dataset-path", default=None, help="a real prepared dataset")
    parser.add_argument("--kd-file", default=None, help="a strong KD file to look clips up in (default: the demo's)")
    parser.add_argument("--data-clips", type=int, default=24)
    parser.add_argument("--arch", default="atst_frame")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--clips", type=int, default=REAL_EVAL_CLIPS)
    parser.add_argument("--classes", type=int, default=REAL_EVAL_CLASSES)
    parser.add_argument("--events-per-clip", type=float, default=REAL_EVENTS_PER_CLIP)
    parser.add_argument("--class-chunk", type=int, default=64)
    parser.add_argument("--num-jobs", type=int, default=1, help="sed_scores_eval processes")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.part == "data":
        if args.dataset_path:
            dataset, label = Path(args.dataset_path), "real"
            kd = Path(args.kd_file) if args.kd_file else None
        else:
            root = ensure_demo(args.preset)
            dataset, label = root / "dataset", args.preset
            kd = Path(args.kd_file) if args.kd_file else root / "source" / "kd" / "strong_kd.hdf5"
        data = data_throughput(dataset, kd, args.data_clips)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        step = model_step(args.arch, args.size, args.batch_size, args.steps, device)
        workers = step["clips_per_s"] / data["clips_per_s"]
        print(f"AudioSet-strong data vs model step, {label} data, 1 thread per process, torch {torch.__version__}")
        print(f"{'what':<44} {'clips/s':>9} {'ms/clip':>9}")
        print(f"{'data worker (decode + resample + labels + KD)':<44} {data['clips_per_s']:>9.1f} "
              f"{data['ms_per_clip']:>9.1f}")
        print(f"{'  of which mp3 decode':<44} {'':>9} {data['decode_ms']:>9.1f}")
        print(f"{'  of which resample to 16 kHz':<44} {'':>9} {data['resample_ms']:>9.1f}")
        print(f"{'model step ' + step['arch'] + ' ' + step['size'] + ' on ' + step['device']:<44} "
              f"{step['clips_per_s']:>9.1f} {1000 / step['clips_per_s']:>9.1f}")
        print(f"workers needed to feed the step: {workers:.2f}")
        out = _write("data", f"{label}_{args.arch}_{args.size}_{step['device']}",
                     {"data": data, "model_step": step, "workers_needed": workers})
    else:
        result = eval_cost(args.clips, args.classes, args.events_per_clip, args.class_chunk, args.num_jobs)
        print(f"AudioSet-strong PSDS evaluation, synthetic: {result['clips']} clips x {FRAMES} frames x "
              f"{result['classes']} classes, {args.class_chunk} classes per sed_scores_eval call, "
              f"{args.num_jobs} process(es)")
        print(f"{'eval s':>8} {'peak RSS MiB':>13} {'scores MiB':>11} {'PSDS1':>7} {'macro':>7} {'pAUROC':>7}")
        print(f"{result['eval_s']:>8.1f} {result['peak_rss_mib']:>13.0f} {result['scores_mib']:>11.0f} "
              f"{result['psds1']:>7.3f} {result['psds1_macro_averaged']:>7.3f} {result['pauroc']:>7.3f}")
        out = _write("eval", f"{args.clips}clips_{args.classes}classes_chunk{args.class_chunk}_jobs{args.num_jobs}",
                     {"result": result})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
