"""helpers.env_check: the environment against the lock, and torch/torchaudio loading, reported one line each."""
import builtins
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from helpers import env_check

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.txt"


def test_lock_is_exact_and_complete():
    """Every line of the lock is an exact pin, torch and torchaudio are pinned to the same release."""
    pins = env_check.read_lock(LOCK)
    assert pins["torch"] == pins["torchaudio"] == "2.11.0"
    for name in ("pytorch-lightning", "sacred", "sebbs", "sed-scores-eval-np2", "pandas", "numpy", "setuptools"):
        assert name in pins, f"{name} missing from the lock"
    requirement_lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith((" ", "#"))]
    assert all("==" in line for line in requirement_lines), [l for l in requirement_lines if "==" not in l]
    assert len(requirement_lines) == len(pins)


def test_this_environment_matches_the_lock():
    with warnings.catch_warnings():  # sacred and dcase_util import it; it puts setuptools' vendored
        warnings.simplefilter("ignore")  # packaging/platformdirs on sys.path, which must not count as installed
        import pkg_resources  # noqa: F401
    assert env_check.check(LOCK) == []


def test_reader_parses_uv_output(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# header\nfoo-bar==1.2.3\n    # via baz\nnumpy==2.0.0 ; python_version < '3.12'\nthop==0.1.1.post22\n")
    assert env_check.read_lock(lock) == {"foo-bar": "1.2.3", "numpy": "2.0.0", "thop": "0.1.1.post22"}
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.txt: no 'name==version' lines"):
        env_check.read_lock(tmp_path / "empty.txt")


def test_mismatches_one_line_per_package():
    locked = {"torch": "2.11.0", "torchaudio": "2.11.0", "numpy": "2.4.6", "thop": "0.1.1.post2209072238",
              "nvidia-cublas": "13.1.0.3", "missing-pkg": "1.0"}
    installed = {"torch": "2.11.0", "torchaudio": "2.11.1", "numpy": "2.4.6", "thop": "0.1.1-2209072238",
                 "nvidia-cublas": "13.1.0.3"}
    assert env_check.version_mismatches(locked, installed) == [
        "missing-pkg: installed nothing, locked 1.0",
        "torchaudio: installed 2.11.1, locked 2.11.0",
    ]


def test_pytorch_index_builds_match_and_need_no_cuda_runtime_wheels():
    locked = {"torch": "2.11.0", "torchaudio": "2.11.0", "nvidia-cublas": "13.1.0.3", "triton": "3.6.0"}
    assert env_check.version_mismatches(locked, {"torch": "2.11.0+cpu", "torchaudio": "2.11.0+cpu"}) == []
    # another release is still a mismatch, whatever its build label
    assert env_check.version_mismatches(locked, {"torch": "2.12.0+cpu", "torchaudio": "2.11.0+cpu"}) == [
        "torch: installed 2.12.0+cpu, locked 2.11.0"]
    # PyPI's default build needs its CUDA runtime wheels
    assert env_check.version_mismatches(locked, {"torch": "2.11.0", "torchaudio": "2.11.0"}) == [
        "nvidia-cublas: installed nothing, locked 13.1.0.3", "triton: installed nothing, locked 3.6.0"]


def test_command_fails_on_a_fake_lock_entry_and_names_the_fix(tmp_path):
    fake_lock = tmp_path / "requirements.txt"
    fake_lock.write_text(LOCK.read_text().replace("\ntorchaudio==2.11.0", "\ntorchaudio==2.11.1")
                         + "definitely-not-installed-pkg==9.9.9\n")
    result = subprocess.run([sys.executable, "-m", "helpers.env_check", "--lock", str(fake_lock)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "env_check: this environment does not match requirements.txt:"
    assert lines[1:-1] == ["  definitely-not-installed-pkg: installed nothing, locked 9.9.9",
                           "  torchaudio: installed 2.11.0, locked 2.11.1"]
    assert lines[-1].startswith("fix: make venv-rebuild")
    assert "Traceback" not in result.stdout + result.stderr


def test_torch_torchaudio_mismatch_is_one_readable_line(monkeypatch):
    """What a torchaudio built for another torch does at import, reported in one line with both versions."""
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name.startswith("torchaudio"):
            raise OSError(".../torchaudio/lib/libtorchaudio.so: undefined symbol: "
                          "torch_exception_get_what_without_backtrace\nmore detail")
        return real_import(name, *args, **kwargs)

    for module in [m for m in sys.modules if m.startswith("torchaudio")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    problems = env_check.torch_problems()
    assert len(problems) == 1
    assert problems[0].startswith("torchaudio 2.11.0 does not load with torch 2.11.0")
    assert problems[0].endswith("undefined symbol: torch_exception_get_what_without_backtrace")


def test_make_runs_the_check_before_tests_and_demo():
    makefile = (REPO / "Makefile").read_text()
    for target in ("test:", "test-fast:", "demo:"):
        recipe = makefile.split(f"\n{target}", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        assert recipe[0].strip() == "$(PY) -m helpers.env_check", (target, recipe)
    assert "make test" in (REPO / ".ci" / "run").read_text()
