"""The ex_audioset_strong config: named configs, the reference README command verbatim, strict keys and settings."""
from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

import configs
import configs.audioset_strong as as_config
from tests import reference_commands

README = reference_commands.AUDIOSET_STRONG_TRAIN[0]


def _print_config(words: list[str]) -> dict:
    import ex_audioset_strong

    return ex_audioset_strong.ex.run_commandline(["ex_audioset_strong", "print_config", "with", *words]).config


@pytest.mark.parametrize("name", sorted(as_config.NAMED_CONFIGS))
def test_every_named_config_is_valid(name):
    updates = {"arch": "beats"} if name not in as_config.ARCH_NAMED_CONFIGS else {}
    if name == "kd_student":
        updates["training_strong"] = {"kd_logits": "teacher_ensemble.hdf5"}
    config = as_config.resolve_config(as_config.NAMED_CONFIGS[name], updates)
    assert config["arch"] in ("atst_frame", "fpasst", "beats")


def test_recipes_are_pretrainedseds_commands():
    teacher = as_config.resolve_config(as_config.NAMED_CONFIGS["teacher"])
    assert teacher["strong_wrapper"]["seq_model_type"] == "rnn" and teacher["strong_wrapper"]["rnn_layers"] == 2
    assert teacher["training_strong"]["use_balanced_sampler"] and teacher["training_strong"]["wavmix_p"] == 1.0
    student = as_config.resolve_config(as_config.NAMED_CONFIGS["kd_student"],
                                       {"training_strong": {"kd_logits": "kd.hdf5"}})
    assert student["trainer"]["max_epochs"] == 120 and student["optimizer"]["lr"] == 1e-4
    assert student["strong_distillation_loss_weight"] == 0.9 and student["strong_supervised_loss_weight"] == 0.1
    augment = student["strong_augment"]
    assert augment["freq_warp"]["p"] == augment["filter_augment"]["p"] == augment["mix_augment"]["mixstyle_p"] == 0
    defaults = as_config.default_config()
    assert (defaults["training_strong"]["batch_size"], defaults["optimizer"]["lr"], defaults["median_window"],
            defaults["optimizer"]["num_warmup_steps"], defaults["trainer"]["check_val_every_n_epoch"]) == \
        (256, 7e-5, 9, 20_000, 5)


def test_readme_command_parses_verbatim_and_sets_its_values():
    words = shlex.split(README)
    assert words[:3] == ["python", "-m", "ex_audioset_strong"]
    config = _print_config(words[4:])
    from sacred.arg_parser import _convert_value

    for word in words[4:]:
        if "=" not in word:
            continue
        key, value = word.split("=", 1)
        got = config
        for part in key.split("."):
            got = got[part]
        assert got == _convert_value(value), key
    assert config["arch"] == "atst_frame" and config["atst_frame"]["pretrained_name"] is None
    assert config["strong_wrapper"]["seq_model_type"] == "rnn"  # the reference's strong wrapper always has a BiGRU
    assert not as_config.mixstyle_enabled(config)  # apply_style=False is the README's spelling of apply_mixstyle


@pytest.mark.parametrize("updates, message", [
    ({"strong_augmentations": {"gain_augment": 0}}, "write strong_augment"),
    ({"strong_augment": {"mix_augment": {"apply_styles": False}}}, "unknown config key 'strong_augment.mix_augment"),
    ({"strong_distillation_loss_weight": 0.9}, "needs the teacher's logits: training_strong.kd_logits"),
    ({"weak_distillation_loss_weight": 0.1}, "training_weak.kd_logits"),
    ({"weak_supervised_loss_weight": 1.0, "strong_wrapper": {"n_classes_weak": 447}}, "need 527 weak outputs"),
    ({"strong_wrapper": {"skip_audiosetwrapper": False}}, "not implemented"),
    ({"atst_mel": {"freq_scale": 0.8}}, r"atst_mel.freq_scale=0.8 must be a number \(>= 1.0 and <= 1.0\)"),
    ({"strong_supervised_loss_weight": 0.0}, "every loss weight is 0"),
    ({"training_strong": {"wavmix_p": 2}}, r"training_strong.wavmix_p=2 must be a number"),
    ({"arch": "resnet"}, "arch='resnet' is not one of"),
])
def test_bad_settings_fail_with_one_message(updates, message):
    config = configs.merge_config(as_config.default_config(), updates)
    with pytest.raises(configs.ConfigError, match=message):
        as_config.validate_config(config)


def test_weak_head_size():
    config = as_config.default_config()
    assert as_config.weak_head_classes(config, 447) == 447  # PretrainedSED: as many as the strong head
    config["weak_supervised_loss_weight"] = 0.5
    assert as_config.weak_head_classes(config, 447) == 527


def test_a_typo_on_the_command_line_exits_2_before_anything_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ex_audioset_strong", "with", "demo", "arch=atst_frame",
                             "strong_augment.mix_augment.mixup_pp=0.3", f"trainer.default_root_dir={tmp_path}"],
                            cwd=configs.REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "unknown config key 'strong_augment.mix_augment.mixup_pp'" in result.stderr
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []
