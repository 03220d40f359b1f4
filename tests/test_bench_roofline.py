"""The benchmarks' accounting: FLOP counts, the ceiling pairing, the RTF bound and the GPU comparison's settings.

No timing is asserted (timings are the benchmarks' job); these check the arithmetic and the code paths on the CPU.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench import roofline
from bench import train as bench_train
from models.factory import create_model


def test_count_flops_of_a_product_and_of_its_backward():
    a = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(16, 4)
    assert roofline.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    # backward adds the gradient product (8x4)(4x16): training = 2x the forward here
    assert roofline.count_flops(lambda: (a @ b).sum().backward()) == 2 * (2 * 8 * 16 * 4)


def test_summary_pairs_each_step_with_the_ceiling_burst_before_it():
    timing = roofline.Timing(wall_s=[1.0, 2.0, 4.0], cpu_s=[2.0, 2.0, 2.0], ceiling_wall_gflops=[10.0, 5.0, 2.5],
                             ceiling_cpu_gflops=[5.0, 5.0, 5.0])
    stats = roofline.summarise(int(8e9), clips=2, timing=timing)
    # each step ran at 80 % of the burst before it although the wall times differ 4x (the machine slowed down)
    assert stats["pct_ceiling"] == pytest.approx(80.0)
    assert stats["pct_ceiling_cpu"] == pytest.approx(80.0)
    assert stats["ms"] == 2000.0 and stats["gflops"] == pytest.approx(4.0) and stats["gflop_per_clip"] == 4.0
    assert stats["clips_per_s"] == 1.0 and stats["times_ms"] == [1000.0, 2000.0, 4000.0]


def test_interleaved_timer_and_the_ceiling_measure_something():
    device = torch.device("cpu")
    timer = roofline.Interleaved(device, burst_seconds=0.01)
    calls = []
    timing = timer.time(lambda: calls.append(1), warmup=1, iters=3)
    assert len(calls) == 4 and len(timing.wall_s) == len(timing.ceiling_wall_gflops) == 3
    assert all(c > 0 and math.isfinite(c) for c in timing.ceiling_wall_gflops + timing.ceiling_cpu_gflops)
    rate = roofline.matmul_rate(256, torch.float32, device, seconds=0.01)
    assert rate.wall_gflops > 0 and rate.size == 256


def test_profile_table_names_the_operators_and_the_matmul_share():
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    table = roofline.profile_table(lambda: torch.relu(a @ b), torch.device("cpu"), top=5)
    assert "aten::mm" in table and "matmul-class operators" in table


def test_readme_settings_cover_every_arch_and_stage_as_the_reference_readme():
    assert set(bench_train.README_SETTINGS) == {(a, s) for a in bench_train.ARCHS for s in (1, 2)}
    assert bench_train.README_SETTINGS[("beats", 1)] == ((3, 3, 3, 5, 5), 4)
    assert bench_train.README_SETTINGS[("beats", 2)] == ((3, 2, 2, 3, 3), 36)
    assert bench_train.README_SETTINGS[("atst_frame", 2)] == (None, 8)
    assert bench_train.README_SETTINGS[("fpasst", 2)] == (None, 8)


def test_settings_precision_reference_is_fp16_on_cuda_and_fp32_on_cpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert bench_train.setting_precision("reference", cuda, None) == "16-mixed"
    assert bench_train.setting_precision("reference", cuda, "bf16-mixed") == "16-mixed"
    assert bench_train.setting_precision("ours", cuda, None) == "bf16-mixed"
    assert bench_train.setting_precision("ours", cuda, "16-mixed") == "16-mixed"
    assert bench_train.setting_precision("ours", cpu, None) == "32"
    assert bench_train.PRECISIONS["16-mixed"] == (torch.float16, True)  # fp16 needs the gradient scaler


def test_ratios_pair_our_setting_with_the_reference_one():
    rows = [{"arch": "beats", "stage": 2, "setting": "ours", "ms_per_micro_batch": 100.0, "peak_memory_mib": 700},
            {"arch": "beats", "stage": 2, "setting": "reference", "ms_per_micro_batch": 150.0,
             "peak_memory_mib": 1000},
            {"arch": "fpasst", "stage": 1, "setting": "ours", "ms_per_micro_batch": 1.0, "peak_memory_mib": 1}]
    assert bench_train.ratios(rows) == [{"arch": "beats", "stage": 2, "speedup": 1.5, "memory_ratio": 0.7}]


@pytest.mark.integration
def test_reference_setting_runs_eager_attention_with_accumulation():
    torch.set_num_threads(1)
    row = bench_train.run_one("atst_frame", 2, "tiny", "cpu", warmup=0, iters=2, setting="reference",
                              batch_sizes=(1, 1, 1, 1, 1), accumulate=2)
    assert row["attention"] == "eager" and row["precision"] == "32" and row["accumulate"] == 2
    assert row["batch"] == 5 and row["gflop_per_micro_batch"] > 0 and row["mfu_pct"] > 0


def test_eager_attention_switch_reaches_every_backbone():
    for arch, expected in (("atst_frame", 2), ("fpasst", 2), ("beats", 2)):
        model = create_model(arch, backbone_kwargs=dict(embed_dim=32, depth=2, num_heads=2),
                             nb_filters=[4, 8, 8, 8, 8, 8, 8], n_RNN_cell=8,
                             **({"no_wrapper": True} if arch == "beats" else {}))
        assert bench_train.set_eager_attention(model) == expected
        assert all(not m.use_sdpa for m in model.modules() if hasattr(m, "use_sdpa"))


def test_rtf_bound_follows_the_flops_per_window(monkeypatch):
    """measure(): RTF bound = ceiling x audio seconds / (FLOPs per window x windows)."""
    from bench import inference as bench_inference

    monkeypatch.setattr(roofline, "matmul_rate", lambda *a, **k: roofline.Rate(100.0, 50.0, 2048))
    model = lambda windows: torch.zeros(len(windows), 156, 27)  # noqa: E731
    audio = [np.zeros(16_000 * 25, dtype=np.float32)]  # 25 s at hop 5: windows at 0, 5, 10, 15 s
    row = bench_inference.measure("stub", model, int(10e9), torch.device("cpu"), 1, "25 s", audio, 5.0, 16,
                                  False, batched=True)
    assert row["windows"] == 4
    assert row["rtf_bound"] == pytest.approx(100e9 * 25 / (10e9 * 4))
    assert row["rtf_bound_no_overlap"] == pytest.approx(100e9 * 10 / 10e9)
    assert row["pct_bound"] == pytest.approx(100 * row["rtf"] / row["rtf_bound"], rel=0.02)


def test_sdpa_kernel_report_is_cpu_off_the_gpu():
    assert bench_train.sdpa_kernels("beats", torch.device("cpu"), torch.bfloat16) == "cpu"
    assert set(bench_train.ATTENTION_SHAPES) == set(bench_train.ARCHS)
