"""Every training command of the reference README runs verbatim on the tiny demo data (a few steps each).

Each command of ``tests.reference_commands.STAGE1_TRAIN`` / ``STAGE2_TRAIN`` goes through Sacred's own command line
(``ex.run_commandline``) word for word; only these words are appended: the ``demo`` named config (tiny models, CPU),
the tiny demo tree (``base_path`` / ``resources_path``) and a few-steps limit (``trainer.*``). Sacred applies the
``with`` updates after named configs and a later update after an earlier one, so the README's own values
(``loss_weights`` with pseudo-label weight 1.5, ``accumulate_grad_batches``, ``batch_sizes``, ...) are what runs.

Isolation without touching the repository's ``resources/``:
- stage 1 sets a pseudo-label weight of 1.5 but no ``pseudo_labels``: on a machine without
  ``resources/pseudo-labels`` (iteration 1) training must run with a zero pseudo-label term.
  ``configs.PSEUDO_LABELS_DIR`` is pointed at a missing folder so that downloaded pseudo-labels cannot leak in.
- stage 2 names its stage-1 checkpoint (``t4_wrapper.model_init_id=atst_stage1``): the matching stage-1 command runs
  first and its best checkpoint is placed, under that name, in a temporary folder that ``configs.PRETRAINED_MODELS_DIR``
  is pointed at, and that ``model_path`` (where checkpoint names are looked up; the demo config would point it into
  ``demo_data/``) names.
"""
from __future__ import annotations

import ast
import csv
import importlib
import math
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import configs
from helpers.training import train as train_module
from models.checkpoints import safe_load
from models.loading import resolve_checkpoint
from tests import reference_commands

# The few-steps limit appended to every command (the same for all: each run takes ~5-20 s on a CPU core).
FEW_STEPS = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=False",
    "trainer.enable_model_summary=False",
    "trainer.log_every_n_steps=1",
)
TRAIN_BATCHES = 2  # max_epochs=1 x limit_train_batches=2
ARCH_OF_INIT_ID = {"atst_stage1": "atst_frame", "passt_stage1": "fpasst", "beats_stage1": "beats"}
CHECKPOINT_SUFFIX = ".ckpt"
STAGE2_DRIFT = 1e-2  # max change of a CRNN weight in the few stage-2 steps (lr <= 5e-4, warm-up)


def _arch(command: str) -> str:
    return _updates(command)["arch"]


def _updates(command: str) -> dict[str, str]:
    """The ``key=value`` words after ``with`` of ``command``, as strings."""
    words = shlex.split(command)
    return dict(w.split("=", 1) for w in words[words.index("with") + 1:])


STAGE1_BY_ARCH = {_arch(c): c for c in reference_commands.STAGE1_TRAIN}
STAGE2_BY_ARCH = {_arch(c): c for c in reference_commands.STAGE2_TRAIN}


def _argv(command: str, demo_root: Path, resources: Path, out_dir: Path) -> tuple[str, list[str]]:
    """(module, argv for ``ex.run_commandline``): the README words unchanged, then demo tree and few-steps limit."""
    words = shlex.split(command)
    if words[:2] != ["python", "-m"]:
        raise ValueError(f"not a `python -m` command: {command!r}")
    module = words[2]
    appended = ["demo", f"base_path={demo_root}", f"resources_path={resources}",
                f"model_path={configs.PRETRAINED_MODELS_DIR}", *FEW_STEPS, f"trainer.default_root_dir={out_dir}"]
    return module, [module, *words[3:], *appended]


def _run_command(command: str, demo_root: Path, resources: Path, out_dir: Path) -> dict:
    """Run ``command`` through its experiment's command line in this process; return the run's result (train's)."""
    module, argv = _argv(command, demo_root, resources, out_dir)
    ex = importlib.import_module(module).ex
    try:
        run = ex.run_commandline(argv)
    except SystemExit as e:  # Sacred prints the (filtered) traceback to stderr and exits 1
        pytest.fail(f"{command}\nexited with status {e.code} (traceback in the captured stderr)")
    return run.result


@pytest.mark.parametrize("command", reference_commands.STAGE1_TRAIN + reference_commands.STAGE2_TRAIN)
def test_argv_keeps_the_readme_words_and_only_appends(command, tmp_path):
    module, argv = _argv(command, tmp_path / "root", tmp_path / "res", tmp_path / "out")
    words = shlex.split(command)
    assert argv[:len(words) - 2] == words[2:] and module == words[2]
    assert argv[len(words) - 2:] == ["demo", f"base_path={tmp_path / 'root'}", f"resources_path={tmp_path / 'res'}",
                                     f"model_path={configs.PRETRAINED_MODELS_DIR}", *FEW_STEPS,
                                     f"trainer.default_root_dir={tmp_path / 'out'}"]


@pytest.fixture(autouse=True)
def isolated_run(monkeypatch, tmp_path):
    """One torch thread (tiny models on a shared CPU), no pseudo-labels and no pretrained models from resources/."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(configs, "PSEUDO_LABELS_DIR", tmp_path / "no-pseudo-labels")
    monkeypatch.setattr(configs, "PRETRAINED_MODELS_DIR", tmp_path / "pretrained_models")
    monkeypatch.delenv(train_module.RUN_DIR_ENV, raising=False)  # train() sets it for DDP children
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stage1_results():
    """Stage-1 results by arch, shared with the stage-2 tests (which need the stage-1 checkpoint)."""
    return {}


def _stage1(arch: str, demo_tiny, out_dir: Path, results: dict) -> dict:
    if arch not in results:
        results[arch] = _run_command(STAGE1_BY_ARCH[arch], *demo_tiny, out_dir / "stage1")
    return results[arch]


def _expected_steps(updates: dict) -> int:
    return math.ceil(TRAIN_BATCHES / int(updates.get("trainer.accumulate_grad_batches", 1)))


def _metrics(result: dict) -> list[dict]:
    """Rows of the run's ``metrics.csv`` (Lightning's CSVLogger)."""
    (path,) = Path(result["run_dir"]).rglob("metrics.csv")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_trained(result: dict, arch: str, stage: int, wandb_name: str) -> dict:
    """The run tested its best checkpoint, which holds the README's config and the few steps."""
    assert "test/student/rank_score" in result and "test/teacher/rank_score" in result, sorted(result)
    checkpoint = safe_load(result["best_model_path"])
    assert checkpoint["run_info"]["stage"] == stage
    assert checkpoint["config"]["arch"] == arch
    assert checkpoint["config"]["wandb"]["name"] == wandb_name
    assert Path(result["run_dir"]).name.startswith(wandb_name)
    return checkpoint


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("arch", list(STAGE1_BY_ARCH))
def test_stage1_readme_command_runs(arch, demo_tiny, tmp_path, stage1_results):
    command = STAGE1_BY_ARCH[arch]
    updates = _updates(command)
    loss_weights = list(ast.literal_eval(updates["loss_weights"]))
    assert loss_weights[5] > 0  # the README's pseudo-label weight (1.5)
    config_like = configs.merge_config(configs.default_config(1), {"loss_weights": loss_weights, "pseudo_labels": None})
    assert train_module.pseudo_label_dir(config_like) is None  # iteration 1: no pseudo-label files anywhere

    result = _stage1(arch, demo_tiny, tmp_path, stage1_results)
    checkpoint = _assert_trained(result, arch, 1, updates["wandb.name"])
    assert list(checkpoint["config"]["loss_weights"]) == loss_weights  # the README's, not demo's
    assert checkpoint["config"]["trainer"]["accumulate_grad_batches"] == int(
        updates.get("trainer.accumulate_grad_batches", 1))
    # the limit is honoured: Lightning steps the optimizer every accumulate_grad_batches batches and at the epoch end
    assert checkpoint["global_step"] == _expected_steps(updates)
    # iteration 1: the README's pseudo-label weight 1.5 meets no pseudo-label files, so the term is zero
    pseudo_losses = [float(row["train/student/loss_pseudo"]) for row in _metrics(result)
                     if row.get("train/student/loss_pseudo")]
    assert pseudo_losses and all(loss == 0.0 for loss in pseudo_losses), pseudo_losses


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("arch", list(STAGE2_BY_ARCH))
def test_stage2_readme_command_runs_from_its_stage1_checkpoint(arch, demo_tiny, tmp_path, stage1_results, monkeypatch):
    command = STAGE2_BY_ARCH[arch]
    updates = _updates(command)
    init_id = updates["t4_wrapper.model_init_id"]
    assert ARCH_OF_INIT_ID[init_id] == arch
    stage1 = _stage1(arch, demo_tiny, tmp_path, stage1_results)
    models_dir = configs.PRETRAINED_MODELS_DIR  # the temporary folder (isolated_run)
    models_dir.mkdir(parents=True)
    shutil.copyfile(stage1["best_model_path"], models_dir / (init_id + CHECKPOINT_SUFFIX))
    resolved = []

    def recording_resolve(name_or_path, folder=None):
        path = resolve_checkpoint(name_or_path, folder)
        resolved.append((name_or_path, path))
        return path

    monkeypatch.setattr(train_module, "resolve_checkpoint", recording_resolve)

    result = _run_command(command, *demo_tiny, tmp_path / "stage2")
    assert resolved == [(init_id, (models_dir / (init_id + CHECKPOINT_SUFFIX)).resolve())]  # the README's name
    checkpoint = _assert_trained(result, arch, 2, updates["wandb.name"])
    assert checkpoint["config"]["t4_wrapper"]["model_init_id"] == init_id  # verbatim: the name, not a path
    assert checkpoint["config"]["trainer"]["accumulate_grad_batches"] == int(updates["trainer.accumulate_grad_batches"])
    assert checkpoint["global_step"] == _expected_steps(updates)
    # stage 2 started from the stage-1 weights: after a step or two at the README's small learning rates the
    # CRNN is still close to the stage-1 CRNN (a random init would be far off)
    stage1_student = safe_load(stage1["best_model_path"])["student"]
    assert checkpoint["student"].keys() == stage1_student.keys()
    for key, value in checkpoint["student"].items():
        if key.startswith("cnn.") and value.is_floating_point() and "running_" not in key:  # BN stats move freely
            assert torch.allclose(value, stage1_student[key], atol=STAGE2_DRIFT), key
