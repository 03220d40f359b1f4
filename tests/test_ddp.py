"""DDP through Lightning with 2 CPU processes (gloo): the sampler shards by rank, checkpoints and test work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from models.checkpoints import safe_load
from tests.test_training import tiny_config

REPO_ROOT = Path(__file__).resolve().parents[1]
DDP_TIMEOUT_S = 300


@pytest.mark.integration
@pytest.mark.slow
def test_ddp_two_cpu_processes(demo_tiny, tmp_path):
    root, resources = demo_tiny
    config = tiny_config(1, "atst_frame", root, resources, tmp_path / "out", accelerator="cpu", devices=2,
                         strategy="ddp", limit_val_batches=1, limit_test_batches=1)
    (tmp_path / "config.json").write_text(json.dumps(config))
    # Lightning's DDP launcher re-runs this script for rank 1, so it must be a file, not pytest itself
    script = tmp_path / "run_ddp.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from helpers.training.train import train
        config = json.load(open({str(tmp_path / 'config.json')!r}))
        result = train(config, 1)
        if os.environ.get("LOCAL_RANK", "0") == "0":
            json.dump(result, open({str(tmp_path / 'result.json')!r}, "w"))
    """))
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("T4_RUN_DIR", None)
    process = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=DDP_TIMEOUT_S)
    assert process.returncode == 0, process.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert "test/student/rank_score" in result
    checkpoint = safe_load(Path(result["run_dir"]) / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2
    assert checkpoint["T4DataModule"]["world_size"] == 2
