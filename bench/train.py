"""Training-step speed and peak memory of the stage-1 / stage-2 system per arch, on synthetic batches.

One step = what ``SEDSystem.training_step`` does (front-ends, augmentations, student and EMA-teacher forward,
losses) + backward + optimizer step + EMA update, on a synthetic batch with the recipe's sub-batch layout
(random audio and labels; data loading excluded). Warm-up steps first, then timed ones, with
``torch.cuda.synchronize()`` around GPU timers.

- ``--size tiny`` (default on CPU): the demo's tiny models (``configs.demo_config``), batch (2, 2, 2, 2, 2), fp32;
- ``--size full`` (default on CUDA): released sizes, the stage's reference batch sizes, bf16 autocast.

    python bench/train.py                        # tiny, CPU, all archs, both stages
    python bench/train.py --device cuda --size full --archs atst_frame --stages 2

Each (arch, stage) runs in its own subprocess (separate peak memory). Wall time and process CPU time are both
recorded (the CPU seconds are steadier on a shared machine). Prints a table and writes
``bench/results/train_<device>_<size>_<precision>_torch<version>.json``.
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
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

import configs  # noqa: E402
from helpers.training.ema import ema_update
from helpers.training.stages import strategy_for
from helpers.training.system import SEDSystem
from helpers.training.train import T4DataModule
from models.factory import build_model
from models.registry import ARCH_SPECS, ARCHS

RESULTS_DIR = REPO_ROOT / "bench" / "results"
SAMPLE_RATE = 16_000
CLIP_SAMPLES = 160_000
LABEL_FRAMES = 156
SUB_BATCH_SOURCES = ("maestro_real_train", "strong_train", "synth_train", "weak_train", "unlabeled_train")
TINY_BATCH = (2, 2, 2, 2, 2)
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


def run_one(arch: str, stage: int, size: str, device_name: str, warmup: int, iters: int,
            batch_sizes: tuple[int, ...] | None = None) -> dict:
    warnings.filterwarnings("ignore")
    device = torch.device(device_name)
    config = bench_config(arch, stage, size)
    if batch_sizes:
        config["training"]["batch_sizes"] = tuple(batch_sizes)
    student = build_model(config)
    system = SEDSystem(config, stage, student,
                       sub_batch_slices=T4DataModule(config, stage).sub_batch_slices()).to(device)
    system.train()
    system.on_train_start()  # what Lightning calls at the start of fit (stage 1: the shared frozen transformer)
    groups = strategy_for(stage).param_groups(system.student, config["optimizer"])
    optimizer = torch.optim.AdamW(groups)
    batch = synthetic_batch(config["training"]["batch_sizes"], device)
    use_bf16 = device.type == "cuda"

    def step(index: int) -> None:
        ema_update(system.teacher, system.student, index, 0.999, ema_buffers=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = system.training_step(copy.copy(batch), index)
        loss.backward()
        optimizer.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(warmup):
        step(i)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(iters):
        step(warmup + i)
    sync()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" \
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MIB
    return {"arch": arch, "stage": stage, "size": size, "batch": sum(config["training"]["batch_sizes"]),
            "steps_per_s": iters / wall, "ms_per_step": 1000 * wall / iters, "cpu_s_per_step": cpu / iters,
            "peak_memory_mib": peak,
            "trainable_params": sum(p.numel() for g in groups for p in g["params"])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--stages", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=("tiny", "full"), default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--batch-sizes", type=int, nargs=5, metavar="N",
                        help="sub-batch sizes (MAESTRO, DESED strong, synth, weak, unlabeled) instead of the default")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one (arch, stage)
    args = parser.parse_args(argv)
    size = args.size or ("full" if args.device.startswith("cuda") else "tiny")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(args.archs[0], args.stages[0], size, args.device, args.warmup, args.iters,
                                 args.batch_sizes)))
        return
    rows = []
    for arch in args.archs:
        for stage in args.stages:
            command = [sys.executable, __file__, "--one", "--archs", arch, "--stages", str(stage), "--device",
                       args.device, "--size", size, "--warmup", str(args.warmup), "--iters", str(args.iters)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            if args.batch_sizes:
                command += ["--batch-sizes", *map(str, args.batch_sizes)]
            out = subprocess.run(command, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{arch} stage {stage} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    header = f"{'arch':<11} {'stage':>5} {'batch':>5} {'steps/s':>8} {'ms/step':>9} {'CPU s/step':>10} {'peak MiB':>9}"
    print(header)
    for r in rows:
        print(f"{r['arch']:<11} {r['stage']:>5} {r['batch']:>5} {r['steps_per_s']:>8.3f} {r['ms_per_step']:>9.1f} "
              f"{r['cpu_s_per_step']:>10.2f} {r['peak_memory_mib']:>9.0f}")
    precision = "bf16" if args.device.startswith("cuda") else "fp32"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    torch_version = torch.__version__.split("+")[0]
    path = RESULTS_DIR / f"train_{args.device.split(':')[0]}_{size}_{precision}_torch{torch_version}.json"
    path.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device, "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "warmup": args.warmup, "iters": args.iters, "results": rows,
    }, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
