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
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from scipy.ndimage import median_filter
from torch import Tensor, nn

from data_util.classes import DESED_CLASSES, class_indices
from helpers.evaluation import metrics
from helpers.training import augment, losses
from helpers.training.ema import ema_update, make_teacher
from helpers.evaluation.maestro import EVAL_CLASSES as MAESTRO_SCORED, recording_scores_from_probabilities
from helpers.training.optim import build_optimizer, build_scheduler, learning_rates
from helpers.evaluation.scores import scores_from_probabilities
from helpers.training.stages import StepFeatures, augment_batch, group_slice, rows_vector, strategy_for
from models.compile import compile_in_place
from models.registry import create_frontends, create_model, split_wrapper_config

log = logging.getLogger(__name__)

STUDENT, TEACHER = "student", "teacher"
# Which sub-batch rows come from which data sets (sanity check of the sampler's composition).
SUB_BATCH_SOURCES = {
    "maestro": ("maestro_real_train",),
    "desed_strong": ("strong_train", "external_strong_train"),
    "synth": ("synth_train",),
    "weak": ("weak_train",),
    "unlabeled": ("unlabeled_train",),
}
# Validation sets (reference: synth val, external strong val, weak val, MAESTRO val split) and test sets.
VAL_SETS = ("synth_val", "external_strong_val", "weak_val", "maestro_real_val")
TEST_SETS = ("devtest", "external_strong_val", "maestro_real_dev")
WEAK_F1_THRESHOLD = 0.5
# Config keys of each backbone block that are not backbone constructor arguments.
_NON_BACKBONE_KEYS = {
    "atst_frame": ("pretrained_name", "per_sample_top_db"),
    "fpasst": ("pretrained_name", "arch", "n_classes", "sample_rate"),
    "beats": ("pretrained_name",),
}


# ------------------------------------------------------------------------------------------------ building
def build_sed_model(config: Mapping) -> nn.Module:
    """The SED model of ``config["arch"]`` from the config blocks ``<arch>`` and ``t4_wrapper`` (random init)."""
    arch = config["arch"]
    backbone_kwargs = {k: v for k, v in dict(config.get(arch, {})).items() if k not in _NON_BACKBONE_KEYS[arch]}
    if arch == "fpasst":
        backbone_kwargs["n_mels"] = config.get("passt_mel", {}).get("n_mels", 128)
    wrapper_kwargs, _ = split_wrapper_config(config.get("t4_wrapper", {}))
    return create_model(arch, backbone_kwargs=backbone_kwargs, **wrapper_kwargs)


def build_frontends(config: Mapping) -> tuple[nn.Module, nn.Module]:
    """(CNN-branch mel, transformer front-end) of ``config["arch"]``."""
    arch = config["arch"]
    if arch == "atst_frame":
        frontend_cfg = {"per_sample_top_db": bool(config.get("atst_frame", {}).get("per_sample_top_db", False))}
    elif arch == "fpasst":
        frontend_cfg = dict(config.get("passt_mel", {}))
    else:
        frontend_cfg = {}
    return create_frontends(arch, mel=config.get("mel"), scaler=config.get("scaler"), **frontend_cfg)


def median_filter_probabilities(probabilities: np.ndarray, windows) -> np.ndarray:
    """Class-wise median filter along time of [N, T, C] probabilities (the reference's ``ClassWiseMedianFilter``
    with scipy's default 'reflect' border), window ``windows[c]`` frames for class c."""
    out = np.empty_like(probabilities)
    for c, window in enumerate(windows):
        out[:, :, c] = median_filter(probabilities[:, :, c], size=(1, int(window)))
    return out


@dataclass
class EvalSet:
    """Ground truth of one validation / test set. kind: "desed" (PSDS etc.), "weak" (clip F1), "maestro_chunks"
    (segment metrics on 10 s chunks), "maestro_recordings" (overlap-add to recordings, then segment metrics)."""

    kind: str
    ground_truth: dict = field(default_factory=dict)
    durations: dict = field(default_factory=dict)


@dataclass
class _Collected:
    filenames: list = field(default_factory=list)
    strong: dict = field(default_factory=lambda: defaultdict(list))  # model -> [N, T, C] arrays
    weak: dict = field(default_factory=lambda: defaultdict(list))  # model -> [N, C]
    weak_labels: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ the system
class SEDSystem(pl.LightningModule):
    """Stage 1 / stage 2 training of the SED model (student) with a mean teacher.

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
        if self.config.get("compile", False):  # after the teacher's deep copy (see models.compile)
            compile_in_place(self.student, "the student")
            compile_in_place(self.teacher, "the teacher")
        # what trains is fixed now, before DDP wraps the model (it registers every parameter requiring grad)
        self.strategy.param_groups(self.student, self.config.get("optimizer", {}))
        self.cnn_frontend, self.transformer_frontend = build_frontends(self.config)
        self.sub_batch_slices = dict(sub_batch_slices or {})
        self.eval_sets = dict(eval_sets or {})
        self.run_info = dict(run_info or {})
        self.loss_weights = tuple(float(w) for w in self.config["loss_weights"])
        loss_cfg = self.config.get("loss", {})
        self.strong_loss = losses.loss_function("BCELoss")
        self.weak_loss = losses.loss_function("BCELoss")
        self.maestro_loss = losses.loss_function(loss_cfg.get("maestro_type", "BCELoss"), "loss.maestro_type")
        self.selfsup_loss = losses.loss_function(loss_cfg.get("selfsup_type", "MSELoss"), "loss.selfsup_type")
        self.pseudo_loss = losses.loss_function(loss_cfg.get("pseudo_type", "BCELoss"), "loss.pseudo_type")
        self.transformer_units_per_db = augment.FEATURE_UNITS_PER_DB[self.arch]
        self._collected: dict[str, _Collected] = {}
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

        gain_db = float(cfg.get("gain_augment", 0) or 0)
        if gain_db > 0:
            audio = augment.gain(audio, min_db=-gain_db, max_db=gain_db)
        cnn, transformer = self._frontends(audio)

        labels = batch["strong"].float().clone()
        pseudo = batch["pseudo"].float().clone()
        loss_cfg = cfg.get("loss", {})
        labels[rows["maestro"]] = augment.harden(labels[rows["maestro"]],
                                                 float(loss_cfg.get("harden_labels_maestro_p", 0.0)))
        pseudo = augment.harden(pseudo, float(loss_cfg.get("harden_pseudo_labels_p", 0.0)))
        features = StepFeatures(cnn=cnn.clone(), transformer=transformer.clone(), labels=labels,
                                weak_labels=batch["weak"][rows["weak"]].float().clone(), pseudo=pseudo,
                                mask=batch["mask"].bool().clone())
        aug = augment_batch(features, rows, strategy, cfg, transformer_units_per_db=self.transformer_units_per_db)

        # targets restricted to the valid classes (after mixup extended the mask)
        valid = aug.mask
        labels = aug.labels * valid[:, :, None]
        weak_labels = aug.weak_labels * valid[rows["weak"]]
        pseudo = aug.pseudo
        if not cfg.get("pseudo_strong_no_class_mask", False):
            pseudo = pseudo * valid[:, :, None]

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

        no_class_mask = bool(cfg.get("ssl_no_class_mask", False))
        with torch.no_grad():
            teacher_strong, teacher_weak = self.teacher(
                self.cnn_frontend.normalize(aug.teacher_cnn), aug.teacher_transformer,
                class_mask=None if no_class_mask else valid, transformer_tokens=tokens)
        student_strong, student_weak = (strong_all, weak_all) if no_class_mask else (strong, weak)
        ssl_scale = losses.ssl_weight(self.global_step, int(cfg.get("ssl_loss_warmup_steps", 0)),
                                      w[losses.W_SSL], float(cfg.get("ssl_scale_max", 1.0)))
        use_ict = strategy.allow_ict and bool(cfg.get("use_ict_loss", True)) and bool(aug.mixups)
        if use_ict:
            consistency = self._ict_loss(student_strong, student_weak, teacher_strong, teacher_weak, aug.mixups, rows)
            ssl = consistency * ssl_scale / strategy.ict_ssl_divisor
            self.log("train/student/tot_ict_loss", consistency, batch_size=B)
        else:
            ssl_rows = torch.ones(B, dtype=torch.bool, device=audio.device) if cfg.get("include_maestro_ssl", True) \
                else ~maestro_rows
            weak_ssl_rows = ssl_rows & ~maestro_rows if cfg.get("exclude_maestro_weak_ssl", False) else ssl_rows
            strong_term, weak_term = losses.mean_teacher_terms(
                student_strong, student_weak, teacher_strong, teacher_weak, ssl_rows, weak_ssl_rows,
                self.selfsup_loss)
            ssl = (strong_term + weak_term / strategy.mean_teacher_weak_divisor) * ssl_scale
            self.log("train/student/strong_self_sup_loss", strong_term, batch_size=B)
            self.log("train/student/weak_self_sup_loss", weak_term, batch_size=B)

        pseudo_term = torch.zeros((), device=audio.device)
        if w[losses.W_PSEUDO] > 0:
            pseudo_strong = strong_all if cfg.get("pseudo_strong_no_class_mask", False) else strong
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
        maestro_weak_factor = 0.0 if self.config.get("exclude_maestro_weak_ssl", False) else 1.0
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
        ema_update(self.teacher, self.student, self.global_step, float(self.config.get("ema_factor", 0.999)),
                   ema_buffers=True)

    def configure_optimizers(self):
        opt_cfg = self.config.get("optimizer", {})
        groups = self.strategy.param_groups(self.student, opt_cfg)
        optimizer = build_optimizer(groups, adamw=bool(opt_cfg.get("adamw", True)),
                                    weight_decay=float(opt_cfg.get("weight_decay", 0.0)),
                                    betas=opt_cfg.get("betas", (0.9, 0.999)))
        steps = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, steps, schedule_mode=opt_cfg.get("schedule_mode", "cos"),
                                    num_warmup_steps=int(opt_cfg.get("num_warmup_steps", 0)),
                                    gamma=float(opt_cfg.get("gamma", 0.999996)),
                                    lr_end=float(opt_cfg.get("lr_end", 1e-7)))
        log.info("optimizer: %d groups, %d optimizer steps expected", len(groups), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[STUDENT] = self.student.state_dict()
        checkpoint[TEACHER] = self.teacher.state_dict()
        checkpoint["config"] = self.config
        checkpoint["stage"] = self.stage
        checkpoint["run_info"] = self.run_info
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_state"] = rng

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng_state")
        if rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])

    # ------------------------------------------------------------------ validation and test
    def _collect(self, batch: Mapping) -> None:
        audio = batch["audio"].float()
        mask = batch["mask"].bool()
        cnn, transformer = self._frontends(audio)
        cnn = self.cnn_frontend.normalize(cnn)
        names = list(batch["dataset"])
        outputs = {m: getattr(self, m)(cnn, transformer, class_mask=mask) for m in (STUDENT, TEACHER)}
        for set_name in dict.fromkeys(names):
            index = [i for i, n in enumerate(names) if n == set_name]
            store = self._collected.setdefault(set_name, _Collected())
            store.filenames.extend(batch["filename"][i] for i in index)
            for model, (strong, weak) in outputs.items():
                store.strong[model].append(strong[index].transpose(1, 2).float().cpu().numpy())  # [n, T, C]
                store.weak[model].append(weak[index].float().cpu().numpy())
            store.weak_labels.append(batch["weak"][index].float().cpu().numpy())

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: Mapping, batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_start(self) -> None:
        self._collected = {}

    def on_test_epoch_start(self) -> None:
        self._collected = {}

    def _probabilities(self, set_name: str, model: str) -> tuple[list[str], np.ndarray]:
        store = self._collected[set_name]
        strong = np.concatenate(store.strong[model])
        return store.filenames, median_filter_probabilities(strong, self.config["median_window"])

    def _set_metrics(self, set_name: str, model: str, full: bool) -> dict[str, float]:
        """Metrics of one collected set for ``model``; ``full`` adds the threshold-dependent and PSDS2 figures."""
        spec = self.eval_sets.get(set_name)
        if spec is None or set_name not in self._collected:
            return {}
        store = self._collected[set_name]
        if spec.kind == "weak":
            return {"weak_f1_macro_thres05": _weak_f1(np.concatenate(store.weak[model]),
                                                      np.concatenate(store.weak_labels))}
        filenames, probabilities = self._probabilities(set_name, model)
        try:
            if spec.kind == "desed":
                desed = class_indices(DESED_CLASSES)
                scores = scores_from_probabilities(filenames, probabilities[:, :, desed], DESED_CLASSES)
                return _desed_metrics(scores, spec, full)
            scored = class_indices(MAESTRO_SCORED)
            if spec.kind == "maestro_chunks":
                scores = scores_from_probabilities(filenames, probabilities[:, :, scored], MAESTRO_SCORED)
            else:
                scores = recording_scores_from_probabilities(filenames, probabilities[:, :, scored], spec.durations,
                                                             MAESTRO_SCORED)
            return _segment_metrics(scores, spec, full)
        except (ValueError, KeyError, AssertionError) as error:
            log.warning("%s metrics of %s could not be computed (%s): reported as 0", model, set_name, error)
            return {}

    def on_validation_epoch_end(self) -> None:
        if self._trainer is not None and self.trainer.sanity_checking:
            return
        results = {}
        for model in (STUDENT, TEACHER):
            synth = self._set_metrics("synth_val", model, full=model == STUDENT)
            external = self._set_metrics("external_strong_val", model, full=model == STUDENT)
            maestro = self._set_metrics("maestro_real_val", model, full=True)
            weak = self._set_metrics("weak_val", model, full=True)
            results.update({f"val/{model}/{k}": v for k, v in {**synth, **weak}.items()})
            results.update({f"val/{model}/{k}_real": v for k, v in external.items()})
            results.update({f"val/{model}/{k}": v for k, v in maestro.items()})
            if model == STUDENT:
                # reference: student MAESTRO segment mpAUC + student PSDS1 (synth val) + PSDS1 (external strong val)
                results["val/obj_metric"] = (maestro.get("segment_mpauc", 0.0) + synth.get("psds1", 0.0)
                                             + external.get("psds1", 0.0))
        objective = results.pop("val/obj_metric")
        self.log_dict({k: float(v) for k, v in results.items()})
        self.log("val/obj_metric", float(objective), prog_bar=True)
        self._collected = {}

    def on_test_epoch_end(self) -> None:
        results = {}
        for model in (STUDENT, TEACHER):
            per_set = {name: self._set_metrics(name, model, full=True) for name in TEST_SETS}
            for set_name, values in per_set.items():
                results.update({f"test/{model}/{set_name}/{k}": v for k, v in values.items()})
            results[f"test/{model}/rank_score"] = (per_set["devtest"].get("psds1", 0.0)
                                                   + per_set["maestro_real_dev"].get("segment_mpauc", 0.0))
        self.log_dict({k: float(v) for k, v in results.items()})
        self._collected = {}


# ------------------------------------------------------------------------------------------------ metric helpers
def _weak_f1(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Macro F1 at 0.5 over the 10 DESED classes of clip-level predictions (weak validation split)."""
    desed = class_indices(DESED_CLASSES)
    predicted = probabilities[:, desed] > WEAK_F1_THRESHOLD
    truth = labels[:, desed] > 0.5
    tp = (predicted & truth).sum(0)
    denominator = predicted.sum(0) + truth.sum(0)
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return float(f1.mean())


def _desed_metrics(scores, spec: EvalSet, full: bool) -> dict[str, float]:
    ground_truth, durations = metrics.events_only(
        {k: v for k, v in spec.ground_truth.items() if k in scores}, spec.durations)
    if not ground_truth:
        raise ValueError("no clip with events")
    # sed_scores_eval needs events of every scored class; tiny sets (demo) may lack some: score the present ones
    present = sorted({label for events in ground_truth.values() for _, _, label in events})
    columns = ["onset", "offset"] + [c for c in DESED_CLASSES if c in present]
    if len(columns) - 2 < len(DESED_CLASSES):
        log.warning("no ground-truth events of %s: scored without them",
                    sorted(set(DESED_CLASSES) - set(present)))
    selected = {k: scores[k][columns] for k in ground_truth}
    result = {"psds1": metrics.psds(selected, ground_truth, durations, metrics.PSDS1).value}
    if full:
        result["psds2"] = metrics.psds(selected, ground_truth, durations, metrics.PSDS2).value
        result["intersection_f1_macro_thres05"] = metrics.intersection_f1(selected, ground_truth)["macro_average"]
        result["collar_f1_macro_thres05"] = metrics.collar_f1(selected, ground_truth)["macro_average"]
    return result


def _segment_metrics(scores, spec: EvalSet, full: bool) -> dict[str, float]:
    ids = [k for k in spec.ground_truth if k in scores]
    if not ids:
        raise ValueError("no scored clip has ground truth")
    ground_truth = {k: spec.ground_truth[k] for k in ids}
    durations = {k: float(spec.durations[k]) for k in ids}
    selected = {k: scores[k] for k in ids}
    result = {"segment_mpauc": metrics.segment_auroc(selected, ground_truth, durations,
                                                     max_fpr=metrics.PARTIAL_AUROC_MAX_FPR)["mean"]}
    if full:
        result["segment_mauc"] = metrics.segment_auroc(selected, ground_truth, durations)["mean"]
        result["segment_f1_macro_thresopt"] = metrics.segment_best_f1(selected, ground_truth, durations)[
            "macro_average"]
    return {k: (0.0 if not math.isfinite(v) else v) for k, v in result.items()}


__all__ = ["SEDSystem", "EvalSet", "build_sed_model", "build_frontends", "median_filter_probabilities",
           "VAL_SETS", "TEST_SETS"]
