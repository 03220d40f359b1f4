"""Run bookkeeping: loggers (wandb, CSV), run metadata, CodeCarbon energy and THOP MACs.

- wandb through Lightning's ``WandbLogger`` (``wandb.name/project/tags/offline``): off-line automatically
  when no API key is configured (sync later with ``wandb sync``); ``WANDB_MODE=disabled`` switches it off
  (tests). A ``CSVLogger`` always writes ``metrics.csv`` into the run folder as well.
- Run metadata (resolved config, git commit, command line) goes to the loggers and into every checkpoint.
- Energy (DCASE asks for it): CodeCarbon's ``OfflineEmissionsTracker`` around training and around testing,
  CSVs next to the checkpoints, kWh logged as ``train/tot_energy_kWh`` / ``test/tot_energy_kWh``.
- Complexity: THOP MACs of the student for one 10 s clip, logged once as ``model/macs_per_10s``.
Energy and MACs are optional: anything failing there (no RAPL, no GPU, package missing) logs a warning and
the run continues.
"""
from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from configs import REPO_ROOT

log = logging.getLogger(__name__)

CODECARBON_COUNTRY = "AUT"  # the reference's setting (only used when the location cannot be measured)
CLIP_SAMPLES_10S = 160_000


def wandb_mode(offline_requested: bool) -> str:
    """"disabled", "offline" or "online": ``WANDB_MODE`` wins; else off-line when asked or not logged in."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("disabled", "offline", "online", "dryrun"):
        return "offline" if env == "dryrun" else env
    if offline_requested:
        return "offline"
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    try:
        logged_in = netrc.is_file() and "api.wandb.ai" in netrc.read_text()
    except OSError:
        logged_in = False
    return "online" if logged_in else "offline"


def make_loggers(config: Mapping, run_dir: Path, run_info: Mapping, *, csv_version: str = "") -> list:
    """CSV logger (always; ``run_dir/<csv_version>/metrics.csv``) and wandb logger (unless disabled)."""
    loggers: list = [CSVLogger(save_dir=str(run_dir), name="", version=csv_version)]
    wandb_cfg = dict(config["wandb"])
    mode = wandb_mode(bool(wandb_cfg["offline"]))
    if mode == "disabled":
        return loggers
    try:
        logger = WandbLogger(name=wandb_cfg["name"], project=wandb_cfg["project"],
                             tags=list(wandb_cfg["tags"] or []), save_dir=str(run_dir),
                             offline=mode == "offline", mode=mode)
        logger.log_hyperparams({"config": dict(config), "run_info": dict(run_info)})
        loggers.append(logger)
    except Exception as error:  # noqa: BLE001 - logging must never stop a run
        log.warning("wandb logging is off: %s", error)
    return loggers


def finish_loggers(loggers) -> None:
    """Close wandb runs (also after a failure), so off-line runs are complete on disk."""
    for logger in loggers:
        try:
            logger.finalize("success")
            if type(logger).__name__ == "WandbLogger":
                import wandb  # lazy: optional (a missing wandb is a warning)

                wandb.finish()
                # finish() returns once the run is closed, but the service may still hold part of the
                # off-line transaction log in its buffers; teardown waits until everything is written
                wandb.teardown()
        except Exception as error:  # noqa: BLE001
            log.warning("closing logger %s failed: %s", type(logger).__name__, error)


def git_commit(repo: Path) -> str | None:
    """The repository's HEAD commit (read-only ``git rev-parse``), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_metadata(stage: int) -> dict[str, Any]:
    """Git commit, command line and versions, stored with the run and in every checkpoint."""
    return {"stage": stage, "git_commit": git_commit(REPO_ROOT), "command_line": " ".join(sys.argv),
            "torch": str(torch.__version__), "lightning": str(pl.__version__)}


class EnergyCallback(pl.Callback):
    """CodeCarbon energy of training and testing (CSV files in ``output_dir``), logged in kWh; never fatal.
    ``project``: CodeCarbon's project name (default "DCASE Task 4 Stage <stage>")."""

    def __init__(self, output_dir: Path, stage: int | str, project: str | None = None):
        self.output_dir = Path(output_dir)
        self.stage = stage
        self.project = project or f"DCASE Task 4 Stage {stage}"  # CodeCarbon's project name
        self._trackers: dict[str, Any] = {}

    def _start(self, phase: str, trainer: pl.Trainer) -> None:
        if trainer.global_rank != 0:
            return
        try:
            from codecarbon import OfflineEmissionsTracker  # lazy: optional (a missing codecarbon is a warning)

            self.output_dir.mkdir(parents=True, exist_ok=True)
            gpu_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
            tracker = OfflineEmissionsTracker(
                project_name=f"{self.project}{', Test' if phase == 'test' else ''}",
                output_dir=str(self.output_dir), output_file=f"emissions_stage{self.stage}_{phase}.csv",
                country_iso_code=CODECARBON_COUNTRY, log_level="error", gpu_ids=gpu_ids, save_to_file=True)
            tracker.start()
            self._trackers[phase] = tracker
        except Exception as error:  # noqa: BLE001 - energy tracking must never stop a run
            log.warning("CodeCarbon energy tracking (%s) is off: %s", phase, error)

    def _stop(self, phase: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tracker = self._trackers.pop(phase, None)
        if tracker is None:
            return
        try:
            tracker.stop()
            kwh = float(tracker._total_energy.kWh)  # CodeCarbon has no public accessor for the total
            for logger in trainer.loggers:
                logger.log_metrics({f"{phase}/tot_energy_kWh": kwh}, step=trainer.global_step)
        except Exception as error:  # noqa: BLE001
            log.warning("CodeCarbon energy tracking (%s) failed: %s", phase, error)

    def on_train_start(self, trainer, pl_module):
        self._start("train", trainer)

    def on_train_end(self, trainer, pl_module):
        self._stop("train", trainer, pl_module)

    def on_test_start(self, trainer, pl_module):
        self._start("test", trainer)

    def on_test_end(self, trainer, pl_module):
        self._stop("test", trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception):
        for phase in list(self._trackers):
            self._stop(phase, trainer, pl_module)


def count_macs(pl_module) -> tuple[float, int] | None:
    """(MACs, parameters) of the student (front-ends included) for one 10 s clip with THOP, or None.

    A system with an ``inference_copy()`` method (waveform -> outputs, a CPU copy) is measured through it."""
    try:
        import thop  # lazy: optional (a missing thop is a warning)

        if hasattr(pl_module, "inference_copy"):
            module = pl_module.inference_copy().eval()
            with torch.no_grad():
                macs, _ = thop.profile(module, inputs=(torch.zeros(1, CLIP_SAMPLES_10S),), verbose=False)
            return float(macs), int(sum(p.numel() for p in module.parameters()))

        class _Inference(torch.nn.Module):
            def __init__(self, system):
                super().__init__()
                self.cnn_frontend = copy.deepcopy(system.cnn_frontend).cpu()
                self.transformer_frontend = copy.deepcopy(system.transformer_frontend).cpu()
                self.model = copy.deepcopy(system.student).cpu()

            def forward(self, audio):
                cnn = self.cnn_frontend(audio)
                return self.model(cnn, self.transformer_frontend(audio))[0]

        module = _Inference(pl_module).eval()
        with torch.no_grad():
            macs, params = thop.profile(module, inputs=(torch.zeros(1, CLIP_SAMPLES_10S),), verbose=False)
        return float(macs), int(sum(p.numel() for p in pl_module.student.parameters()))
    except Exception as error:  # noqa: BLE001 - complexity reporting must never stop a run
        log.warning("THOP MAC counting failed: %s", error)
        return None


class ComplexityCallback(pl.Callback):
    """Logs the student's MACs per 10 s and its parameter count once, at the start of training."""

    def on_train_start(self, trainer, pl_module):
        if trainer.global_rank != 0:
            return
        result = count_macs(pl_module)
        if result is None:
            return
        macs, params = result
        log.info("student: %.3g MACs per 10 s, %d parameters", macs, params)
        for logger in trainer.loggers:
            logger.log_metrics({"model/macs_per_10s": macs, "model/parameters": float(params)}, step=0)


__all__ = ["make_loggers", "finish_loggers", "run_metadata", "wandb_mode", "EnergyCallback", "ComplexityCallback",
           "count_macs"]
