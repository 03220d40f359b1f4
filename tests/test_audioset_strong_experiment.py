"""End-to-end on the tiny AudioSet-strong demo: teacher, resume, evaluate, KD targets, KD student, every arch, the
reference README command verbatim, the chain AS-strong -> stage 1 -> stage 2, the inference CLI, DDP."""
from __future__ import annotations

import copy
import csv
import importlib
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import configs
import configs.audioset_strong as as_config
from data_util.kd_logits import StrongKDLogits
from helpers.training import train as t4_train
from models.checkpoints import safe_load
from tests import reference_commands
from tests.test_training import tiny_config

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[1]
FEW_STEPS = dict(max_epochs=1, limit_train_batches=2, enable_progress_bar=False, enable_model_summary=False,
                 log_every_n_steps=1)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.delenv(t4_train.RUN_DIR_ENV, raising=False)
    yield
    torch.set_num_threads(threads)


def as_config_for(demo, out_dir: Path, *named: str, **updates) -> dict:
    """The demo named config on the test's demo set, a few steps, then ``named`` configs and ``updates``."""
    source, dataset = demo
    config = configs.merge_config(as_config.default_config(), copy.deepcopy(as_config.NAMED_CONFIGS["demo"]))
    for name in named:
        configs.merge_config(config, copy.deepcopy(as_config.NAMED_CONFIGS[name]))
    configs.merge_config(config, dict(source_path=str(source), dataset_path=str(dataset), arch="atst_frame",
                                      training_strong=dict(batch_size=4, epoch_len=16),
                                      trainer=dict(FEW_STEPS, default_root_dir=str(out_dir))))
    configs.merge_config(config, copy.deepcopy(updates))
    as_config.validate_config(config)
    return config


@pytest.fixture(scope="module")
def teacher_run(as_strong_demo, tmp_path_factory):
    """The teacher recipe (BiGRU, balanced sampler, wavmix 1.0) on the demo, one epoch of two batches."""
    from helpers.training.audioset_strong_run import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("teacher")
    config = as_config_for(as_strong_demo, out, "teacher")
    result = train(copy.deepcopy(config))
    torch.set_num_threads(threads)
    return config, result


def test_teacher_trains_exports_and_evaluates_to_the_same_metrics(teacher_run, as_strong_demo, tmp_path):
    from helpers.training.audioset_strong_run import evaluate

    config, result = teacher_run
    run_dir = Path(result["run_dir"])
    assert {"val/psds1", "val/psds1_macro_averaged", "val/pauroc"} <= set(result)
    assert result["val/num_classes"] == 26  # the demo's eval classes: 27 synthesised, one of them train-only
    exported = Path(result["exported_model"])
    assert exported.is_file() and exported.with_suffix(".json").is_file()
    assert {k.split(".")[0] for k in torch.load(exported, weights_only=True)} == {
        "model", "seq_model", "strong_head", "weak_head"}
    last = safe_load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 2 and last["config"]["arch"] == "atst_frame" and len(last["classes"]) == 447
    assert json.loads((run_dir / "results.json").read_text())["exported_model"] == str(exported)
    # `with evaluate ckpt_path=<export>`: the exported final weights score what the run's last validation did
    evaluated = evaluate(as_config_for(as_strong_demo, tmp_path, "teacher", "evaluate", ckpt_path=str(exported)))
    for key in ("val/psds1", "val/psds1_macro_averaged", "val/pauroc"):
        assert evaluated[key] == pytest.approx(result[key], abs=1e-6), key


def test_resume_continues_from_last_checkpoint(teacher_run, as_strong_demo):
    from helpers.training.audioset_strong_run import train

    config, result = teacher_run
    last = Path(result["run_dir"]) / "checkpoints" / "last.ckpt"
    resumed = copy.deepcopy(config)
    resumed["ckpt_path"] = str(last)
    resumed["trainer"]["max_epochs"] = 2
    result2 = train(resumed)
    assert result2["run_dir"] == result["run_dir"]  # a resumed run keeps its folder
    assert safe_load(last)["global_step"] == 4


def test_kd_targets_from_the_teacher_train_a_student(teacher_run, as_strong_demo, tmp_path):
    from helpers.predictions.audioset_strong import ensemble_predictions, store_predictions
    from helpers.training.audioset_strong_run import train

    source, dataset = as_strong_demo
    _, result = teacher_run
    stored = store_predictions(as_config_for(as_strong_demo, tmp_path, ckpt_path=result["exported_model"],
                                             kd_out=str(tmp_path / "teacher.hdf5")), progress=False)
    teacher = StrongKDLogits(stored)
    demo_kd = StrongKDLogits(source / "kd" / "strong_kd.hdf5")
    assert len(teacher) == 12 + 16 - 1 and teacher.num_classes == 447 and teacher.num_frames == 250
    assert set(teacher.filenames) <= set(demo_kd.filenames)
    ensemble = ensemble_predictions(as_config_for(as_strong_demo, tmp_path, ensemble_files=(str(stored), str(stored)),
                                                  kd_out=str(tmp_path / "ensemble.hdf5")))
    name = teacher.filenames[0]
    np.testing.assert_allclose(StrongKDLogits(ensemble).logits(name), teacher.logits(name), atol=1e-2)
    student = train(as_config_for(as_strong_demo, tmp_path / "student", "kd_student",
                                  training_strong=dict(kd_logits=str(ensemble))))
    with open(Path(student["run_dir"]) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/strong_distillation_loss")]
    assert rows and all(float(r["train/strong_distillation_loss"]) > 0 for r in rows)


@pytest.mark.parametrize("arch", ["fpasst", "beats"])
def test_other_archs_train_with_the_weak_branch(arch, as_strong_demo, tmp_path):
    from helpers.training.audioset_strong_run import train

    source, _ = as_strong_demo
    result = train(as_config_for(
        as_strong_demo, tmp_path, arch=arch, weak_supervised_loss_weight=0.5, weak_distillation_loss_weight=0.5,
        training_weak=dict(kd_logits=str(source / "kd" / "weak_kd.npy"), kd_index=str(source / "kd" / "weak_kd_index.pkl")),
        trainer=dict(limit_train_batches=1)))
    exported = torch.load(result["exported_model"], weights_only=True)
    assert exported["weak_head.weight"].shape[0] == 527
    prefix = "model.model.encoder." if arch == "beats" else "model.blocks."
    assert any(k.startswith(prefix) for k in exported)


def test_reference_readme_command_runs_verbatim(as_strong_demo, tmp_path):
    """The README words unchanged; appended: the demo named config, the demo set, one training batch."""
    source, dataset = as_strong_demo
    words = shlex.split(reference_commands.AUDIOSET_STRONG_TRAIN[0])
    argv = ["ex_audioset_strong", *words[3:], "demo", f"source_path={source}", f"dataset_path={dataset}",
            "trainer.limit_train_batches=1", "trainer.max_epochs=1", "trainer.enable_progress_bar=False",
            f"trainer.default_root_dir={tmp_path}"]
    run = importlib.import_module("ex_audioset_strong").ex.run_commandline(argv)
    assert "val/psds1_macro_averaged" in run.result
    exported = torch.load(run.result["exported_model"], weights_only=True)
    assert exported["seq_model.rnn.weight_hh_l0"].shape == (3 * 1024, 1024)  # strong_wrapper.rnn_dim=1024


def test_chain_audioset_strong_to_stage1_to_stage2(teacher_run, demo_tiny, tmp_path):
    """Stage 1 starts from the exported AudioSet-strong model (<arch>.pretrained_name); stage 2 from stage 1."""
    root, resources = demo_tiny
    _, result = teacher_run
    exported = torch.load(result["exported_model"], weights_only=True)
    limits = {"limit_val_batches": 1, "limit_test_batches": 1}
    config1 = tiny_config(1, "atst_frame", root, resources, tmp_path / "s1", **limits)
    config1["atst_frame"]["pretrained_name"] = result["exported_model"]
    result1 = t4_train.train(copy.deepcopy(config1), 1)
    student1 = safe_load(result1["best_model_path"])["student"]
    for key, value in exported.items():  # stage 1 keeps the transformer frozen: still the AS-strong weights
        if key.startswith("model."):
            assert torch.equal(student1["as_model." + key], value), key
    config2 = tiny_config(2, "atst_frame", root, resources, tmp_path / "s2", **limits)
    config2["t4_wrapper"]["model_init_id"] = result1["best_model_path"]
    result2 = t4_train.train(copy.deepcopy(config2), 2)
    assert "test/student/rank_score" in result2


def test_inference_cli_runs_an_audioset_strong_model(teacher_run, tmp_path):
    import inference

    _, result = teacher_run
    audio = tmp_path / "clip.wav"
    sf.write(audio, 0.05 * np.random.default_rng(0).standard_normal(22_050 * 13).astype(np.float32), 22_050)
    assert inference.main(["--audio_file", str(audio), "--model_name", result["exported_model"], "--out",
                           str(tmp_path / "out"), "--quiet", "--threshold", "0.3"]) == 0
    folder = tmp_path / "out" / "clip"
    header = (folder / "clip_scores.tsv").read_text().splitlines()[0].split("\t")
    assert len(header) == 2 + 447 and header[2] == "Accelerating, revving, vroom"
    frames = len((folder / "clip_scores.tsv").read_text().splitlines()) - 1
    assert frames == (1 + 13 * 16_000 // 160) // 4  # 40 ms frames over the 13 s recording
    windows = StrongKDLogits(folder / "clip_scores.hdf5")
    assert windows.num_classes == 447 and len(windows) == 2  # two 10 s windows (5 s hop)
    assert (folder / "clip.png").is_file()


@pytest.mark.slow  # two training processes: the long tier, like tests/test_ddp.py
def test_ddp_two_cpu_processes(as_strong_demo, tmp_path):
    config = as_config_for(as_strong_demo, tmp_path / "out", trainer=dict(accelerator="cpu", devices=2,
                                                                          strategy="ddp"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    script = tmp_path / "run_ddp.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from helpers.training.audioset_strong_run import train
        result = train(json.load(open({str(tmp_path / 'config.json')!r})))
        if os.environ.get("LOCAL_RANK", "0") == "0":
            json.dump(result, open({str(tmp_path / 'result.json')!r}, "w"))
    """))
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    env.pop(t4_train.RUN_DIR_ENV, None)
    process = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
    assert process.returncode == 0, process.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    checkpoint = safe_load(Path(result["run_dir"]) / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint["ASStrongDataModule"]["world_size"] == 2
