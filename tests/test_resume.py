"""Resume: interrupt after one epoch, resume from last.ckpt, and match an uninterrupted run step for step."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoints import safe_load
from tests.test_training import one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

STEPS_PER_EPOCH = 2


def _run(config: dict, stage: int) -> dict:
    from helpers.train import train

    return train(config, stage)


def _last(result: dict) -> dict:
    return safe_load(Path(result["run_dir"]) / "checkpoints" / "last.ckpt")


@pytest.mark.integration
def test_resume_from_last_matches_uninterrupted_run(demo_tiny, tmp_path):
    root, resources = demo_tiny
    limits = dict(limit_train_batches=STEPS_PER_EPOCH, limit_val_batches=1, limit_test_batches=1)

    full = _last(_run(tiny_config(1, "atst_frame", root, resources, tmp_path / "full", **limits, max_epochs=2), 1))

    first = _run(tiny_config(1, "atst_frame", root, resources, tmp_path / "part", **limits, max_epochs=1), 1)
    interrupted = _last(first)
    assert interrupted["global_step"] == STEPS_PER_EPOCH
    resumed_config = tiny_config(1, "atst_frame", root, resources, tmp_path / "part", **limits, max_epochs=2)
    resumed_config["ckpt_path"] = str(Path(first["run_dir"]) / "checkpoints" / "last.ckpt")
    resumed_result = _run(resumed_config, 1)
    assert resumed_result["run_dir"] == first["run_dir"]  # a resumed run keeps its folder
    resumed = _last(resumed_result)

    assert resumed["global_step"] == full["global_step"] == 2 * STEPS_PER_EPOCH
    assert resumed["epoch"] == full["epoch"]
    for model in ("student", "teacher"):
        for key, value in full[model].items():
            assert torch.allclose(value.float(), resumed[model][key].float(), atol=1e-6), f"{model}.{key}"
    full_lr = full["lr_schedulers"][0]["last_epoch"]
    assert resumed["lr_schedulers"][0]["last_epoch"] == full_lr == 2 * STEPS_PER_EPOCH
