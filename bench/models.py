"""Speed and memory of the three full-size SED models on synthetic 10 s clips.

For each arch (ATST-Frame, fPaSST, BEATs, each wrapped by the CRNN as released): time per batch of
the forward pass (eval, no grad) and of forward + backward (train mode, every parameter trainable, as in
stage 2), both including the two front-ends (CNN mel and the transformer's own), plus peak memory.
Warm-up iterations first, then timed ones; ``torch.cuda.synchronize()`` around GPU timers. On CUDA the
model runs under bf16 autocast (front-ends stay fp32, as in training); on CPU in fp32.

Each arch runs in its own subprocess so that the peak memory of one (CPU: the process's peak resident
set size, which includes the Python runtime; CUDA: ``max_memory_allocated``) is not that of the largest.

    python bench/models.py                              # all archs, CPU batch 4 (CUDA: batch 16 if present)
    python bench/models.py --archs beats --iters 10 --batch-size 8 --device cuda

Wall time and process CPU time are both recorded: on a shared machine the CPU seconds are the steadier
figure. Prints a table and writes ``bench/results/models_<device>_<precision>_torch<version>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow `python bench/models.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from models import factory, registry  # noqa: E402

SAMPLE_RATE = 16_000
CLIP_SECONDS = 10
DEFAULT_BATCH = {"cpu": 4, "cuda": 16}
DEFAULT_PRECISION = {"cpu": "fp32", "cuda": "bf16"}
RESULTS_DIR = REPO_ROOT / "bench" / "results"
MIB = 2**20
KIB = 2**10  # ru_maxrss is in KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MIB


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _timed(step, device: torch.device, warmup: int, iters: int) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) per call of ``step`` over ``iters`` calls after ``warmup`` untimed ones.

    CPU seconds (all threads of this process) are the steadier figure on a shared machine, where wall time
    also counts the time other processes hold the cores.
    """
    for _ in range(warmup):
        step()
    _sync(device)
    wall, cpu = [], []
    for _ in range(iters):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def bench_arch(arch: str, device: torch.device, precision: str, batch_size: int, warmup: int, iters: int) -> dict:
    """Time and memory of one arch; returns one result row."""
    wrapper = dict(registry.ARCH_SPECS[arch].wrapper_defaults)  # the released models' t4_wrapper settings
    model = factory.create_model(arch, **wrapper).to(device)
    cnn_mel, transformer_frontend = factory.create_frontends(arch)
    cnn_mel, transformer_frontend = cnn_mel.to(device).eval(), transformer_frontend.to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(0)
    wav = (0.1 * torch.randn(batch_size, SAMPLE_RATE * CLIP_SECONDS, generator=generator)).to(device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def features():
        with torch.no_grad():  # the front-ends have no trainable parameters
            return cnn_mel(wav), transformer_frontend(wav)

    def forward():
        with torch.no_grad(), autocast:
            strong, weak = model(*features())
        return strong

    def forward_backward():
        with autocast:
            strong, weak = model(*features())
            loss = strong.float().mean() + weak.float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    model.eval()
    _reset_peak(device)
    forward_times, forward_cpu = _timed(forward, device, warmup, iters)
    forward_peak = _peak_memory_mib(device)

    model.train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    _reset_peak(device)
    train_times, train_cpu = _timed(forward_backward, device, warmup, iters)
    train_peak = _peak_memory_mib(device)

    forward_s, train_s = statistics.median(forward_times), statistics.median(train_times)
    return {
        "arch": arch,
        "params_M": round(n_params / 1e6, 2),
        "batch_size": batch_size,
        "forward_ms": round(1e3 * forward_s, 1),
        "forward_clips_per_s": round(batch_size / forward_s, 2),
        "forward_cpu_s": round(statistics.median(forward_cpu), 2),
        "forward_peak_MiB": round(forward_peak),
        "train_ms": round(1e3 * train_s, 1),
        "train_clips_per_s": round(batch_size / train_s, 2),
        "train_cpu_s": round(statistics.median(train_cpu), 2),
        "train_peak_MiB": round(train_peak),
        "forward_times_ms": [round(1e3 * t, 1) for t in forward_times],
        "train_times_ms": [round(1e3 * t, 1) for t in train_times],
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # Linux: the CPU model, e.g. "AMD EPYC 9454 48-Core Processor"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def _print_table(rows: list[dict], header: str) -> None:
    print(header)
    columns = ("arch", "params_M", "batch_size", "forward_ms", "forward_clips_per_s", "forward_cpu_s",
               "forward_peak_MiB", "train_ms", "train_clips_per_s", "train_cpu_s", "train_peak_MiB")
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(str(row[c]).rjust(w) for c, w in zip(columns, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(registry.ARCHS), choices=registry.ARCHS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", choices=("fp32", "bf16"), help="default: bf16 autocast on CUDA, fp32 on CPU")
    parser.add_argument("--batch-size", type=int, help="clips of 10 s per batch (default: 4 on CPU, 16 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one arch, JSON row on stdout
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but CUDA is not available")
    precision = args.precision or DEFAULT_PRECISION[args.device]
    batch_size = args.batch_size or DEFAULT_BATCH[args.device]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.worker:
        (arch,) = args.archs
        row = bench_arch(arch, device, precision, batch_size, args.warmup, args.iters)
        print("RESULT " + json.dumps(row))
        return 0

    rows = []
    for arch in args.archs:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--archs", arch,
                   "--device", args.device, "--precision", precision, "--batch-size", str(batch_size),
                   "--warmup", str(args.warmup), "--iters", str(args.iters)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"benchmark of {arch} failed (exit {done.returncode})")
        row = next(json.loads(line[len("RESULT "):]) for line in done.stdout.splitlines() if line.startswith("RESULT "))
        rows.append(row)
        print(f"{arch}: forward {row['forward_ms']} ms, forward+backward {row['train_ms']} ms per batch", flush=True)

    device_name = _device_name(device)
    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "device_name": device_name,
        "precision": precision,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "clip_seconds": CLIP_SECONDS,
        "warmup": args.warmup,
        "iters": args.iters,
        "timing": "median per batch (wall ms; *_cpu_s = process CPU seconds, all threads), front-ends included; "
                  "forward = eval + no_grad; "
                  "train = train mode, all parameters trainable, forward + backward (no optimizer step)",
        "peak_memory": "CUDA: max_memory_allocated; CPU: peak resident set size of the benchmark process",
    }
    _print_table(rows, f"{args.device} ({device_name}), {precision}, torch {torch.__version__}, "
                       f"{meta['cpu_threads']} threads, batch {batch_size} x {CLIP_SECONDS} s")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"models_{_slug(args.device + '-' + device_name)}_{precision}_torch{_slug(torch.__version__)}.json"
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
