"""store / ensemble / eval prediction commands and the pseudo-label folder of the next iteration.

Unit tests use small synthetic prediction files; the integration tests run the commands end to end on the tiny
demo dataset with tiny random models. Nothing under the repository's resources/ is touched.
"""
from __future__ import annotations

import copy
import json
import logging
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import configs
from data_util.classes import CLASSES
from data_util.datasets import ClipDataset, ClipEntry
from data_util.layout import PREDICTION_SETS, SETS
from data_util.pseudo_labels import PseudoLabels
from helpers.predictions import commands as pc
from data_util.prediction_files import read_predictions, resolve_pseudo_label_dir, write_predictions
from models.checkpoints import save_sed_checkpoint
from models.factory import build_model
from models.loading import load_sed_model

ARCH_SETTINGS = {  # the released models' wrapper settings (README commands)
    "atst_frame": {},
    "beats": {"no_wrapper": True, "embed_pool": "int", "interpolation_mode": "nearest-exact"},
}
SMALL_GRID = dict(step_filter_lengths=(0.5,), merge_thresholds_rel=(2.0,), merge_thresholds_abs=(0.2,))
# Smaller than the demo preset's models: the file stays fast on two busy CPU cores.
TEST_MODEL_SIZES = {
    "t4_wrapper": dict(nb_filters=[4, 4, 8, 8, 8, 8, 8], n_RNN_cell=8, embedding_size=32),
    "atst_frame": dict(embed_dim=32, depth=1, num_heads=1),
    "beats": dict(embed_dim=32, depth=1, num_heads=1),
}
# Evaluated sets keep all their clips; the training sets keep a few (the store command only lists folders).
COMPLETE_SETS = ("devtest", "eval_public", "maestro_real_dev", "eval_private")
CLIPS_PER_TRAINING_SET = 3


def _merge(base: dict, updates: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _assert_kept_unless_overwrite(command, config: dict) -> None:
    """``command`` (store / ensemble) keeps an existing devtest file, and rewrites it with ``overwrite=True``."""
    path = Path(command(config, echo=_quiet)["devtest"])
    with h5py.File(path, "a") as f:  # mark the file: a rewrite drops the mark
        f.attrs["marker"] = 1
    lines = []
    command(config, echo=lines.append)
    with h5py.File(path) as f:
        assert "marker" in f.attrs
    assert any("kept existing" in line for line in lines)
    command({**config, "overwrite": True}, echo=_quiet)
    with h5py.File(path) as f:
        assert "marker" not in f.attrs


def _quiet(line: str) -> None:
    pass


# ======================================================================================================= unit tests
def _write_member(folder: Path, sets: dict[str, list[str]], seed: int) -> dict[str, np.ndarray]:
    """Prediction files with random logits, clips written in a shuffled order; returns {set: logits by sorted stem}."""
    rng = np.random.default_rng(seed)
    by_sorted_stem = {}
    for set_name, stems in sets.items():
        logits = rng.normal(size=(len(stems), 156, 27)).astype(np.float32)
        order = rng.permutation(len(stems))
        write_predictions(folder / f"{set_name}.hdf5", [stems[i] for i in order], logits[order], model=f"m{seed}")
        by_sorted_stem[set_name] = logits[np.argsort(stems)]
    return by_sorted_stem


@pytest.fixture
def members(tmp_path) -> dict:
    sets = {"devtest": ["c", "a", "b"], "weak_train": ["w2", "w1"]}
    preds = tmp_path / "preds"
    return {"preds": preds, "a": _write_member(preds / "model_a", sets, seed=0),
            "b": _write_member(preds / "model_b", sets, seed=1)}


def _stage2(updates: dict) -> dict:
    """A complete stage-2 config (commands read resolved configs) with ``updates`` applied."""
    return configs.merge_config(configs.default_config(2), updates)


def _ensemble_config(preds: Path, names, out_name=None, **updates) -> dict:
    return _stage2({"pretrained_names": tuple(names), "out_name": out_name, "preds_path": str(preds), **updates})


def test_ensemble_is_the_order_independent_mean_of_logits_aligned_by_name(members):
    preds = members["preds"]
    forward = pc.ensemble_predictions(_ensemble_config(preds, ["model_a", "model_b"], "ab"), echo=_quiet)
    backward = pc.ensemble_predictions(_ensemble_config(preds, ["model_b", "model_a"], "ba"), echo=_quiet)
    assert sorted(forward) == ["devtest", "weak_train"]  # sets in no member are skipped
    for set_name in forward:
        stems, mean = read_predictions(forward[set_name])
        stems_back, mean_back = read_predictions(backward[set_name])
        assert stems == stems_back == sorted(stems)
        np.testing.assert_allclose(mean, (members["a"][set_name] + members["b"][set_name]) / 2, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(mean, mean_back, rtol=1e-6, atol=1e-6)
    assert [p.name for p in preds.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind


def test_default_ensemble_name_joins_the_members(members):
    files = pc.ensemble_predictions(_ensemble_config(members["preds"], ["model_a", "model_b"]), echo=_quiet)
    assert Path(files["devtest"]).parent == members["preds"] / "model_a_model_b"


def test_ensemble_keeps_existing_files_unless_overwrite(members):
    _assert_kept_unless_overwrite(pc.ensemble_predictions, _ensemble_config(members["preds"], ["model_a", "model_b"], "ens"))


def test_ensemble_refuses_sets_missing_in_some_members_and_writes_nothing(members):
    (members["preds"] / "model_b" / "weak_train.hdf5").unlink()
    with pytest.raises(pc.PredictionCommandError, match=r"weak_train \(missing: .*model_b"):
        pc.ensemble_predictions(_ensemble_config(members["preds"], ["model_a", "model_b"], "ens"), echo=_quiet)
    assert not (members["preds"] / "ens").exists()


def test_ensemble_of_files_with_different_clips_leaves_nothing_behind(members):
    write_predictions(members["preds"] / "model_b" / "weak_train.hdf5", ["w1", "w3"],
                      np.zeros((2, 156, 27), np.float32), model="other data")
    with pytest.raises(ValueError, match="different clips"):
        pc.ensemble_predictions(_ensemble_config(members["preds"], ["model_a", "model_b"], "ens"), echo=_quiet)
    assert not list((members["preds"] / "ens").glob("*.hdf5"))
    assert [p.name for p in members["preds"].iterdir() if p.name.startswith(".")] == []


def test_ensemble_needs_two_existing_members_and_a_new_name(members):
    preds = members["preds"]
    with pytest.raises(pc.PredictionCommandError, match="at least 2"):
        pc.ensemble_predictions(_ensemble_config(preds, ["model_a"], "ens"))
    with pytest.raises(pc.PredictionCommandError, match=r"'nothing_here' not found.*model_a, model_b"):
        pc.ensemble_predictions(_ensemble_config(preds, ["model_a", "nothing_here"], "ens"))
    with pytest.raises(pc.PredictionCommandError, match="would overwrite"):
        pc.ensemble_predictions(_ensemble_config(preds, ["model_a", "model_b"], "model_b"))


def test_weighted_ensemble_is_the_weighted_mean_and_records_the_weights(members):
    preds = members["preds"]
    lines = []
    files = pc.ensemble_predictions(_ensemble_config(preds, ["model_a", "model_b"], "weighted",
                                                     ensemble_weights=(3, 1)), echo=lines.append)
    assert sorted(files) == ["devtest", "weak_train"]
    for set_name, path in files.items():
        _, weighted = read_predictions(path)
        expected = 0.75 * members["a"][set_name].astype(np.float64) + 0.25 * members["b"][set_name]
        np.testing.assert_allclose(weighted, expected, rtol=1e-6, atol=1e-6)
        assert not np.allclose(weighted, (members["a"][set_name] + members["b"][set_name]) / 2)
        with h5py.File(path) as f:
            np.testing.assert_array_equal(f.attrs["weights"], [0.75, 0.25])
            assert "model_a (weight 3)" in str(f.attrs["model"]) and "model_b (weight 1)" in str(f.attrs["model"])
    assert any("weighted mean of 2 models" in line for line in lines)
    # no weights: the plain mean, with the equal weights recorded
    plain = pc.ensemble_predictions(_ensemble_config(preds, ["model_a", "model_b"], "plain"), echo=_quiet)
    with h5py.File(plain["devtest"]) as f:
        np.testing.assert_array_equal(f.attrs["weights"], [0.5, 0.5])
    # weights that are all equal give exactly the plain mean
    same = pc.ensemble_predictions(_ensemble_config(preds, ["model_a", "model_b"], "same",
                                                    ensemble_weights=[2.0, 2.0]), echo=_quiet)
    np.testing.assert_array_equal(read_predictions(same["devtest"])[1], read_predictions(plain["devtest"])[1])


@pytest.mark.parametrize("weights, message", [
    ((1.0,), r"has 1 values but pretrained_names=\('model_a', 'model_b'\) has 2"),
    ((1.0, -0.5), r"\[-0.5\] are negative"),
    (("a", 1), r"\['a'\] are not numbers"),
    ((0, 0), "sum to 0"),
    (0.5, "must be a list"),
])
def test_ensemble_refuses_bad_weights_before_writing(members, weights, message):
    config = _ensemble_config(members["preds"], ["model_a", "model_b"], "bad", ensemble_weights=weights)
    with pytest.raises(pc.PredictionCommandError, match="ensemble_weights=.*" + message):
        pc.ensemble_predictions(config, echo=_quiet)
    assert not (members["preds"] / "bad").exists()


def test_sacred_ensemble_command_passes_the_weights(members):
    import ex_stage2

    ex_stage2.ex.run("ensemble_predictions", config_updates={
        "preds_path": str(members["preds"]), "pretrained_names": ("model_a", "model_b"),
        "ensemble_weights": (1, 3), "out_name": "ens_sacred_weighted"})
    _, weighted = read_predictions(members["preds"] / "ens_sacred_weighted" / "devtest.hdf5")
    expected = 0.25 * members["a"]["devtest"].astype(np.float64) + 0.75 * members["b"]["devtest"]
    np.testing.assert_allclose(weighted, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(configs.ConfigError, match="ensemble_weights"):
        ex_stage2.ex.run("ensemble_predictions", config_updates={
            "preds_path": str(members["preds"]), "pretrained_names": ("model_a", "model_b"),
            "ensemble_weights": (1, 2, 3), "out_name": "never"})
    assert not (members["preds"] / "never").exists()


# ---------------------------------------------------------------------------------------- eval plots to wandb
class _FakeImage:
    def __init__(self, path):
        self.path = path

    def __eq__(self, other):
        return isinstance(other, _FakeImage) and other.path == self.path


def _fake_wandb(active: bool, fail: bool = False) -> types.ModuleType:
    """A stand-in ``wandb`` module that records ``log`` calls; ``run`` is None unless ``active``."""
    fake = types.ModuleType("wandb")
    fake.logged = []
    fake.run = types.SimpleNamespace(summary={}) if active else None
    fake.Image = _FakeImage

    def log(data, *args, **kwargs):
        if fail:
            raise RuntimeError("wandb is unhappy")
        fake.logged.append(data)

    fake.log = log
    return fake


@pytest.fixture
def fake_evaluation(members, monkeypatch):
    """eval_predictions with evaluate_predictions replaced: two PNG files and a small report, no real metrics."""
    from helpers.evaluation import report as eval_report

    folder = members["preds"] / "model_a"
    plots = [folder / "plots" / "devtest_psd_roc.png", folder / "plots" / "devtest_per_class_psds1.png"]

    def evaluate(preds_dir, dataset_root, resources_dir, csebbs_cfg, echo=None):
        assert Path(preds_dir) == folder
        for path in plots:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"\x89PNG")
        return {"sets": {"devtest": {"raw": {"psds1": 0.25}, "csebbs": {"psds1": 0.5}}}, "plots": [str(p) for p in plots]}

    monkeypatch.setattr(eval_report, "evaluate_predictions", evaluate)
    config = _stage2({"preds_path": str(members["preds"]), "pretrained_name": "model_a", "cross_validation_folds": 0,
                      **SMALL_GRID})
    return {"config": config, "plots": plots}


def test_eval_logs_plots_and_numbers_to_an_active_wandb_run(fake_evaluation, monkeypatch):
    fake = _fake_wandb(active=True)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    metrics = pc.eval_predictions(fake_evaluation["config"], echo=_quiet)
    assert metrics == {"devtest/psds1": 0.25, "devtest/psds1_csebbs": 0.5}
    roc, per_class = fake_evaluation["plots"]
    assert fake.logged == [{"eval/devtest_psd_roc": _FakeImage(str(roc)),
                            "eval/devtest_per_class_psds1": _FakeImage(str(per_class)),
                            "eval/devtest/psds1": 0.25, "eval/devtest/psds1_csebbs": 0.5}]
    assert fake.run.summary == {"eval/devtest/psds1": 0.25, "eval/devtest/psds1_csebbs": 0.5}


def test_eval_logs_nothing_without_an_active_wandb_run(fake_evaluation, monkeypatch):
    fake = _fake_wandb(active=False)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert pc.eval_predictions(fake_evaluation["config"], echo=_quiet)["devtest/psds1"] == 0.25
    assert fake.logged == [] and fake.run is None  # no run was started
    monkeypatch.setitem(sys.modules, "wandb", None)  # wandb not installed: `import wandb` raises ImportError
    assert pc.eval_predictions(fake_evaluation["config"], echo=_quiet)["devtest/psds1"] == 0.25


def test_a_failing_wandb_log_is_a_warning(fake_evaluation, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", _fake_wandb(active=True, fail=True))
    with caplog.at_level(logging.WARNING, logger="helpers.evaluation.report"):
        metrics = pc.eval_predictions(fake_evaluation["config"], echo=_quiet)
    assert metrics["devtest/psds1_csebbs"] == 0.5
    assert "wandb is unhappy" in caplog.text


def test_missing_checkpoint_names_the_available_ones(tmp_path):
    for name in ("atst_stage2.ckpt", "beats_stage2.pt", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    config = _stage2({"arch": "atst_frame", "pretrained_name": "atst_stage9", "model_path": str(tmp_path)})
    with pytest.raises(pc.PredictionCommandError, match=r"'atst_stage9'.*available there: atst_stage2, beats_stage2\)"):
        pc.store_predictions(config)
    assert pc.resolve_checkpoint_file("atst_stage2", tmp_path) == tmp_path / "atst_stage2.ckpt"
    assert pc.resolve_checkpoint_file("beats_stage2.pt", tmp_path) == tmp_path / "beats_stage2.pt"
    path = tmp_path / "atst_stage2.ckpt"
    assert pc.resolve_checkpoint_file(path, Path("/nonexistent")) == path


def test_checkpoint_name_falls_back_to_model_init_id_and_default():
    def name(pretrained, init_id):
        return pc.pretrained_name(_stage2({"pretrained_name": pretrained, "t4_wrapper": {"model_init_id": init_id}}))

    assert name("passt_stage2", "atst_stage1") == "passt_stage2"
    assert name(None, "atst_stage2") == "atst_stage2"  # README: store_predictions with t4_wrapper.model_init_id=...
    assert name(None, None) == "atst_stage2"  # the reference's default


def test_store_rejects_a_bad_mode(tmp_path):
    with pytest.raises(pc.PredictionCommandError, match="mode='ema'"):
        pc.store_predictions(_stage2({"arch": "atst_frame", "mode": "ema", "model_path": str(tmp_path)}))


def test_pseudo_label_dir_resolution(members, monkeypatch, tmp_path):
    preds = members["preds"]
    default = tmp_path / "pseudo-labels"
    monkeypatch.setattr(configs, "PSEUDO_LABELS_DIR", default)
    assert resolve_pseudo_label_dir({"pseudo_labels": None}) is None  # iteration 1: no pseudo-labels
    default.mkdir()
    assert resolve_pseudo_label_dir({"pseudo_labels": None}) == default
    assert resolve_pseudo_label_dir({"pseudo_labels": "model_a", "preds_path": str(preds)}) == preds / "model_a"
    assert resolve_pseudo_label_dir({"pseudo_labels": str(preds / "model_a")}) == preds / "model_a"
    monkeypatch.setattr(configs, "PREDICTIONS_DIR", preds)  # names default to resources/predictions
    assert resolve_pseudo_label_dir({"pseudo_labels": "model_b"}) == preds / "model_b"
    with pytest.raises(pc.PredictionCommandError, match=r"'ens_missing' not found.*model_a, model_b"):
        resolve_pseudo_label_dir({"pseudo_labels": "ens_missing"})
    with pytest.raises(pc.PredictionCommandError, match="holds none of the pseudo-label files"):
        resolve_pseudo_label_dir({"pseudo_labels": str(default)})


# ================================================================================================ integration tests
def _link_trimmed_audio(data: Path, trimmed: Path) -> None:
    """``trimmed``: the audio folders of ``data``, complete for the evaluated sets, a few clips for the others."""
    for set_name, spec in SETS.items():
        source, target = data / spec.audio, trimmed / spec.audio
        if target.exists():
            continue  # a folder shared by two sets
        target.parent.mkdir(parents=True, exist_ok=True)
        if set_name in COMPLETE_SETS:
            target.symlink_to(source, target_is_directory=True)
            continue
        target.mkdir()
        for wav in sorted(source.glob("*.wav"))[:CLIPS_PER_TRAINING_SET]:
            (target / wav.name).symlink_to(wav)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, demo_tiny) -> dict:
    """Demo data (``data``: the session's tiny demo, read-only, for labels; ``audio``: trimmed audio folders that the
    store commands read), one tiny checkpoint per arch (teacher weights differ from the student's), a config per
    arch."""
    root = tmp_path_factory.mktemp("prediction_commands")
    data, resources = demo_tiny
    _link_trimmed_audio(data, root / "audio")
    base = _merge(_merge(configs.default_config(2), configs.demo_config(2)), TEST_MODEL_SIZES)
    base.update(base_path=str(data), resources_path=str(resources), model_path=str(root / "models"),
                output_path=str(root / "preds"), preds_path=str(root / "preds"), batch_size=16)
    arch_configs = {}
    for seed, (arch, wrapper) in enumerate(ARCH_SETTINGS.items()):
        config = _merge(base, {"arch": arch, "t4_wrapper": wrapper})
        torch.manual_seed(seed)
        student = build_model(config)
        teacher = build_model(config)
        save_sed_checkpoint(root / "models" / f"{arch}_tiny.ckpt", student.state_dict(), teacher.state_dict())
        arch_configs[arch] = _merge(config, {"pretrained_name": f"{arch}_tiny", "base_path": str(root / "audio")})
    return {"root": root, "data": data, "audio": root / "audio", "base": base, "configs": arch_configs}


@pytest.fixture(scope="module")
def stored(workspace) -> dict:
    """store_predictions of both tiny models (student) over all 12 sets: {arch: {set: path}}."""
    return {arch: pc.store_predictions(config, echo=_quiet) for arch, config in workspace["configs"].items()}


def _audio_stems(workspace, set_name: str) -> list[str]:
    source = "weak_train" if set_name == "weak_val" else set_name
    return sorted(p.stem for p in (workspace["audio"] / SETS[source].audio).glob("*.wav"))


def _devtest_only_root(workspace) -> Path:
    """A dataset root that holds only the devtest audio folder (the other sets are skipped)."""
    root = workspace["root"] / "devtest_only"
    if not root.exists():
        folder = root / SETS["devtest"].audio
        folder.parent.mkdir(parents=True)
        folder.symlink_to(workspace["data"] / SETS["devtest"].audio, target_is_directory=True)
    return root


def _ensemble(workspace, names, out_name):
    config = _merge(workspace["base"], {"pretrained_names": tuple(names), "out_name": out_name})
    return pc.ensemble_predictions(config, echo=_quiet)


@pytest.mark.integration
def test_store_writes_every_set_with_shapes_names_and_attributes(workspace, stored):
    for arch, files in stored.items():
        assert list(files) == list(PREDICTION_SETS)
        for set_name, path in files.items():
            assert Path(path) == workspace["root"] / "preds" / f"{arch}_tiny" / f"{set_name}.hdf5"
            stems, logits = read_predictions(path)
            expected = _audio_stems(workspace, set_name)
            assert stems == expected, set_name
            assert logits.shape == (len(expected), 156, 27) and logits.dtype == np.float32
            with h5py.File(path) as f:
                assert [c.decode() if isinstance(c, bytes) else c for c in f.attrs["classes"]] == list(CLASSES)
                assert f.attrs["frame_hop"] == pytest.approx(0.064)
                text = str(f.attrs["model"])
                assert f"{arch}_tiny.ckpt" in text and f"arch={arch}" in text and "mode=student" in text
                assert f.attrs["mode"] == "student" and f.attrs["arch"] == arch
        # weak_val is the whole weak folder (as the reference), predicted once
        np.testing.assert_array_equal(read_predictions(files["weak_val"])[1], read_predictions(files["weak_train"])[1])


@pytest.mark.integration
def test_stored_values_are_the_models_logits(workspace, stored):
    """Logits (not probabilities: negative values occur), equal to running the loaded model on the audio."""
    from data_util.datasets import build_prediction_set

    config = workspace["configs"]["beats"]
    model = load_sed_model(workspace["root"] / "models" / "beats_tiny.ckpt", mode="student", config=config)
    dataset = build_prediction_set("devtest", workspace["audio"])
    audio = torch.stack([dataset[i]["audio"] for i in range(3)])
    with torch.inference_mode():
        expected = model(audio).numpy()
    stems, logits = read_predictions(stored["beats"]["devtest"])
    assert stems[:3] == [dataset[i]["filename"] for i in range(3)]
    np.testing.assert_allclose(logits[:3], expected, atol=1e-5, rtol=1e-4)
    assert (logits < 0).any()


@pytest.mark.integration
def test_teacher_mode_writes_the_t_folder_with_the_teacher_weights(workspace, stored):
    lines = []
    config = _merge(workspace["configs"]["atst_frame"],
                    {"mode": "teacher", "base_path": str(_devtest_only_root(workspace))})
    files = pc.store_predictions(config, echo=lines.append)
    assert list(files) == ["devtest"]
    assert Path(files["devtest"]).parent.name == "atst_frame_tiny_t"
    assert sum("skipped (no audio folder" in line for line in lines) == len(PREDICTION_SETS) - 1
    _, teacher_logits = read_predictions(files["devtest"])
    _, student_logits = read_predictions(stored["atst_frame"]["devtest"])
    assert teacher_logits.shape == student_logits.shape and not np.allclose(teacher_logits, student_logits)
    with h5py.File(files["devtest"]) as f:
        assert f.attrs["mode"] == "teacher"


@pytest.mark.integration
def test_store_sets_selects_the_sets_written(workspace):
    lines = []
    config = _merge(workspace["configs"]["atst_frame"],
                    {"out_name": "some_sets", "store_sets": ("eval_public", "devtest")})
    files = pc.store_predictions(config, echo=lines.append)
    assert list(files) == ["devtest", "eval_public"]  # in PREDICTION_SETS order
    written = sorted(p.name for p in (workspace["root"] / "preds" / "some_sets").iterdir())
    assert written == ["devtest.hdf5", "eval_public.hdf5"]
    assert not any("weak" in line for line in lines)
    for bad in (("devtest", "dev_test"), "devtest", ()):
        with pytest.raises(pc.PredictionCommandError, match="store_sets"):
            pc.store_predictions(_merge(config, {"store_sets": bad}), echo=_quiet)


@pytest.mark.integration
def test_existing_files_are_kept_unless_overwrite(workspace):
    _assert_kept_unless_overwrite(pc.store_predictions, _merge(
        workspace["configs"]["atst_frame"], {"base_path": str(_devtest_only_root(workspace)), "out_name": "keep_test"}))


@pytest.mark.integration
def test_a_checkpoint_of_another_arch_fails_with_a_hint(workspace):
    config = _merge(workspace["configs"]["atst_frame"], {
        "pretrained_name": "beats_tiny", "base_path": str(_devtest_only_root(workspace)), "out_name": "wrong_arch"})
    with pytest.raises(Exception, match=r"holds a beats model(.|\n)*arch=atst_frame"):
        pc.store_predictions(config, echo=_quiet)
    assert not (workspace["root"] / "preds" / "wrong_arch" / "devtest.hdf5").exists()


@pytest.mark.integration
def test_stored_models_ensemble_to_their_mean(workspace, stored):
    files = _ensemble(workspace, ["atst_frame_tiny", "beats_tiny"], "ens_ab")
    assert list(files) == list(PREDICTION_SETS)
    for set_name in ("devtest", "weak_val", "maestro_real_dev"):
        _, mean = read_predictions(files[set_name])
        _, a = read_predictions(stored["atst_frame"][set_name])
        _, b = read_predictions(stored["beats"][set_name])
        np.testing.assert_allclose(mean, (a + b) / 2, rtol=1e-6, atol=1e-6)


@pytest.mark.integration
def test_eval_prints_the_console_block_and_writes_report_and_submission(workspace, stored):
    _ensemble(workspace, ["atst_frame_tiny", "beats_tiny"], "ens_eval")
    lines = []
    config = _merge(workspace["base"], {"pretrained_name": "ens_eval", "cross_validation_folds": 0, "num_jobs": 1,
                                        **SMALL_GRID})
    metrics = pc.eval_predictions(config, echo=lines.append)
    folder = workspace["root"] / "preds" / "ens_eval"
    assert [line.split(":")[0] for line in lines[:7]] == [
        "maestro_real_dev mpAUC", "maestro_real_dev mpAUC_csebbs (should be the same)", "devtest psds1",
        "devtest psds1_csebbs", "eval_public psds1", "eval_public psds1_csebbs", f"Storing predictions to {folder}."]
    for key in ("maestro_real_dev/mpauc", "maestro_real_dev/mpauc_csebbs", "devtest/psds1", "devtest/psds1_csebbs",
                "eval_public/psds1", "eval_public/psds1_csebbs"):
        assert 0.0 <= metrics[key] <= 1.0, key
    report = json.loads((folder / "eval_report.json").read_text())
    assert report["sets"]["devtest"]["raw"]["psds1"] == pytest.approx(metrics["devtest/psds1"])
    assert sorted(Path(p).name for p in report["plots"]) == sorted(  # the files logged to an active wandb run
        f"{s}_{kind}.png" for s in ("devtest", "eval_public") for kind in ("psd_roc", "per_class_psds1"))
    assert all(Path(p).is_file() for p in report["plots"])
    private = _audio_stems(workspace, "eval_private")
    for submission in ("Schmid_CPJKU_task4_X_runX.output", "Schmid_CPJKU_task4_X_runX_unprocessed.output"):
        assert sorted(p.stem for p in (folder / submission).glob("*.tsv")) == private


@pytest.mark.integration
def test_eval_of_a_missing_folder_lists_the_available_ones(workspace, stored):
    with pytest.raises(pc.PredictionCommandError, match=r"'ensemble_3' not found.*atst_frame_tiny"):
        pc.eval_predictions(_merge(workspace["base"], {"pretrained_name": "ensemble_3"}))


@pytest.mark.integration
def test_an_ensemble_is_the_next_iterations_pseudo_labels(workspace, stored):
    """The training data reads an ensemble folder as pseudo-labels: sigmoid of the mean logits, [27, 156]."""
    files = _ensemble(workspace, ["atst_frame_tiny", "beats_tiny"], "ens_pseudo")
    folder = resolve_pseudo_label_dir(_merge(workspace["base"], {"pseudo_labels": "ens_pseudo"}))
    audio_dir = workspace["audio"] / SETS["weak_train"].audio
    clips = [ClipEntry(p.name, weak_labels=()) for p in sorted(audio_dir.glob("*.wav"))]
    dataset = ClipDataset("weak_train", audio_dir, clips, mask=torch.ones(27, dtype=torch.bool), train=True,
                          pseudo_labels=PseudoLabels(folder, "weak_train"))
    sample = dataset[1]
    stems, logits = read_predictions(files["weak_train"])
    expected = torch.sigmoid(torch.from_numpy(logits[stems.index(sample["filename"])])).numpy().T  # [27, 156]
    assert sample["has_pseudo"]
    np.testing.assert_allclose(sample["pseudo"].numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.integration
def test_sacred_commands_run_in_process(workspace, stored):
    """The commands as registered in ex_stage2, through Sacred (config validation included)."""
    import ex_stage2

    assert {"store_predictions", "ensemble_predictions", "eval_predictions"} <= set(ex_stage2.ex.commands)
    ex_stage2.ex.run("ensemble_predictions", named_configs=["demo"], config_updates={
        "preds_path": str(workspace["root"] / "preds"), "pretrained_names": ("atst_frame_tiny", "beats_tiny"),
        "out_name": "ens_sacred"})
    assert (workspace["root"] / "preds" / "ens_sacred" / "devtest.hdf5").is_file()
