"""The data commands of both experiments, through Sacred's command line as a user runs them."""
import shutil
import subprocess
import sys

import pytest

import configs


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=configs.REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("module", ["ex_stage1", "ex_stage2"])
def test_check_data_on_complete_demo_tree(demo_tiny, module):
    root, resources = demo_tiny
    result = _run(module, "check_data", "with", f"base_path={root}", f"resources_path={resources}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synth_train" in result.stdout and "MISSING" not in result.stdout
    assert ("eval_private" in result.stdout) == (module == "ex_stage2")  # stage 2 also checks the eval sets


def test_check_data_lists_every_missing_part(demo_tiny, tmp_path):
    root, resources = demo_tiny
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    shutil.rmtree(broken / "audio/train/weak_16k")
    shutil.rmtree(broken / "audio/maestro_real_validation_16k")
    result = _run("ex_stage1", "check_data", "with", f"base_path={broken}", f"resources_path={broken / 'resources'}")
    assert result.returncode == 1
    assert "weak_16k" in result.stdout and "maestro_real_validation_16k" in result.stdout


def test_check_data_on_empty_root(tmp_path):
    result = _run("ex_stage1", "check_data", "with", f"base_path={tmp_path / 'nothing'}",
                  f"resources_path={tmp_path / 'nothing' / 'resources'}")
    assert result.returncode == 1
    assert "MISSING" in result.stdout


def test_prepare_data_resamples_the_originals(demo_tiny, tmp_path):
    root, _ = demo_tiny
    tree = tmp_path / "tree"
    shutil.copytree(root, tree)
    from data_util.layout import SETS

    spec = SETS["weak_train"]
    assert (tree / spec.original_audio).is_dir()
    shutil.rmtree(tree / spec.audio)
    result = _run("ex_stage1", "prepare_data", "with", f"base_path={tree}")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tree / spec.audio).iterdir()) == sorted(
        p.name for p in (tree / spec.original_audio).iterdir())
