"""Resume from last.ckpt after an interruption matches an uninterrupted run step for step.

Three interruptions of a 2-epoch, 4-steps-per-epoch stage-1 run (tiny ATST-Frame, waveform mixing and the
stage-1 augmentations on, so the data and augmentation RNGs matter):
* after a whole epoch (``max_epochs=1``, then resumed to 2);
* SIGTERM mid-epoch (step 3 of 4): the step finishes, last.ckpt is written, the process exits;
* SIGKILL mid-epoch (at step 7, nothing saved afterwards) with ``training.checkpoint_every_n_steps=2``:
  the run resumes from the step-6 checkpoint.
The killed runs run in a child process (a real signal, a real exit); each resumed run must end with the same
global step, scheduler position, student/teacher weights and test metrics as the uninterrupted run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoints import safe_load
from tests.test_training import one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parent.parent
STEPS_PER_EPOCH = 4
EPOCHS = 2
LIMITS = dict(limit_train_batches=STEPS_PER_EPOCH, limit_val_batches=1, limit_test_batches=1)

# A child process that trains with `config` and sends itself `signal` at the end of optimizer step `step`.
KILLER = """
import json, os, signal, sys
import pytorch_lightning as pl
import torch
torch.set_num_threads(1)
from helpers.training import train as t

config, signum, at_step = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

class Kill(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == at_step:
            os.kill(os.getpid(), signum)

build = t._build_trainer
def with_kill(*args, **kwargs):
    trainer = build(*args, **kwargs)
    trainer.callbacks.insert(0, Kill())  # before the resume-point callback sees the step
    return trainer
t._build_trainer = with_kill
t.train(config, 1)
"""


def _config(root, resources, out: Path, epochs: int = EPOCHS, **training) -> dict:
    config = tiny_config(1, "atst_frame", root, resources, out, **LIMITS, max_epochs=epochs)
    config["training"].update(wavmix_p=0.5, **training)
    return config


def _train(config: dict) -> dict:
    from helpers.training.train import train

    return train(config, 1)


def _run_until_killed(config: dict, signum: int, at_step: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-c", KILLER, json.dumps(config), str(int(signum)), str(at_step)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _last_checkpoint(out: Path) -> Path:
    found = sorted(out.glob("**/checkpoints/last.ckpt"))
    assert len(found) == 1, f"expected one last.ckpt under {out}, found {found}"
    return found[0]


def _assert_same_run(full: dict, resumed: dict, full_result: dict, resumed_result: dict) -> None:
    assert resumed["global_step"] == full["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert resumed["epoch"] == full["epoch"]
    assert resumed["lr_schedulers"][0]["last_epoch"] == full["lr_schedulers"][0]["last_epoch"]
    for model in ("student", "teacher"):
        for key, value in full[model].items():
            assert torch.allclose(value.float(), resumed[model][key].float(), atol=1e-6), f"{model}.{key}"
    metrics = [k for k in full_result if k.startswith("test/")]
    assert metrics
    for key in metrics:
        assert resumed_result[key] == pytest.approx(full_result[key], abs=1e-6), key


@pytest.fixture(scope="module", autouse=True)
def one_thread_for_the_module():
    """Every run of this module on one intra-op thread, the module-scoped uninterrupted run included (it is set
    up before function-scoped fixtures such as ``one_torch_thread``): the killed runs use one thread too, and a
    different thread count changes float summation order, which 8 Adam steps amplify beyond 1e-6."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(demo_tiny, tmp_path_factory):
    root, resources = demo_tiny
    out = tmp_path_factory.mktemp("full")
    result = _train(_config(root, resources, out))
    return result, safe_load(_last_checkpoint(out))


@pytest.mark.integration
def test_resume_after_an_epoch(demo_tiny, uninterrupted, tmp_path):
    root, resources = demo_tiny
    first = _train(_config(root, resources, tmp_path, epochs=1))
    last = _last_checkpoint(tmp_path)
    assert safe_load(last)["global_step"] == STEPS_PER_EPOCH
    resumed_result = _train({**_config(root, resources, tmp_path), "ckpt_path": str(last)})
    assert resumed_result["run_dir"] == first["run_dir"]  # a resumed run keeps its folder
    _assert_same_run(uninterrupted[1], safe_load(last), uninterrupted[0], resumed_result)


@pytest.mark.integration
def test_sigterm_mid_epoch_saves_and_resumes(demo_tiny, uninterrupted, tmp_path):
    root, resources = demo_tiny
    killed = _run_until_killed(_config(root, resources, tmp_path), signal.SIGTERM, at_step=3)
    assert killed.returncode == 1, killed.stderr[-3000:]
    assert "resume with ckpt_path=" in killed.stderr
    last = _last_checkpoint(tmp_path)
    saved = safe_load(last)
    assert saved["global_step"] == 3 and saved["epoch"] == 0  # mid-epoch, not an epoch boundary
    assert saved["T4DataModule"]["sampler"]["batches_done"] == 3  # Lightning stores it under the class name
    resumed_result = _train({**_config(root, resources, tmp_path), "ckpt_path": str(last)})
    _assert_same_run(uninterrupted[1], safe_load(last), uninterrupted[0], resumed_result)


@pytest.mark.integration
def test_sigkill_mid_epoch_resumes_from_the_periodic_checkpoint(demo_tiny, uninterrupted, tmp_path):
    root, resources = demo_tiny
    config = _config(root, resources, tmp_path, checkpoint_every_n_steps=2)
    killed = _run_until_killed(config, signal.SIGKILL, at_step=7)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = _last_checkpoint(tmp_path)
    assert safe_load(last)["global_step"] == 6  # the last periodic save before the kill
    resumed_result = _train({**config, "ckpt_path": str(last)})
    _assert_same_run(uninterrupted[1], safe_load(last), uninterrupted[0], resumed_result)
