"""Run bookkeeping (helpers/training/run_logging.py): wandb mode and loggers, run metadata, CodeCarbon energy, THOP MACs.

Unit tests need no training: ``wandb_mode`` with an isolated ``HOME`` and no credentials, one real off-line
wandb run (no network; finished again), the callbacks driven with a stand-in trainer and missing or failing
``codecarbon`` / ``thop``. The integration tests share ONE tiny stage-1 training run (wandb off-line, the real
CodeCarbon and THOP) and check what it left on disk: the CodeCarbon CSVs next to ``checkpoints/``, the kWh and
MACs rows of ``metrics.csv``, one wandb run, and ``run_info`` / ``config`` in the checkpoints.
"""
from __future__ import annotations

import copy
import csv
import logging
import os
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

import configs
from helpers.training.run_logging import (
    ComplexityCallback, EnergyCallback, finish_loggers, git_commit, make_loggers, run_metadata, wandb_mode,
)
from models.checkpoints import safe_load
from tests.test_training import one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parent.parent
LOGGER_NAME = "helpers.training.run_logging"


def _stage1(updates: dict) -> dict:
    """A complete stage-1 config (the loggers read resolved configs) with ``updates`` applied."""
    return configs.merge_config(configs.default_config(1), updates)


def head_commit() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def isolate_wandb(mp: pytest.MonkeyPatch, home: Path) -> None:
    """A machine never logged in to wandb: no ``WANDB_MODE`` / API key, ``HOME`` and wandb's folders in ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    # setenv first so that undo restores the value from before (Lightning's off-line WandbLogger sets
    # WANDB_MODE=dryrun for the whole process; it must not leak into later tests)
    for name in ("WANDB_MODE", "WANDB_API_KEY", "NETRC"):
        mp.setenv(name, "")
        mp.delenv(name)
    mp.setenv("HOME", str(home))
    for name, sub in (("WANDB_CONFIG_DIR", ".config/wandb"), ("WANDB_CACHE_DIR", ".cache/wandb"),
                      ("WANDB_DATA_DIR", ".local/share/wandb")):
        mp.setenv(name, str(home / sub))
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_CONSOLE", "off")  # no stdout/stderr wrapping under pytest's capture


def count_wandb_inits(mp: pytest.MonkeyPatch) -> list:
    """Patch ``wandb.init`` to record its keyword arguments (Lightning looks it up at call time)."""
    import wandb

    calls: list = []
    real_init = wandb.init

    def init(*args, **kwargs):
        calls.append(kwargs)
        return real_init(*args, **kwargs)

    mp.setattr(wandb, "init", init)
    return calls


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


class RecordingLogger:
    """Stands in for a Lightning logger: remembers every ``log_metrics`` call."""

    def __init__(self):
        self.calls: list[tuple[dict, int]] = []

    def log_metrics(self, metrics, step=None):
        self.calls.append((dict(metrics), step))


def fake_trainer(global_rank: int = 0, global_step: int = 3) -> SimpleNamespace:
    return SimpleNamespace(global_rank=global_rank, global_step=global_step, loggers=[RecordingLogger()])


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------------------------------- wandb mode
@pytest.fixture
def not_logged_in(monkeypatch, tmp_path):
    isolate_wandb(monkeypatch, tmp_path / "home")
    return tmp_path / "home"


def test_offline_when_not_logged_in(not_logged_in):
    assert wandb_mode(False) == "offline"


def test_online_with_api_key(not_logged_in, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    assert wandb_mode(False) == "online"


def test_netrc_login(not_logged_in):
    netrc = not_logged_in / ".netrc"
    netrc.write_text("machine example.org\n  login someone\n  password secret\n")
    assert wandb_mode(False) == "offline"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    assert wandb_mode(False) == "online"


def test_offline_key_forces_offline(not_logged_in, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    assert wandb_mode(True) == "offline"


@pytest.mark.parametrize("env, mode", [("disabled", "disabled"), ("DISABLED", "disabled"), ("offline", "offline"),
                                       ("dryrun", "offline"), ("online", "online")])
def test_wandb_mode_env_wins(not_logged_in, monkeypatch, env, mode):
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_MODE", env)
    assert wandb_mode(False) == mode
    if mode == "disabled":
        assert wandb_mode(True) == "disabled"


def test_disabled_gives_only_csv(not_logged_in, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # logged in, but WANDB_MODE=disabled wins
    monkeypatch.setenv("WANDB_MODE", "disabled")
    inits = count_wandb_inits(monkeypatch)
    run_dir = tmp_path / "run"
    loggers = make_loggers(_stage1({"wandb": {"name": "n"}}), run_dir, {"stage": 1})
    assert [type(logger) for logger in loggers] == [CSVLogger]
    loggers[0].log_metrics({"a": 1.0}, step=0)
    finish_loggers(loggers)
    assert (run_dir / "metrics.csv").is_file()
    assert not inits and not (run_dir / "wandb").exists()


def test_offline_wandb_run(not_logged_in, monkeypatch, tmp_path):
    """Not logged in: one off-line wandb run per make_loggers, holding the config and run metadata; closed again."""
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    inits = count_wandb_inits(monkeypatch)
    run_dir = tmp_path / "run"
    config = _stage1({"arch": "atst_frame", "wandb": {"name": "tiny", "project": "t4_tests", "tags": ["a", "b"]}})
    run_info = run_metadata(1)
    loggers = make_loggers(config, run_dir, run_info)
    try:
        assert [type(logger) for logger in loggers] == [CSVLogger, WandbLogger]
        run = loggers[1].experiment
        assert run.settings.mode == "offline"
        assert (run.name, run.project, tuple(run.tags)) == ("tiny", "t4_tests", ("a", "b"))
        assert run.config["config"]["arch"] == "atst_frame"
        assert run.config["run_info"]["git_commit"] == head_commit()
        assert run.config["run_info"]["command_line"] == " ".join(sys.argv)
        for logger in loggers:
            logger.log_metrics({"x": 1.0}, step=0)
        assert loggers[1].experiment is run
    finally:
        finish_loggers(loggers)
    assert wandb.run is None
    assert len(inits) == 1 and inits[0]["mode"] == "offline" and inits[0]["dir"] == str(run_dir)
    runs = offline_runs(run_dir)
    assert len(runs) == 1, runs
    # the run's transaction log (synced later with `wandb sync`) holds the config as JSON
    data = b"".join(path.read_bytes() for path in runs[0].glob("*.wandb"))
    assert head_commit().encode() in data and b"command_line" in data


def test_wandb_unavailable_is_a_warning(not_logged_in, monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        loggers = make_loggers(_stage1({}), tmp_path / "run", {"stage": 1})
    assert [type(logger) for logger in loggers] == [CSVLogger]
    assert any("wandb logging is off" in message for message in warnings_of(caplog))
    finish_loggers(loggers)


# ---------------------------------------------------------------------------------------------- metadata
def test_run_metadata(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ex_stage1.py", "with", "demo", "seed=3"])
    meta = run_metadata(2)
    assert meta["stage"] == 2
    assert meta["git_commit"] == head_commit() and len(meta["git_commit"]) == 40
    assert meta["command_line"] == "ex_stage1.py with demo seed=3"
    assert meta["torch"] == str(torch.__version__) and meta["lightning"] == str(pl.__version__)


def test_git_commit_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit(tmp_path) is None
    assert git_commit(tmp_path / "missing") is None


# ---------------------------------------------------------------------------------------------- energy
def run_energy_hooks(callback: EnergyCallback, trainer) -> None:
    callback.on_train_start(trainer, None)
    callback.on_train_end(trainer, None)
    callback.on_test_start(trainer, None)
    callback.on_test_end(trainer, None)
    callback.on_exception(trainer, None, RuntimeError("boom"))


def test_energy_without_codecarbon(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    trainer = fake_trainer()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        run_energy_hooks(EnergyCallback(tmp_path / "codecarbon", 1), trainer)
    messages = warnings_of(caplog)
    assert any("CodeCarbon energy tracking (train) is off" in m for m in messages), messages
    assert any("CodeCarbon energy tracking (test) is off" in m for m in messages), messages
    assert trainer.loggers[0].calls == []


class FakeTracker:
    """Stands in for codecarbon's OfflineEmissionsTracker; ``fail`` names the method that raises."""

    instances: list = []
    fail = ""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.started = self.stopped = False
        self._total_energy = SimpleNamespace(kWh=0.25)
        type(self).instances.append(self)

    def start(self):
        if self.fail == "start":
            raise RuntimeError("no RAPL here")
        self.started = True

    def stop(self):
        if self.fail == "stop":
            raise RuntimeError("power reading failed")
        self.stopped = True


@pytest.fixture
def fake_codecarbon(monkeypatch):
    module = types.ModuleType("codecarbon")
    tracker = type("Tracker", (FakeTracker,), {"instances": [], "fail": ""})
    module.OfflineEmissionsTracker = tracker
    monkeypatch.setitem(sys.modules, "codecarbon", module)
    return tracker


def test_energy_logs_kwh(fake_codecarbon, tmp_path):
    trainer = fake_trainer(global_step=7)
    callback = EnergyCallback(tmp_path / "codecarbon", 2)
    callback.on_train_start(trainer, None)
    callback.on_train_end(trainer, None)
    callback.on_test_start(trainer, None)
    callback.on_test_end(trainer, None)
    assert trainer.loggers[0].calls == [({"train/tot_energy_kWh": 0.25}, 7), ({"test/tot_energy_kWh": 0.25}, 7)]
    train_tracker, test_tracker = fake_codecarbon.instances
    assert train_tracker.started and train_tracker.stopped and test_tracker.stopped
    assert train_tracker.kwargs["output_dir"] == str(tmp_path / "codecarbon")
    assert train_tracker.kwargs["output_file"] == "emissions_stage2_train.csv"
    assert test_tracker.kwargs["output_file"] == "emissions_stage2_test.csv"
    assert (tmp_path / "codecarbon").is_dir()


def test_energy_stopped_on_exception(fake_codecarbon, tmp_path):
    trainer = fake_trainer()
    callback = EnergyCallback(tmp_path, 1)
    callback.on_train_start(trainer, None)
    callback.on_exception(trainer, None, KeyboardInterrupt())
    assert fake_codecarbon.instances[0].stopped
    assert trainer.loggers[0].calls == [({"train/tot_energy_kWh": 0.25}, 3)]


def test_energy_only_on_rank_zero(fake_codecarbon, tmp_path):
    trainer = fake_trainer(global_rank=1)
    run_energy_hooks(EnergyCallback(tmp_path, 1), trainer)
    assert fake_codecarbon.instances == [] and trainer.loggers[0].calls == []


@pytest.mark.parametrize("fail, message", [("start", "is off"), ("stop", "failed")])
def test_energy_tracker_failure_is_a_warning(fake_codecarbon, tmp_path, caplog, fail, message):
    fake_codecarbon.fail = fail
    trainer = fake_trainer()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        run_energy_hooks(EnergyCallback(tmp_path, 1), trainer)
    messages = warnings_of(caplog)
    assert any(f"CodeCarbon energy tracking (train) {message}" in m for m in messages), messages
    assert trainer.loggers[0].calls == []


# ---------------------------------------------------------------------------------------------- complexity
def test_complexity_without_thop(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "thop", None)
    trainer = fake_trainer()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        ComplexityCallback().on_train_start(trainer, SimpleNamespace())
    assert any("THOP MAC counting failed" in m for m in warnings_of(caplog))
    assert trainer.loggers[0].calls == []


def test_complexity_failure_is_a_warning(caplog):
    import thop  # noqa: F401 (a locked dependency: its absence is an error, not a skip)
    trainer = fake_trainer()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        ComplexityCallback().on_train_start(trainer, SimpleNamespace())  # not a SEDSystem: no front-ends
    assert any("THOP MAC counting failed" in m for m in warnings_of(caplog))
    assert trainer.loggers[0].calls == []


# ---------------------------------------------------------------------------------------------- one tiny run
@pytest.fixture(scope="module")
def tiny_run(demo_tiny, tmp_path_factory):
    """One tiny stage-1 run (2 training steps, real CodeCarbon and THOP, wandb off-line), shared by the tests below."""
    from helpers.training.train import train

    root, resources = demo_tiny
    out = tmp_path_factory.mktemp("run_logging")
    config = tiny_config(1, "atst_frame", root, resources, out / "runs", limit_train_batches=2,
                         limit_val_batches=1, limit_test_batches=1)
    threads = torch.get_num_threads()  # the function-scoped one_torch_thread is not active yet
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            isolate_wandb(mp, out / "home")
            inits = count_wandb_inits(mp)
            result = train(copy.deepcopy(config), 1)
            import wandb

            open_run = wandb.run
    finally:
        torch.set_num_threads(threads)
    run_dir = Path(result["run_dir"])
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return SimpleNamespace(config=config, result=result, run_dir=run_dir, rows=rows, inits=inits,
                           open_run=open_run, command_line=" ".join(sys.argv))


def column(rows: list[dict], key: str) -> list[float]:
    """The non-empty values of ``key`` in metrics.csv."""
    return [float(row[key]) for row in rows if row.get(key)]


@pytest.mark.integration
def test_run_energy_next_to_checkpoints(tiny_run):
    import codecarbon  # noqa: F401 (a locked dependency: its absence is an error, not a skip)
    run_dir = tiny_run.run_dir
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    for phase in ("train", "test"):
        csv_file = run_dir / "codecarbon" / f"emissions_stage1_{phase}.csv"
        assert csv_file.is_file(), sorted(os.listdir(run_dir))
        with open(csv_file, newline="") as file:
            assert len(list(csv.DictReader(file))) >= 1, csv_file
        kwh = column(tiny_run.rows, f"{phase}/tot_energy_kWh")
        assert len(kwh) == 1 and kwh[0] > 0, (phase, kwh)


@pytest.mark.integration
def test_run_macs_logged_once(tiny_run):
    import thop  # noqa: F401 (a locked dependency: its absence is an error, not a skip)
    macs = column(tiny_run.rows, "model/macs_per_10s")
    params = column(tiny_run.rows, "model/parameters")
    assert len(macs) == 1 and macs[0] > 0, macs
    assert len(params) == 1 and params[0] > 0 and params[0] == int(params[0]), params


@pytest.mark.integration
def test_run_one_wandb_run(tiny_run):
    """Training and testing log to the same off-line wandb run, closed at the end."""
    assert len(tiny_run.inits) == 1, tiny_run.inits
    assert tiny_run.inits[0]["mode"] == "offline"
    assert tiny_run.open_run is None
    runs = offline_runs(tiny_run.run_dir)
    assert len(runs) == 1, runs
    data = b"".join(path.read_bytes() for path in runs[0].glob("*.wandb"))
    assert head_commit().encode() in data


@pytest.mark.integration
def test_run_checkpoints_hold_run_info_and_config(tiny_run):
    checkpoints = sorted((tiny_run.run_dir / "checkpoints").glob("*.ckpt"))
    assert {path.name for path in checkpoints} >= {"last.ckpt"} and len(checkpoints) >= 2, checkpoints
    for path in checkpoints:
        checkpoint = safe_load(path)
        info = checkpoint["run_info"]
        assert info["git_commit"] == head_commit(), path
        assert info["command_line"] == tiny_run.command_line, path
        assert info["stage"] == 1 and info["run_dir"] == str(tiny_run.run_dir), path
        assert info["torch"] == str(torch.__version__) and info["lightning"] == str(pl.__version__)
        assert checkpoint["config"] == tiny_run.config, path
