"""Speed, memory and distance to the matmul ceiling of the three full-size SED models on synthetic 10 s clips.

For each arch (ATST-Frame, fPaSST, BEATs, each wrapped by the CRNN as released): time per batch of the forward
pass (eval, no grad) and of forward + backward (train mode, every parameter trainable, as in stage 2), both
including the two front-ends (CNN mel and the transformer's own), peak memory, FLOPs per clip
(``torch.utils.flop_counter.FlopCounterMode``), achieved GFLOP/s and % of the matmul ceiling. The ceiling (float32,
and bf16 where the device multiplies it natively) is measured in the same run; every timed step runs right after a
short ceiling burst and is compared with it (``bench.roofline``), so that "% of the ceiling" survives the speed
drift of a shared machine. Warm-up iterations first; ``torch.cuda.synchronize()`` around GPU timers. On CUDA the
model runs under bf16 autocast by default (front-ends stay fp32, as in training); on CPU in fp32.

Each arch runs in its own subprocess so that the peak memory of one (CPU: the process's peak resident
set size, which includes the Python runtime; CUDA: ``max_memory_allocated``) is not that of the largest.

    python -m bench.models                               # all archs, CPU batch 2 (CUDA: batch 16 if present)
    python -m bench.models --threads 1 --profile         # plus torch.profiler's top operators per arch and mode
    python -m bench.models --archs beats --iters 10 --batch-size 8 --device cuda --modes forward

Wall time and process CPU time are both recorded: on a shared machine the CPU seconds are the steadier
figure. Prints a table and writes ``bench/results/models_<device>_<precision>_torch<version>.json``.
See docs/PERFORMANCE.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import resource
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow `python bench/models.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from bench import roofline  # noqa: E402
from data_util.atomic import atomic_write_text  # noqa: E402
from models import factory, registry  # noqa: E402

SAMPLE_RATE = 16_000
CLIP_SECONDS = 10
DEFAULT_BATCH = {"cpu": 2, "cuda": 16}
DEFAULT_PRECISION = {"cpu": "fp32", "cuda": "bf16"}
RESULTS_DIR = REPO_ROOT / "bench" / "results"
MODES = ("forward", "train")
MIB = 2**20
KIB = 2**10  # ru_maxrss is in KiB on Linux


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MIB


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def bench_arch(arch: str, device: torch.device, precision: str, batch_size: int, warmup: int, iters: int,
               profile: bool = False, modes: tuple[str, ...] = MODES) -> dict:
    """Time, FLOPs, % of the matmul ceiling and memory of one arch; returns one result row."""
    wrapper = dict(registry.ARCH_SPECS[arch].wrapper_defaults)  # the released models' t4_wrapper settings
    model = factory.create_model(arch, **wrapper).to(device)
    cnn_mel, transformer_frontend = factory.create_frontends(arch)
    cnn_mel, transformer_frontend = cnn_mel.to(device).eval(), transformer_frontend.to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(0)
    wav = (0.1 * torch.randn(batch_size, SAMPLE_RATE * CLIP_SECONDS, generator=generator)).to(device)
    dtype = roofline.PRECISION_DTYPES[precision]
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=precision != "fp32")

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

    def train_mode():
        model.train()
        for parameter in model.parameters():
            parameter.requires_grad_(True)

    timer = roofline.Interleaved(device, dtype)
    row = {"arch": arch, "params_M": round(n_params / 1e6, 2), "batch_size": batch_size}
    steps = {"forward": (model.eval, forward), "train": (train_mode, forward_backward)}
    for mode in MODES:
        if mode not in modes:
            continue
        prepare, step = steps[mode]
        prepare()
        flops = roofline.count_flops(step)
        _reset_peak(device)
        stats = roofline.summarise(flops, batch_size, timer.time(step, warmup, iters))
        row.update({f"{mode}_{key}": value for key, value in stats.items()})
        row[f"{mode}_peak_MiB"] = round(_peak_memory_mib(device))
        if profile:
            row[f"{mode}_profile"] = roofline.profile_table(step, device)
    return row


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


TABLE_COLUMNS = (("ms", "ms"), ("CPU s", "cpu_s"), ("clips/s", "clips_per_s"), ("GFLOP/clip", "gflop_per_clip"),
                 ("GFLOP/s", "gflops"), ("ceiling", "ceiling_gflops"), ("% ceiling", "pct_ceiling"),
                 ("% ceiling (CPU s)", "pct_ceiling_cpu"), ("peak MiB", "peak_MiB"))


def _print_table(rows: list[dict], modes: list[str], header: str) -> None:
    """One line per (arch, mode): time, FLOPs, achieved GFLOP/s and % of the ceiling, peak memory."""
    print(header)
    lines = [["arch", "mode", "batch", *(title for title, _ in TABLE_COLUMNS)]]
    for row in rows:
        for mode in modes:
            lines.append([row["arch"], mode, str(row["batch_size"]),
                          *(str(row[f"{mode}_{key}"]) for _, key in TABLE_COLUMNS)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))


def _ceilings(device: torch.device) -> dict:
    """The fp32 matmul ceiling of this process's threads, and bf16's where the device runs bf16 natively."""
    ceilings = {"fp32": roofline.matmul_ceiling(torch.float32, device)}
    if roofline.bf16_matmul_supported(device):
        ceilings["bf16"] = roofline.matmul_ceiling(torch.bfloat16, device)
    return {name: {"gflops": round(rate.wall_gflops, 1), "gflops_per_cpu_s": round(rate.cpu_gflops, 1),
                   "size": rate.size} for name, rate in ceilings.items()}


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(registry.ARCHS), choices=registry.ARCHS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", choices=tuple(roofline.PRECISION_DTYPES),
                        help="fp32, or bf16 / fp16 autocast (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--batch-size", type=int, help="clips of 10 s per batch (default: 2 on CPU, 16 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="forward (eval, no grad) and/or train (forward + backward)")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top operators of one forward and one training step per arch")
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
        row = bench_arch(arch, device, precision, batch_size, args.warmup, args.iters, profile=args.profile,
                         modes=tuple(args.modes))
        print("RESULT " + json.dumps(row))
        return 0

    ceilings = _ceilings(device)
    print("matmul ceiling: " + ", ".join(f"{name} {c['gflops']} GFLOP/s ({c['size']}^3)" for name, c in ceilings.items())
          + f"; load {_load()}", flush=True)
    rows = []
    for arch in args.archs:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--archs", arch,
                   "--device", args.device, "--precision", precision, "--batch-size", str(batch_size),
                   "--warmup", str(args.warmup), "--iters", str(args.iters), "--modes", *args.modes]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.profile:
            command.append("--profile")
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"benchmark of {arch} failed (exit {done.returncode})")
        row = next(json.loads(line[len("RESULT "):]) for line in done.stdout.splitlines() if line.startswith("RESULT "))
        rows.append(row)
        print(f"{arch}: " + ", ".join(f"{mode} {row[mode + '_ms']} ms ({row[mode + '_pct_ceiling']} % of the ceiling)"
                                      for mode in args.modes) + " per batch", flush=True)
        if args.profile:
            for mode in args.modes:
                print(f"--- {arch}, {mode}:\n{row.pop(mode + '_profile')}", flush=True)

    device_name = _device_name(device)
    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "device_name": device_name,
        "precision": precision,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "load_average": _load(),
        "matmul_ceiling": ceilings,
        "batch_size": batch_size,
        "clip_seconds": CLIP_SECONDS,
        "warmup": args.warmup,
        "iters": args.iters,
        "timing": "median per batch (wall ms; *_cpu_s = process CPU seconds, all threads), front-ends included; "
                  "forward = eval + no_grad; "
                  "train = train mode, all parameters trainable, forward + backward (no optimizer step)",
        "flops": "torch.utils.flop_counter.FlopCounterMode of one step (matmul, convolution, attention; "
                 "element-wise work counts zero)",
        "pct_ceiling": "achieved GFLOP/s over the matmul rate of a short burst run just before each timed step, "
                       "same process, threads and dtype; median over the steps (_cpu: per process-CPU second)",
        "peak_memory": "CUDA: max_memory_allocated; CPU: peak resident set size of the benchmark process",
    }
    _print_table(rows, args.modes, f"{args.device} ({device_name}), {precision}, torch {torch.__version__}, "
                       f"{meta['cpu_threads']} threads, batch {batch_size} x {CLIP_SECONDS} s, load {meta['load_average']}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"models_{_slug(args.device + '-' + device_name)}_{precision}_torch{_slug(torch.__version__)}.json"
    atomic_write_text(out, json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
