"""End-to-end: stage 1 then stage 2 (initialised from the stage-1 checkpoint) for every arch on the tiny demo data."""
from __future__ import annotations

import copy

import pytest
import torch

import configs
from models.checkpoints import safe_load

ARCHS = ("atst_frame", "fpasst", "beats")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models train fastest on one intra-op thread (a shared CPU makes more threads spin, up to 9x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(stage: int, arch: str, demo_root, resources, out_dir, **trainer) -> dict:
    """The demo named config on the tiny preset, a few steps, CPU, no pretrained files, loggers off."""
    config = configs.merge_config(configs.demo_defaults(stage), dict(
        arch=arch, base_path=str(demo_root), resources_path=str(resources), atst_checkpoint=None,
        beats_checkpoint=None,
        trainer={**dict(max_epochs=1, limit_train_batches=2, default_root_dir=str(out_dir), log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False), **trainer},
        test=dict(batch_size=16, num_workers=0), validation=dict(batch_size=16, num_workers=0),
    ))
    if arch == "beats":  # the BEATs recipe: raw tokens, interpolated to the CNN frames
        config["t4_wrapper"].update(no_wrapper=True, embed_pool="int", interpolation_mode="nearest-exact")
    return config


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("as_model.")}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_stage1_then_stage2(arch, demo_tiny, tmp_path):
    from helpers.training.train import train

    root, resources = demo_tiny
    limits = {} if arch == "atst_frame" else {"limit_val_batches": 1, "limit_test_batches": 1}
    config1 = tiny_config(1, arch, root, resources, tmp_path / "s1", **limits)
    result1 = train(copy.deepcopy(config1), 1)
    assert "test/student/rank_score" in result1 and "test/teacher/rank_score" in result1
    checkpoint1 = safe_load(result1["best_model_path"])
    assert checkpoint1["global_step"] == 2
    assert checkpoint1["config"]["arch"] == arch and checkpoint1["run_info"]["stage"] == 1
    student1, teacher1 = checkpoint1["student"], checkpoint1["teacher"]
    assert student1.keys() == teacher1.keys()
    # stage 1: the transformer is frozen, so the EMA teacher's copy stays identical; the CRNN moved
    for key, value in _backbone(student1).items():
        assert torch.equal(value, teacher1[key]), key
    assert any(not torch.equal(student1[k], teacher1[k]) for k in student1 if k.startswith("cnn."))
    if arch == "atst_frame":
        assert result1["val/obj_metric"] >= 0.0
        assert "test/student/maestro_real_dev/segment_mpauc" in result1

    config2 = tiny_config(2, arch, root, resources, tmp_path / "s2", **limits)
    config2["t4_wrapper"]["model_init_id"] = result1["best_model_path"]
    result2 = train(copy.deepcopy(config2), 2)
    checkpoint2 = safe_load(result2["best_model_path"])
    student2 = checkpoint2["student"]
    assert student2.keys() == student1.keys()
    # stage 2 trains the transformer, starting from the stage-1 weights
    changed = [k for k, v in _backbone(student2).items() if not torch.equal(v, student1[k])]
    assert changed, "stage 2 left every transformer weight unchanged"
    assert len(checkpoint2["optimizer_states"][0]["param_groups"]) >= 3  # cnn, rnn and transformer groups


def test_stage1_optimizer_groups_train_the_crnn_only(demo_tiny, tmp_path):
    from helpers.training.stages import STAGE1, STAGE2
    from models.factory import build_model as build_sed_model

    config = tiny_config(1, "atst_frame", *demo_tiny, tmp_path)
    model = build_sed_model(config)
    groups = STAGE1.param_groups(model, config["optimizer"])
    trained = {id(p) for g in groups for p in g["params"]}
    for name, parameter in model.named_parameters():
        in_crnn = not name.startswith("as_model.")
        assert (id(parameter) in trained) == in_crnn, name
        assert parameter.requires_grad == in_crnn, name
    assert {g["lr"] for g in groups} == {config["optimizer"]["crnn_lr"]}

    config2 = tiny_config(2, "atst_frame", *demo_tiny, tmp_path)
    config2["optimizer"].update(pt_lr=1e-4, pt_lr_scale=0.5)
    groups2 = STAGE2.param_groups(model, config2["optimizer"])
    names = [g["name"] for g in groups2]
    assert names[:2] == ["cnn", "rnn"] and names[2] == "pt0"
    pt = [g for g in groups2 if g["name"].startswith("pt")]
    assert len(pt) == model.as_model.model.depth + 2  # top norm, blocks, embeddings
    assert all(abs(g["lr"] - 1e-4 * 0.5 ** i) < 1e-15 for i, g in enumerate(pt))
    assert all("weight_decay" in g for g in groups2)


def _system_and_batch(stage: int, arch: str = "atst_frame"):
    from bench.train import bench_config, synthetic_batch
    from helpers.training.system import SEDSystem
    from models.factory import build_model as build_sed_model
    from helpers.training.train import T4DataModule

    config = bench_config(arch, stage, "tiny")
    torch.manual_seed(0)
    system = SEDSystem(config, stage, build_sed_model(config),
                       sub_batch_slices=T4DataModule(config, stage).sub_batch_slices())
    system.train()
    return system, synthetic_batch(config["training"]["batch_sizes"], "cpu")


@pytest.mark.parametrize("arch", ARCHS)
def test_stage1_computes_the_frozen_transformer_once_with_the_same_loss(arch):
    system, batch = _system_and_batch(1, arch)
    calls = []
    system.student.as_model.register_forward_hook(lambda *args: calls.append("student"))
    system.teacher.as_model.register_forward_hook(lambda *args: calls.append("teacher"))
    assert system.frozen_transformers_identical()
    losses = {}
    for shared in (False, True):
        system._share_frozen_transformer = shared
        calls.clear()
        torch.manual_seed(1)  # the same augmentation draws
        losses[shared] = system.training_step(copy.copy(batch), 0).detach()
        assert calls == (["student"] if shared else ["student", "teacher"])
    assert torch.allclose(losses[True], losses[False], rtol=1e-6, atol=1e-7)


def test_shared_transformer_only_when_the_teachers_equals_the_students():
    from helpers.training.ema import ema_update

    system, _ = _system_and_batch(1)
    assert system.frozen_transformers_identical()
    for step in range(3):  # the EMA keeps a frozen transformer exactly equal (lerp of equal values)
        ema_update(system.teacher, system.student, step, 0.999, ema_buffers=True)
    assert system.frozen_transformers_identical()
    with torch.no_grad():
        next(system.teacher.as_model.parameters()).add_(1e-3)
    assert not system.frozen_transformers_identical()
    stage2, _ = _system_and_batch(2)
    assert not stage2.frozen_transformers_identical()  # stage 2 trains the transformer
