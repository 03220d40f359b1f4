"""Smoke test of the store_predictions timing of bench/eval.py (no timing assertions)."""
from __future__ import annotations

import math

from bench.eval import store_throughput


def test_store_throughput_runs_store_and_forward(tmp_path):
    lines: list[str] = []
    result = store_throughput(clips=4, arch="atst_frame", size="tiny", batch_size=3, repeats=1,
                              workdir=tmp_path, echo=lines.append)
    assert result["clips"] == 4 and result["batch_size"] == 3 and result["repeats"] == 1
    for key in ("store_clips_per_s", "forward_clips_per_s", "store_over_forward_time"):
        assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
    assert result["device"] in ("cpu", "cuda") and result["torch_threads"] >= 1
    assert any("devtest: 4 clips" in line for line in lines), lines  # the store command wrote the devtest set
    assert (tmp_path / "predictions" / "bench_store" / "devtest.hdf5").is_file()
