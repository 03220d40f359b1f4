"""`make demo`'s recipe end to end on the tiny demo data (1 epoch of 2 batches per stage: the plumbing, not the
learning): two archs, iteration 1 (stage 1 → stage 2 → store → ensemble), iteration 2 on the ensemble's
pseudo-labels, evaluation of both ensembles; every step a real `python -m ex_stage{1,2} ...` command."""
import csv
import shutil

import h5py
import numpy as np
import pytest

from data_util.layout import PSEUDO_LABEL_SETS


@pytest.mark.integration
@pytest.mark.slow
def test_demo_recipe_runs_both_iterations_with_two_archs(demo_tiny, tmp_path, capsys):
    from helpers import demo_recipe

    root, _ = demo_tiny
    data = tmp_path / "data"
    shutil.copytree(root, data)  # the recipe writes predictions into the data folder
    out = tmp_path / "out"
    result = demo_recipe.main(["--data", str(data), "--out", str(out), "--max-epochs", "1", "1", "1",
                               "--limit-batches", "2"])
    printed = capsys.readouterr().out

    for label, _ in demo_recipe.TABLE_ROWS + demo_recipe.ENSEMBLE_ROWS:
        assert label in printed
    assert printed.count("devtest psds1_csebbs:") == 2 and "maestro_real_dev mpAUC:" in printed  # console blocks
    assert "python -m ex_stage1 with demo" in printed and "python -m ex_stage2 store_predictions with demo" in printed
    assert demo_recipe.DEMO_ARCHS == ("atst_frame", "beats")
    assert set(result["models"]) == {"untrained", "atst i1 s1", "atst i1 s2", "atst i2 s1",
                                     "beats i1 s1", "beats i1 s2", "beats i2 s1"}
    for name, metrics in result["models"].items():
        assert "test/student/devtest/psds1" in metrics, name
    assert {"devtest/psds1", "devtest/psds1_csebbs", "maestro_real_dev/mpauc"} <= set(result["ensembles"]["i2_ensemble"])

    predictions = data / "predictions"
    for pseudo_set in PSEUDO_LABEL_SETS:  # the iteration-1 ensemble holds the pseudo-labels of the training sets
        assert (predictions / "i1_ensemble" / f"{pseudo_set}.hdf5").is_file(), pseudo_set
    stored = sorted(p.stem for p in (predictions / "i2_atst_frame").glob("*.hdf5"))
    assert stored == sorted(demo_recipe.EVAL_SETS)  # iteration 2 stores the evaluation sets only
    for iteration in (1, 2):  # the ensembles weight ATST-Frame 2 : 1 (demo_recipe.ENSEMBLE_WEIGHTS)
        with h5py.File(predictions / f"i{iteration}_ensemble" / "devtest.hdf5", "r") as ensemble:
            assert np.allclose(ensemble.attrs["weights"], [2 / 3, 1 / 3])
    final = predictions / "i2_ensemble"
    assert (final / "eval_report.json").is_file()
    assert any((final / "Schmid_CPJKU_task4_X_runX.output").iterdir())  # private-eval submission folder

    # iteration 2 trained on the pseudo-labels: its pseudo-label loss is non-zero (iteration 1's is 0)
    def pseudo_losses(step: str) -> list[float]:
        (metrics_file,) = (out / step).glob("**/metrics.csv")
        with open(metrics_file) as f:
            return [float(r["train/student/loss_pseudo"]) for r in csv.DictReader(f) if r.get("train/student/loss_pseudo")]

    assert pseudo_losses("i2_atst_frame_stage1") and all(v > 0 for v in pseudo_losses("i2_atst_frame_stage1"))
    assert all(v == 0 for v in pseudo_losses("i1_atst_frame_stage1"))


def _training_step(module: str, arch: str, overrides: dict):
    from helpers import demo_recipe

    plumbing = {"seed": 1, "base_path": "/data", "resources_path": "/data/resources", "wandb.name": "x",
                "trainer.default_root_dir": "/out/x", "t4_wrapper.model_init_id": "/out/best.ckpt"}
    return demo_recipe.Step("x", module, None, {**plumbing, "arch": arch, **demo_recipe.ARCH_SETTINGS.get(arch, {}),
                                                **overrides, "trainer.max_epochs": 3})


def test_settings_changes_list_every_learning_setting_that_differs_from_the_reference_commands():
    from helpers import demo_recipe

    lines = demo_recipe.settings_changes({
        "stage 1, beats": _training_step("ex_stage1", "beats", {"optimizer.crnn_lr": 5e-3}),
        "stage 2, atst_frame": _training_step("ex_stage2", "atst_frame", {"optimizer.pt_lr": 5e-4}),
    })
    tiny, stage1, stage2 = lines
    assert "beats.embed_dim 768 -> 64" in tiny and "t4_wrapper.n_RNN_cell 256 -> 32" in tiny
    # the README's beats stage-1 command: crnn_lr 0.0005, 200 epochs, accumulate 4, batch (3, 3, 3, 5, 5)
    assert stage1.startswith("  stage 1, beats: ") and "optimizer.crnn_lr 0.0005 -> 0.005" in stage1
    assert "trainer.max_epochs 200 -> 3" in stage1 and "trainer.accumulate_grad_batches 4 -> 1" in stage1
    assert "t4_wrapper.embed_pool" not in stage1  # the demo keeps the README's BEATs wrapper settings
    assert "optimizer.pt_lr 0.0001 -> 0.0005" in stage2 and "optimizer.pt_lr_scale 0.5 -> 1.0" in stage2
    for plumbing in ("base_path", "wandb", "default_root_dir", "model_init_id", "seed", "fpasst.", "beats."):
        assert plumbing not in stage1 + stage2.replace("stage 2, atst_frame", ""), plumbing


def test_mechanics_names_each_check_and_whether_it_holds():
    from helpers import demo_recipe

    psds = "test/student/devtest/psds1"
    models = {"untrained": {psds: 0.0}, "atst i1 s1": {psds: 0.01}, "atst i1 s2": {psds: 0.1},
              "atst i2 s1": {psds: 0.05}, "beats i1 s1": {psds: 0.02}, "beats i1 s2": {psds: 0.01},
              "beats i2 s1": {psds: 0.03}}
    ensembles = {"i1_ensemble": {"devtest/psds1": 0.12, "devtest/psds1_csebbs": 0.2, "eval_public/psds1": 0.05}}
    members = {"i1_ensemble": {"atst i1": {"devtest": 0.1, "eval_public": 0.06},
                               "beats i1": {"devtest": 0.01, "eval_public": 0.02}}}
    lines = demo_recipe.mechanics(models, ensembles, members)
    assert lines[0] == ("  atst: stage 2 beats stage 1 (devtest PSDS1 0.010 -> 0.100): holds; "
                        "iteration-2 stage 1 beats iteration-1 stage 1 (0.010 -> 0.050): holds")
    assert "beats: stage 2 beats stage 1 (devtest PSDS1 0.020 -> 0.010): DOES NOT HOLD" in lines[1]
    assert lines[2].endswith("cSEBBs beat raw (devtest PSDS1 0.120 -> 0.200): holds")
    assert lines[3].endswith("on devtest (raw PSDS1 0.120 vs atst i1 0.100): holds")
    assert lines[4].endswith("on eval_public (raw PSDS1 0.050 vs atst i1 0.060): DOES NOT HOLD")


def test_a_new_run_removes_only_what_the_previous_run_of_the_recipe_wrote(tmp_path):
    from helpers import demo_recipe

    out, predictions = tmp_path / "out", tmp_path / "data" / "predictions"
    ours = [out / "logs" / "a.log", out / "untrained.ckpt", out / "i1_beats_stage1" / "run" / "results.json",
            predictions / "i1_ensemble" / "devtest.hdf5"]
    theirs = [out / "notes.txt", predictions / "my_model" / "devtest.hdf5", out / "i3_beats_stage1" / "x"]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    said = []
    demo_recipe.clear_previous_run(out, predictions, ["untrained", "i1_beats_stage1"], ["i1_ensemble", "i2_beats"],
                                   said.append)
    assert not any(path.exists() for path in ours) and all(path.exists() for path in theirs)
    assert len(said) == 1 and "4 outputs of a previous demo run" in said[0]



def test_ensemble_weights_favour_atst_frame_and_are_printed_as_a_change():
    from helpers import demo_recipe

    assert demo_recipe.ensemble_weights(("atst_frame", "beats")) == (2.0, 1.0)
    assert demo_recipe.ensemble_weights(("beats", "fpasst")) == (1.0, 1.0)
    assert any("ensemble_weights" in change and "2 : 1" in change for change in demo_recipe.RECIPE_CHANGES)
    # iteration 2 trains with stage 1's settings plus the reference's iteration-2 pseudo-label weight
    assert demo_recipe.ITERATION2_OVERRIDES == {**demo_recipe.STAGE1_OVERRIDES,
                                                "loss_weights": (0.5, 1.0, 1.0, 0.5, 0.1, 1.5)}
