"""Mid-epoch resume points: ``last.ckpt`` every N optimizer steps and when a run is interrupted.

Lightning writes ``last.ckpt`` after each validation (the ``ModelCheckpoint`` callbacks in
:mod:`helpers.training.train`); one epoch of the real recipe is long, so a run killed mid-epoch would lose it.
This callback adds two more moments, both at the end of a training step (``on_train_batch_end``, the point
Lightning knows how to restart from):

* every ``training.checkpoint_every_n_steps`` optimizer steps (``None``: off), for hard kills (SIGKILL,
  out-of-memory, a node lost) where nothing can be saved afterwards;
* on Ctrl-C (SIGINT) or SIGTERM (cluster preemption, ``scancel``): the step being trained finishes, the
  checkpoint is written and the run stops with :class:`RunInterrupted` (a ``KeyboardInterrupt``, so
  Lightning shuts down gracefully and the process exits with status 1). A second Ctrl-C stops at once.

Resume with ``ckpt_path=<run>/checkpoints/last.ckpt``: the run continues at the same optimizer step with
the optimizer, scheduler, EMA teacher, RNG and sampler position of the moment it was saved
(tests/test_resume.py kills runs mid-epoch and compares them with an uninterrupted run).
With gradient accumulation the save waits for the end of the accumulation window (partial gradients are
not part of a checkpoint). In DDP every rank decides together (a SIGTERM to any rank stops all).
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


def rng_state() -> dict:
    """Torch's CPU (and CUDA) RNG states, stored in every checkpoint so a resumed run continues the same stream."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict | None) -> None:
    """Undo :func:`rng_state` (CUDA states only when the device count matches)."""
    if not state:
        return
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunInterrupted(KeyboardInterrupt):
    """Training stopped by a signal after writing a resume checkpoint."""


class ResumePoints(pl.Callback):
    def __init__(self, path: str | Path, every_n_steps: int | None = None):
        if every_n_steps is not None and int(every_n_steps) <= 0:
            raise ValueError(f"training.checkpoint_every_n_steps must be a positive integer or None, got {every_n_steps}")
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps) if every_n_steps else None
        self._signal: str | None = None
        self._previous: dict[int, object] = {}
        self._saved_step = -1

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self._signal = name
        log.warning("%s received: finishing this training step, then writing %s (Ctrl-C again to stop at once)",
                    name, self.path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._signal = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    # ------------------------------------------------------------------ saving
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % max(1, int(trainer.accumulate_grad_batches)) != 0:
            return  # mid-accumulation: the accumulated gradients are not part of a checkpoint
        interrupted = self._signal is not None
        if trainer.world_size > 1:
            interrupted = trainer.strategy.reduce_boolean_decision(interrupted, all=False)
        step = trainer.global_step
        periodic = self.every_n_steps is not None and step % self.every_n_steps == 0
        if (interrupted or periodic) and step != self._saved_step:
            trainer.save_checkpoint(self.path)
            self._saved_step = step
        if interrupted:
            log.warning("stopped at step %d; resume with ckpt_path=%s", step, self.path)
            raise RunInterrupted(f"stopped by {self._signal or 'a signal on another rank'} at step {step}; "
                                 f"resume with ckpt_path={self.path}")
