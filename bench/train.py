"""Training-step speed, FLOPs, MFU and peak memory of the stage-1 / stage-2 system per arch, on synthetic batches.

One micro-batch = what ``SEDSystem.training_step`` does (front-ends, augmentations, student and EMA-teacher forward,
losses) + backward; every ``accumulate`` micro-batches the optimizer steps and the EMA teacher follows. The batch
is synthetic with the recipe's sub-batch layout (random audio and labels; data loading excluded). Warm-up
micro-batches first, then timed ones, with ``torch.cuda.synchronize()`` around GPU timers.

- ``--size tiny`` (default on CPU): the demo's tiny models (``configs.demo_config``), batch (2, 2, 2, 2, 2);
- ``--size full`` (default on CUDA): released sizes at the reference README's iteration-2 batch sizes and
  ``trainer.accumulate_grad_batches`` per arch and stage (``README_SETTINGS``).

Two settings run side by side in one invocation (``--settings``), so their ratio is measured on the same machine:

- ``ours``: ``--precision`` (default bf16-mixed on CUDA, fp32 on CPU), SDPA attention (flash / memory-efficient
  kernels where the mask allows), ``--compile`` optional;
- ``reference``: the reference's settings, fp16-mixed with a gradient scaler on CUDA (fp32 on CPU) and eager
  (explicit softmax) attention.

FLOPs per micro-batch come from ``torch.utils.flop_counter.FlopCounterMode``; MFU is achieved GFLOP/s over the
matmul ceiling of the setting's dtype, measured by a short burst right before each timed micro-batch in the
same process (``bench.roofline``). Each (arch, stage, setting) runs in its own subprocess (separate peak memory).

    python -m bench.train                                   # tiny, CPU, all archs, both stages, both settings
    python -m bench.train --device cuda --size full         # the GPU comparison (see docs/PERFORMANCE.md)
    python -m bench.train --size full --archs atst_frame --stages 2 --settings ours --iters 2

Prints a table and writes ``bench/results/train_<device>_<size>_torch<version>.json``.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import resource
import subprocess
import sys
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

import configs  # noqa: E402
from bench import roofline  # noqa: E402
from helpers.training.ema import ema_update  # noqa: E402
from helpers.training.stages import strategy_for  # noqa: E402
from helpers.training.system import SEDSystem  # noqa: E402
from helpers.training.train import T4DataModule  # noqa: E402
from models.factory import build_model  # noqa: E402
from models.registry import ARCH_SPECS, ARCHS  # noqa: E402
from data_util.atomic import atomic_write_text  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
SETTINGS = ("ours", "reference")
SAMPLE_RATE = 16_000
CLIP_SAMPLES = 160_000
LABEL_FRAMES = 156
SUB_BATCH_SOURCES = ("maestro_real_train", "strong_train", "synth_train", "weak_train", "unlabeled_train")
TINY_BATCH = (2, 2, 2, 2, 2)
# The reference README's iteration-2 commands: (training.batch_sizes or None for the stage default,
# trainer.accumulate_grad_batches), sized for an 11-12 GB GPU.
README_SETTINGS = {
    ("atst_frame", 1): (None, 1), ("fpasst", 1): (None, 1), ("beats", 1): ((3, 3, 3, 5, 5), 4),
    ("atst_frame", 2): (None, 8), ("fpasst", 2): (None, 8), ("beats", 2): ((3, 2, 2, 3, 3), 36),
}
# Precision names (Lightning's) -> autocast dtype (None: float32) and whether a gradient scaler is needed.
PRECISIONS = {"32": (None, False), "bf16-mixed": (torch.bfloat16, False), "16-mixed": (torch.float16, True)}
MIB = 2**20
KIB = 2**10


def bench_config(arch: str, stage: int, size: str) -> dict:
    config = configs.demo_defaults(stage) if size == "tiny" else configs.default_config(stage)
    if size == "tiny":
        config["training"]["batch_sizes"] = TINY_BATCH
    for name in ARCHS:
        config[name]["pretrained_name"] = None
    config["arch"] = arch
    config["t4_wrapper"].update(ARCH_SPECS[arch].wrapper_defaults)  # the released stage checkpoints' settings
    config["mix_augment"]["mixup_p"] = 1.0  # every step mixes (and stage 2 then uses ICT): the costlier path
    return config


def synthetic_batch(batch_sizes, device) -> dict:
    generator = torch.Generator().manual_seed(0)
    total = sum(batch_sizes)
    sources = [name for name, count in zip(SUB_BATCH_SOURCES, batch_sizes) for _ in range(count)]
    strong = (torch.rand(total, 27, LABEL_FRAMES, generator=generator) > 0.95).float()
    return {
        "audio": (torch.randn(total, CLIP_SAMPLES, generator=generator) * 0.1).to(device),
        "strong": strong.to(device), "weak": strong.amax(-1).to(device),
        "mask": torch.ones(total, 27, dtype=torch.bool, device=device),
        "pseudo": torch.rand(total, 27, LABEL_FRAMES, generator=generator).to(device),
        "has_pseudo": torch.ones(total, dtype=torch.bool, device=device),
        "dataset": sources, "filename": [f"clip{i}" for i in range(total)],
    }


def setting_precision(setting: str, device: torch.device, precision: str | None) -> str:
    """The precision a setting runs with: the reference's fp16-mixed / our bf16-mixed on CUDA, fp32 on the CPU."""
    if device.type != "cuda":
        return precision or "32"
    if setting == "reference":
        return "16-mixed"
    return precision or "bf16-mixed"


def set_eager_attention(module: torch.nn.Module) -> int:
    """Switch every attention module (``use_sdpa`` attribute) to its eager explicit-softmax path; returns the count."""
    switched = 0
    for sub in module.modules():
        if hasattr(sub, "use_sdpa"):
            sub.use_sdpa = False
            switched += 1
    return switched


# Attention shapes per arch for 10 s clips: (tokens incl. special ones, relative-position bias mask or not)
ATTENTION_SHAPES = {"atst_frame": (250, False), "fpasst": (252, False), "beats": (496, True)}


def sdpa_kernels(arch: str, device: torch.device, dtype: torch.dtype, heads: int = 12, head_dim: int = 64) -> str:
    """Which fused SDPA kernels accept this arch's attention on ``device`` (CUDA): flash needs no mask, the
    memory-efficient kernel takes BEATs' additive bias; "math" means neither (the eager-equivalent fallback)."""
    if device.type != "cuda":
        return "cpu"
    tokens, has_mask = ATTENTION_SHAPES[arch]
    q = torch.zeros(2, heads, tokens, head_dim, device=device, dtype=dtype)
    mask = torch.zeros(2, heads, tokens, tokens, device=device, dtype=dtype) if has_mask else None
    params = torch.backends.cuda.SDPAParams(q, q, q, mask, 0.0, False, False)
    usable = [name for name, check in (("flash", torch.backends.cuda.can_use_flash_attention),
                                       ("efficient", torch.backends.cuda.can_use_efficient_attention))
              if check(params, False)]
    return "+".join(usable) or "math"


def run_one(arch: str, stage: int, size: str, device_name: str, warmup: int, iters: int, *,
            setting: str = "ours", precision: str | None = None, compile_model: bool = False,
            batch_sizes: tuple[int, ...] | None = None, accumulate: int | None = None) -> dict:

    warnings.filterwarnings("ignore")
    device = torch.device(device_name)
    config = bench_config(arch, stage, size)
    readme_batch, readme_accumulate = README_SETTINGS[(arch, stage)] if size == "full" else (None, 1)
    config["training"]["batch_sizes"] = tuple(batch_sizes or readme_batch or config["training"]["batch_sizes"])
    accumulate = accumulate or readme_accumulate
    config["compile"] = bool(compile_model and setting == "ours")
    precision = setting_precision(setting, device, precision)
    autocast_dtype, needs_scaler = PRECISIONS[precision]
    student = build_model(config)
    if setting == "reference":
        set_eager_attention(student)
    system = SEDSystem(config, stage, student,
                       sub_batch_slices=T4DataModule(config, stage).sub_batch_slices()).to(device)
    system.train()
    system.on_train_start()  # what Lightning calls at the start of fit (stage 1: the shared frozen transformer)
    groups = strategy_for(stage).param_groups(system.student, config["optimizer"])
    optimizer = torch.optim.AdamW(groups)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)
    batch = synthetic_batch(config["training"]["batch_sizes"], device)
    counter = {"micro": 0, "optimizer": 0}

    def forward_backward() -> None:
        with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            loss = system.training_step(copy.copy(batch), counter["optimizer"]) / accumulate
        scaler.scale(loss).backward()

    def micro_batch() -> None:
        forward_backward()
        counter["micro"] += 1
        if counter["micro"] % accumulate == 0:
            scaler.step(optimizer)
            scaler.update()
            ema_update(system.teacher, system.student, counter["optimizer"], 0.999, ema_buffers=True)
            optimizer.zero_grad(set_to_none=True)
            counter["optimizer"] += 1

    flops = roofline.count_flops(forward_backward)  # one micro-batch; the optimizer's element-wise work counts 0
    optimizer.zero_grad(set_to_none=True)
    ceiling_dtype = autocast_dtype or torch.float32
    timer = roofline.Interleaved(device, ceiling_dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = timer.time(micro_batch, warmup, iters)
    peak = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" \
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MIB
    clips = sum(config["training"]["batch_sizes"])
    stats = roofline.summarise(flops, clips, timing)
    return {"arch": arch, "stage": stage, "size": size, "setting": setting, "precision": precision,
            "attention": "eager" if setting == "reference"
            else f"sdpa ({sdpa_kernels(arch, device, autocast_dtype or torch.float32)})",
            "compile": config["compile"],
            "batch": clips, "accumulate": accumulate,
            "ms_per_micro_batch": stats["ms"], "cpu_s_per_micro_batch": stats["cpu_s"],
            "s_per_optimizer_step": round(stats["ms"] * accumulate / 1e3, 2),
            "gflop_per_micro_batch": round(flops / roofline.GIGA, 1), "gflops": stats["gflops"],
            "ceiling_gflops": stats["ceiling_gflops"], "mfu_pct": stats["pct_ceiling"],
            "mfu_pct_cpu": stats["pct_ceiling_cpu"], "peak_memory_mib": round(peak),
            "trainable_params": sum(p.numel() for g in groups for p in g["params"]), "times_ms": stats["times_ms"]}


def _print_table(rows: list[dict]) -> None:
    columns = (("arch", "arch"), ("stage", "stage"), ("setting", "setting"), ("precision", "precision"),
               ("attention", "attention"), ("batch", "batch"), ("accum", "accumulate"),
               ("ms/micro-batch", "ms_per_micro_batch"), ("CPU s", "cpu_s_per_micro_batch"),
               ("s/opt step", "s_per_optimizer_step"), ("GFLOP", "gflop_per_micro_batch"), ("GFLOP/s", "gflops"),
               ("ceiling", "ceiling_gflops"), ("MFU %", "mfu_pct"), ("peak MiB", "peak_memory_mib"))
    lines = [[title for title, _ in columns]] + [[str(row[key]) for _, key in columns] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))


def ratios(rows: list[dict]) -> list[dict]:
    """Per (arch, stage): the reference setting's time and memory over ours (time > 1: ours is faster)."""
    found = []
    for ours in (r for r in rows if r["setting"] == "ours"):
        reference = next((r for r in rows if r["setting"] == "reference" and r["arch"] == ours["arch"]
                          and r["stage"] == ours["stage"]), None)
        if reference is not None:
            found.append({"arch": ours["arch"], "stage": ours["stage"],
                          "speedup": round(reference["ms_per_micro_batch"] / ours["ms_per_micro_batch"], 2),
                          "memory_ratio": round(ours["peak_memory_mib"] / reference["peak_memory_mib"], 2)})
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--stages", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=("tiny", "full"), default=None)
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default=None,
                        help="our setting's precision (default: bf16-mixed on CUDA, 32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models of our setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed micro-batches first")
    parser.add_argument("--iters", type=int, default=5, help="timed micro-batches")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--batch-sizes", type=int, nargs=5, metavar="N",
                        help="sub-batch sizes (MAESTRO, DESED strong, synth, weak, unlabeled) instead of the default")
    parser.add_argument("--accumulate", type=int, default=None,
                        help="micro-batches per optimizer step (default: the README's with --size full, else 1)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one (arch, stage)
    args = parser.parse_args(argv)
    size = args.size or ("full" if args.device.startswith("cuda") else "tiny")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print("RESULT " + json.dumps(run_one(
            args.archs[0], args.stages[0], size, args.device, args.warmup, args.iters, setting=args.settings[0],
            precision=args.precision, compile_model=args.compile, batch_sizes=args.batch_sizes,
            accumulate=args.accumulate)))
        return
    rows = []
    for arch in args.archs:
        for stage in args.stages:
            for setting in args.settings:
                command = [sys.executable, str(Path(__file__).resolve()), "--one", "--archs", arch, "--stages",
                           str(stage), "--settings", setting, "--device", args.device, "--size", size,
                           "--warmup", str(args.warmup), "--iters", str(args.iters)]
                for flag, value in (("--threads", args.threads), ("--precision", args.precision),
                                    ("--accumulate", args.accumulate)):
                    if value:
                        command += [flag, str(value)]
                if args.compile:
                    command.append("--compile")
                if args.batch_sizes:
                    command += ["--batch-sizes", *map(str, args.batch_sizes)]
                out = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
                if out.returncode != 0:
                    print(f"{arch} stage {stage} ({setting}) failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = next(json.loads(line[len("RESULT "):]) for line in out.stdout.splitlines()
                           if line.startswith("RESULT "))
                rows.append(row)
                print(f"{arch} stage {stage} ({setting}): {row['ms_per_micro_batch']} ms per micro-batch, "
                      f"MFU {row['mfu_pct']} %", flush=True)
    print(f"{args.device}, size {size}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    _print_table(rows)
    found = ratios(rows)
    for ratio in found:
        print(f"{ratio['arch']} stage {ratio['stage']}: ours is {ratio['speedup']}x the reference setting's speed "
              f"at {ratio['memory_ratio']}x its peak memory")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    torch_version = torch.__version__.split("+")[0]
    path = RESULTS_DIR / f"train_{args.device.split(':')[0]}_{size}_torch{torch_version}.json"
    atomic_write_text(path, json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device, "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "warmup": args.warmup, "iters": args.iters,
        "results": rows, "ratios": found,
    }, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
