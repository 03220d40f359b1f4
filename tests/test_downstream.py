"""ex_downstream end to end on the demo HEAR task: fine-tuning, linear probing, layer-wise decay, warm-up, resume,
the test command; and the config (named configs, strict keys)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import configs.downstream as downstream_config
from models.checkpoints import safe_load
from tests.test_training import one_torch_thread  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "model.embedder.backbone."
STEPS_PER_EPOCH = 4  # 8 training files x 2 crops of 10 s, batches of 4


def _run(command: str | None, task: Path, out: Path, named=("demo",), **updates):
    from ex_downstream import ex

    trainer = {"max_epochs": 2, "default_root_dir": str(out), "enable_progress_bar": False,
               "enable_model_summary": False, **updates.pop("trainer", {})}
    config = {"task_path": str(task), "trainer": trainer, **updates}
    run = ex.run(command, config_updates=config, named_configs=list(named)) if command else \
        ex.run(config_updates=config, named_configs=list(named))
    return run.result


def _backbone(state: dict) -> dict:
    return {k[len(BACKBONE):]: v for k, v in state.items() if k.startswith(BACKBONE)}


@pytest.mark.integration
def test_fine_tuning_resume_and_the_test_command(hear_demo_task, tiny_backbone_files, tmp_path):
    stage_checkpoint = tiny_backbone_files["atst_frame"][1]
    result = _run(None, hear_demo_task, tmp_path, arch="atst_frame", pretrained_name=str(stage_checkpoint))
    for stage in ("val", "test"):
        for metric in ("event_onset_200ms_fms", "event_onset_50ms_fms", "segment_1s_er", "loss"):
            assert f"{stage}/{metric}" in result
    run_dir = Path(result["run_dir"])
    events = json.loads((run_dir / "test_events.json").read_text())
    assert set(events) == {f"test_{i:03d}.wav" for i in range(3)}
    assert json.loads((run_dir / "results.json").read_text())["best_model_path"] == result["best_model_path"]
    best = safe_load(result["best_model_path"])
    assert best["labels"] == ["doorslam", "keysDrop", "knock", "phone", "speech"]
    assert best["config"]["arch"] == "atst_frame" and best["config"]["frames"]["hop_s"] == 0.04
    # fine-tuning moved the transformer away from the stage checkpoint's weights it started from
    source = {k[len("as_model.model."):]: v for k, v in safe_load(stage_checkpoint)["student"].items()
              if k.startswith("as_model.model.")}
    trained = _backbone(best["state_dict"])
    assert trained.keys() == source.keys()
    assert any(not torch.equal(trained[k], source[k]) for k in source)

    # the test command on the best checkpoint gives the training run's figures
    tested = _run("test", hear_demo_task, tmp_path / "test", ckpt_path=result["best_model_path"])
    for key in ("val/event_onset_200ms_fms", "test/event_onset_200ms_fms", "test/segment_1s_er", "test/loss"):
        assert tested[key] == pytest.approx(result[key], abs=1e-6), key

    # resume: one more epoch from last.ckpt, in the same run folder
    last = run_dir / "checkpoints" / "last.ckpt"
    assert safe_load(last)["global_step"] == 2 * STEPS_PER_EPOCH
    resumed = _run(None, hear_demo_task, tmp_path, arch="atst_frame", ckpt_path=str(last), trainer={"max_epochs": 3})
    assert resumed["run_dir"] == result["run_dir"]
    assert safe_load(last)["global_step"] == 3 * STEPS_PER_EPOCH


@pytest.mark.integration
def test_linear_probe_keeps_the_transformer_and_warm_up_is_the_keys(hear_demo_task, tiny_backbone_files, tmp_path):
    beats_file = tiny_backbone_files["beats"][1]
    warmup = 100
    result = _run(None, hear_demo_task, tmp_path, named=("demo", "pretrainedsed_beats_linear"),
                  pretrained_name=str(beats_file), trainer={"max_epochs": 2},
                  optimizer={"warmup_steps": warmup})
    checkpoint = safe_load(Path(result["run_dir"]) / "checkpoints" / "last.ckpt")
    assert checkpoint["config"]["transformer_frozen"] and checkpoint["config"]["frames"]["token_pooling"] == "sequence"
    # the transformer is exactly the file's; only the head trained, with Adam and no weight decay
    original, trained = safe_load(beats_file)["model"], _backbone(checkpoint["state_dict"])
    for key, value in original.items():
        torch.testing.assert_close(trained[key], value, rtol=0, atol=0, msg=key)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert [g["name"] for g in groups] == ["head"] and groups[0]["weight_decay"] == 0.0
    assert not groups[0].get("decoupled_weight_decay", False)  # Adam, not AdamW
    # linear warm-up over optimizer.warmup_steps: after 8 of 100 steps the LR is 8% of max_lr (0.2)
    steps = checkpoint["global_step"]
    assert steps == 2 * STEPS_PER_EPOCH
    assert checkpoint["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(0.2 * steps / warmup)


@pytest.mark.integration
def test_layer_wise_decay_from_a_pretrainedsed_file(hear_demo_task, tiny_backbone_files, tmp_path):
    result = _run(None, hear_demo_task, tmp_path, arch="fpasst", pretrained_name=str(tiny_backbone_files["fpasst"][1]),
                  fpasst={"num_heads": 1}, optimizer={"lr_decay": 0.5, "max_lr": 1e-3, "transformer_lr": 1e-2},
                  trainer={"max_epochs": 1, "limit_val_batches": 1, "limit_test_batches": 1})
    groups = safe_load(result["best_model_path"])["optimizer_states"][0]["param_groups"]
    initial = {g["name"]: g["initial_lr"] for g in groups}
    # head at max_lr; [final norm, block 1, block 0, embeddings] at 1e-2 * 0.5^[1, 1, 2, 2]
    assert initial == pytest.approx({"head": 1e-3, "pt0": 5e-3, "pt1": 5e-3, "pt2": 2.5e-3, "pt3": 2.5e-3})
    assert all(g["weight_decay"] == 1e-3 for g in groups)


def test_named_configs_are_valid_and_reproduce_pretrainedsed():
    for name, updates in downstream_config.NAMED_CONFIGS.items():
        downstream_config.resolve(updates)
    atst = downstream_config.resolve(downstream_config.NAMED_CONFIGS["pretrainedsed_atst_full"])
    assert (atst["arch"], atst["optimizer"]["lr_decay"], atst["optimizer"]["max_lr"], atst["trainer"]["max_epochs"],
            atst["training"]["batch_size"], atst["training"]["wavmix_p"], atst["training"]["mixup_p"],
            atst["optimizer"]["adamw"], atst["optimizer"]["weight_decay"], atst["optimizer"]["warmup_steps"]) == \
        ("atst_frame", 0.95, 1.06e-4, 300, 256, 0.5, 0.5, True, 1e-3, 4000)
    beats = downstream_config.resolve(downstream_config.NAMED_CONFIGS["pretrainedsed_beats_linear"])
    assert (beats["arch"], beats["transformer_frozen"], beats["optimizer"]["max_lr"], beats["optimizer"]["adamw"],
            beats["optimizer"]["weight_decay"], beats["training"]["mixup_p"], beats["training"]["wavmix_p"],
            beats["trainer"]["max_epochs"]) == ("beats", True, 0.2, False, 0.0, 0.0, 0.0, 500)


def test_command_line_rejects_a_misspelt_key_and_a_missing_task():
    command = [sys.executable, "-m", "ex_downstream", "with", "demo", "arch=beats", "optimizer.max_lrr=1"]
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 2
    assert "unknown config key 'optimizer.max_lrr' (known keys of 'optimizer': adamw, betas" in process.stderr
    process = subprocess.run([sys.executable, "-m", "ex_downstream", "with", "arch=beats", "task_path=/nonexistent"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 2
    assert "error: task_path='/nonexistent' is not a folder" in process.stderr
    assert "Traceback" not in process.stderr


def test_resume_and_test_refuse_foreign_files_other_archs_and_urls(hear_demo_task, tiny_backbone_files, tmp_path):
    import configs
    from helpers.training import downstream
    from models.checkpoints import CheckpointError

    config = downstream_config.resolve(downstream_config.NAMED_CONFIGS["demo"],
                                       {"arch": "beats", "task_path": str(hear_demo_task)})
    stage_file = tiny_backbone_files["atst_frame"][1]
    with pytest.raises(CheckpointError, match="not an ex_downstream checkpoint"):
        downstream._resume_io(config, str(stage_file))
    run = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "optimizer_states": [], "config": {**config, "arch": "fpasst"}}, run)
    with pytest.raises(CheckpointError, match="holds a fpasst model, but arch=beats"):
        downstream._resume_io(config, str(run))
    torch.save({"state_dict": {}, "config": config}, run)
    with pytest.raises(CheckpointError, match="not a training checkpoint to resume"):
        downstream._resume_io(config, str(run))
    with pytest.raises(configs.ConfigError, match="is a URL"):
        downstream.check_config({**config, "pretrained_name": "https://example.org/ATST-F_strong_1.pt"})
