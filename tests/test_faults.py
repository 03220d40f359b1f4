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
from models.factory import build_model
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


# ======================================================== 1. no code execution from any checkpoint source
def test_the_payload_runs_when_loaded_unsafely(evil_server):
    """The test checkpoint is live: an unchecked ``torch.load`` runs it (so the tests below can fail)."""
    torch.load(evil_server["file"], weights_only=False)
    assert evil_server["marker"].exists()


@pytest.mark.integration
def test_resume_from_a_url_on_the_command_line_runs_nothing(evil_server, demo_tiny, tmp_path):
    root, resources = demo_tiny
    out = tmp_path / "runs"
    result = _cli("-m", "ex_stage1", "with", "demo", "arch=atst_frame", f"base_path={root}",
                  f"resources_path={resources}", f"trainer.default_root_dir={out}", f"ckpt_path={evil_server['url']}",
                  env={"TORCH_HOME": str(tmp_path / "torch_home")})
    assert not evil_server["marker"].exists(), "the checkpoint's pickled code ran"
    assert evil_server["handler"].requests == [], "a URL checkpoint must not even be downloaded"
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "URL" in error_lines[0] and "ckpt_path" in error_lines[0], result.stderr
    assert _nothing_created(out)


def _store_config(root: Path, tmp_path: Path, **updates) -> dict:
    config = configs.merge_config(configs.demo_defaults(2), dict(
        arch="atst_frame", base_path=str(root), resources_path=str(root / "resources"),
        model_path=str(tmp_path / "models"), output_path=str(tmp_path / "preds"), preds_path=str(tmp_path / "preds"),
        store_sets=("devtest",), batch_size=8, test=dict(num_workers=0)))
    return configs.merge_config(config, updates)


@pytest.mark.parametrize("how", ["resume", "model_init_id", "backbone", "test", "store_predictions", "inference"])
def test_no_checkpoint_key_downloads_or_runs_a_url(how, evil_server, demo_tiny, tmp_path, capsys):
    from helpers.training.train import test_checkpoint, train

    root, _ = demo_tiny
    url, out = evil_server["url"], tmp_path / "runs"
    runs = {
        "resume": lambda: train(_train_config(root, out, ckpt_path=url), 1),
        "model_init_id": lambda: train(_train_config(root, out, stage=2, t4_wrapper=dict(model_init_id=url)), 2),
        "backbone": lambda: train(_train_config(root, out, atst_frame=dict(pretrained_name=url)), 1),
        "test": lambda: test_checkpoint(_train_config(root, out), 1, url),
        "store_predictions": lambda: pc.store_predictions(_store_config(root, tmp_path, pretrained_name=url),
                                                          echo=lambda line: None),
    }
    if how == "inference":
        code = inference.main(["--audio_file", str(_write_audio(tmp_path / "a.wav", 1.0, 16000)),
                               "--model_name", url, "--quiet", "--out", str(out)])
        assert code == 2 and "URL" in capsys.readouterr().err
    else:
        with pytest.raises(configs.ConfigError, match="URL"):
            runs[how]()
    assert not evil_server["marker"].exists()
    assert evil_server["handler"].requests == []
    assert _nothing_created(out)


def test_resume_from_a_local_pickle_is_refused_by_our_loader(evil_server, demo_tiny, tmp_path):
    from helpers.training.train import train

    root, _ = demo_tiny
    out = tmp_path / "runs"
    with pytest.raises(CheckpointError) as caught:
        train(_train_config(root, out, ckpt_path=str(evil_server["file"])), 1)
    assert not evil_server["marker"].exists()
    message = str(caught.value)
    assert str(evil_server["file"]) in message and "refused to load" in message and "posix.system" in message
    assert _nothing_created(out)


def test_every_checkpoint_read_goes_through_the_safe_loader(demo_tiny, tmp_path):
    """No ``torch.load`` outside models/checkpoints.py, no unchecked Lightning loaders, and the trainer reads resume
    files with ``safe_load`` (the guard for loaders still to come: HEAR / downstream)."""
    from helpers.training.safe_resume import SafeCheckpointIO
    from helpers.training.train import _build_trainer

    offenders = []
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith((".venv", "tests/")) or "/." in f"/{relative}":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("torch.load(", "load_from_checkpoint(", "load_state_dict_from_url(", "weights_only=False"):
            for line in text.splitlines():
                code = line.split("#")[0]
                if needle in code and not (relative == "models/checkpoints.py" and needle == "torch.load("):
                    if not code.strip().startswith(("\"", "'", "f\"")) and "``" not in code and "(..." not in code:
                        offenders.append(f"{relative}: {line.strip()}")
    assert offenders == []
    root, _ = demo_tiny
    trainer = _build_trainer(_train_config(root, tmp_path / "runs"), 1, tmp_path / "run", loggers=[])
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)
    with pytest.raises(CheckpointError, match="URL"):
        trainer.strategy.checkpoint_io.load_checkpoint("https://example.org/x.ckpt")


# ========================================================================= 2. every input checked before step 1
def test_a_missing_test_set_fails_before_training_and_leaves_no_run_folder(tree, tmp_path):
    from data_util.preflight import PreflightError
    from helpers.training.train import train

    shutil.rmtree(tree / SETS["devtest"].audio)
    out = tmp_path / "runs"
    with pytest.raises(PreflightError) as caught:
        train(_train_config(tree, out), 1)
    message = str(caught.value)
    assert str(tree / SETS["devtest"].audio) in message and "fix:" in message
    assert _nothing_created(out)


def test_preflight_lists_every_problem_of_a_run_at_once(tree, demo_tiny, tmp_path):
    from data_util.preflight import PreflightError
    from helpers.training.train import preflight

    shutil.rmtree(tree / SETS["synth_val"].audio)
    labels = tmp_path / "labels"
    write_predictions(labels / "synth_train.hdf5", ["x"], np.zeros((1, 156, 27), np.float32), model="m")
    config = _train_config(tree, tmp_path / "runs", stage=2, pseudo_labels=str(labels),
                           loss_weights=(12, 3, 0.25, 1, 6, 1.0),
                           t4_wrapper=dict(model_init_id=str(tmp_path / "missing_stage1.ckpt")))
    with pytest.raises(PreflightError) as caught:
        preflight(config, 2)
    message = str(caught.value)
    assert "synth_val" in message and str(tree / SETS["synth_val"].audio) in message
    assert "weak_train.hdf5" in message and "pseudo_labels" in message  # the pseudo-label files it lacks
    assert "missing_stage1.ckpt" in message and "t4_wrapper.model_init_id" in message
    assert preflight(_train_config(demo_tiny[0], tmp_path / "runs"), 1).ok  # a complete tree passes


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


# =========================================== 6. a failed ensemble leaves nothing; evaluating nothing is an error
def test_a_failed_ensemble_leaves_no_output_folder(tmp_path):
    preds = tmp_path / "preds"
    write_predictions(preds / "a" / "devtest.hdf5", ["x", "y"], np.zeros((2, 156, 27), np.float32), model="a")
    write_predictions(preds / "b" / "devtest.hdf5", ["x", "z"], np.zeros((2, 156, 27), np.float32), model="b")
    with pytest.raises(Exception, match="different clips"):
        pc.ensemble_predictions({**configs.default_config(2), "pretrained_names": ("a", "b"), "out_name": "ens",
                                 "preds_path": str(preds)}, echo=lambda line: None)
    assert sorted(p.name for p in preds.iterdir()) == ["a", "b"]


def test_evaluating_a_folder_without_predictions_is_an_error(demo_tiny, tmp_path):
    root, resources = demo_tiny
    empty = tmp_path / "preds" / "empty"
    empty.mkdir(parents=True)
    config = {**configs.default_config(2), "pretrained_name": "empty", "preds_path": str(tmp_path / "preds"),
              "base_path": str(root), "resources_path": str(resources)}
    with pytest.raises(PredictionCommandError, match="no prediction files") as caught:
        pc.eval_predictions(config, echo=lambda line: None)
    assert str(empty) in str(caught.value) and "devtest.hdf5" in str(caught.value)


# ================================================================================ 7. silent or misleading outcomes
TINY_SIZES = {"t4_wrapper": dict(nb_filters=[4, 4, 8, 8, 8, 8, 8], n_RNN_cell=8, embedding_size=32),
              "atst_frame": dict(embed_dim=32, depth=1, num_heads=1)}


@pytest.mark.integration
def test_store_refuses_to_keep_predictions_of_another_checkpoint(demo_tiny, tmp_path):
    root, _ = demo_tiny
    config = _store_config(root, tmp_path, out_name="same", **copy.deepcopy(TINY_SIZES))
    for seed, name in enumerate(("first", "second")):
        torch.manual_seed(seed)
        model = build_model(config)
        save_sed_checkpoint(tmp_path / "models" / f"{name}.ckpt", model.state_dict(), model.state_dict())
    written = pc.store_predictions({**config, "pretrained_name": "first"}, echo=lambda line: None)
    assert pc.store_predictions({**config, "pretrained_name": "first"}, echo=lambda line: None) == written  # kept
    with pytest.raises(PredictionCommandError) as caught:
        pc.store_predictions({**config, "pretrained_name": "second"}, echo=lambda line: None)
    message = str(caught.value)
    assert "first.ckpt" in message and "second.ckpt" in message and "overwrite=True" in message
    pc.store_predictions({**config, "pretrained_name": "second", "overwrite": True}, echo=lambda line: None)
    import h5py

    with h5py.File(written["devtest"]) as f:
        assert f.attrs["checkpoint"].endswith("second.ckpt")


def _lightning_like_checkpoint(path: Path, arch: str, batch_sizes, with_config: bool = True) -> Path:
    model = _tiny_model(arch, seed=0, num_heads=2)
    state = {f"{mode}.{k}": v for mode in ("student", "teacher") for k, v in model.state_dict().items()}
    checkpoint = {"state_dict": state, "epoch": 1, "global_step": 8, "optimizer_states": [], "lr_schedulers": [],
                  "T4DataModule": {"sampler": {"epoch": 1, "batches_done": 3, "seed": 42}, "world_size": 1}}
    if with_config:
        checkpoint["config"] = {"arch": arch, "training": {"batch_sizes": list(batch_sizes)}}
    torch.save(checkpoint, path)
    return path


def test_resuming_with_other_batch_sizes_warns_what_happens_to_the_sampler(demo_tiny, tmp_path):
    from helpers.training.safe_resume import check_resume_checkpoint

    root, _ = demo_tiny
    path = _lightning_like_checkpoint(tmp_path / "last.ckpt", "atst_frame", (2, 2, 2, 2, 2))
    config = _train_config(root, tmp_path / "runs", training=dict(batch_sizes=(4, 2, 2, 2, 2)))
    checkpoint, warnings = check_resume_checkpoint(config, str(path))
    assert checkpoint["global_step"] == 8
    (warning,) = warnings
    assert "(2, 2, 2, 2, 2)" in warning and "(4, 2, 2, 2, 2)" in warning and "sampler" in warning
    assert "3 batches" in warning  # what the resumed epoch skips
    assert check_resume_checkpoint(_train_config(root, tmp_path / "runs"), str(path))[1] == []


@pytest.mark.parametrize("with_config", [True, False])
def test_resuming_with_another_arch_names_both(with_config, demo_tiny, tmp_path):
    from helpers.training.train import train

    root, _ = demo_tiny
    path = _lightning_like_checkpoint(tmp_path / "last.ckpt", "beats", (2, 2, 2, 2, 2), with_config=with_config)
    out = tmp_path / "runs"
    with pytest.raises(CheckpointError) as caught:
        train(_train_config(root, out, ckpt_path=str(path)), 1)
    message = str(caught.value)
    assert str(path) in message and "beats" in message and "arch=atst_frame" in message
    assert len(message.splitlines()) <= 2
    assert _nothing_created(out)


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as caught:
        safe_load(path)
    message = str(caught.value)
    assert str(path) in message and "not a PyTorch checkpoint" in message
    assert "allow-list" not in message and "pickled code" not in message


def test_inference_names_the_missing_keys_of_a_checkpoint(tmp_path):
    model = _tiny_model("atst_frame", seed=0, num_heads=4)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("rnn.")}
    path = tmp_path / "no_rnn.ckpt"
    save_sed_checkpoint(path, state, state)
    with pytest.raises(CheckpointError) as caught:
        inference.load_model(path)
    message = str(caught.value)
    assert str(path) in message and "rnn.rnn.weight_ih_l0" in message
    assert "num_layers" not in message


def test_an_unknown_pseudo_label_name_is_an_error_even_with_weight_0(demo_tiny, tmp_path):
    from data_util.preflight import PreflightError
    from helpers.training.train import train

    root, _ = demo_tiny
    out = tmp_path / "runs"
    config = _train_config(root, out, pseudo_labels="no_such_ensemble")
    assert config["loss_weights"][5] == 0
    with pytest.raises(PreflightError, match="no_such_ensemble"):
        train(config, 1)
    assert _nothing_created(out)


def test_demo_with_another_base_path_reads_that_trees_resources(tree, capsys):
    import ex_stage1

    ex_stage1.ex.run("check_data", named_configs=["demo"], config_updates={"base_path": str(tree)})
    out = capsys.readouterr().out
    assert f"resources:    {tree / 'resources'}" in out
    resolved = configs.merge_config(configs.demo_defaults(2), {"base_path": str(tree)})
    assert configs.resources_dir(resolved) == tree / "resources"
    assert configs.model_dir(resolved) == tree / "pretrained_models"
    assert configs.preds_dir(resolved) == configs.output_dir(resolved) == tree / "predictions"


# ========================================================================================== 8. downloads are checked
def _download(name: str, mirror: Path, dest: Path) -> str:
    (resource,) = dr.select([name])
    return dr.download(resource, dest, str(mirror), dr.load_manifest(), progress=False)


def test_the_manifest_records_a_check_for_every_release_file():
    manifest = dr.load_manifest()
    assert sorted(manifest) == sorted(r.filename for r in dr.RESOURCES)
    for resource in dr.RESOURCES:
        assert manifest[resource.filename]["check"], resource.filename


def test_random_bytes_named_like_a_checkpoint_are_refused(tmp_path, capsys):
    mirror, dest = tmp_path / "mirror", tmp_path / "resources"
    mirror.mkdir()
    (mirror / "atst_stage2.ckpt").write_bytes(np.random.default_rng(0).bytes(10_000))
    code = dr.main(["atst_stage2", "--from", str(mirror), "--dest", str(dest), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "atst_stage2.ckpt" in err and "not a PyTorch checkpoint" in err
    assert not (dest / "pretrained_models" / "atst_stage2.ckpt").exists()
    assert not list(dest.rglob("*.part"))


def test_a_checkpoint_of_the_expected_structure_is_placed(tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "resources"
    model = _tiny_model("atst_frame", seed=0, num_heads=2)
    save_sed_checkpoint(mirror / "atst_stage2.ckpt", model.state_dict(), model.state_dict())
    beats = _tiny_model("beats", seed=0, num_heads=2)
    save_sed_checkpoint(mirror / "passt_stage2.ckpt", beats.state_dict(), beats.state_dict())
    assert _download("atst_stage2", mirror, dest) == "checked"
    assert (dest / "pretrained_models" / "atst_stage2.ckpt").is_file()
    with pytest.raises(dr.DownloadError, match="beats") as caught:
        _download("passt_stage2", mirror, dest)  # a BEATs model under fPaSST's name
    assert "fpasst" in str(caught.value)
    assert not (dest / "pretrained_models" / "passt_stage2.ckpt").exists()


def test_an_archive_without_the_expected_members_is_refused(tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "resources"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "pseudo-labels.zip", "w") as zf:
        for name in PSEUDO_LABEL_SETS[:-2]:
            zf.writestr(f"pseudo-labels/{name}.hdf5", b"data")
    with pytest.raises(dr.DownloadError) as caught:
        _download("pseudo-labels", mirror, dest)
    assert all(f"{name}.hdf5" in str(caught.value) for name in PSEUDO_LABEL_SETS[-2:])
    assert not (dest / "pseudo-labels").exists() and not list(dest.rglob("*.part"))
    with zipfile.ZipFile(mirror / "pseudo-labels.zip", "a") as zf:
        for name in PSEUDO_LABEL_SETS[-2:]:
            zf.writestr(f"pseudo-labels/{name}.hdf5", b"data")
    assert _download("pseudo-labels", mirror, dest) == "checked"
    assert sorted(p.stem for p in (dest / "pseudo-labels").iterdir()) == sorted(PSEUDO_LABEL_SETS)


def test_a_zip_that_fails_to_extract_leaves_nothing_to_resume(tmp_path):
    from tests.test_download_resources import _RangeHandler

    mirror, dest = tmp_path / "mirror", tmp_path / "resources"
    mirror.mkdir()
    (mirror / "dirs.zip").write_bytes(b"PK\x03\x04" + b"not a zip archive" * 100)

    class Handler(_RangeHandler):
        ranges_seen = []

        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(mirror), **k)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with pytest.raises(dr.DownloadError, match="zip"):
            dr.download(dr.select(["dirs"])[0], dest, url, dr.load_manifest(), progress=False)
        assert not list(dest.rglob("*.part")) and not (dest / "dirs").exists()
        with zipfile.ZipFile(mirror / "dirs.zip", "w") as zf:
            buffer = tmp_path / "ir.wav"
            sf.write(buffer, np.zeros(160, np.float32), 16000)
            zf.write(buffer, "dirs/phone/ir.wav")
        assert dr.download(dr.select(["dirs"])[0], dest, url, dr.load_manifest(), progress=False) == "checked"
        assert Handler.ranges_seen[-1] is None  # fetched whole, not resumed from the broken file
        assert (dest / "dirs" / "phone" / "ir.wav").is_file()
    finally:
        httpd.shutdown()
        httpd.server_close()


# ==================================================================== user errors: one message; a switch for the rest
@pytest.mark.integration
def test_a_user_error_is_one_line_and_the_debug_switch_shows_the_traceback(demo_tiny, tmp_path):
    root, resources = demo_tiny
    args = ("-m", "ex_stage1", "test", "with", "demo", "arch=atst_frame", f"base_path={root}",
            f"resources_path={resources}", f"trainer.default_root_dir={tmp_path / 'runs'}",
            f"ckpt_path={tmp_path / 'missing.ckpt'}")
    plain = _cli(*args)
    assert plain.returncode == 2, plain.stderr[-3000:]
    assert "Traceback" not in plain.stderr
    (line,) = [line for line in plain.stderr.splitlines() if line.startswith("error:")]
    assert "missing.ckpt" in line
    debug = _cli(*args, env={"T4SED_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert _nothing_created(tmp_path / "runs")
