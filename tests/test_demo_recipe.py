"""`make demo`'s recipe end to end on the tiny demo data (one epoch per stage: the plumbing, not the learning)."""
import shutil

import pytest


@pytest.mark.integration
def test_demo_recipe_runs_every_step(demo_tiny, tmp_path, capsys):
    from helpers import demo_recipe

    root, _ = demo_tiny
    data = tmp_path / "data"
    shutil.copytree(root, data)  # the recipe writes predictions into the data folder
    result = demo_recipe.main(["--data", str(data), "--out", str(tmp_path / "out"), "--max-epochs", "1", "1"])
    out = capsys.readouterr().out
    for label, _ in demo_recipe.TABLE_ROWS:
        assert label in out
    assert "devtest psds1_csebbs:" in out and "maestro_real_dev mpAUC:" in out  # the reference's console block
    assert "test/student/devtest/psds1" in result["stage2"]
    ensemble = data / "predictions" / "atst_frame_demo_stage2_ens"
    assert (ensemble / "devtest.hdf5").is_file() and (ensemble / "eval_report.json").is_file()
    assert any((ensemble / "Schmid_CPJKU_task4_X_runX.output").iterdir())  # private-eval submission folder
