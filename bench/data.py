"""Throughput of the training data loader (datasets + MultiSetBatchSampler + DataLoader).

Measures, for each ``--workers`` value: time to the first batch, clips/s over ``--batches`` batches after it
(re-shuffling with ``set_epoch`` when an epoch ends), and bytes read from disk per clip (``rchar`` of
/proc/self/io with 0 workers: every file read, including wavmix partners; the same I/O happens with
workers, just in other processes). Runs on a demo dataset (``data_util.demo``; ``small`` preset by
default, generated into /tmp if absent) or, with ``--dataset-root``/``--resources-dir``, on real data.

    python -m bench.data                       # small demo, composition (12, 10, 10, 20, 20), 0 and 2 workers
    python -m bench.data --preset tiny --batch-sizes 2 2 2 2 2

Writes a table to stdout and JSON to ``bench/results/data_loader_<preset>_torch<version>_cpu<N>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from data_util import demo
from data_util.datasets import build_train_sets
from data_util.sampler import MultiSetBatchSampler

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REFERENCE_BATCH_SIZES = (12, 10, 10, 20, 20)  # stage-1 training.batch_sizes
DEMO_ROOT = "/tmp/t4_demo_{preset}"


def bytes_read() -> int:
    """Bytes this process has read through read() calls so far (Linux), else 0."""
    try:
        with open("/proc/self/io") as handle:
            return int(next(line for line in handle if line.startswith("rchar")).split()[1])
    except (OSError, StopIteration):
        return 0


def ensure_demo(preset: str) -> Path:
    root = Path(DEMO_ROOT.format(preset=preset))
    if not (root / "resources").is_dir():
        demo.generate(root, preset=preset, seed=0)
    return root


def measure(sets: dict, batch_sizes, workers: int, num_batches: int, seed: int = 0) -> dict:
    """Time to the first batch, clips/s and bytes/clip of ``num_batches`` batches after it."""
    concat, sampler = MultiSetBatchSampler.for_sets(sets, batch_sizes, seed=seed)
    loader = DataLoader(concat, batch_sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=False)
    epoch, clips = 0, 0
    start = time.perf_counter()
    read_before = bytes_read()
    iterator = iter(loader)
    next(iterator)
    first_batch_s = time.perf_counter() - start
    timed_start = time.perf_counter()
    for _ in range(num_batches):
        try:
            batch = next(iterator)
        except StopIteration:
            epoch += 1
            sampler.set_epoch(epoch)
            iterator = iter(loader)
            batch = next(iterator)
        clips += len(batch["filename"])
    elapsed = time.perf_counter() - timed_start
    total_clips = clips + sampler.batch_size
    per_clip = (bytes_read() - read_before) / total_clips if workers == 0 else None
    return {"workers": workers, "first_batch_s": round(first_batch_s, 3), "clips_per_s": round(clips / elapsed, 1),
            "batches": num_batches, "batch_size": sampler.batch_size, "epoch_batches": len(sampler),
            "bytes_per_clip": round(per_clip) if per_clip is not None else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small", help="demo preset (ignored with --dataset-root)")
    parser.add_argument("--dataset-root", default=None)
    parser.add_argument("--resources-dir", default=None)
    parser.add_argument("--batch-sizes", type=int, nargs=5, default=REFERENCE_BATCH_SIZES)
    parser.add_argument("--workers", type=int, nargs="+", default=(0, 2))
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--wavmix-p", type=float, default=0.5)
    parser.add_argument("--dir-p", type=float, default=0.0)
    parser.add_argument("--main-threads", type=int, default=1,
                        help="torch intra-op threads of this process (DataLoader workers always use 1); on a busy "
                             "machine more threads make the collate's torch.stack much slower, not faster")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.main_threads)

    if args.dataset_root:
        root, label = Path(args.dataset_root), "real"
        resources = Path(args.resources_dir) if args.resources_dir else __import__("configs").RESOURCES_DIR
    else:
        root, label = ensure_demo(args.preset), args.preset
        resources = root / "resources"
    sets = build_train_sets(root, resources, {"wavmix_p": args.wavmix_p, "dir_p": args.dir_p})
    results = [measure(sets, args.batch_sizes, w, args.batches) for w in args.workers]

    print(f"data loader, {label} data, batch sizes {tuple(args.batch_sizes)}, wavmix_p={args.wavmix_p}, "
          f"dir_p={args.dir_p}, {os.cpu_count()} CPUs, main threads {args.main_threads}, torch {torch.__version__}")
    print(f"{'workers':>7} {'first batch s':>13} {'clips/s':>8} {'bytes/clip':>11}")
    for r in results:
        per_clip = f"{r['bytes_per_clip']:,}" if r["bytes_per_clip"] is not None else "-"
        print(f"{r['workers']:>7} {r['first_batch_s']:>13.3f} {r['clips_per_s']:>8.1f} {per_clip:>11}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"data_loader_{label}_torch{torch.__version__.split('+')[0]}_cpu{os.cpu_count()}.json"
    out.write_text(json.dumps({
        "data": label, "batch_sizes": list(args.batch_sizes), "wavmix_p": args.wavmix_p, "dir_p": args.dir_p,
        "set_sizes": {k: len(v) for k, v in sets.items()}, "cpus": os.cpu_count(), "main_threads": args.main_threads, "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "results": results,
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
