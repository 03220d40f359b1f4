"""`make demo`'s recipe end to end on the tiny demo data (1 epoch of 2 batches per stage: the plumbing, not the
learning): two archs, iteration 1 (stage 1 → stage 2 → store → ensemble), iteration 2 on the ensemble's
pseudo-labels, evaluation of both ensembles; every step a real `python -m ex_stage{1,2} ...` command."""
import csv
import shutil

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
