"""The typed config schema (configs/schema.py, configs/t4.py): one source for keys, types, defaults and docs."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import configs
from configs import docs, schema
from configs.t4 import Stage1, Stage2

REPO = configs.REPO_ROOT


def test_docs_key_table_equals_the_schema():
    assert docs.stale_tables(REPO / "docs" / "CONFIG.md") == [], "run `python -m configs --write`"


def test_stale_docs_are_detected(tmp_path):
    doc = tmp_path / "CONFIG.md"
    tables = docs.tables()
    every = "".join(f"<!-- keys:{name}:begin -->\n{table}<!-- keys:{name}:end -->\n" for name, table in tables.items())
    doc.write_text(every)
    assert docs.stale_tables(doc) == []
    doc.write_text(every.replace("`(12, 10, 10, 20, 20)`", "`(1, 1, 1, 1, 1)`"))
    assert docs.stale_tables(doc) == ["t4"]
    doc.write_text(every.replace("`1.06e-04`", "`0.1`").replace("`0.000106`", "`0.1`"))
    assert docs.stale_tables(doc) == ["downstream"]
    doc.write_text(f"<!-- keys:t4:begin -->\n{tables['t4']}<!-- keys:t4:end -->\n")
    assert docs.stale_tables(doc) == [name for name in tables if name != "t4"]  # a table without its markers is stale


def test_every_key_is_documented_once_with_a_type():
    rows = schema.key_rows({"s1": Stage1, "s2": Stage2})
    keys = [row[0] for row in rows]
    assert len(keys) == len(set(keys))
    assert {"training.batch_sizes", "optimizer.crnn_lr", "optimizer.cnn_lr", "freq_warp.p", "ensemble_weights",
            "atst_frame.mlp_ratio"} <= set(keys)
    assert all(row[1] for row in rows)


@pytest.mark.parametrize("stage", [1, 2])
def test_tree_and_named_config_are_valid(stage):
    configs.validate_config(configs.default_config(stage), stage)
    configs.validate_config(configs.demo_defaults(stage), stage)


@pytest.mark.parametrize("stage, update, message", [
    # issue 15, point 5: values of the wrong type or range, each named with what it must be
    (1, {"training": {"batch_sizes": "abcde"}}, "training.batch_sizes='abcde' must be a list of integers"),
    (1, {"optimizer": {"crnn_lr": "abc"}}, "optimizer.crnn_lr='abc' must be a number"),
    (1, {"trainer": {"max_epochs": "abc"}}, "trainer.max_epochs='abc' must be an integer"),
    (1, {"loss_weights": "abcdef"}, "loss_weights='abcdef' must be a list of numbers"),
    (1, {"training": {"batch_sizes": (12, 0, 10, 20, 20)}}, r"training.batch_sizes=\(12, 0, 10, 20, 20\) must be "
                                                           r"a list of integers with 5 values \(each >= 1\)"),
    (1, {"training": {"batch_sizes": (12, -3, 10, 20, 20)}}, "each >= 1"),
    (1, {"training": {"wavmix_p": 1.5}}, r"training.wavmix_p=1.5 must be a number \(>= 0.0 and <= 1.0\)"),
    (2, {"mode": "ema"}, "mode='ema' must be one of 'student', 'teacher'"),
    (2, {"t4_wrapper": {"embed_pool": "max"}}, "t4_wrapper.embed_pool='max' must be one of 'aap', 'int', 'conv'"),
    (1, {"t4_wrapper": {"no_wrapper": 2}}, "t4_wrapper.no_wrapper=2 must be True or False"),
    (1, {"optimizer": {"pt_trainable_layers": "some"}}, "optimizer.pt_trainable_layers='some' must be an integer or"),
    (1, {"training": 3}, "training=3 must be a block of keys"),
])
def test_wrong_types_and_ranges_fail_naming_key_value_and_expectation(stage, update, message):
    config = configs.merge_config(configs.default_config(stage), update)
    with pytest.raises(configs.ConfigError, match=message):
        configs.validate_config(config, stage)


def test_reference_spellings_pass():
    """What the reference's commands write: 0/1 for booleans, ints for floats, lists for tuples."""
    config = configs.merge_config(configs.default_config(1), {
        "t4_wrapper": {"no_wrapper": 1}, "optimizer": {"crnn_lr": 1}, "training": {"batch_sizes": [3, 3, 3, 5, 5]},
        "loss_weights": [0.5, 0.25, 0.08, 0.1, 0.1, 1.5], "trainer": {"precision": "bf16-mixed", "devices": [0, 1]}})
    configs.validate_config(config, 1)


def test_resolve_config_applies_updates_in_order_and_validates():
    config = configs.resolve_config(1, configs.demo_config(1), {"arch": "beats", "training": {"seed": 7}})
    assert config["arch"] == "beats" and config["training"]["seed"] == 7
    assert config["atst_frame"]["depth"] == configs.TINY_BACKBONE["depth"]
    with pytest.raises(configs.ConfigError, match="training.seed='x' must be an integer"):
        configs.resolve_config(1, {"training": {"seed": "x"}})


def test_stage2_blocks_override_only_what_differs():
    s1, s2 = Stage1(), Stage2()
    differing = {f.name for f in dataclasses.fields(s1) if f.name in {g.name for g in dataclasses.fields(s2)}
                 and schema.tree(s1).get(f.name) != schema.tree(s2).get(f.name)}
    assert differing == {"trainer", "optimizer", "passt_mel", "t4_wrapper", "training", "loss_weights",
                         "ssl_scale_max", "ssl_loss_warmup_steps", "filter_augment", "time_augment"}


def test_bad_value_on_the_command_line_creates_no_run_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ex_stage1", "with", "demo", "arch=atst_frame", "training.batch_sizes=abcde",
         f"trainer.default_root_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "training.batch_sizes='abcde' must be a list of integers" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
