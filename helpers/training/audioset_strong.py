"""The LightningModule of AudioSet-strong pre-training: augment, forward, supervised + distillation losses, PSDS.

PretrainedSED's ``PLModule`` (fschmid56/PretrainedSED ``ex_audioset_strong.py``) with the reference's weak branch
(CPJKU/cpjku_dcase24 ``ex_audioset_strong.py``), built from the project's pieces: the model is
``models.audioset_strong.ASStrongModel``, the front-end comes from ``models.factory``, the augmentations are
``helpers.training.augment``'s, the optimizer and schedule ``helpers.training.optim``'s, the metrics
``helpers.evaluation.audioset_strong``'s.

Training step (PretrainedSED's order): front-end in float32 with autocast off → frame shift (labels and teacher
targets rolled with the features) → mixup (p) → mixstyle (p) → time mask → FilterAugment (p, added in the log
domain) → frequency warping (p) → model → loss

    L = w_ss · BCE(strong logits, labels) + w_sd · BCE(strong logits, σ(teacher strong logits))
      + w_ws · BCE(weak logits, 527 weak labels) + w_wd · BCE(weak logits, σ(teacher weak logits))

(PretrainedSED: ``λ·KD + (1 − λ)·supervised`` = ``w_sd = λ``, ``w_ss = 1 − λ``). Rows without teacher targets
(a clip missing from the KD file) are left out of the distillation terms. Validation collects the median-filtered
strong logits of every evaluation clip and computes PSDS1 / macro PSDS1 / pAUROC once per validation.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from configs.audioset_strong import mixstyle_enabled
from data_util.audioset_strong import ClassList
from helpers.evaluation.audioset_strong import evaluate, evaluation_classes, median_filter_scores
from helpers.training import augment
from helpers.training.optim import build_optimizer, build_scheduler, learning_rates
from helpers.training.resume_points import restore_rng_state, rng_state
from models.audioset_strong import ASStrongModel, ASStrongWaveform
from models.compile import compile_in_place
from models.factory import build_transformer_frontend
from models.registry import arch_spec

log = logging.getLogger(__name__)

MIXUP_ALPHA = 0.2  # PretrainedSED's mixup: Beta(0.2, 0.2), c = max(c, 1 - c)
FREQ_WARP_MIN_CROP = 0.6  # PretrainedSED's RandomResizeCrop freq_scale (0.6, 1.0)
FRONTEND_FRAMES_PER_LABEL = 4.0  # 10 ms front-end frames per 40 ms label frame
MONITOR = "val/psds1_macro_averaged"
LOSS_WEIGHT_KEYS = ("strong_supervised_loss_weight", "strong_distillation_loss_weight", "weak_supervised_loss_weight",
                    "weak_distillation_loss_weight")


class ASStrongSystem(pl.LightningModule):
    """config: the resolved ``ex_audioset_strong`` config. net: the model (initialised). classes: its strong classes.
    eval_ground_truth / eval_durations: the evaluation clips' events ({clip: [(onset, offset, name)]}) and seconds.

    The Lightning hooks only (about 180 lines, over the project's ~150-line guide because the training step with its
    augmentation plan, the optimizer groups and the validation array are hooks of one object); the model, data,
    losses and metrics live in ``models.audioset_strong``, ``data_util.audioset_strong``, ``helpers.training.losses``
    and ``helpers.evaluation.audioset_strong``.
    """

    def __init__(self, config: Mapping[str, Any], net: ASStrongModel, classes: ClassList, *,
                 eval_ground_truth: Mapping | None = None, eval_durations: Mapping | None = None,
                 run_info: Mapping | None = None):
        super().__init__()
        self.config = copy.deepcopy(dict(config))
        self.net = net
        self.classes = classes
        self.frontend = build_transformer_frontend(self.config)
        self.units_per_db = arch_spec(self.config["arch"]).feature_units_per_db
        self.weights = {key: float(self.config[key]) for key in LOSS_WEIGHT_KEYS}
        if self.weights["weak_supervised_loss_weight"] <= 0 and self.weights["weak_distillation_loss_weight"] <= 0:
            self.net.weak_head.requires_grad_(False)  # no loss reaches it: keep it out of the optimizer (and DDP)
        if self.config["compile"]:
            compile_in_place(self.net, "the AudioSet-strong model")
        self.eval_ground_truth = dict(eval_ground_truth or {})
        self.eval_durations = dict(eval_durations or {})
        self.run_info = dict(run_info or {})
        # validation keeps the scores of the evaluated classes only, in one preallocated array (real eval set:
        # 16,935 clips x 250 frames x 407 classes, 6.9 GB in float32)
        self.eval_classes = evaluation_classes(classes.names, self.eval_ground_truth)
        self._eval_columns = [classes.index[name] for name in self.eval_classes]
        self._val_scores: np.ndarray | None = None
        self._val_names: list[str] = []
        self._val_losses: list[float] = []

    # ------------------------------------------------------------------ forward
    def features(self, audio: Tensor) -> Tensor:
        """Front-end features [B, 1, F, T] in float32 with autocast off (the front-end's train/eval mode applies:
        fPaSST draws its random band limits only in training)."""
        with torch.no_grad(), torch.autocast(device_type=audio.device.type, enabled=False):
            return self.frontend(audio.float()).float()

    def forward(self, audio: Tensor) -> Tensor:
        """Strong logits [B, C, 250] of waveforms [B, N] (no augmentation)."""
        return self.net(self.features(audio))[0]

    def inference_copy(self) -> ASStrongWaveform:
        """A CPU copy of front-end and model (waveform -> strong logits), for THOP's MAC count."""
        net = copy.deepcopy(self.net).cpu()
        net._compiled_call_impl = None  # a copy would share the original's compiled call (models.compile)
        return ASStrongWaveform(net, copy.deepcopy(self.frontend).cpu(), self.classes)

    # ------------------------------------------------------------------ training
    def _augment(self, features: Tensor, targets: list[Tensor], weak_targets: list[Tensor], has_kd: Tensor):
        aug = self.config["strong_augment"]
        time, mix = aug["time_augment"], aug["mix_augment"]
        ratios = [FRONTEND_FRAMES_PER_LABEL]
        if time["apply_shift"] and time["shift_range"] > 0:
            shifted = augment.frame_shift([features], targets, shift_range=float(time["shift_range"]),
                                          frames_per_label=ratios)
            features, targets = shifted.features[0], shifted.targets
        if mix["apply_mixup"] and augment.should_apply(float(mix["mixup_p"])):
            mixed = augment.mixup([features], targets + weak_targets, alpha=MIXUP_ALPHA)
            features = mixed.features[0]
            targets, weak_targets = mixed.targets[:len(targets)], mixed.targets[len(targets):]
            has_kd = has_kd & has_kd[mixed.perm]
        if mixstyle_enabled(self.config) and augment.should_apply(float(mix["mixstyle_p"])):
            features = augment.mixstyle(features, alpha=float(mix["mixstyle_alpha"]), p=1.0)
        if time["apply_mask"]:
            masked = augment.time_mask([features], targets, min_ratio=float(time["min_mask_ratio"]),
                                       max_ratio=float(time["max_mask_ratio"]), frames_per_label=ratios)
            features, targets = masked.features[0], masked.targets
        filt = aug["filter_augment"]
        if filt["apply"] and augment.should_apply(float(filt["p"])):
            features = augment.filter_augment(
                features, db_range=tuple(filt["filter_db_range"]), n_band=tuple(filt["filter_bands"]),
                min_bw=int(filt["filter_minimum_bandwidth"]), units_per_db=self.units_per_db)
        warp = aug["freq_warp"]
        if warp["apply"] and augment.should_apply(float(warp["p"])):
            features = augment.freq_warp(features, p=1.0, min_crop=FREQ_WARP_MIN_CROP)
        return features, targets, weak_targets, has_kd

    def training_step(self, batch: Mapping, batch_idx: int) -> Tensor:
        audio = batch["audio"].float()
        gain_db = float(self.config["strong_augment"]["gain_augment"])
        if gain_db > 0:
            audio = augment.gain(audio, min_db=-gain_db, max_db=gain_db)
        features = self.features(audio)
        has_kd = torch.as_tensor(batch["has_kd"], device=audio.device).bool()
        features, (labels, kd), (weak, weak_kd), has_kd = self._augment(
            features, [batch["strong"].float(), batch["kd_strong"].float()],
            [batch["weak"].float(), batch["weak_kd"].float()], has_kd)
        strong_logits, weak_logits = self.net(features)
        strong_logits, weak_logits = strong_logits.float(), weak_logits.float()
        zero = strong_logits.new_zeros(())
        w = self.weights
        terms = {
            "strong_supervised_loss": F.binary_cross_entropy_with_logits(strong_logits, labels)
            if w["strong_supervised_loss_weight"] > 0 else zero,
            "strong_distillation_loss": _rows_bce(strong_logits, kd, has_kd)
            if w["strong_distillation_loss_weight"] > 0 else zero,
            "weak_supervised_loss": F.binary_cross_entropy_with_logits(weak_logits, weak)
            if w["weak_supervised_loss_weight"] > 0 else zero,
            "weak_distillation_loss": _rows_bce(weak_logits, weak_kd, has_kd)
            if w["weak_distillation_loss_weight"] > 0 else zero,
        }
        total = sum(w[f"{name}_weight"] * value for name, value in terms.items())
        B = audio.shape[0]
        self.log_dict({f"train/{name}": value.detach() for name, value in terms.items()}, batch_size=B)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=B)
        self.log("train/epoch", float(self.current_epoch), batch_size=B)
        if self._trainer is not None and self.trainer.optimizers:
            for name, lr in learning_rates(self.trainer.optimizers[0]).items():
                self.log(f"trainer/lr_{name}", lr, batch_size=B)
        return total

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        opt = self.config["optimizer"]
        lr = float(opt["lr"])
        lr_pt = float(opt["lr_pt"]) if opt["lr_pt"] is not None else lr
        starts = {"pt": opt["initial_lr_pt"], "head": opt["initial_lr"]}
        groups, warmup_start = [], []
        for part, part_lr in (("pt", lr_pt), ("head", lr)):
            params = [(n, p) for n, p in self.net.named_parameters()
                      if p.requires_grad and n.startswith("model.") == (part == "pt")]
            start = 0.0 if starts[part] is None or part_lr <= 0 else float(starts[part]) / part_lr
            # weight decay only on >= 2-D parameters (PretrainedSED, after nanoGPT); biases and norms get none
            for suffix, chosen, decay in (("", [p for _, p in params if p.ndim >= 2], float(opt["weight_decay"])),
                                          ("_1d", [p for _, p in params if p.ndim < 2], 0.0)):
                if chosen:
                    groups.append({"params": chosen, "lr": part_lr, "weight_decay": decay, "name": part + suffix})
                    warmup_start.append(start)
        optimizer = build_optimizer(groups, adamw=bool(opt["adamw"]), weight_decay=float(opt["weight_decay"]),
                                    betas=opt["betas"])
        steps = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, steps, schedule_mode=opt["schedule_mode"],
                                    num_warmup_steps=int(opt["num_warmup_steps"]), gamma=float(opt["gamma"]),
                                    lr_end=float(opt["lr_end"]), warmup_start=warmup_start)
        log.info("optimizer: %d groups, %d optimizer steps expected", len(groups), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_scores, self._val_names, self._val_losses = None, [], []

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        strong_logits = self(batch["audio"]).float()  # [B, C, T]
        self._val_losses.append(float(F.binary_cross_entropy_with_logits(strong_logits, batch["strong"].float())))
        scores = strong_logits[:, self._eval_columns].transpose(1, 2).cpu().numpy()  # [B, T, evaluated classes]
        if self._val_scores is None:
            self._val_scores = np.empty((len(self.eval_ground_truth), *scores.shape[1:]), dtype=np.float32)
        start = len(self._val_names)
        self._val_scores[start:start + len(scores)] = median_filter_scores(scores, int(self.config["median_window"]))
        self._val_names.extend(batch["filename"])

    def on_validation_epoch_end(self) -> None:
        if (self._trainer is not None and self.trainer.sanity_checking) or not self._val_names:
            return
        scores = self._val_scores[:len(self._val_names)]
        truth = self.eval_ground_truth
        if len(self._val_names) < len(truth):  # e.g. trainer.limit_val_batches: the metrics of the clips seen
            log.warning("validation saw %d of the %d evaluation clips; the metrics cover those only",
                        len(self._val_names), len(truth))
            seen = set(self._val_names)
            truth = {clip: events for clip, events in truth.items() if clip in seen}
        validation = self.config["validation_strong"]
        result = evaluate(scores, self._val_names, self.eval_classes, truth, self.eval_durations,
                          class_chunk=int(validation["class_chunk"]), num_jobs=int(validation["num_jobs"]))
        values = result.logged("val/")
        values["val/loss"] = float(np.mean(self._val_losses))
        self.log_dict(values)
        log.info("validation: PSDS1 %.4f, macro PSDS1 %.4f, pAUROC %.4f (%d clips, %d classes)", result.psds1,
                 result.psds1_macro_averaged, result.pauroc, result.num_clips, result.num_classes)
        self._val_scores, self._val_names, self._val_losses = None, [], []

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["config"] = self.config
        checkpoint["classes"] = self.classes.as_rows()
        checkpoint["run_info"] = self.run_info
        checkpoint["rng_state"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_rng_state(checkpoint.get("rng_state"))


def _rows_bce(logits: Tensor, targets: Tensor, rows: Tensor) -> Tensor:
    """BCE with logits over the selected rows (0 when none is selected)."""
    if not bool(rows.any()):
        return logits.new_zeros(())
    return F.binary_cross_entropy_with_logits(logits[rows], targets[rows])


__all__ = ["ASStrongSystem", "MONITOR"]
