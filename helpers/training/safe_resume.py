"""Resuming a run (``ckpt_path=<run>/checkpoints/last.ckpt``) without trusting the file.

Lightning reads a resume checkpoint with its own ``torch.load``; for a URL it downloads the file with
``weights_only=False``, i.e. it runs whatever the pickle holds. Here instead:

* :func:`check_resume_checkpoint` runs before anything is built or written: it refuses URLs (nothing is
  downloaded at run time; download the file yourself and pass its path), reads the file with
  ``models.checkpoints.safe_load`` (allow-listed classes only, our messages), checks that it is a training
  checkpoint of the same ``arch`` (naming both) and warns when ``training.batch_sizes`` changed (what that does to
  the sampler's position);
* :class:`SafeCheckpointIO` is the trainer's checkpoint plugin: every file Lightning loads goes through
  ``safe_load`` too (the checked dict is handed over, so the file is read once).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

import configs
from models.checkpoints import CheckpointError, arch_of_state_dict, safe_load, sed_state_dict

log = logging.getLogger(__name__)

DATAMODULE_STATE_KEY = "T4DataModule"  # Lightning stores a datamodule's state_dict under its class name
TRAINING_ENTRIES = ("state_dict", "optimizer_states")  # what Lightning needs to resume a fit


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with every load through ``safe_load`` (never a URL, never arbitrary pickles).

    ``preloaded``: ``{path: checkpoint dict}`` already read and checked; each is handed out once."""

    def __init__(self, preloaded: Mapping[str, dict] | None = None):
        super().__init__()
        self._preloaded = {_key(path): checkpoint for path, checkpoint in (preloaded or {}).items()}

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = self._preloaded.pop(_key(path), None)
        return checkpoint if checkpoint is not None else safe_load(path)


def _key(path) -> str:
    return str(path) if configs.is_url(path) else os.path.abspath(os.fspath(path))


def check_resume_checkpoint(config: Mapping, path) -> tuple[dict, list[str]]:
    """(the checkpoint, warnings) of the resume file ``path`` (``ckpt_path``) for a run of ``config``.

    Raises ``ConfigError`` for a URL, ``FileNotFoundError`` / ``CheckpointError`` (our messages) for a missing,
    unsafe or foreign file, and ``CheckpointError`` naming both archs when it holds another ``arch``'s model.
    """
    configs.refuse_url(path, "ckpt_path")
    checkpoint = safe_load(path)
    absent = [entry for entry in TRAINING_ENTRIES if entry not in checkpoint]
    if absent:
        raise CheckpointError(
            f"ckpt_path={path}: not a training checkpoint to resume (no {' / '.join(absent)}). To start from a stage "
            "checkpoint's weights use t4_wrapper.model_init_id=<it>; ckpt_path resumes a run from its "
            "checkpoints/last.ckpt")
    stored = checkpoint.get("config") if isinstance(checkpoint.get("config"), Mapping) else {}
    held = stored.get("arch") or arch_of_state_dict(sed_state_dict(checkpoint, "student", source=str(path)))
    arch = config.get("arch")
    if held and arch and held != arch:
        raise CheckpointError(f"ckpt_path={path} holds a {held} model, but arch={arch}: resume with arch={held} "
                              "(and the config the run was started with)")
    warnings = _batch_size_warnings(config, stored, checkpoint)
    for warning in warnings:
        log.warning("%s", warning)
    return checkpoint, warnings


def _batch_size_warnings(config: Mapping, stored: Mapping, checkpoint: Mapping) -> list[str]:
    before = (stored.get("training") or {}).get("batch_sizes")
    now = (config.get("training") or {}).get("batch_sizes")
    if before is None or now is None or tuple(map(int, before)) == tuple(map(int, now)):
        return []
    sampler = (checkpoint.get(DATAMODULE_STATE_KEY) or {}).get("sampler") or {}
    position = (f"epoch {sampler['epoch']} resumes after {sampler['batches_done']} batches"
                if {"epoch", "batches_done"} <= set(sampler) else "the resumed epoch resumes after its saved batches")
    return [f"training.batch_sizes={tuple(map(int, now))} differs from the checkpoint's {tuple(map(int, before))}: "
            f"the sampler's {position}, now counted in batches of the new sizes, so this epoch skips or repeats some "
            "clips (later epochs are complete); the learning-rate schedule continues by optimizer steps"]
