"""The demo: the reference's two-iteration recipe, shortened, on the synthetic demo data, with two tiny models on CPU.

    python -m helpers.demo_recipe            (what `make demo` runs after generating and checking the data)

Every step is the command a user runs on the real data (``python -m ex_stage1 with demo arch=...``,
``python -m ex_stage2 store_predictions with demo ...``), run as a child process and printed; each command's
output goes to ``<out>/logs/<step>.log``. The two models train side by side (one CPU thread each):

iteration 1  ATST-Frame: stage 1 → stage 2 (initialised from stage 1)     BEATs: stage 1 → stage 2
             (the first lane also tests the untrained ATST-Frame first: the baseline row)
             store_predictions of both stage-2 models (all 12 sets) → ensemble_predictions → the pseudo-labels
iteration 2  both: stage 1 with ``pseudo_labels=<iteration-1 ensemble>`` and a pseudo-label loss weight
             store_predictions (evaluation sets) → ensemble_predictions; the first lane then evaluates the
             iteration-1 ensemble
evaluation   eval_predictions of the iteration-2 ensemble (both print the reference's console block)

Shortened: a few epochs instead of 200, and iteration 2 warm-starts its stage 1 from the iteration-1 stage-1
checkpoint and skips its stage 2 (the reference trains iteration 2's stage 1 from the AudioSet-strong weights and
then its stage 2). The table at the end compares the test metrics of every model with the untrained one.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import configs
from helpers.reference_recipe import apply_updates, reference_config

DEMO_ARCHS = ("atst_frame", "beats")
OUTPUT_DIR = configs.REPO_ROOT / "outputs" / "demo"
DEMO_SEED = 1234
# Epochs per arch: (iteration 1 stage 1, iteration 1 stage 2, iteration 2 stage 1). BEATs' stage 2 needs its two
# epochs: with one (issue 18's run), its devtest PSDS1 stayed at 0.001 (F1 0.20); with two it reached 0.016 (F1 0.24).
# BEATs' stage 2 also needs stage 1's three: after two, stage 2 reached 0.002 (F1 0.20). Iteration 2 trains one epoch
# per model, so that `make demo` stays under 15 minutes on 2 cores.
DEMO_EPOCHS = {"atst_frame": (3, 2, 1), "fpasst": (3, 1, 1), "beats": (3, 2, 1)}
# No validation pass while training: the demo's runs are too short to validate more than once, after their last
# epoch, and then the "best" checkpoint is always the last one (~30 s of CPU per run saved). The test sets still run.
NO_VALIDATION = {"trainer.limit_val_batches": 0}
# Settings found to make a tiny random-init model learn within minutes of CPU training (~1 s steps): more DESED
# clips per batch and heavier DESED loss weights, higher learning rates, the augmentations off (they slow learning
# at this scale), a faster teacher EMA, and stage 2 starting its teacher from the stage-1 *student* (after ~200
# steps the stage-1 EMA teacher still lags far behind).
STAGE1_OVERRIDES = {
    "optimizer.crnn_lr": 5e-3, "mix_augment.apply_mixup": False,
    "mix_augment.apply_mixstyle": False, "filter_augment.apply": 0, "ema_factor": 0.99,
    "training.batch_sizes": (2, 3, 3, 1, 1), "loss_weights": (0.5, 1.0, 1.0, 0.5, 0.1, 0), **NO_VALIDATION,
}
STAGE2_OVERRIDES = {
    "t4_wrapper.model_init_mode": "student", "optimizer.cnn_lr": 2e-3,
    "optimizer.rnn_lr": 5e-3, "optimizer.pt_lr": 5e-4, "mix_augment.apply_mixup": False,
    "mix_augment.apply_mixstyle": False, "filter_augment.apply": 0, "freq_warp.apply": 0,
    "time_augment.apply_mask": False, "use_ict_loss": False, "training.wavmix_p": 0, "training.dir_p": 0,
    "ema_factor": 0.99, "training.batch_sizes": (2, 3, 3, 1, 1), "loss_weights": (3, 6, 6, 2, 1, 0),
    **NO_VALIDATION,
}
# Per-arch model settings: the reference README's for BEATs (raw tokens, interpolated to the CNN frames). Its tokens
# averaged over frequency (beats.pool_frequency, which makes the CRNN frames follow time: bench/diagnose_fusion.py)
# learned less in the demo (devtest F1 after stage 2: 0.143 against 0.237 without), so the demo keeps the reference's.
ARCH_SETTINGS = {"beats": {"t4_wrapper.no_wrapper": True, "t4_wrapper.embed_pool": "int",
                           "t4_wrapper.interpolation_mode": "nearest-exact"}}
# Iteration 2, stage 1: stage 1's settings with the pseudo-label term on (the reference's iteration-2 weight, 1.5).
# (An earlier lower learning rate for the warm start, crnn_lr 2e-3, left BEATs' devtest PSDS1 at 0.000.)
ITERATION2_OVERRIDES = {**STAGE1_OVERRIDES, "loss_weights": (0.5, 1.0, 1.0, 0.5, 0.1, 1.5)}
# Ensemble weight per arch (others 1): the demo's BEATs is the weaker member (its tokens reach the CRNN out of time
# order, see docs/PREDICTIONS.md), and a plain mean let it dilute ATST-Frame (iteration 2, public eval raw PSDS1:
# plain mean 0.057, ATST-Frame alone 0.062, weights 2:1 0.069). The reference averages its members with equal weight.
ENSEMBLE_WEIGHTS = {"atst_frame": 2.0}
# Iteration 2's models are only evaluated (the recipe ends there): their training-set predictions are not needed.
EVAL_SETS = ("devtest", "eval_public", "maestro_real_dev", "eval_private")
# The metrics of the model table: (label, key in a run's results.json).
TABLE_ROWS = (
    ("devtest PSDS1", "test/student/devtest/psds1"),
    ("devtest intersection F1", "test/student/devtest/intersection_f1_macro_thres05"),
    ("external-strong val PSDS1", "test/student/external_strong_val/psds1"),
    ("MAESTRO dev mpAUC", "test/student/maestro_real_dev/segment_mpauc"),
)
# The metrics of the ensemble table: (label, key of ``prediction_commands.report_metrics``).
ENSEMBLE_ROWS = (
    ("devtest PSDS1", "devtest/psds1"),
    ("devtest PSDS1 cSEBBs", "devtest/psds1_csebbs"),
    ("devtest PSDS1 cSEBBs (cross-val.)", "devtest/psds1_csebbs_cross_validated"),
    ("public eval PSDS1", "eval_public/psds1"),
    ("public eval PSDS1 cSEBBs", "eval_public/psds1_csebbs"),
    ("MAESTRO dev mpAUC", "maestro_real_dev/mpauc"),
)

# How the demo's recipe differs from the reference's, besides the settings printed key by key.
RECIPE_CHANGES = (
    "iteration 2's stage 1 starts from iteration 1's stage-1 checkpoint (reference: from the AudioSet-strong "
    "weights) and is not followed by a stage 2",
    "no validation pass during training (trainer.limit_val_batches=0): a few epochs validate once, after the last "
    "one, so the best checkpoint is the last; the test sets still run",
    "two models (ATST-Frame, BEATs) instead of three (the tiny random-initialised fPaSST learns no DESED events)",
    "the ensembles weight ATST-Frame's logits 2 : 1 (ensemble_weights; reference: the plain mean): the demo's BEATs "
    "is the weaker member",
)
# Keys left out of the printed comparison with the reference recipe: where files go, how a run is logged, which
# checkpoint a step starts from (the demo's own), how the CPU runs it: they do not change what is learned.
PLUMBING_KEYS = (
    "base_path", "resources_path", "model_path", "output_path", "preds_path", "pseudo_labels", "seed",
    "trainer.default_root_dir", "trainer.accelerator", "trainer.devices", "trainer.benchmark",
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.check_val_every_n_epoch",
    "trainer.limit_train_batches", "trainer.limit_test_batches",
    "training.num_workers", "validation.*", "test.*", "wandb.*", "t4_wrapper.model_init_id",
)
# Keys of the tiny random-initialised models (the ``demo`` named config): printed once, for every step.
TINY_MODEL_KEYS = ("atst_checkpoint", "beats_checkpoint", "trainer.precision", "*.pretrained_name", "*.embed_dim",
                   "*.depth", "*.num_heads", "t4_wrapper.n_RNN_cell", "t4_wrapper.embedding_size",
                   "t4_wrapper.nb_filters")


class DemoStepFailed(RuntimeError):
    pass


@dataclass
class Step:
    """One command of the recipe: ``python -m <module> [command] with demo key=value ...``."""

    name: str
    module: str
    command: str | None
    updates: dict = field(default_factory=dict)

    def argv(self) -> list[str]:
        words = [f"{key}={value!r}" for key, value in self.updates.items()]
        return ["-m", self.module, *([self.command] if self.command else []), "with", "demo", *words]


@dataclass
class Recipe:
    """Runs steps as child processes, one CPU thread each; keeps their logs."""

    out: Path
    env: dict = field(default_factory=lambda: {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                                               "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")})
    _lock: threading.Lock = field(default_factory=threading.Lock)
    cpu_seconds: dict = field(default_factory=dict)  # step name -> CPU time of its process

    def echo(self, line: str) -> None:
        with self._lock:  # two lanes print at once
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    def run(self, step: Step) -> None:
        log = self.out / "logs" / f"{step.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.echo(f"{step.name}: python {' '.join(step.argv())}")
        started = time.time()
        with open(log, "w") as stream:
            process = subprocess.Popen([sys.executable, *step.argv()], cwd=configs.REPO_ROOT, env=self.env,
                                       stdout=stream, stderr=subprocess.STDOUT)
            # wait4: this child's own CPU time (the lanes' children run at the same time)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
            raise DemoStepFailed(f"step {step.name} failed (exit {process.returncode}); its log: {log}\n{tail}")
        cpu = usage.ru_utime + usage.ru_stime
        with self._lock:
            self.cpu_seconds[step.name] = cpu
        self.echo(f"{step.name}: done in {time.time() - started:.0f} s (CPU {cpu:.0f} s)")

    def lanes(self, *lanes) -> None:
        """Run the lanes (functions that run steps in order) side by side; the first failure is raised."""
        with ThreadPoolExecutor(len(lanes)) as pool:
            for future in [pool.submit(lane) for lane in lanes]:
                future.result()

    def results(self, step: Step) -> dict:
        """``results.json`` of a training or test step (its ``trainer.default_root_dir`` holds one run)."""
        found = sorted(Path(step.updates["trainer.default_root_dir"]).glob("**/results.json"))
        if len(found) != 1:
            raise DemoStepFailed(f"step {step.name}: expected one results.json, found {found}")
        return json.loads(found[0].read_text())


def _untrained_checkpoint(arch: str, path: Path) -> Path:
    """A checkpoint of the randomly initialised demo model (student = teacher), for the baseline row."""
    import torch  # lazy: the recipe's steps run as child processes; torch loads only for the baseline checkpoint

    from models.checkpoints import save_sed_checkpoint  # lazy: as torch above
    from models.factory import build_model  # lazy: as torch above

    config = configs.demo_defaults(1)
    config["arch"] = arch
    torch.manual_seed(0)
    model = build_model(config)
    save_sed_checkpoint(path, model.state_dict(), model.state_dict())
    return path


def ensemble_weights(archs) -> tuple[float, ...]:
    """``ensemble_weights`` of the demo's ensembles of ``archs`` (``ENSEMBLE_WEIGHTS``, others 1)."""
    return tuple(ENSEMBLE_WEIGHTS.get(arch, 1.0) for arch in archs)


def short_name(arch: str) -> str:
    """The name of ``arch`` in the printed tables."""
    return "atst" if arch == "atst_frame" else arch


def _table(title: str, columns: dict[str, dict], rows) -> str:
    width = max(len(label) for label, _ in rows) + 1
    lines = [title, f"{'metric':{width}s}" + "".join(f"{name:>14s}" for name in columns)]
    for label, key in rows:
        lines.append(f"{label:{width}s}" + "".join(f"{r.get(key, float('nan')):14.3f}" for r in columns.values()))
    return "\n".join(lines)


def _matches(key: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "wkwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changes(step: Step) -> dict[str, tuple]:
    """``{key: (reference value, demo value)}`` where ``step`` (a training step) differs from the reference
    README's training command of its arch and stage (plumbing keys and other archs' blocks left out)."""
    stage = 1 if step.module == "ex_stage1" else 2
    arch = step.updates["arch"]
    demo = _flatten(apply_updates(configs.demo_defaults(stage), step.updates))
    reference = _flatten(reference_config(stage, arch))
    other_archs = [f"{name}.*" for name in configs.ARCHS if name != arch]
    return {key: (reference.get(key), value) for key, value in demo.items()
            if reference.get(key) != value and not _matches(key, PLUMBING_KEYS + tuple(other_archs))}


def _shown(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def settings_changes(steps: dict[str, Step]) -> list[str]:
    """The printed list of every setting in which the demo's training steps differ from the reference recipe:
    the tiny models once, then per step what else differs (``steps``: label -> training step)."""
    tiny: dict[str, tuple] = {}
    lines = []
    for label, step in steps.items():
        changes = _changes(step)
        tiny.update({k: v for k, v in changes.items() if _matches(k, TINY_MODEL_KEYS)})
        rest = [f"{k} {_shown(ref)} -> {_shown(demo)}" for k, (ref, demo) in changes.items()
                if not _matches(k, TINY_MODEL_KEYS)]
        lines.append(f"  {label}: " + "; ".join(rest))
    first = "  every step (tiny random-initialised models, float32 on the CPU): " + "; ".join(
        f"{k} {_shown(ref)} -> {_shown(demo)}" for k, (ref, demo) in sorted(tiny.items()))
    return [first, *lines]


def raw_psds1(folder: Path, data: Path, resources: Path, sets=("devtest", "eval_public")) -> dict[str, float]:
    """``{set: PSDS1}`` on ``sets`` (default devtest and the public eval set) of the prediction files in ``folder``:
    the sigmoid of the logits without post-processing, as ``eval_predictions`` reports them ("devtest psds1")."""
    from data_util.classes import DESED_CLASSES  # lazy: the recipe process only runs the commands until here
    from data_util.layout import SETS, resolve  # lazy: as above
    from data_util.prediction_files import PredictionFile  # lazy: h5py, as above
    from helpers.evaluation.metrics import PSDS1, events_only, psds  # lazy: sed_scores_eval, as above
    from helpers.evaluation.scores import (  # lazy: as above
        read_durations, read_ground_truth, scores_from_probabilities, select_classes, sigmoid,
    )

    result = {}
    for name in sets:
        spec = SETS[name]
        labels = resolve(spec.labels, data, resources, spec.labels_in_resources)
        durations = resolve(spec.durations, data, resources, spec.labels_in_resources)
        with PredictionFile(folder / f"{name}.hdf5") as predictions:
            filenames, probabilities = predictions.filenames, sigmoid(predictions.all_logits())
        scores = scores_from_probabilities(filenames, probabilities[:, :, : len(DESED_CLASSES)], DESED_CLASSES)
        ground_truth, clip_durations = events_only(read_ground_truth(labels), read_durations(durations))
        selected = select_classes(scores, list(DESED_CLASSES), ground_truth.keys())
        result[name] = psds(selected, ground_truth, clip_durations, PSDS1).value
    return result


def mechanics(models: dict[str, dict], ensembles: dict[str, dict], members: dict[str, dict[str, dict]]) -> list[str]:
    """The four things the method's recipe relies on, each checked on this run's figures (lines to print).

    models: the model table's columns (test metrics); ensembles: ``report_metrics`` per ensemble; members:
    ensemble name -> {member column: raw_psds1}."""
    psds = "test/student/devtest/psds1"

    def verdict(ok: bool) -> str:
        return "holds" if ok else "DOES NOT HOLD"

    lines = []
    archs = list(dict.fromkeys(name.split()[0] for name in models if name != "untrained"))  # in table order
    for arch in archs:
        s1, s2, i2 = (models[f"{arch} {column}"][psds] for column in ("i1 s1", "i1 s2", "i2 s1"))
        lines.append(f"  {arch}: stage 2 beats stage 1 (devtest PSDS1 {s1:.3f} -> {s2:.3f}): {verdict(s2 > s1)}; "
                     f"iteration-2 stage 1 beats iteration-1 stage 1 ({s1:.3f} -> {i2:.3f}): {verdict(i2 > s1)}")
    for name, metrics in ensembles.items():
        raw, processed = metrics["devtest/psds1"], metrics["devtest/psds1_csebbs"]
        lines.append(f"  {name}: cSEBBs beat raw (devtest PSDS1 {raw:.3f} -> {processed:.3f}): "
                     f"{verdict(processed > raw)}")
        for set_name, key in (("devtest", "devtest/psds1"), ("eval_public", "eval_public/psds1")):
            best, value = max((v[set_name], k) for k, v in members[name].items())
            lines.append(f"  {name}: at least as good as its best member on {set_name} (raw PSDS1 {metrics[key]:.3f} "
                         f"vs {value} {best:.3f}): {verdict(metrics[key] >= best)}")
    return lines


def clear_previous_run(out: Path, predictions: Path, step_names, prediction_names, echo) -> None:
    """Start the recipe afresh: remove what a previous run of it wrote (its steps' folders and logs under ``out``,
    its prediction folders), nothing else."""
    paths = [out / "logs", out / "untrained.ckpt", *(out / name for name in step_names),
             *(predictions / name for name in prediction_names)]
    found = [path for path in paths if path.exists()]
    if found:
        echo(f"starting afresh: removing {len(found)} outputs of a previous demo run under {out} and {predictions}")
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def main(argv=None) -> dict:
    from helpers.predictions.commands import report_metrics  # lazy: torch is not needed at import time
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=configs.DEMO_DATASET_PATH, help="demo dataset root")
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR, help="folder for runs, checkpoints and logs")
    parser.add_argument("--archs", nargs=2, default=DEMO_ARCHS, choices=configs.ARCHS, metavar="ARCH",
                        help=f"the two models (default {' '.join(DEMO_ARCHS)})")
    parser.add_argument("--max-epochs", type=int, nargs=3, metavar=("I1S1", "I1S2", "I2S1"),
                        help="epochs of iteration-1 stage 1 and 2 and iteration-2 stage 1 for both models "
                             "(default: per model, see DEMO_EPOCHS; 1 1 1 for a smoke test)")
    parser.add_argument("--limit-batches", type=int, metavar="N",
                        help="at most N training/validation/test batches per epoch (a quick plumbing check)")
    args = parser.parse_args(argv)
    out, data = args.out.resolve(), args.data.resolve()
    predictions = data / "predictions"
    common = {"seed": DEMO_SEED, "trainer.enable_progress_bar": False, "wandb.offline": True,
              "base_path": str(data), "resources_path": str(data / "resources"),
              "model_path": str(data / "pretrained_models")}
    if args.limit_batches:
        common.update({f"trainer.limit_{split}_batches": args.limit_batches for split in ("train", "val", "test")})
        common["trainer.log_every_n_steps"] = 1
    stage2_paths = {"output_path": str(predictions), "preds_path": str(predictions)}
    recipe = Recipe(out)
    started = time.time()

    def train_step(name: str, module: str, arch: str, epochs: int, overrides: dict) -> Step:
        return Step(name, module, None, {
            **common, **(stage2_paths if module == "ex_stage2" else {}), "arch": arch, **ARCH_SETTINGS.get(arch, {}),
            **overrides,
            # without validation batches Lightning writes last.ckpt at the end of each epoch only when it validates
            # every epoch (check_val_every_n_epoch=1); with them, the one validation comes after the last epoch
            "trainer.max_epochs": epochs,
            "trainer.check_val_every_n_epoch": 1 if overrides.get("trainer.limit_val_batches") == 0 else epochs,
            "trainer.default_root_dir": str(out / name), "wandb.name": name})

    def store_step(name: str, arch: str, checkpoint: str, sets=None) -> Step:
        return Step(name, "ex_stage2", "store_predictions", {
            **common, **stage2_paths, "arch": arch, **ARCH_SETTINGS.get(arch, {}), "pretrained_name": checkpoint,
            "out_name": name,
            "overwrite": True, **({"store_sets": sets} if sets else {})})

    def ensemble_step(iteration: int) -> Step:
        """The mean of the iteration's two models' logits, weighted by ``ENSEMBLE_WEIGHTS``."""
        return Step(f"i{iteration}_ensemble", "ex_stage2", "ensemble_predictions", {
            **common, **stage2_paths, "pretrained_names": tuple(f"i{iteration}_{arch}" for arch in args.archs),
            "ensemble_weights": ensemble_weights(args.archs),
            "out_name": f"i{iteration}_ensemble", "overwrite": True})

    epochs = {arch: tuple(args.max_epochs) if args.max_epochs else DEMO_EPOCHS.get(arch, (2, 1, 1))
              for arch in args.archs}
    first, second = args.archs
    step_names = ["untrained", *(f"i{i}_{arch}_stage{s}" for arch in args.archs for i, s in ((1, 1), (1, 2), (2, 1)))]
    clear_previous_run(out, predictions, step_names,
                       [f"i{i}_{name}" for i in (1, 2) for name in (*args.archs, "ensemble")], recipe.echo)
    print("Changes from the reference recipe (its README commands, iteration 2) for tiny models trained for minutes:")
    print("\n".join(settings_changes({
        f"{kind}, {arch}": train_step("-", module, arch, epochs[arch][index], overrides)
        for kind, module, index, overrides in (("iteration 1 stage 1", "ex_stage1", 0, STAGE1_OVERRIDES),
                                               ("iteration 1 stage 2", "ex_stage2", 1, STAGE2_OVERRIDES),
                                               ("iteration 2 stage 1", "ex_stage1", 2, ITERATION2_OVERRIDES))
        for arch in args.archs})) + "\n" + "\n".join(f"  recipe: {change}" for change in RECIPE_CHANGES) + "\n",
        flush=True)
    baseline = Step("untrained", "ex_stage1", "test", {
        **common, "arch": first, **ARCH_SETTINGS.get(first, {}),
        "ckpt_path": str(_untrained_checkpoint(first, out / "untrained.ckpt")),
        "trainer.default_root_dir": str(out / "untrained")})
    steps: dict[str, Step] = {}

    def iteration1(arch: str) -> None:
        """One model's lane: stage 1 -> stage 2 (from stage 1) -> store_predictions (all sets)."""
        steps[f"{arch} s1"] = train_step(f"i1_{arch}_stage1", "ex_stage1", arch, epochs[arch][0], STAGE1_OVERRIDES)
        recipe.run(steps[f"{arch} s1"])
        steps[f"{arch} s2"] = train_step(f"i1_{arch}_stage2", "ex_stage2", arch, epochs[arch][1], {
            **STAGE2_OVERRIDES, "t4_wrapper.model_init_id": recipe.results(steps[f"{arch} s1"])["best_model_path"]})
        recipe.run(steps[f"{arch} s2"])
        recipe.run(store_step(f"i1_{arch}", arch, recipe.results(steps[f"{arch} s2"])["best_model_path"]))

    def iteration2(arch: str) -> None:
        """Stage 1 on the iteration-1 ensemble's pseudo-labels (warm start from iteration 1's stage 1) -> store."""
        steps[f"{arch} i2"] = train_step(f"i2_{arch}_stage1", "ex_stage1", arch, epochs[arch][2], {
            **ITERATION2_OVERRIDES, "pseudo_labels": str(predictions / "i1_ensemble"),
            "t4_wrapper.model_init_id": recipe.results(steps[f"{arch} s1"])["best_model_path"]})
        recipe.run(steps[f"{arch} i2"])
        recipe.run(store_step(f"i2_{arch}", arch, recipe.results(steps[f"{arch} i2"])["best_model_path"], EVAL_SETS))

    ensembles = ("i1_ensemble", "i2_ensemble")
    evals = {name: Step(f"eval_{name}", "ex_stage2", "eval_predictions",
                        {**common, **stage2_paths, "pretrained_name": name, "num_jobs": 1}) for name in ensembles}
    # Two lanes per phase, balanced for 2 cores: one model each, BEATs' steps being ~1.2x slower than ATST-Frame's,
    # the first lane also tests the untrained model (the baseline row) in iteration 1 and evaluates the iteration-1
    # ensemble in iteration 2.
    recipe.lanes(lambda: (recipe.run(baseline), iteration1(first)), lambda: iteration1(second))
    recipe.run(ensemble_step(1))
    recipe.lanes(lambda: (iteration2(first), recipe.run(evals["i1_ensemble"])), lambda: iteration2(second))
    recipe.run(ensemble_step(2))
    members: dict[str, dict[str, dict]] = {}  # ensemble -> {member column: raw PSDS1 per set}, scored meanwhile

    def score_members() -> None:
        members.update({f"i{i}_ensemble": {f"{short_name(arch)} i{i}": raw_psds1(
            predictions / f"i{i}_{arch}", data, data / "resources") for arch in args.archs} for i in (1, 2)})

    recipe.lanes(lambda: recipe.run(evals["i2_ensemble"]), score_members)
    evaluations = {}
    for name in ensembles:
        report = json.loads((predictions / name / "eval_report.json").read_text())
        print(f"\n{evals[name].name} (the reference's console block):\n"
              + "\n".join(report["console"]))
        evaluations[name] = report_metrics(report)

    models = {"untrained": recipe.results(baseline)}
    for arch in args.archs:
        short = short_name(arch)
        models[f"{short} i1 s1"] = recipe.results(steps[f"{arch} s1"])
        models[f"{short} i1 s2"] = recipe.results(steps[f"{arch} s2"])
        models[f"{short} i2 s1"] = recipe.results(steps[f"{arch} i2"])
    cpu = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = sum(usage.ru_utime + usage.ru_stime for usage in cpu)
    print(f"\nDemo ({' + '.join(args.archs)}, tiny, random init, CPU) finished in {time.time() - started:.0f} s "
          f"(CPU time of all its processes: {cpu_seconds:.0f} s); logs in {out / 'logs'}.")
    print(_table("Test metrics of each model (student; i = iteration, s = stage):", models, TABLE_ROWS))
    print(_table("\neval_predictions of the ensembles (iteration 1: the stage-2 models, iteration 2: the stage-1 "
                 "models trained on its pseudo-labels):",
                 {"iteration 1": evaluations["i1_ensemble"], "iteration 2": evaluations["i2_ensemble"]},
                 ENSEMBLE_ROWS))
    checks = mechanics(models, evaluations, members)
    print("\nThe method's mechanics in this run:\n" + "\n".join(checks))
    return {"models": models, "ensembles": evaluations, "members": members, "mechanics": checks,
            "seconds": time.time() - started, "cpu_seconds": cpu_seconds}


if __name__ == "__main__":
    try:
        main()
    except DemoStepFailed as error:
        sys.exit(f"demo: {error}")
