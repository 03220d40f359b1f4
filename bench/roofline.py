"""The distance to the limit: FLOPs of a step, the machine's matmul ceiling, and where the time goes.

- ``count_flops(step)``: FLOPs of one call of ``step`` by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
  products, convolutions, attention; element-wise work counts as zero, so GFLOP/s is "useful" work per second).
- ``matmul_rate(...)`` / ``matmul_ceiling(...)``: the rate of a large square matrix product, the practical ceiling
  of model throughput on a device (CPU: MKL/oneDNN sgemm; CUDA: cuBLAS), measured in the same process and
  with the same thread count as the model, so that "% of the ceiling" compares like with like.
- ``Interleaved``: on a shared machine the speed of the cores drifts by 2x within seconds. A short ceiling burst
  right before each timed call gives one (achieved rate / ceiling) ratio per call; their median is robust to the
  drift, unlike a ceiling measured once at the start.
- ``profile_table(step)``: torch.profiler's top operators by self CPU (or CUDA) time, plus the share of the time
  spent in matrix-product, convolution and attention kernels ("matmul-class") against everything else.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

GIGA = 1e9
CEILING_SIZES = {"cpu": (1024, 2048, 3072), "cuda": (4096, 8192)}  # square matmul sizes tried for the ceiling
BURST_SIZE = {"cpu": 2048, "cuda": 8192}  # the size of the short bursts interleaved with timed calls
BURST_SECONDS = 0.25
# Operators whose time counts as "matmul-class" in the profile summary (the work FlopCounterMode counts).
MATMUL_CLASS_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul",
                    "aten::mkldnn_convolution", "aten::convolution", "aten::_convolution", "aten::cudnn_convolution",
                    "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_flash_attention",
                    "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_cudnn_attention",
                    "aten::_mkl_linear", "mkldnn::_linear_pointwise", "mkl::_mkl_linear",
                    "aten::_fft_r2c", "aten::convolution_backward", "aten::mkldnn_rnn_layer")
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of ``step`` (forward, or forward + backward when ``step`` calls ``backward``)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def bf16_matmul_supported(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively (CUDA >= Ampere; CPU with AVX512-BF16 or AMX via oneDNN)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def square_operands(size: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(size)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    return a, b


@dataclasses.dataclass
class Rate:
    """A measured matmul rate: GFLOP per wall second and per process-CPU second (all threads)."""

    wall_gflops: float
    cpu_gflops: float
    size: int


def matmul_rate(size: int, dtype: torch.dtype, device: torch.device, seconds: float = BURST_SECONDS,
                operands: tuple[torch.Tensor, torch.Tensor] | None = None) -> Rate:
    """GFLOP/s of ``size`` x ``size`` products repeated for about ``seconds`` (after one untimed product)."""
    a, b = operands or square_operands(size, dtype, device)
    torch.mm(a, b)
    sync(device)
    flops_per_call = 2 * size**3
    calls, start_wall, start_cpu = 0, time.perf_counter(), time.process_time()
    while True:
        torch.mm(a, b)
        calls += 1
        if calls % 4 == 0 or device.type == "cpu":
            sync(device)
            if time.perf_counter() - start_wall >= seconds:
                break
    wall = time.perf_counter() - start_wall
    cpu = max(time.process_time() - start_cpu, 1e-9)
    return Rate(flops_per_call * calls / wall / GIGA, flops_per_call * calls / cpu / GIGA, size)


def matmul_ceiling(dtype: torch.dtype, device: torch.device, rounds: int = 3) -> Rate:
    """The best rate over the square sizes of ``CEILING_SIZES`` and ``rounds`` bursts each (a peak, not a mean)."""
    best: Rate | None = None
    for size in CEILING_SIZES[device.type]:
        operands = square_operands(size, dtype, device)
        for _ in range(rounds):
            rate = matmul_rate(size, dtype, device, operands=operands)
            if best is None or rate.wall_gflops > best.wall_gflops:
                best = rate
    assert best is not None
    return best


@dataclasses.dataclass
class Timing:
    """Timed calls of a step, each right after a ceiling burst."""

    wall_s: list[float]
    cpu_s: list[float]
    ceiling_wall_gflops: list[float]  # the burst before each call
    ceiling_cpu_gflops: list[float]


def summarise(flops: int, clips: int, timing: Timing) -> dict:
    """Medians of ``timing`` for a step of ``flops`` FLOPs on ``clips`` clips.

    ``pct_ceiling``: achieved GFLOP per wall second over the ceiling burst just before, median over the calls;
    ``pct_ceiling_cpu``: the same per process-CPU second (steadier when other processes take the cores).
    """
    wall_pct = [100 * flops / t / GIGA / c for t, c in zip(timing.wall_s, timing.ceiling_wall_gflops)]
    cpu_pct = [100 * flops / t / GIGA / c for t, c in zip(timing.cpu_s, timing.ceiling_cpu_gflops)]
    wall = statistics.median(timing.wall_s)
    return {
        "ms": round(1e3 * wall, 1),
        "cpu_s": round(statistics.median(timing.cpu_s), 3),
        "clips_per_s": round(clips / wall, 2),
        "gflop_per_clip": round(flops / clips / GIGA, 2),
        "gflops": round(flops / wall / GIGA, 1),
        "ceiling_gflops": round(statistics.median(timing.ceiling_wall_gflops), 1),
        "pct_ceiling": round(statistics.median(wall_pct), 1),
        "pct_ceiling_cpu": round(statistics.median(cpu_pct), 1),
        "times_ms": [round(1e3 * t, 1) for t in timing.wall_s],
    }


class Interleaved:
    """Times ``step`` with a ceiling burst (same dtype, device and threads) right before every timed call."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32,
                 burst_seconds: float = BURST_SECONDS):
        self.device = device
        self.dtype = dtype
        self.burst_seconds = burst_seconds
        self.operands = square_operands(BURST_SIZE[device.type], dtype, device)

    def time(self, step: Callable[[], object], warmup: int, iters: int) -> Timing:
        for _ in range(warmup):
            step()
        sync(self.device)
        timing = Timing([], [], [], [])
        size = BURST_SIZE[self.device.type]
        for _ in range(iters):
            rate = matmul_rate(size, self.dtype, self.device, self.burst_seconds, self.operands)
            timing.ceiling_wall_gflops.append(rate.wall_gflops)
            timing.ceiling_cpu_gflops.append(rate.cpu_gflops)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            step()
            sync(self.device)
            timing.wall_s.append(time.perf_counter() - start_wall)
            timing.cpu_s.append(time.process_time() - start_cpu)
        return timing


def profile_table(step: Callable[[], object], device: torch.device, top: int = 15) -> str:
    """Top operators of one call of ``step`` by self time, and the matmul-class share of the total."""
    from torch.profiler import ProfilerActivity, profile  # lazy: the profiler loads only for --profile

    step()  # warm caches (oneDNN primitives, the bucket table, ...)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    averages = prof.key_averages()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(event, attribute) for event in averages) or 1.0
    matmul_class = sum(getattr(event, attribute) for event in averages if event.key in MATMUL_CLASS_OPS)
    table = averages.table(sort_by=attribute, row_limit=top, max_name_column_width=48)
    return (f"{table}\nmatmul-class operators (products, convolutions, attention, FFT): "
            f"{100 * matmul_class / total:.1f} % of the self time; everything else: "
            f"{100 * (1 - matmul_class / total):.1f} %")


__all__ = ["count_flops", "matmul_rate", "matmul_ceiling", "bf16_matmul_supported", "Interleaved", "Timing",
           "summarise", "Rate", "profile_table", "square_operands", "PRECISION_DTYPES", "GIGA"]
