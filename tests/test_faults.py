"""Faults a new user runs into (issue 15), each reproduced: what the user must see, and what must be kept.

Grouped by the issue's points: 1 no code execution from any checkpoint source; 2 every input checked before the
first step; 3 the data doctor reads tsvs as training does and samples audio headers; 4 NaN/Inf audio; 6 a failed
ensemble leaves nothing, evaluating nothing is an error; 7 silent or misleading outcomes; 8 downloads are checked.
The table of docs/RELIABILITY.md lists the same cases. Unit tests run in-process on the tiny demo data; the
``integration`` ones start the command line as a user does.
"""
from __future__ import annotations

import copy
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import configs
import download_resources as dr
import inference
from data_util import doctor, tsv
from data_util.audio import AudioReadError, read_audio
from data_util.datasets import ClipDataset, ClipEntry, UnreadableLog, domain_mask
from data_util.layout import PSEUDO_LABEL_SETS, SETS
from data_util.prediction_files import PredictionCommandError, write_predictions
from helpers.predictions import commands as pc
from models.checkpoints import CheckpointError, safe_load, save_sed_checkpoint
from tests.test_inference import TINY_CRNN, _tiny_model, _write_audio
from tests.test_training import one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parent.parent
LIMITS = dict(limit_train_batches=1, limit_val_batches=1, limit_test_batches=1)


# ================================================================================================== shared helpers
@pytest.fixture
def tree(demo_tiny, tmp_path) -> Path:
    """A private copy of the tiny demo tree; files are hard links, so tests delete or replace, never edit."""
    root, _ = demo_tiny
    copy_root = tmp_path / "tree"
    shutil.copytree(root, copy_root, copy_function=os.link)
    return copy_root


def _replace_text(path: Path, text: str) -> None:
    path.unlink()  # break the hard link first
    path.write_text(text, encoding="utf-8")


def _train_config(root: Path, out: Path, stage: int = 1, arch: str = "atst_frame", **updates) -> dict:
    config = tiny_config(stage, arch, root, root / "resources", out, **LIMITS)
    return configs.merge_config(config, updates)


def _nothing_created(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def _cli(*args, env=None, cwd=REPO):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=600)


class _ShellCommand:
    """Pickles as a call of ``os.system``: what a malicious checkpoint holds."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "epoch": 0, "payload": _ShellCommand(f"touch {marker}")}, path)
    return path


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def evil_server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving ``evil.ckpt`` whose unpickling runs ``touch <marker>``. torch's hub cache
    (where Lightning would store a downloaded checkpoint) points into tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    served = tmp_path / "served"
    served.mkdir()
    marker = tmp_path / "PAYLOAD_RAN"
    _evil_checkpoint(served / "evil.ckpt", marker)

    class Handler(_CountingHandler):
        requests = []

        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(served), **k)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}/evil.ckpt", "marker": marker, "handler": Handler,
           "file": served / "evil.ckpt"}
    httpd.shutdown()
    httpd.server_close()


# ================================================================ 3. the doctor reads tsvs as training does
BAD_ROWS = {
    "onset after offset": ("5.0", "2.0", "Dog", "onset <= offset"),
    "unknown label": ("1.0", "2.0", "Dogg", "unknown event label 'Dogg'"),
    "non-numeric onset": ("abc", "2.0", "Dog", "must be a number"),
}


@pytest.mark.parametrize("fault", sorted(BAD_ROWS))
def test_doctor_rejects_the_tsv_rows_training_rejects(fault, tree):
    onset, offset, label, expected = BAD_ROWS[fault]
    labels = tree / SETS["synth_train"].labels
    lines = labels.read_text(encoding="utf-8").splitlines()
    filename = lines[1].split("\t")[0]
    lines.insert(2, "\t".join((filename, onset, offset, label)))
    _replace_text(labels, "\n".join(lines) + "\n")
    with pytest.raises(tsv.TsvFormatError) as training_error:
        tsv.read_strong_tsv(labels)
    report = doctor.check_data(tree, tree / "resources", stage=1)
    assert not report.ok
    (problem,) = [p for p in report.errors if p.set_name == "synth_train"]
    assert problem.status == doctor.BAD_TSV and expected in problem.message and problem.path == labels
    assert problem.message == str(training_error.value).removeprefix(f"{labels}, ")  # the reader's words, line 3
    assert problem.message.startswith("line 3: ")


def test_doctor_samples_audio_headers(tree):
    devtest = tree / SETS["devtest"].audio
    broken, resampled = sorted(devtest.iterdir())[:2]
    broken.unlink()
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    resampled.unlink()
    sf.write(resampled, np.zeros(44100, np.float32), 44100)
    assert doctor.check_data(tree, tree / "resources", stage=1).ok  # listings and tsvs only by default
    report = doctor.check_data(tree, tree / "resources", stage=1, sample_audio=1000)
    (problem,) = [p for p in report.errors if p.set_name == "devtest"]
    assert problem.status == doctor.BAD_AUDIO and broken.name in problem.message
    warned = " ".join(p.message for p in report.warnings if p.set_name == "devtest")
    assert resampled.name in warned and "44100" in warned
    assert "BAD AUDIO" in doctor.format_report(report)


def test_an_excluded_strong_clip_may_be_absent_for_training_too(tree):
    from data_util.datasets import build_train_sets
    from data_util.layout import EXCLUDE_LISTS

    excluded = (tree / "resources" / EXCLUDE_LISTS["strong_train"]).read_text().splitlines()[1]
    (tree / SETS["strong_train"].audio / excluded).unlink()
    assert doctor.check_data(tree, tree / "resources", stage=1, exact_counts=False).ok
    build_train_sets(tree, tree / "resources", {"wavmix_p": 0.0})  # the doctor's OK holds: training accepts it


# ================================================================================================= 4. NaN/Inf audio
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_audio_is_an_unreadable_file(bad_value, tmp_path):
    path = tmp_path / "bad.wav"
    audio = np.zeros(16000, np.float32)
    audio[100:110] = bad_value
    sf.write(path, audio, 16000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match="non-finite") as caught:
        read_audio(path)
    assert str(path) in str(caught.value) and "10" in caught.value.reason


def test_training_replaces_a_nan_clip_with_skip_unreadable_and_names_it_without(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for name, value in (("good.wav", 0.1), ("nan.wav", np.nan)):
        sf.write(folder / name, np.full(16000, value, np.float32), 16000, subtype="FLOAT")
    clips = [ClipEntry("nan.wav", weak_labels=()), ClipEntry("good.wav", weak_labels=())]
    mask = domain_mask("desed", include_alias_targets=True)
    with pytest.raises(AudioReadError, match="nan.wav"):
        ClipDataset("synth_train", folder, clips, mask=mask, train=True)[0]
    unreadable = UnreadableLog(tmp_path / "unreadable.tsv")
    sample = ClipDataset("synth_train", folder, clips, mask=mask, train=True, unreadable_log=unreadable)[0]
    assert sample["filename"] == "good" and torch.isfinite(sample["audio"]).all()
    assert list(unreadable.summary()["synth_train"]) == [str(folder / "nan.wav")]


def test_inference_skips_and_lists_a_nan_file_and_processes_the_rest(tmp_path, capsys):
    models = tmp_path / "models"
    model = _tiny_model("atst_frame", seed=0, num_heads=4)
    save_sed_checkpoint(models / "tiny.ckpt", model.state_dict(), model.state_dict(),
                        hyper_parameters={"config": {"arch": "atst_frame", "atst_frame": {"num_heads": 4}}})
    audio = tmp_path / "audio"
    audio.mkdir()
    _write_audio(audio / "a.wav", 2.0, 16000)
    sf.write(audio / "b.wav", np.full(32000, np.nan, np.float32), 16000, subtype="FLOAT")
    _write_audio(audio / "c.wav", 2.0, 16000, seed=2)
    out = tmp_path / "out"
    code = inference.main(["--audio_file", str(audio), "--model_name", "tiny", "--models_dir", str(models),
                           "--out", str(out), "--quiet", "--no_plot", "--device", "cpu", "--hop_seconds", "10"])
    err = capsys.readouterr().err
    assert code == 1
    assert (out / "a" / "a_events.tsv").is_file() and (out / "c" / "c_events.tsv").is_file()
    assert not (out / "b").exists()
    assert "b.wav" in err and "non-finite" in err
