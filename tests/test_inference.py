"""The inference CLI (``python -m inference``) and its post-processing (``helpers/evaluation/postprocess.py``).

Tiny random models are saved as checkpoints in the released layout (``student`` / ``teacher``) in tmp_path:
an ATST-Frame with a stored training config (4 heads, which the shapes cannot tell) and a BEATs without one
(sizes from shapes only, no AudioSet head). Audio is generated: 3 s mono 16 kHz, 35 s stereo 44.1 kHz.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import inference
from data_util.classes import CLASSES, MEDIAN_WINDOWS
from helpers.evaluation import postprocess
from helpers.predictions import recording
from data_util.prediction_files import read_predictions
from models.checkpoints import CheckpointError, load_state_dict_strict, save_sed_checkpoint
from models.factory import build_model, create_model
from models.loading import checkpoint_config
from models.long_audio import num_output_frames

SR = 16_000
SHORT_SECONDS = 3.0
LONG_SECONDS = 35.0
LONG_SR = 44_100
TINY_CRNN = dict(nb_filters=[4, 8, 8, 8, 8, 8, 8], n_RNN_cell=16)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--quiet", "--hop_seconds", "10", "--device", "cpu"]


def _tiny_model(arch: str, seed: int, **backbone):
    torch.manual_seed(seed)
    wrapper = dict(no_wrapper=True, embed_pool="int", interpolation_mode="nearest-exact") if arch == "beats" else {}
    model = create_model(arch, backbone_kwargs=dict(embed_dim=32, depth=1, **backbone), **TINY_CRNN, **wrapper)
    with torch.no_grad():  # spread the outputs so that some classes cross the threshold and others do not
        for parameter in model.parameters():  # models/beats.py leaves pos_conv's weight-norm v uninitialised
            if not torch.isfinite(parameter).all() or parameter.abs().max() > 1e6:
                torch.nn.init.normal_(parameter, std=0.02)
        model.dense.bias.copy_(torch.linspace(-3.0, 3.0, len(CLASSES)))
        model.dense.weight.mul_(20.0)
    return model.eval()


def _write_audio(path, seconds, sr, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.2 * np.sin(2 * np.pi * 440 * t) * ((t % 4) < 1.5)  # a beeping tone over noise
    x = np.stack([tone + 0.02 * rng.standard_normal(len(t)) for _ in range(channels)], axis=1)
    sf.write(path, x.astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    models = root / "models"
    atst = _tiny_model("atst_frame", seed=0, num_heads=4)
    config = {"arch": "atst_frame", "atst_frame": {"num_heads": 4, "embed_dim": 32},
              "t4_wrapper": {"embed_pool": "aap"}}
    save_sed_checkpoint(models / "tiny_atst.ckpt", atst.state_dict(), atst.state_dict(),
                        hyper_parameters={"config": config})
    beats = _tiny_model("beats", seed=1, num_heads=2)
    teacher = _tiny_model("beats", seed=2, num_heads=2)
    save_sed_checkpoint(models / "tiny_beats.ckpt", beats.state_dict(), teacher.state_dict())
    audio = root / "audio"
    (audio / "sub").mkdir(parents=True)
    short = _write_audio(audio / "short.wav", SHORT_SECONDS, SR)
    long = _write_audio(audio / "sub" / "long_stereo.flac", LONG_SECONDS, LONG_SR, channels=2, seed=1)
    return dict(root=root, models=models, short=short, long=long, audio=audio)


def _run(setup, *args):
    return inference.main(["--models_dir", str(setup["models"]), *FAST, *map(str, args)])


def _check_outputs(folder, stem, duration):
    events = pd.read_csv(folder / f"{stem}_events.tsv", sep="\t")
    assert list(events.columns) == ["onset", "offset", "event_label", "confidence"]
    assert len(events) > 0
    assert (events.onset < events.offset).all()
    assert (events.onset >= 0).all() and (events.offset <= duration + 1e-6).all()
    assert events.event_label.isin(CLASSES).all()
    assert events.onset.is_monotonic_increasing
    assert events.confidence.between(0.5, 1.0).all()  # threshold 0.5

    scores = pd.read_csv(folder / f"{stem}_scores.tsv", sep="\t")
    assert list(scores.columns) == ["onset", "offset", *CLASSES]
    assert len(scores) == num_output_frames(round(duration * SR)) == math.ceil(duration / 0.064)  # 47 / 547
    assert scores.onset.iloc[0] == 0.0 and scores.offset.iloc[-1] == pytest.approx(duration, abs=1e-3)
    np.testing.assert_allclose(scores.offset.to_numpy()[:-1], scores.onset.to_numpy()[1:])
    assert scores[list(CLASSES)].to_numpy().min() >= 0 and scores[list(CLASSES)].to_numpy().max() <= 1

    png = (folder / f"{stem}.png").read_bytes()
    assert png[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert 800 <= width <= 3000 and 500 <= height <= 2000
    assert 20_000 < len(png) < 5_000_000
    return events, scores


def test_folder_of_short_and_long_stereo_44k_files(setup, capsys):
    out = setup["root"] / "out_folder"
    assert _run(setup, "--audio_file", setup["audio"], "--model_name", "tiny_atst", "--out", out) == 0
    assert "short.wav" in capsys.readouterr().out

    _check_outputs(out / "short", "short", SHORT_SECONDS)
    names, logits = read_predictions(out / "short" / "short_scores.hdf5")
    assert names == ["short"] and logits.shape == (1, 156, 27)

    long_dir = out / "sub" / "long_stereo"  # folder structure kept under --out
    _check_outputs(long_dir, "long_stereo", LONG_SECONDS)
    names, logits = read_predictions(long_dir / "long_stereo_scores.hdf5")
    # 10 s windows every 10 s (--hop_seconds 10), MAESTRO chunk names in centiseconds
    assert names == ["long_stereo-000000-001000", "long_stereo-001000-002000", "long_stereo-002000-003000",
                     "long_stereo-003000-003500"]
    assert logits.shape == (4, 156, 27)


def test_ensemble_is_the_mean_of_the_members_logits(setup):
    out = setup["root"] / "out_ensemble"
    for name, args in (("a", ["--model_name", "tiny_atst"]),
                       ("b", ["--model_name", setup["models"] / "tiny_beats.ckpt"]),
                       ("ab", ["--ensemble", "tiny_atst,tiny_beats"])):
        assert _run(setup, "--audio_file", setup["short"], *args, "--out", out / name, "--no_plot") == 0
    logits = {n: read_predictions(out / n / "short" / "short_scores.hdf5")[1] for n in ("a", "b", "ab")}
    assert not np.allclose(logits["a"], logits["b"])
    np.testing.assert_allclose(logits["ab"], (logits["a"] + logits["b"]) / 2, atol=1e-5)


def test_loaded_model_reproduces_the_saved_model(setup):
    """Sizes from shapes plus the 4 attention heads from the stored config rebuild the model exactly."""
    original = _tiny_model("atst_frame", seed=0, num_heads=4)
    loaded = inference.load_model("tiny_atst", models_dir=setup["models"])
    assert loaded.model.backbone.depth == 1
    wav = torch.from_numpy(sf.read(setup["short"], dtype="float32")[0])
    wav = torch.nn.functional.pad(wav, (0, 10 * SR - len(wav)))[None]  # (1, 160000)
    with torch.no_grad():
        expected = original(loaded.cnn_frontend(wav), loaded.transformer_frontend(wav), return_strong_logits=True)
        torch.testing.assert_close(loaded(wav), expected)
    with_one_head = checkpoint_config(original.state_dict())
    assert with_one_head["atst_frame"]["num_heads"] == 1  # without the config: 64-dim heads, i.e. 1


def test_teacher_mode_loads_the_teacher_weights(setup):
    student, teacher = (inference.load_model("tiny_beats", mode=mode, models_dir=setup["models"])
                        for mode in ("student", "teacher"))
    assert not torch.equal(student.model.dense.weight, teacher.model.dense.weight)


def test_median_filter_and_no_postprocessing_differ(setup):
    model = inference.load_model("tiny_atst", models_dir=setup["models"])
    tables = {}
    for method in ("median", "none", "csebbs"):
        out = setup["root"] / "out_post" / method
        result = inference.process_file(setup["short"], out, model, model_description="tiny", hop_seconds=10,
                                         postprocess_method=method, progress=False, plot=False)
        events = pd.read_csv(result.events_tsv, sep="\t")
        assert (events.onset < events.offset).all() and events.event_label.isin(CLASSES).all()
        assert len(events) == result.num_events > 0
        tables[method] = pd.read_csv(result.scores_tsv, sep="\t")[list(CLASSES)].to_numpy()
    assert not np.allclose(tables["median"], tables["none"])
    np.testing.assert_allclose(tables["median"], postprocess.median_filter(tables["none"], MEDIAN_WINDOWS), atol=2e-6)
    np.testing.assert_array_equal(tables["csebbs"], tables["none"])  # cSEBBs works on the raw scores


def test_bad_model_name_lists_available_models(setup, capsys):
    assert _run(setup, "--audio_file", setup["short"], "--model_name", "atst_stage9") == 2
    err = capsys.readouterr().err
    assert "unknown model 'atst_stage9'" in err
    assert "tiny_atst, tiny_beats" in err and "python download_resources.py" in err


def test_missing_and_unreadable_audio_are_clear_errors(setup, capsys, tmp_path):
    assert _run(setup, "--audio_file", tmp_path / "nope.wav", "--model_name", "tiny_atst") == 2
    assert "no such file or folder" in capsys.readouterr().err
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF0000WAVEnot really audio")
    assert _run(setup, "--audio_file", garbage, "--model_name", "tiny_atst") == 2
    assert f"cannot read audio file {garbage}" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _run(setup, "--audio_file", tmp_path / "empty", "--model_name", "tiny_atst") == 2
    assert "holds no audio files" in capsys.readouterr().err
    _write_audio(tmp_path / "good.wav", 1.0, SR)  # in a folder, unreadable files are skipped and reported
    assert _run(setup, "--audio_file", tmp_path, "--model_name", "tiny_atst", "--out", tmp_path / "out",
                "--no_plot") == 1
    assert f"skipped {garbage}" in capsys.readouterr().err
    assert (tmp_path / "out" / "good" / "good_events.tsv").is_file()


@pytest.mark.parametrize("arch", ["atst_frame", "fpasst", "beats"])
def test_architecture_and_sizes_are_read_from_the_state_dict(arch):
    kwargs = dict(no_wrapper=True) if arch == "beats" else dict(embed_pool="int")
    reference = create_model(arch, backbone_kwargs=dict(embed_dim=48, depth=3, num_heads=3 if arch == "beats" else 1,
                                                        mlp_ratio=2.0), nb_filters=[4, 8, 8, 16, 16, 16, 16],
                             n_RNN_cell=24, n_layers_RNN=1, **kwargs)
    state_dict = reference.state_dict()
    config = checkpoint_config(state_dict, stored={"t4_wrapper": {"interpolation_mode": "nearest-exact"}})
    assert config["arch"] == arch
    assert config[arch]["depth"] == 3 and config[arch]["embed_dim"] == 48
    assert config[arch]["mlp_ratio"] == 2.0
    assert config["t4_wrapper"]["nb_filters"] == [4, 8, 8, 16, 16, 16, 16]
    assert config["t4_wrapper"]["n_RNN_cell"] == 24 and config["t4_wrapper"]["n_layers_RNN"] == 1
    assert config["t4_wrapper"]["no_wrapper"] == (arch == "beats")
    assert config["t4_wrapper"]["interpolation_mode"] == "nearest-exact"
    if arch == "beats":
        assert config[arch]["num_heads"] == 3
    rebuilt = build_model(config)
    load_state_dict_strict(rebuilt, state_dict, source="test")  # names and shapes fit
    with pytest.raises(CheckpointError, match=f"arch=(fpasst|beats) in the config, {arch} in the checkpoint"):
        checkpoint_config(state_dict, overrides={"arch": "fpasst" if arch != "fpasst" else "beats"})


def test_released_settings_apply_without_a_stored_config():
    """fPaSST / BEATs stage checkpoints were trained with embed_pool=int, nearest-exact; ATST with aap."""
    for arch, pool in (("atst_frame", "aap"), ("fpasst", "int"), ("beats", "int")):
        model = create_model(arch, backbone_kwargs=dict(embed_dim=64, depth=1, num_heads=1), no_wrapper=arch == "beats")
        config = checkpoint_config(model.state_dict())
        assert config["t4_wrapper"]["embed_pool"] == pool
        assert config[arch]["num_heads"] == 1  # 64-dim heads
        if arch == "fpasst":  # the stage-2 passt_mel defaults, as the reference's store_predictions
            assert config["passt_mel"]["fmax_aug_range"] == 1000


# ------------------------------------------------------------------------------------ helpers/evaluation/postprocess.py
def test_median_filter_removes_spikes_and_fills_gaps_per_class():
    probabilities = np.zeros((20, 2))
    probabilities[5, 0] = 1.0  # a one-frame spike
    probabilities[8:16, 1] = 1.0
    probabilities[11, 1] = 0.0  # a one-frame gap
    filtered = postprocess.median_filter(probabilities, [3, 3])
    assert filtered[:, 0].max() == 0.0
    assert filtered[8:16, 1].min() == 1.0
    unfiltered = postprocess.median_filter(probabilities, [1, 1])
    np.testing.assert_array_equal(unfiltered, probabilities)
    with pytest.raises(ValueError, match="1 windows"):
        postprocess.median_filter(probabilities, [3])


def test_threshold_events_gives_sorted_runs_with_peak_confidence():
    probabilities = np.array([[0.1, 0.9], [0.7, 0.8], [0.9, 0.2], [0.2, 0.6], [0.6, 0.6]])
    timestamps = np.array([0.0, 0.064, 0.128, 0.192, 0.256, 0.3])
    events = postprocess.threshold_events(probabilities, timestamps, ["a", "b"], 0.5)
    assert events == [(0.0, 0.128, "b", 0.9), (0.064, 0.192, "a", 0.9), (0.192, 0.3, "b", 0.6),
                      (0.256, 0.3, "a", 0.6)]


def test_csebbs_events_find_a_bump():
    timestamps = np.arange(157) * 0.064
    probabilities = np.full((156, 2), 0.02)
    probabilities[40:80, 1] = 0.9  # 2.56 s to 5.12 s
    events = postprocess.csebbs_events(probabilities, timestamps, ["a", "b"], 0.5)
    assert len(events) == 1
    onset, offset, label, confidence = events[0]
    assert label == "b" and onset == pytest.approx(2.56, abs=0.13) and offset == pytest.approx(5.12, abs=0.13)
    assert confidence > 0.5


def test_tuned_csebbs_parameters_load_from_json(tmp_path, caplog):
    from sebbs.csebbs import CSEBBsPredictor

    tuned = CSEBBsPredictor(step_filter_length={"a": 0.38, "b": 0.66}, merge_threshold_abs={"a": 0.2, "b": np.inf},
                            merge_threshold_rel={"a": np.inf, "b": 2.5}, sound_classes=["a", "b"])
    path = tmp_path / "csebbs.json"
    path.write_text(json.dumps(tuned.to_dict()))  # Infinity for the unused threshold of each class
    predictor = postprocess.load_csebbs_predictor(path, ["a", "b", "c"])
    assert predictor.sound_classes == ["a", "b", "c"]
    assert predictor.merge_threshold_abs == {"a": 0.2, "b": np.inf, "c": 1.0}  # c: sebbs' default, with a warning
    assert predictor.step_filter_length == {"a": 0.38, "b": 0.66, "c": 0.5}
    assert "has no value for ['c']" in caplog.text
    path.write_text('{"step_filter_lenght": 0.5}')
    with pytest.raises(ValueError, match="unknown cSEBBs parameter"):
        postprocess.load_csebbs_predictor(path, ["a"])


def test_folder_mode_batches_windows_across_files_with_the_per_file_results(setup, monkeypatch):
    """BEATs' front-end has no batch statistics, so sharing batches across files must not change any output."""
    calls = []
    original = recording._WindowRunner.forward
    monkeypatch.setattr(recording._WindowRunner, "forward",
                        lambda self, windows, *rest, **kw: calls.append(len(windows)) or original(self, windows,
                                                                                               *rest, **kw))
    model = setup["models"] / "tiny_beats.ckpt"
    out = setup["root"] / "out_batched"
    assert _run(setup, "--audio_file", setup["audio"], "--model_name", model, "--out", out / "folder",
                "--batch_size", "16", "--no_plot") == 0
    assert calls == [1 + 4]  # the short file's window and the long file's 4 in one forward pass
    for name, audio in (("short", setup["short"]), ("sub/long_stereo", setup["audio"] / "sub" / "long_stereo.flac")):
        assert _run(setup, "--audio_file", audio, "--model_name", model, "--out", out / "single", "--no_plot") == 0
        stem = Path(name).name
        _, batched = read_predictions(out / "folder" / name / f"{stem}_scores.hdf5")
        _, single = read_predictions(out / "single" / stem / f"{stem}_scores.hdf5")
        np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
