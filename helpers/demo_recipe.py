"""The demo: the whole recipe on the synthetic demo data with a tiny model, on CPU, through the Sacred experiments.

    python -m helpers.demo_recipe            (what `make demo` runs after generating and checking the data)

1. tests an untrained model (the baseline), 2. stage 1, 3. stage 2 initialised from stage 1, 4. stores the stage-2
student and teacher predictions, 5. ensembles them, 6. evaluates the ensemble (PSDS1, MAESTRO mpAUC, cSEBBs), and
prints one table comparing the untrained model with stage 1 and stage 2. Every step is the same command a user runs
on the real data (``python -m ex_stage1 with demo arch=...``, ``python -m ex_stage2 store_predictions with demo ...``).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import configs

DEMO_ARCH = "atst_frame"
OUTPUT_DIR = configs.REPO_ROOT / "outputs" / "demo"
DEMO_SEED = 1234
DEMO_EPOCHS = (3, 2)  # stage 1, stage 2; each stage validates once, after its last epoch
# Settings found to make a tiny random-init model learn within ~8 minutes of CPU training (3 + 2 epochs of ~1 s
# steps): more DESED clips per batch and heavier DESED loss weights, higher learning rates, the augmentations off
# (they slow learning at this scale), one validation per stage, a faster teacher EMA, and stage 2 starting its
# teacher from the stage-1 *student* (after ~200 steps the stage-1 EMA teacher still lags far behind).
STAGE1_OVERRIDES = {
    "optimizer.crnn_lr": 5e-3, "mix_augment.apply_mixup": False,
    "mix_augment.apply_mixstyle": False, "filter_augment.apply": 0, "ema_factor": 0.99,
    "training.batch_sizes": (2, 3, 3, 1, 1), "loss_weights": (0.5, 1.0, 1.0, 0.5, 0.1, 0),
}
STAGE2_OVERRIDES = {
    "t4_wrapper.model_init_mode": "student", "optimizer.cnn_lr": 2e-3,
    "optimizer.rnn_lr": 5e-3, "optimizer.pt_lr": 5e-4, "mix_augment.apply_mixup": False,
    "mix_augment.apply_mixstyle": False, "filter_augment.apply": 0, "freq_warp.apply": 0,
    "time_augment.apply_mask": False, "use_ict_loss": False, "training.wavmix_p": 0, "training.dir_p": 0,
    "ema_factor": 0.99, "training.batch_sizes": (2, 3, 3, 1, 1), "loss_weights": (3, 6, 6, 2, 1, 0),
}
# The metrics the table shows: (label, key in a test result).
TABLE_ROWS = (
    ("devtest PSDS1", "test/student/devtest/psds1"),
    ("devtest intersection F1", "test/student/devtest/intersection_f1_macro_thres05"),
    ("external-strong val PSDS1", "test/student/external_strong_val/psds1"),
    ("MAESTRO dev mpAUC", "test/student/maestro_real_dev/segment_mpauc"),
)


def _run(module: str, command: str | None, updates: dict) -> dict:
    import importlib

    ex = importlib.import_module(module).ex
    run = ex.run(command, config_updates=updates, named_configs=["demo"]) if command else ex.run(
        config_updates=updates, named_configs=["demo"])
    return run.result


def _untrained_checkpoint(arch: str, path: Path) -> Path:
    """A checkpoint of the randomly initialised demo model (student = teacher), for the baseline row."""
    import torch

    from helpers.system import build_sed_model
    from models.checkpoints import save_sed_checkpoint

    config = configs.demo_defaults(1)
    config["arch"] = arch
    torch.manual_seed(0)
    model = build_sed_model(config)
    save_sed_checkpoint(path, model.state_dict(), model.state_dict())
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default=DEMO_ARCH, choices=configs.ARCHS)
    parser.add_argument("--data", type=Path, default=configs.DEMO_DATASET_PATH, help="demo dataset root")
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR, help="folder for runs and checkpoints")
    parser.add_argument("--max-epochs", type=int, nargs=2, metavar=("STAGE1", "STAGE2"),
                        help=f"epochs of stage 1 and 2 (default {DEMO_EPOCHS[0]} {DEMO_EPOCHS[1]}; 1 1 for a smoke test)")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    arch, out = args.arch, args.out.resolve()
    data = args.data.resolve()
    common = {"arch": arch, "seed": DEMO_SEED, "trainer.enable_progress_bar": False, "base_path": str(data),
              "resources_path": str(data / "resources"), "model_path": str(data / "pretrained_models"),
              "output_path": str(data / "predictions"), "preds_path": str(data / "predictions")}
    stage1_only = {k: v for k, v in common.items() if k not in ("output_path", "preds_path")}
    epochs = [{"trainer.max_epochs": n, "trainer.check_val_every_n_epoch": n}
              for n in (args.max_epochs or DEMO_EPOCHS)]
    started = time.time()

    untrained = _untrained_checkpoint(arch, out / "untrained.ckpt")
    baseline = _run("ex_stage1", "test", {**stage1_only, "ckpt_path": str(untrained),
                                          "trainer.default_root_dir": str(out / "untrained")})
    stage1 = _run("ex_stage1", None, {**stage1_only, **STAGE1_OVERRIDES, **epochs[0],
                                      "trainer.default_root_dir": str(out / "stage1")})
    stage2 = _run("ex_stage2", None, {**common, **STAGE2_OVERRIDES, **epochs[1],
                                      "trainer.default_root_dir": str(out / "stage2"),
                                      "t4_wrapper.model_init_id": stage1["best_model_path"]})
    name = f"{arch}_demo_stage2"
    predictions = {"pretrained_name": stage2["best_model_path"], "out_name": name, "overwrite": True}
    _run("ex_stage2", "store_predictions", {**common, **predictions})
    _run("ex_stage2", "store_predictions", {**common, **predictions, "mode": "teacher"})
    _run("ex_stage2", "ensemble_predictions", {**common, "pretrained_names": (name, name + "_t"),
                                               "out_name": name + "_ens", "overwrite": True})
    evaluation = _run("ex_stage2", "eval_predictions", {**common, "pretrained_name": name + "_ens"})

    print(f"\nDemo ({arch}, tiny, random init, CPU) finished in {time.time() - started:.0f} s. Test metrics:")
    print(f"{'metric':28s} {'untrained':>10s} {'stage 1':>10s} {'stage 2':>10s}")
    for label, key in TABLE_ROWS:
        print(f"{label:28s} " + " ".join(f"{r.get(key, float('nan')):10.3f}" for r in (baseline, stage1, stage2)))
    print("stage-2 student+teacher ensemble, eval_predictions: "
          + ", ".join(f"{k} {v:.3f}" for k, v in evaluation.items() if isinstance(v, float)))
    return {"untrained": baseline, "stage1": stage1, "stage2": stage2, "eval": evaluation}


if __name__ == "__main__":
    main()
