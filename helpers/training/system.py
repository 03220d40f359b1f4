"""The LightningModule of both training stages: student + EMA teacher, augmentations, masked losses, metrics.

One system for stage 1 and stage 2 of the DCASE 2024 Task 4 winning recipe (Schmid et al., arXiv 2407.12997;
reference code CPJKU/cpjku_dcase24 ``T4Module`` in ``ex_stage1.py`` / ``ex_stage2.py``, two 2,000-line copies).
What differs between the stages is a :class:`helpers.training.stages.StageStrategy`; the loss terms are the pure
functions of ``helpers.training.losses``; metrics come from ``helpers.evaluation.metrics`` / ``helpers.evaluation.maestro``.

Training step: front-ends on the device in float32 with autocast off (the CNN branch's linear mel and the
transformer's own features) → label hardening → batch augmentations (``helpers.training.stages.augment_batch``) →
labels masked to the (mixed) valid classes → student forward with ``class_mask=(valid, None)`` → supervised,
consistency and pseudo-label losses → EMA teacher update before the next optimizer step.

Deliberate differences from the reference (docs/DIFFERENCES.md): the teacher runs in eval mode (no dropout;
its BatchNorm statistics follow the student's by EMA of buffers); the ICT loss counts every row group once
(the reference counted the joint DESED+MAESTRO strong term twice); rows without pseudo-labels get no
pseudo-label loss; sub-batches are named slices of the sampler; RNG states are checkpointed so a resumed run
continues the same random stream.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from helpers.training import augment, losses
from helpers.training.ema import ema_update, make_teacher
from helpers.training.optim import build_optimizer, build_scheduler, learning_rates
from helpers.training.resume_points import restore_rng_state, rng_state
from helpers.training.stages import augment_batch, group_slice, masked_targets, rows_vector, step_features, strategy_for
from helpers.training.validation import STUDENT, TEACHER, Collector, EvalSet, test_results, validation_results
from models.compile import compile_in_place
from models.factory import build_frontends
from models.registry import arch_spec

log = logging.getLogger(__name__)

# Which sub-batch rows come from which data sets (sanity check of the sampler's composition).
SUB_BATCH_SOURCES = {
    "maestro": ("maestro_real_train",),
    "desed_strong": ("strong_train", "external_strong_train"),
    "synth": ("synth_train",),
    "weak": ("weak_train",),
    "unlabeled": ("unlabeled_train",),
}


# ------------------------------------------------------------------------------------------------ the system
class SEDSystem(pl.LightningModule):
    """Stage 1 / stage 2 training of the SED model (student) with a mean teacher.

    The Lightning hooks only (about 230 lines, over the project's ~150-line guide because ``training_step`` keeps
    the recipe's whole loss in one place to read against the paper): models come from ``models.factory``, batch
    preparation and augmentation from ``helpers.training.stages``, loss terms from ``helpers.training.losses``,
    validation / test metrics from ``helpers.training.validation``.

    config: the experiment's resolved config (plain dict). stage: 1 or 2. student: the SED model, already
    initialised (see ``helpers.training.train.initialise_student``); the teacher is its deep copy (or ``teacher``).
    sub_batch_slices: the sampler's ``{name: slice}`` of a training batch. eval_sets: ``{set name: EvalSet}``
    of every validation and test set. run_info: stored in every checkpoint (git hash, command line, ...).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        stage: int,
        student: nn.Module,
        *,
        teacher: nn.Module | None = None,
        sub_batch_slices: Mapping[str, slice] | None = None,
        eval_sets: Mapping[str, EvalSet] | None = None,
        run_info: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.config = copy.deepcopy(dict(config))
        self.stage = stage
        self.strategy = strategy_for(stage)
        self.arch = self.config["arch"]
        self.student = student
        self.teacher = teacher if teacher is not None else make_teacher(student)
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        if self.config["compile"]:  # after the teacher's deep copy (see models.compile)
            compile_in_place(self.student, "the student")
            compile_in_place(self.teacher, "the teacher")
        # what trains is fixed now, before DDP wraps the model (it registers every parameter requiring grad)
        self.strategy.param_groups(self.student, self.config["optimizer"])
        self.cnn_frontend, self.transformer_frontend = build_frontends(self.config)
        self.sub_batch_slices = dict(sub_batch_slices or {})
        self.eval_sets = dict(eval_sets or {})
        self.run_info = dict(run_info or {})
        self.loss_weights = tuple(float(w) for w in self.config["loss_weights"])
        loss_cfg = self.config["loss"]
        self.strong_loss = losses.loss_function("BCELoss")
        self.weak_loss = losses.loss_function("BCELoss")
        self.maestro_loss = losses.loss_function(loss_cfg["maestro_type"], "loss.maestro_type")
        self.selfsup_loss = losses.loss_function(loss_cfg["selfsup_type"], "loss.selfsup_type")
        self.pseudo_loss = losses.loss_function(loss_cfg["pseudo_type"], "loss.pseudo_type")
        self.transformer_units_per_db = arch_spec(self.arch).feature_units_per_db
        self._collector = Collector()
        self._share_frozen_transformer = False  # set at the start of fit (on_train_start)

    # ------------------------------------------------------------------ features and forward
    def _frontends(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """(linear CNN mel [B, 1, 128, 626], transformer features [B, 1, F, T]) in float32, autocast off."""
        with torch.no_grad(), torch.autocast(device_type=audio.device.type, enabled=False):
            audio = audio.float()
            return self.cnn_frontend.mel_amplitude(audio), self.transformer_frontend(audio).float()

    def predict_strong(self, audio: Tensor, model: str = STUDENT, class_mask: Tensor | None = None):
        """(strong [B, C, T], weak [B, C]) probabilities of ``model`` for waveforms [B, N] (no augmentation)."""
        cnn, transformer = self._frontends(audio)
        return getattr(self, model)(self.cnn_frontend.normalize(cnn), transformer, class_mask=class_mask)

    # ------------------------------------------------------------------ training
    def _rows(self, batch: Mapping) -> dict[str, slice]:
        slices = self.sub_batch_slices
        if not slices:
            raise RuntimeError("SEDSystem needs sub_batch_slices (the sampler's) to train")
        names = batch["dataset"]
        for sub_batch, rows in slices.items():
            found = set(names[rows])
            if not found <= set(SUB_BATCH_SOURCES[sub_batch]):
                raise ValueError(
                    f"training batch rows {rows} should come from {SUB_BATCH_SOURCES[sub_batch]} "
                    f"(sub-batch {sub_batch!r}) but come from {sorted(found)}: sampler and batch layout disagree"
                )
        return slices

    def frozen_transformers_identical(self) -> bool:
        """Stage 1 with the teacher's transformer equal to the student's (parameters and buffers), which the
        EMA keeps exactly (``lerp`` of equal values is exact; the frozen student never changes): then the
        transformer, frozen and in eval mode, gives the teacher the same output as the student for the same
        input, so a training step computes it once (half of stage 1's transformer cost)."""
        if self.strategy.train_transformer:
            return False
        student, teacher = self.student.as_model, self.teacher.as_model
        pairs = list(zip(student.parameters(), teacher.parameters())) + list(zip(student.buffers(), teacher.buffers()))
        return all(a.shape == b.shape and torch.equal(a, b.to(a.device)) for a, b in pairs)

    def on_train_start(self) -> None:
        self._share_frozen_transformer = self.frozen_transformers_identical()
        if not self.strategy.train_transformer and not self._share_frozen_transformer:
            log.info("stage 1: the teacher's transformer differs from the student's; computing both")

    def training_step(self, batch: Mapping, batch_idx: int) -> Tensor:
        cfg, strategy, w = self.config, self.strategy, self.loss_weights
        strategy.set_train_modes(self.student, self.teacher, self.transformer_frontend)
        rows = self._rows(batch)
        audio = batch["audio"].float()
        B = audio.shape[0]
        maestro_rows = rows_vector(B, rows["maestro"], audio.device)

        gain_db = float(cfg["gain_augment"])
        if gain_db > 0:
            audio = augment.gain(audio, min_db=-gain_db, max_db=gain_db)
        cnn, transformer = self._frontends(audio)
        features = step_features(batch, rows, cnn, transformer, cfg["loss"])
        aug = augment_batch(features, rows, strategy, cfg, transformer_units_per_db=self.transformer_units_per_db)
        # targets restricted to the valid classes (after mixup extended the mask)
        valid, labels, weak_labels, pseudo = masked_targets(
            aug, rows, mask_pseudo=not (self.stage == 1 and cfg["pseudo_strong_no_class_mask"]))  # a stage-1 key

        tokens = None  # the frozen transformer's output, shared by student and teacher (stage 1)
        if self._share_frozen_transformer and aug.teacher_transformer is aug.student_transformer:
            with torch.no_grad():
                tokens = self.student.as_model(aug.student_transformer)
        (strong, weak), (strong_all, weak_all) = self.student(
            self.cnn_frontend.normalize(aug.student_cnn), aug.student_transformer, class_mask=(valid, None),
            transformer_tokens=tokens)
        sup = losses.supervised_terms(strong, weak, labels, weak_labels, rows, strong_loss=self.strong_loss,
                                      maestro_loss=self.maestro_loss, weak_loss=self.weak_loss)
        supervised = sup.weighted_strong(w) / strategy.strong_divisor + sup.weighted_weak(w) / strategy.weak_divisor

        no_class_mask = bool(cfg["ssl_no_class_mask"])
        with torch.no_grad():
            teacher_strong, teacher_weak = self.teacher(
                self.cnn_frontend.normalize(aug.teacher_cnn), aug.teacher_transformer,
                class_mask=None if no_class_mask else valid, transformer_tokens=tokens)
        student_strong, student_weak = (strong_all, weak_all) if no_class_mask else (strong, weak)
        ssl_scale = losses.ssl_weight(self.global_step, int(cfg["ssl_loss_warmup_steps"]),
                                      w[losses.W_SSL], float(cfg["ssl_scale_max"]))
        use_ict = strategy.allow_ict and bool(cfg["use_ict_loss"]) and bool(aug.mixups)
        if use_ict:
            consistency = self._ict_loss(student_strong, student_weak, teacher_strong, teacher_weak, aug.mixups, rows)
            ssl = consistency * ssl_scale / strategy.ict_ssl_divisor
            self.log("train/student/tot_ict_loss", consistency, batch_size=B)
        else:
            ssl_rows = torch.ones(B, dtype=torch.bool, device=audio.device) if cfg["include_maestro_ssl"] \
                else ~maestro_rows
            weak_ssl_rows = ssl_rows & ~maestro_rows if cfg["exclude_maestro_weak_ssl"] else ssl_rows
            strong_term, weak_term = losses.mean_teacher_terms(
                student_strong, student_weak, teacher_strong, teacher_weak, ssl_rows, weak_ssl_rows,
                self.selfsup_loss)
            ssl = (strong_term + weak_term / strategy.mean_teacher_weak_divisor) * ssl_scale
            self.log("train/student/strong_self_sup_loss", strong_term, batch_size=B)
            self.log("train/student/weak_self_sup_loss", weak_term, batch_size=B)

        pseudo_term = torch.zeros((), device=audio.device)
        if w[losses.W_PSEUDO] > 0:
            pseudo_strong = strong_all if self.stage == 1 and cfg["pseudo_strong_no_class_mask"] else strong
            pseudo_term = losses.pseudo_label_loss(pseudo_strong, pseudo, batch["has_pseudo"].bool(), maestro_rows,
                                                   w, self.pseudo_loss)
        total = strategy.total_scale * (supervised + ssl + pseudo_term)

        log_values = {
            "train/student/loss_maestro": sup.maestro, "train/student/loss_desed_real_strong": sup.real_strong,
            "train/student/loss_desed_synth": sup.synth, "train/student/loss_weak": sup.weak,
            "train/student/tot_supervised": supervised, "train/student/tot_ssl": ssl,
            "train/student/loss_pseudo": pseudo_term, "train/ssl_weight": ssl_scale, "train/loss": total,
        }
        self.log_dict(log_values, batch_size=B)
        self.log("train/epoch", float(self.current_epoch), batch_size=B)
        if self._trainer is not None and self.trainer.optimizers:
            for name, lr in learning_rates(self.trainer.optimizers[0]).items():
                if name in ("cnn", "rnn", "pt0"):
                    self.log(f"train/{name}_lr", lr, batch_size=B)
        return total

    def _ict_loss(self, student_strong, student_weak, teacher_strong, teacher_weak, mixups, rows) -> Tensor:
        """Interpolation consistency: the teacher's predictions on the un-mixed input, mixed like the student's
        input, regressed by the student per row group (weak, unlabeled, DESED strong, MAESTRO), each group once."""
        mixed_strong, mixed_weak = teacher_strong.clone(), teacher_weak.clone()
        for group_rows, result in mixups.values():
            mixed_strong[group_rows] = augment.apply_mixup_to(result.perm, result.coef, teacher_strong[group_rows])
            mixed_weak[group_rows] = augment.apply_mixup_to(result.perm, result.coef, teacher_weak[group_rows])
        maestro_weak_factor = 0.0 if self.config["exclude_maestro_weak_ssl"] else 1.0
        groups = [(rows["weak"], 1.0), (rows["unlabeled"], 1.0),
                  (group_slice(rows, ("desed_strong", "synth")), 1.0), (rows["maestro"], maestro_weak_factor)]
        total = student_strong.new_zeros(())
        for group_rows, weak_factor in groups:
            total = total + losses.ict_term(student_strong[group_rows], student_weak[group_rows],
                                            mixed_strong[group_rows], mixed_weak[group_rows], self.selfsup_loss,
                                            weak_factor=weak_factor)
        return total / self.strategy.ict_sum_divisor

    def on_before_zero_grad(self, optimizer) -> None:
        # EMA after each optimizer step (reference hook and alpha schedule); the teacher is in eval mode, so
        # its BatchNorm statistics follow the student's (ema_buffers=True)
        ema_update(self.teacher, self.student, self.global_step, float(self.config["ema_factor"]),
                   ema_buffers=True)

    def configure_optimizers(self):
        opt_cfg = self.config["optimizer"]
        groups = self.strategy.param_groups(self.student, opt_cfg)
        optimizer = build_optimizer(groups, adamw=bool(opt_cfg["adamw"]),
                                    weight_decay=float(opt_cfg["weight_decay"]),
                                    betas=opt_cfg["betas"])
        steps = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, steps, schedule_mode=opt_cfg["schedule_mode"],
                                    num_warmup_steps=int(opt_cfg["num_warmup_steps"]),
                                    gamma=float(opt_cfg["gamma"]),
                                    lr_end=float(opt_cfg["lr_end"]))
        log.info("optimizer: %d groups, %d optimizer steps expected", len(groups), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[STUDENT] = self.student.state_dict()
        checkpoint[TEACHER] = self.teacher.state_dict()
        checkpoint["config"] = self.config
        checkpoint["stage"] = self.stage
        checkpoint["run_info"] = self.run_info
        checkpoint["rng_state"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_rng_state(checkpoint.get("rng_state"))

    # ------------------------------------------------------------------ validation and test (helpers.training.validation)
    def _collect(self, batch: Mapping) -> None:
        cnn, transformer = self._frontends(batch["audio"].float())
        cnn = self.cnn_frontend.normalize(cnn)
        mask = batch["mask"].bool()
        self._collector.add(batch, {m: getattr(self, m)(cnn, transformer, class_mask=mask) for m in (STUDENT, TEACHER)})

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: Mapping, batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_start(self) -> None:
        self._collector = Collector()

    def on_test_epoch_start(self) -> None:
        self._collector = Collector()

    def on_validation_epoch_end(self) -> None:
        if self._trainer is not None and self.trainer.sanity_checking:
            return
        results = validation_results(self._collector, self.eval_sets, self.config["median_window"])
        objective = results.pop("val/obj_metric")
        self.log_dict({k: float(v) for k, v in results.items()})
        self.log("val/obj_metric", float(objective), prog_bar=True)
        self._collector = Collector()

    def on_test_epoch_end(self) -> None:
        results = test_results(self._collector, self.eval_sets, self.config["median_window"])
        self.log_dict({k: float(v) for k, v in results.items()})
        self._collector = Collector()


