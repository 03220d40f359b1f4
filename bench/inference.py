"""Real-time factor of the inference CLI's prediction path, against the bound the matmul ceiling implies.

Times ``recording.predict_waveform`` (sliding 10 s windows, hop ``--hop-seconds``, overlap-add; what
``python -m inference`` runs per file) on synthetic audio with released-size models (random weights, so no
checkpoint is needed): one model (``--single``, default ATST-Frame) and the three-model ensemble (mean of logits),
on the CPU with 1 thread and with all threads, and on CUDA when present. A folder case times 10 s clips run one
file at a time against the folder mode's batches across files (``recording.predict_waveforms``).

Real-time factor (RTF) = seconds of audio per second of compute. The bound: with F FLOPs per 10 s window
(``FlopCounterMode``, front-ends included) and windows every h seconds, a second of audio costs F / h FLOPs, so at
the measured matmul ceiling C the RTF cannot exceed C * h / F (a file also needs one window more than
duration / h, which the bound of that file counts). "% of bound" = RTF / bound = achieved GFLOP/s over the
ceiling, sampled by a 0.1 s burst before the run and after every batch (same process and threads; the bursts'
time is not counted in the run's); "% (CPU s)" is the same per process-CPU second, steadier when other processes
share the cores.

    python -m bench.inference                          # 10 min file + 32 clips of 10 s; 1 and all threads
    python -m bench.inference --durations 60 600 --threads 2 --models single
    python -m bench.inference --device cuda --bf16

Prints a table and writes ``bench/results/inference_<device>_torch<version>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import configs  # noqa: E402
from helpers.predictions import recording  # noqa: E402
from bench import roofline  # noqa: E402
from data_util.atomic import atomic_write_text  # noqa: E402
from models.factory import WaveformSED, build_waveform_model  # noqa: E402
from models.registry import ARCH_SPECS, ARCHS  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
SAMPLE_RATE = 16_000
WINDOW_SECONDS = 10
DEFAULT_DURATIONS = (600.0,)  # one 10-minute file
FOLDER_CLIPS = 32  # 10 s clips of the folder case
BURST_SECONDS = 0.1  # a ceiling burst after every batch of windows


def build_member(arch: str, device: torch.device) -> WaveformSED:
    """A released-size model with its front-ends, random weights, as ``models.loading`` builds a released file."""
    torch.manual_seed(0)
    config = configs.merge_config(configs.default_config(2), {
        "arch": arch, "t4_wrapper": dict(ARCH_SPECS[arch].wrapper_defaults)})
    return build_waveform_model(config, name=arch).to(device).eval()


def window_flops(model: torch.nn.Module, device: torch.device) -> int:
    """FLOPs of one 10 s window (front-ends, model; ensemble: every member)."""
    window = torch.zeros(1, SAMPLE_RATE * WINDOW_SECONDS, device=device)
    with torch.no_grad():
        return roofline.count_flops(lambda: model(window))


def synthetic_audio(seconds: float, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return (0.1 * generator.standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32)


def _timed(run) -> tuple[float, float]:
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start_wall, time.process_time() - start_cpu


class CeilingSampler:
    """Short ceiling bursts between the batches of a long run (called as ``on_batch``), their time kept apart.

    One burst before a minutes-long run says little about the machine's speed during it on a shared machine;
    a burst after every batch does, and the bursts' own time is subtracted from the run's.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.operands = roofline.square_operands(roofline.BURST_SIZE[device.type], dtype, device)
        self.rates: list[roofline.Rate] = []
        self.wall_s = self.cpu_s = 0.0

    def __call__(self, windows_done: int = 0) -> None:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        self.rates.append(roofline.matmul_rate(roofline.BURST_SIZE[self.device.type], self.dtype, self.device,
                                               BURST_SECONDS, self.operands))
        self.wall_s += time.perf_counter() - start_wall
        self.cpu_s += time.process_time() - start_cpu

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(rate, attribute) for rate in self.rates)


def measure(name: str, model, flops_per_window: int, device: torch.device, threads: int, case: str,
            audio: list[np.ndarray], hop_seconds: float, batch_size: int, bf16: bool, batched: bool) -> dict:
    """RTF of predicting ``audio`` (one file, or a folder of files) against the ceiling sampled during the run."""
    sampler = CeilingSampler(device, torch.bfloat16 if bf16 else torch.float32)
    sampler()  # one burst before the first batch
    kwargs = dict(hop_seconds=hop_seconds, batch_size=batch_size, device=device, bf16=bf16, on_batch=sampler)
    if batched:
        run = lambda: recording.predict_waveforms(model, audio, **kwargs)  # noqa: E731
    else:
        run = lambda: [recording.predict_waveform(model, wav, **kwargs) for wav in audio]  # noqa: E731
    bursts_wall, bursts_cpu = sampler.wall_s, sampler.cpu_s
    wall, cpu = _timed(run)
    wall -= sampler.wall_s - bursts_wall
    cpu -= sampler.cpu_s - bursts_cpu
    seconds = sum(len(wav) for wav in audio) / SAMPLE_RATE
    windows = sum(recording.num_windows(len(wav), hop_seconds) for wav in audio)
    flops = flops_per_window * windows
    ceiling, ceiling_cpu = sampler.median("wall_gflops"), sampler.median("cpu_gflops")
    bound = ceiling * roofline.GIGA * seconds / flops
    rtf = seconds / wall
    return {"model": name, "device": device.type, "threads": threads, "case": case, "audio_s": round(seconds, 1),
            "windows": windows, "hop_s": hop_seconds, "batch_size": batch_size, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "rtf": round(rtf, 2), "gflops": round(flops / wall / roofline.GIGA, 1),
            "ceiling_gflops": round(ceiling, 1), "ceiling_bursts": len(sampler.rates),
            "rtf_bound": round(bound, 2), "pct_bound": round(100 * rtf / bound, 1),
            "pct_bound_cpu": round(100 * flops / max(cpu, 1e-9) / roofline.GIGA / ceiling_cpu, 1),
            "rtf_bound_no_overlap": round(ceiling * roofline.GIGA * WINDOW_SECONDS / flops_per_window, 2)}


def _print_table(rows: list[dict]) -> None:
    columns = ("model", "device", "threads", "case", "audio_s", "windows", "wall_s", "cpu_s", "rtf", "gflops",
               "ceiling_gflops", "rtf_bound", "pct_bound", "pct_bound_cpu", "rtf_bound_no_overlap")
    titles = ("model", "device", "threads", "case", "audio s", "windows", "wall s", "CPU s", "RTF", "GFLOP/s",
              "ceiling", "RTF bound", "% of bound", "% (CPU s)", "bound, no overlap")
    lines = [list(titles)] + [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--models", nargs="+", default=["single", "ensemble"], choices=("single", "ensemble"))
    parser.add_argument("--single", default="atst_frame", choices=ARCHS, help="the arch of the single model")
    parser.add_argument("--threads", nargs="+", type=int, default=None,
                        help="CPU thread counts (default: 1 and all of os.cpu_count())")
    parser.add_argument("--durations", nargs="+", type=float, default=list(DEFAULT_DURATIONS),
                        help="lengths of the single-file cases, seconds (default: 600)")
    parser.add_argument("--folder-clips", type=int, default=FOLDER_CLIPS,
                        help="10 s clips of the folder case (0: no folder case)")
    parser.add_argument("--hop-seconds", type=float, default=recording.DEFAULT_HOP_SECONDS)
    parser.add_argument("--batch-size", type=int, default=recording.DEFAULT_BATCH_SIZE)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but CUDA is not available")
    device = torch.device(args.device)
    thread_counts = [1] if device.type == "cuda" else (args.threads or sorted({1, os.cpu_count() or 1}))
    members = {arch: build_member(arch, device) for arch in ARCHS}
    models = {}
    if "single" in args.models:
        models[args.single] = members[args.single]
    if "ensemble" in args.models:
        models["ensemble (" + "+".join(ARCHS) + ")"] = recording.SEDEnsemble(list(members.values())).eval()
    flops = {name: window_flops(model, device) for name, model in models.items()}
    for name, value in flops.items():
        print(f"{name}: {value / roofline.GIGA:.1f} GFLOP per 10 s window", flush=True)
    long_files = [(f"{d:g} s file", [synthetic_audio(d, seed=i)]) for i, d in enumerate(args.durations)]
    clips = [synthetic_audio(WINDOW_SECONDS, seed=100 + i) for i in range(args.folder_clips)]
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for name, model in models.items():
            recording.predict_waveform(model, clips[0] if clips else long_files[0][1][0][:SAMPLE_RATE * 20],
                                       device=device, bf16=args.bf16)  # warm-up
            cases = [(case, audio, True) for case, audio in long_files]
            if clips:
                cases += [(f"{len(clips)} x 10 s, per file", clips, False),
                          (f"{len(clips)} x 10 s, folder batches", clips, True)]
            for case, audio, batched in cases:
                row = measure(name, model, flops[name], device, threads, case, audio, args.hop_seconds,
                              args.batch_size, args.bf16, batched)
                rows.append(row)
                print(f"{name}, {threads} thread(s), {case}: RTF {row['rtf']} (bound {row['rtf_bound']}, "
                      f"{row['pct_bound']} %)", flush=True)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "unknown"
    print(f"{args.device}, torch {torch.__version__}, hop {args.hop_seconds:g} s, batch {args.batch_size}, "
          f"{'bf16' if args.bf16 else 'fp32'}, load {load}")
    _print_table(rows)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"inference_{args.device}_torch{torch.__version__.split('+')[0]}.json"
    atomic_write_text(path, json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "load_average": load,
        "gflop_per_window": {name: round(value / roofline.GIGA, 2) for name, value in flops.items()},
        "bound": "RTF <= ceiling * audio seconds / (FLOPs per window * windows); ceiling measured just before",
        "results": rows}, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
