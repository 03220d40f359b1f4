"""Every reference README command parses (through Sacred's own command line) and sets what it says; typos fail."""
import shlex

import pytest

import configs
from tests import reference_commands


def _experiment(module_name):
    import importlib

    return importlib.import_module(module_name).ex


def _print_config(command: str):
    """Run ``command`` (a README line) with its Sacred command replaced by print_config; return the run's config."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"]
    module, rest = argv[2], argv[3:]
    if rest and rest[0] != "with":
        rest = rest[1:]  # drop the command name (store_predictions, ...): print_config shows what it would get
    ex = _experiment(module)
    run = ex.run_commandline([module, "print_config"] + rest)
    return run.config


def _expected_updates(command: str) -> dict:
    """The key=value pairs of ``command`` as Python values (Sacred's own parser)."""
    from sacred.arg_parser import _convert_value

    argv = shlex.split(command)
    updates = argv[argv.index("with") + 1:]
    return {k: _convert_value(v) for k, v in (u.split("=", 1) for u in updates)}


def _get(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("command", reference_commands.ALL)
def test_reference_command_parses_and_sets_values(command):
    config = _print_config(command)
    for key, value in _expected_updates(command).items():
        got = _get(config, key)
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(got, tuple):
            got = list(got)
        assert got == value, f"{key}: expected {value!r}, config has {got!r}"


def test_readme_loss_weights_and_batch_sizes_are_parsed_as_sequences():
    config = _print_config(reference_commands.STAGE1_TRAIN[2])
    assert list(config["loss_weights"]) == [0.5, 0.25, 0.08, 0.1, 0.1, 1.5]
    assert list(config["training"]["batch_sizes"]) == [3, 3, 3, 5, 5]
    assert config["wandb"]["name"] == "s1.i2,beats"


@pytest.mark.parametrize("stage", [1, 2])
def test_defaults_are_valid(stage):
    configs.validate_config(configs.default_config(stage), stage)


@pytest.mark.parametrize(
    "update, message",
    [
        ("optimizer.crnn_lrr=1", "optimizer.crnn_lrr"),
        ("trainer.max_epoch=3", "trainer.max_epoch"),
        ("lossweights=1", "lossweights"),
        ("arch=atst", "arch='atst'"),
        ('"loss_weights=(1, 2)"', "loss_weights needs 6 values"),
    ],
)
def test_misspelt_key_or_bad_value_fails_naming_it(update, message):
    ex = _experiment("ex_stage1")
    updates = _expected_updates("python -m ex_stage1 with " + update)
    with pytest.raises(configs.ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ex.run("print_config", config_updates=updates)


def test_ensemble_weights_default_and_valid_values():
    config = configs.default_config(2)
    assert config["ensemble_weights"] is None and "ensemble_weights" not in configs.default_config(1)
    for weights in ([2, 1, 1], (0.5, 0.25, 0.25), (0, 1, 1)):
        configs.validate_config({**config, "ensemble_weights": weights}, 2)
    configs.validate_config({**config, "pretrained_names": ("a", "b"), "ensemble_weights": (3, 1)}, 2)
    parsed = _print_config('python -m ex_stage2 ensemble_predictions with '
                           'pretrained_names=\'("a", "b")\' "ensemble_weights=(0.7, 0.3)"')
    assert list(parsed["ensemble_weights"]) == [0.7, 0.3]


@pytest.mark.parametrize(
    "weights, message",
    [
        ((1, 1), r"ensemble_weights=\(1, 1\) has 2 values but pretrained_names=\('atst_stage2', 'passt_stage2', "
                 r"'beats_stage2'\) has 3"),
        ((1, -1, 1), r"ensemble_weights=\(1, -1, 1\): \[-1\] are negative"),
        ((1, float("nan"), 1), r"\[nan\] are negative or not finite"),
        ((1, "x", True), r"ensemble_weights=\(1, 'x', True\): \['x', True\] are not numbers"),
        ((0, 0, 0), "ensemble_weights=.*sum to 0"),
        ("1,1,1", "ensemble_weights='1,1,1' must be a list"),
    ],
)
def test_bad_ensemble_weights_are_rejected_naming_the_key(weights, message):
    config = {**configs.default_config(2), "ensemble_weights": weights}
    with pytest.raises(configs.ConfigError, match=message):
        configs.validate_config(config, 2)


def test_ensemble_weights_is_a_stage2_key():
    with pytest.raises(configs.ConfigError, match="unknown config key 'ensemble_weights'"):
        configs.validate_config({**configs.default_config(1), "ensemble_weights": (1, 1)}, 1)


def test_all_errors_reported_at_once():
    ex = _experiment("ex_stage2")
    with pytest.raises(configs.ConfigError) as info:
        ex.run("print_config", config_updates={"optimizer.crnn_lr": 1, "foo.bar": 2})
    # crnn_lr is a stage-1 key: stage 2 has cnn_lr / rnn_lr instead
    assert "optimizer.crnn_lr" in str(info.value) and "foo.bar" in str(info.value)


def test_any_lightning_trainer_argument_is_accepted():
    config = _print_config("python -m ex_stage1 with arch=beats trainer.num_nodes=2 trainer.strategy=ddp")
    assert config["trainer"]["num_nodes"] == 2 and config["trainer"]["strategy"] == "ddp"


def test_stage_defaults_differ_as_the_reference():
    s1, s2 = configs.default_config(1), configs.default_config(2)
    assert s1["trainer"]["max_epochs"] == 200 and s2["trainer"]["max_epochs"] == 250
    assert s1["optimizer"]["crnn_lr"] == 1e-3 and "crnn_lr" not in s2["optimizer"]
    assert s2["optimizer"]["cnn_lr"] == 1e-4 and s2["optimizer"]["rnn_lr"] == 1e-3
    assert s1["training"]["batch_sizes"] == (12, 10, 10, 20, 20)
    assert s2["training"]["batch_sizes"] == (7, 5, 5, 9, 9)
    assert s1["loss_weights"] == (0.08, 0.05, 0.08, 0.21, 0.58, 0.0)
    assert s2["loss_weights"] == (2, 1, 1, 1, 70, 0)
    assert s1["ssl_loss_warmup_steps"] == 14_000 and s2["ssl_loss_warmup_steps"] == 270
    assert "freq_warp" in s2 and "freq_warp" not in s1
    assert s1["filter_augment"]["n_transform"] == 2 and s2["filter_augment"]["n_transform"] == 1
    assert s1["t4_wrapper"]["dropout"] == 0.3 and s2["t4_wrapper"]["dropout"] == 0.5


@pytest.mark.parametrize("module", ["ex_stage1", "ex_stage2"])
def test_demo_named_config(module):
    ex = _experiment(module)
    run = ex.run_commandline([module, "print_config", "with", "demo", "arch=atst_frame"])
    assert run.config["base_path"] == str(configs.DEMO_DATASET_PATH)
    assert run.config["atst_frame"]["depth"] == configs.TINY_BACKBONE["depth"]
    assert run.config["atst_frame"]["pretrained_name"] is None


def test_dataset_path_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(configs.DATASET_ENV_VAR, raising=False)
    assert configs.resolve_dataset_path(None) == configs.DEFAULT_DATASET_PATH
    monkeypatch.setenv(configs.DATASET_ENV_VAR, str(tmp_path))
    assert configs.resolve_dataset_path(None) == tmp_path.resolve()
    assert configs.resolve_dataset_path(str(tmp_path / "x")) == (tmp_path / "x").resolve()


def test_resources_resolved_from_repository_not_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert configs.RESOURCES_DIR.is_absolute()
    assert configs.RESOURCES_DIR.parent == configs.REPO_ROOT
    assert (configs.REPO_ROOT / "README.md").is_file()


def test_require_arch():
    with pytest.raises(configs.ConfigError, match="arch is required"):
        configs.require_arch(None)
    assert configs.require_arch("beats") == "beats"


def test_command_line_typo_exits_with_one_clear_message():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ex_stage1", "print_config", "with", "arch=atst_frame", "optimizer.crnn_lrr=1"],
        cwd=configs.REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "unknown config key 'optimizer.crnn_lrr'" in result.stderr
    assert "Traceback" not in result.stderr
