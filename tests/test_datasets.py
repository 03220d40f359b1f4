"""Label tsvs, label encoding, MAESTRO split, datasets, pseudo-labels and the waveform wrappers.

Most tests build a small tree in the real layout with soundfile + numpy (``make_tree``): short clips
(padded to 10 s by the datasets) keep them fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset

from data_util import layout
from data_util.audio import AudioReadError
from data_util.classes import CLASS_TO_INDEX, DESED_CLASSES, MAESTRO_CLASSES, NUM_CLASSES
from data_util.datasets import (
    EVAL_SET_NAMES, NUM_FRAMES, TRAIN_SET_NAMES, ClipDataset, ClipEntry, DIRDataset, MixupDataset,
    TrainingDataConfig, build_eval_set, build_prediction_set, build_train_sets, convolve_centered, domain_mask,
    encode_strong, encode_weak, find_clip_datasets, load_impulse_responses, unreadable_summary, _weak_split,
)
from data_util.maestro import parse_chunk_name, recording_id, split_maestro
from data_util.pseudo_labels import PseudoLabels
from data_util.sampler import MultiSetBatchSampler
from data_util.tsv import Event, TsvFormatError, read_durations_tsv, read_strong_tsv, read_weak_tsv

SR = 16000
NO_AUG = {"wavmix_p": 0.0, "dir_p": 0.0}


# --------------------------------------------------------------------------------------------------
# A tiny tree in the real layout
# --------------------------------------------------------------------------------------------------
def write_clip(path: Path, seconds: float = 1.0, seed: int = 0, channels: int = 1, sr: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((int(seconds * sr), channels)) * 0.1).astype(np.float32)
    sf.write(path, data if channels > 1 else data[:, 0], sr)


def write_tsv(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header] + rows) + "\n")


def spec_paths(name: str, root: Path, resources: Path):
    spec = layout.SETS[name]
    labels = layout.resolve(spec.labels, root, resources, spec.labels_in_resources) if spec.labels else None
    durations = layout.resolve(spec.durations, root, resources, spec.labels_in_resources) if spec.durations else None
    return root / spec.audio, labels, durations


SCENES = ("cafe_restaurant", "city_center", "grocery_store", "metro_station", "residential_area")
MAESTRO_RECORDINGS = [f"{scene}_{i:02d}" for scene in SCENES for i in range(3)]  # 15 recordings


def chunk(recording: str, onset_s: int) -> str:
    return f"{recording}-{onset_s * 100:06d}-{(onset_s + 10) * 100:06d}.wav"


def make_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset root and a resources dir with every set of the layout (expected counts in EXPECTED)."""
    root, resources = tmp_path / "data", tmp_path / "resources"
    seed = iter(range(10_000))

    def clips(name, filenames, **kw):
        audio, _, _ = spec_paths(name, root, resources)
        for f in filenames:
            write_clip(audio / f, seed=next(seed), **kw)

    # synth train: 4 clips with events (one clip listed without events: dropped from training)
    audio, labels, _ = spec_paths("synth_train", root, resources)
    clips("synth_train", [f"s{i}.wav" for i in range(5)])
    write_tsv(labels, "filename\tonset\toffset\tevent_label", [
        "s0.wav\t0.1\t0.2\tDog", "s0.wav\t0.5\t0.9\tSpeech", "s1.wav\t0.0\t1.0\tDishes",
        "s2.wav\t0.3\t0.6\tCat", "s3.wav\t0.0\t10.0\tBlender", "s4.wav\t\t\t"])
    # AudioSet strong: 4 clips, s_ex excluded
    audio, labels, _ = spec_paths("strong_train", root, resources)
    clips("strong_train", ["a0.wav", "a1.wav", "a2.wav", "a_ex.wav"])
    write_tsv(labels, "filename\tonset\toffset\tevent_label", [
        "a0.wav\t0.0\t0.5\tFrying", "a1.wav\t0.2\t0.4\tDog", "a2.wav\t0.1\t0.3\tSpeech", "a_ex.wav\t0\t1\tCat"])
    # external strong: 5 clips in one folder, 3 train / 2 eval
    audio, train_tsv, dur = spec_paths("external_strong_train", root, resources)
    _, eval_tsv, _ = spec_paths("external_strong_val", root, resources)
    clips("external_strong_train", [f"x{i}.wav" for i in range(5)])
    write_tsv(train_tsv, "filename\tonset\toffset\tevent_label",
              [f"x{i}.wav\t0.0\t0.5\tAlarm_bell_ringing" for i in range(3)])
    write_tsv(eval_tsv, "filename\tonset\toffset\tevent_label",
              [f"x{i}.wav\t0.1\t0.5\tVacuum_cleaner" for i in range(3, 5)])
    write_tsv(dur, "filename\tduration", [f"x{i}.wav\t{9.5 + i * 0.1:.1f}" for i in range(5)])
    # weak: 10 clips (9 train / 1 val), w_ex excluded
    audio, labels, _ = spec_paths("weak_train", root, resources)
    weak_names = [f"w{i}.wav" for i in range(9)] + ["w_ex.wav"]
    clips("weak_train", weak_names)
    write_tsv(labels, "filename\tevent_labels",
              [f"{n}\t{'Dog,Speech' if i % 2 else 'Cat'}" for i, n in enumerate(weak_names)])
    # unlabeled: 5 clips, u_ex excluded
    clips("unlabeled_train", ["u0.wav", "u1.wav", "u2.wav", "u3.wav", "u_ex.wav"])
    # exclude lists
    for name, stem in (("strong_train", "a_ex"), ("weak_train", "w_ex"), ("unlabeled_train", "u_ex")):
        write_tsv(resources / layout.EXCLUDE_LISTS[name], "filename", [f"{stem}.wav"])
    # MAESTRO train: 15 recordings x 2 chunks (soft labels)
    audio, labels, _ = spec_paths("maestro_real_train", root, resources)
    rows = []
    for r in MAESTRO_RECORDINGS:
        for onset in (0, 1):
            name = chunk(r, onset)
            write_clip(audio / name, seed=next(seed))
            rows.append(f"{name}\t0.0\t0.5\tpeople talking\t0.7")
            rows.append(f"{name}\t0.2\t0.8\tfootsteps\t1.0")
    write_tsv(labels, "filename\tonset\toffset\tevent_label\tconfidence", rows)
    # synth val, devtest (one clip without events), public eval: strong + durations
    for name, n in (("synth_val", 2), ("devtest", 3), ("eval_public", 2)):
        audio, labels, dur = spec_paths(name, root, resources)
        names = [f"{name}_{i}.wav" for i in range(n)]
        clips(name, names)
        rows = [f"{f}\t0.0\t0.5\tDog" for f in names[:2]] + [f"{f}\t\t\t" for f in names[2:]]
        write_tsv(labels, "filename\tonset\toffset\tevent_label", rows)
        write_tsv(dur, "filename\tduration", [f"{f}\t10.0" for f in names])
    # MAESTRO dev: 2 chunks; durations per recording (stems)
    audio, labels, dur = spec_paths("maestro_real_dev", root, resources)
    dev_names = [chunk("city_center_09", 0), chunk("city_center_09", 5)]
    clips("maestro_real_dev", dev_names)
    write_tsv(labels, "filename\tonset\toffset\tevent_label\tconfidence",
              [f"{n}\t1.0\t2.0\tcar\t0.9" for n in dev_names])
    write_tsv(dur, "filename\tduration", ["city_center_09\t15.0"])
    # private eval: audio + durations only
    audio, _, dur = spec_paths("eval_private", root, resources)
    clips("eval_private", ["p0.wav", "p1.wav"])
    write_tsv(dur, "filename\tduration", ["p0.wav\t10.0", "p1.wav\t10.0"])
    return root, resources


EXPECTED_TRAIN = {"maestro": 20, "desed_strong": 3 + 3, "synth": 4, "weak": 8, "unlabeled": 4}
EXPECTED_EVAL = {"synth_val": 2, "weak_val": 1, "external_strong_val": 2, "devtest": 3, "maestro_real_val": 10,
                 "maestro_real_dev": 2, "eval_public": 2, "eval_private": 2}


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


# --------------------------------------------------------------------------------------------------
# Label encoding
# --------------------------------------------------------------------------------------------------
def frames_of(strong: np.ndarray, label: str) -> list[int]:
    return np.flatnonzero(strong[CLASS_TO_INDEX[label]]).tolist()


def test_encode_strong_hand_computed_frames():
    strong = encode_strong([Event(0.1, 0.2, "Dog")])
    assert strong.shape == (NUM_CLASSES, NUM_FRAMES) and strong.dtype == np.float32
    assert frames_of(strong, "Dog") == [1, 2, 3]  # int(0.1/0.064)=1, ceil(0.2/0.064)=4 (exclusive)
    assert strong.sum() == 3
    assert frames_of(encode_strong([Event(0.0, 0.064, "Cat")]), "Cat") == [0]
    assert frames_of(encode_strong([Event(9.5, 10.0, "Cat")]), "Cat") == list(range(148, 156))
    assert frames_of(encode_strong([Event(9.0, 12.0, "Cat")]), "Cat") == list(range(140, 156))  # clipped


def test_encode_soft_overlapping_and_touching_events():
    strong = encode_strong([Event(0.0, 1.0, "car", 0.4), Event(0.5, 2.0, "car", 0.8), Event(2.0, 3.0, "car", 0.3)])
    row = strong[CLASS_TO_INDEX["car"]]
    assert row[0] == pytest.approx(0.4) and row[10] == pytest.approx(0.8)  # frame 10 = 0.64 s: max(0.4, 0.8)
    assert row[20] == pytest.approx(0.8)
    assert row[31] == pytest.approx(0.8) and row[32] == pytest.approx(0.3)  # touching at 2.0 s (frame 31.25)
    assert row[46] == pytest.approx(0.3) and row[47] == 0.0
    # order does not matter (the reference's overwrite made the last event win)
    reverse = encode_strong([Event(2.0, 3.0, "car", 0.3), Event(0.5, 2.0, "car", 0.8), Event(0.0, 1.0, "car", 0.4)])
    np.testing.assert_array_equal(strong, reverse)


def test_encode_weak():
    weak = encode_weak(["Dog", "Speech", "Dog"])
    assert weak.sum() == 2 and weak[CLASS_TO_INDEX["Speech"]] == 1


def test_domain_masks():
    desed = domain_mask("desed", include_alias_targets=True)
    assert desed.dtype == torch.bool and desed.sum() == 12
    assert desed[CLASS_TO_INDEX["people talking"]] and desed[CLASS_TO_INDEX["cutlery and dishes"]]
    assert not desed[CLASS_TO_INDEX["car"]]
    assert domain_mask("desed", include_alias_targets=False).sum() == 10
    maestro = domain_mask("maestro", include_alias_targets=True)
    assert maestro.sum() == 19 and maestro[CLASS_TO_INDEX["Speech"]] and not maestro[CLASS_TO_INDEX["Dog"]]
    with pytest.raises(ValueError, match="unknown domain"):
        domain_mask("audioset", True)


# --------------------------------------------------------------------------------------------------
# tsv readers
# --------------------------------------------------------------------------------------------------
def test_read_strong_soft_weak_durations(tmp_path):
    write_tsv(tmp_path / "s.tsv", "filename\tonset\toffset\tevent_label", ["a.wav\t0.1\t0.2\tDog", "b.wav\t\t\t"])
    assert read_strong_tsv(tmp_path / "s.tsv") == {"a.wav": [Event(0.1, 0.2, "Dog")], "b.wav": []}
    write_tsv(tmp_path / "m.tsv", "filename\tonset\toffset\tevent_label\tconfidence", ["c.wav\t1\t2\tcar\t0.25"])
    assert read_strong_tsv(tmp_path / "m.tsv", soft=True)["c.wav"] == [Event(1.0, 2.0, "car", 0.25)]
    write_tsv(tmp_path / "w.tsv", "filename\tevent_labels", ["a.wav\tDog,Cat", "b.wav\t"])
    assert read_weak_tsv(tmp_path / "w.tsv") == {"a.wav": ["Dog", "Cat"], "b.wav": []}
    write_tsv(tmp_path / "d.tsv", "filename\tduration", ["rec_01\t301.2"])
    assert read_durations_tsv(tmp_path / "d.tsv") == {"rec_01": 301.2}


def test_wrong_columns_error_names_file_expected_and_found(tmp_path):
    path = tmp_path / "bad.tsv"
    write_tsv(path, "filename\tstart\tend\tevent_label", ["a.wav\t0\t1\tDog"])
    with pytest.raises(TsvFormatError) as info:
        read_strong_tsv(path)
    message = str(info.value)
    assert str(path) in message and "'onset'" in message and "'start'" in message
    with pytest.raises(TsvFormatError, match="confidence"):
        write_tsv(path, "filename\tonset\toffset\tevent_label", ["a.wav\t0\t1\tcar"])
        read_strong_tsv(path, soft=True)


@pytest.mark.parametrize("row, pattern", [
    ("a.wav\tzero\t1\tDog", "must be a number"),
    ("a.wav\t2\t1\tDog", "onset <= offset"),
    ("a.wav\t0\t1\tdog", "unknown event label 'dog'"),
    ("a.wav\t0\t1\tDog\tNaN", None),  # extra column ignored
])
def test_bad_rows_name_file_and_line(tmp_path, row, pattern):
    path = tmp_path / "x.tsv"
    write_tsv(path, "filename\tonset\toffset\tevent_label", ["ok.wav\t0\t1\tCat", row])
    if pattern is None:
        assert len(read_strong_tsv(path)) == 2
        return
    with pytest.raises(TsvFormatError, match=pattern) as info:
        read_strong_tsv(path)
    assert f"{path}, line 3" in str(info.value)


def test_weak_unknown_label_and_missing_file(tmp_path):
    write_tsv(tmp_path / "w.tsv", "filename\tevent_labels", ["a.wav\tDog,Cats"])
    with pytest.raises(TsvFormatError, match=r"line 2: unknown event label 'Cats'"):
        read_weak_tsv(tmp_path / "w.tsv")
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_weak_tsv(tmp_path / "nope.tsv")


# --------------------------------------------------------------------------------------------------
# MAESTRO
# --------------------------------------------------------------------------------------------------
def test_parse_chunk_name():
    c = parse_chunk_name("cafe_restaurant_07-000100-001100.wav")
    assert (c.recording, c.onset, c.offset) == ("cafe_restaurant_07", 1.0, 11.0)
    assert parse_chunk_name("/x/y/metro_station_00-029050-030050").onset == 290.5
    with pytest.raises(ValueError, match="does not match"):
        parse_chunk_name("Y123_30.000_40.000.wav")
    assert recording_id("city_center_05-000000-001000.wav") == "city_center_05"


def test_split_maestro_by_recording_deterministic():
    names = [chunk(r, s) for r in MAESTRO_RECORDINGS for s in range(3)]
    train, valid = split_maestro(names, 0.9, 42)
    train_recs, valid_recs = {recording_id(n) for n in train}, {recording_id(n) for n in valid}
    assert not train_recs & valid_recs and len(train) + len(valid) == len(names)
    assert len(train_recs) == 10 and len(valid_recs) == 5  # int(0.9 * 3) = 2 per scene
    assert split_maestro(names, 0.9, 42) == (train, valid)
    assert split_maestro(names, 0.9, 7) != (train, valid)
    # pinned: regression against the legacy-RandomState stream the reference used (np.random.seed + shuffle)
    rng = np.random.RandomState(42)
    expected_valid = []
    for scene in SCENES:
        recordings = np.array([f"{scene}_{i:02d}" for i in range(3)])
        rng.shuffle(recordings)
        expected_valid.append(recordings[2])
    assert sorted(valid_recs) == sorted(expected_valid)
    with pytest.raises(ValueError, match="unknown scene"):
        split_maestro(["beach_01-000000-001000.wav"])


def test_weak_split_matches_pandas_sample():
    clips = [ClipEntry(f"w{i}.wav", weak_labels=("Dog",)) for i in range(37)]
    train, valid = _weak_split(clips, 0.9, 42)
    frame = pd.DataFrame({"filename": [c.filename for c in clips]})
    sampled = frame.sample(frac=0.9, random_state=42)
    assert [c.filename for c in train] == sampled["filename"].tolist()
    assert [c.filename for c in valid] == frame.drop(sampled.index)["filename"].tolist()


# --------------------------------------------------------------------------------------------------
# Datasets on the tiny tree
# --------------------------------------------------------------------------------------------------
def check_sample(sample: dict, *, eval_set: bool) -> None:
    assert sample["audio"].shape == (160000,) and sample["audio"].dtype == torch.float32
    assert sample["strong"].shape == (NUM_CLASSES, NUM_FRAMES) and sample["strong"].dtype == torch.float32
    assert sample["weak"].shape == (NUM_CLASSES,) and sample["mask"].dtype == torch.bool
    assert sample["pseudo"].shape == (NUM_CLASSES, NUM_FRAMES) and isinstance(sample["has_pseudo"], bool)
    assert isinstance(sample["dataset"], str) and not sample["filename"].endswith((".wav", ".flac", ".mp3"))
    assert ("duration" in sample) == eval_set


def test_train_sets_counts_order_and_samples(tree):
    sets = build_train_sets(*tree, NO_AUG)
    assert tuple(sets) == TRAIN_SET_NAMES
    assert {k: len(v) for k, v in sets.items()} == EXPECTED_TRAIN
    for name, ds in sets.items():
        for i in range(len(ds)):
            sample = ds[i]
            check_sample(sample, eval_set=False)
            assert not sample["has_pseudo"] and not sample["pseudo"].any()
            assert not (sample["strong"] * ~sample["mask"][:, None]).any()  # labels only on valid classes
            if name in ("maestro", "desed_strong", "synth"):
                torch.testing.assert_close(sample["weak"], sample["strong"].amax(dim=1))
            if name in ("weak", "unlabeled"):
                assert not sample["strong"].any()
    names = [c.set_name for c in find_clip_datasets(sets["desed_strong"])]
    assert names == ["strong_train", "external_strong_train"]
    stems = {sets["weak"][i]["filename"] for i in range(len(sets["weak"]))}
    assert "w_ex" not in stems and "u_ex" not in {s["filename"] for s in sets["unlabeled"]}
    assert "a_ex" not in {s["filename"] for s in sets["desed_strong"]}


def test_masks_and_aliases_per_domain(tree):
    sets = build_train_sets(*tree, NO_AUG)
    maestro = sets["maestro"][0]
    assert maestro["dataset"] == "maestro_real_train" and maestro["mask"].sum() == 19
    talking, speech = CLASS_TO_INDEX["people talking"], CLASS_TO_INDEX["Speech"]
    np.testing.assert_allclose(maestro["strong"][talking].max(), 0.7)  # soft label kept
    torch.testing.assert_close(maestro["strong"][speech], maestro["strong"][talking])  # MAESTRO -> DESED alias
    synth = {s["filename"]: s for s in sets["synth"]}
    assert synth["s0"]["mask"].sum() == 12
    assert frames_of(synth["s0"]["strong"].numpy(), "Dog") == [1, 2, 3]
    torch.testing.assert_close(synth["s0"]["strong"][talking], synth["s0"]["strong"][speech])  # DESED -> MAESTRO
    dishes = synth["s1"]["strong"][CLASS_TO_INDEX["cutlery and dishes"]]
    assert dishes.sum() > 0
    weak = {s["filename"]: s for s in sets["weak"]}
    assert weak["w1"]["weak"][talking] == 1 and weak["w1"]["weak"][CLASS_TO_INDEX["Dog"]] == 1

    no_alias = build_train_sets(*tree, {**NO_AUG, "use_desed_maestro_alias": False})
    synth = {s["filename"]: s for s in no_alias["synth"]}
    assert synth["s0"]["mask"].sum() == 10 and not synth["s0"]["strong"][talking].any()
    assert no_alias["maestro"][0]["strong"][speech].any()  # MAESTRO -> DESED stays on (as the reference)


def test_external_strong_optional_and_exclusion_switch(tree):
    sets = build_train_sets(*tree, {**NO_AUG, "include_external_strong": False, "exclude_overlapping": False})
    assert isinstance(sets["desed_strong"], ClipDataset) and len(sets["desed_strong"]) == 4
    assert len(sets["weak"]) == 9 and len(sets["unlabeled"]) == 5


def test_eval_sets_counts_durations_and_determinism(tree):
    for name in EVAL_SET_NAMES:
        ds = build_eval_set(name, *tree)
        assert len(ds) == EXPECTED_EVAL[name], name
        first, again = ds[0], ds[0]
        check_sample(first, eval_set=True)
        torch.testing.assert_close(first["audio"], again["audio"])
        domain_classes = MAESTRO_CLASSES if name.startswith("maestro") else DESED_CLASSES
        assert first["mask"].sum() == (19 if name.startswith("maestro") else 10), name
        assert all(first["mask"][CLASS_TO_INDEX[c]] for c in domain_classes)
    devtest = build_eval_set("devtest", *tree)
    assert [devtest[i]["duration"] for i in range(3)] == [10.0, 10.0, 10.0]
    assert not devtest[2]["strong"].any()  # listed without events: kept for evaluation
    external = build_eval_set("external_strong_val", *tree)
    assert external[0]["duration"] == pytest.approx(9.8)
    assert build_eval_set("maestro_real_dev", *tree)[0]["duration"] == pytest.approx(1.0)  # from the audio
    val_recordings = {recording_id(n) for n in build_eval_set("maestro_real_val", *tree).stems}
    train_recordings = {recording_id(n) for n in build_train_sets(*tree, NO_AUG)["maestro"].stems}
    assert val_recordings and not val_recordings & train_recordings
    weak_val = build_eval_set("weak_val", *tree).stems
    assert not set(weak_val) & set(build_train_sets(*tree, NO_AUG)["weak"].stems)
    with pytest.raises(KeyError, match="unknown evaluation set"):
        build_eval_set("synth_train", *tree)


def test_prediction_sets_cover_whole_folders(tree):
    assert len(build_prediction_set("external_strong_train", tree[0])) == 5
    assert len(build_prediction_set("weak_val", tree[0])) == 10
    sample = build_prediction_set("eval_private", tree[0])[1]
    assert sample["filename"] == "p1" and sample["mask"].all() and sample["duration"] == pytest.approx(1.0)


def test_long_and_stereo_44k_clips(tree, tmp_path):
    root, resources = tree
    audio, labels, _ = spec_paths("synth_train", root, resources)
    write_clip(audio / "s3.wav", seconds=12.0, channels=2, sr=44100)  # labelled 0..10 s Blender
    synth = build_train_sets(root, resources, NO_AUG)["synth"]
    index = synth.stems.index("s3")
    blender = CLASS_TO_INDEX["Blender"]
    for _ in range(5):  # random crops: labels shift with the crop (the event still ends at 10 s)
        sample = synth[index]
        assert sample["audio"].shape == (160000,) and sample["audio"].abs().min() < 1.0
        active = np.flatnonzero(sample["strong"][blender].numpy())
        assert active[0] == 0 and 125 <= len(active) <= 156
    val_audio, _, _ = spec_paths("devtest", root, resources)
    write_clip(val_audio / "devtest_0.wav", seconds=12.0, channels=2, sr=44100, seed=5)
    devtest = build_eval_set("devtest", root, resources)
    torch.testing.assert_close(devtest[0]["audio"], devtest[0]["audio"])  # no random crop at evaluation


def test_missing_audio_is_one_error_listing_files(tree):
    root, resources = tree
    audio, _, _ = spec_paths("synth_train", root, resources)
    (audio / "s1.wav").unlink()
    (audio / "s2.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of 5 audio files .* missing") as info:
        build_train_sets(root, resources, NO_AUG)
    assert "s1.wav" in str(info.value) and "s2.wav" in str(info.value)


def test_missing_16k_folder_suggests_prepare_data(tree):
    root, resources = tree
    folder, _, _ = spec_paths("devtest", root, resources)
    folder.rename(folder.with_name(folder.name.removesuffix("_16k")))
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        build_eval_set("devtest", root, resources)


def test_unknown_label_in_set_names_file_and_line(tree):
    root, resources = tree
    _, labels, _ = spec_paths("synth_train", root, resources)
    labels.write_text(labels.read_text() + "s0.wav\t1.0\t2.0\tdog_bark\n")
    with pytest.raises(TsvFormatError, match=r"soundscapes.tsv, line 8: unknown event label 'dog_bark'"):
        build_train_sets(root, resources, NO_AUG)


def test_unreadable_files_raise_or_are_replaced_and_counted(tree):
    root, resources = tree
    audio, _, _ = spec_paths("unlabeled_train", root, resources)
    (audio / "u1.wav").write_bytes(b"not audio at all" * 10)
    strict = build_train_sets(root, resources, NO_AUG)["unlabeled"]
    with pytest.raises(AudioReadError, match="u1.wav"):
        strict[strict.stems.index("u1")]
    sets = build_train_sets(root, resources, {**NO_AUG, "skip_unreadable": True})
    loader = DataLoader(sets["unlabeled"], batch_size=2, num_workers=2)
    seen = [name for batch in loader for name in batch["filename"]]
    assert len(seen) == 4 and "u1" not in seen  # replaced by the next clip
    summary = unreadable_summary(sets.values())
    assert list(summary) == ["unlabeled_train"] and str(audio / "u1.wav") in summary["unlabeled_train"]


def test_unknown_training_key_is_an_error():
    with pytest.raises(KeyError, match="wavmix_pp"):
        TrainingDataConfig.from_mapping({"wavmix_pp": 0.5})
    with pytest.raises(ValueError, match="wavmix_target"):
        TrainingDataConfig.from_mapping({"wavmix_target": "everything"})
    assert TrainingDataConfig.from_mapping({"batch_sizes": (1, 2, 3, 4, 5), "num_workers": 2}).seed == 42


# --------------------------------------------------------------------------------------------------
# Pseudo-labels
# --------------------------------------------------------------------------------------------------
def write_pseudo_labels(folder: Path, sets: dict, drop: str | None = None) -> dict[str, np.ndarray]:
    from data_util.prediction_files import write_predictions

    logits = {}
    by_set: dict[str, list[str]] = {}
    for ds in sets.values():
        for clip_ds in find_clip_datasets(ds):
            by_set.setdefault(clip_ds.set_name, []).extend(clip_ds.stems)
    rng = np.random.default_rng(0)
    for set_name, stems in by_set.items():
        stems = [s for s in stems if s != drop]
        values = rng.normal(0, 3, (len(stems), NUM_FRAMES, NUM_CLASSES)).astype(np.float32)
        logits.update({(set_name, s): v for s, v in zip(stems, values)})
        write_predictions(folder / f"{set_name}.hdf5", stems, values, model="test")
    return logits


def test_pseudo_labels_are_sigmoid_of_logits(tree, tmp_path):
    sets = build_train_sets(*tree, NO_AUG)
    logits = write_pseudo_labels(tmp_path / "pl", sets)
    sets = build_train_sets(*tree, NO_AUG, pseudo_label_dir=tmp_path / "pl")
    for ds in sets.values():
        sample = ds[0]
        assert sample["has_pseudo"]
        expected = torch.sigmoid(torch.from_numpy(logits[(sample["dataset"], sample["filename"])])).T
        torch.testing.assert_close(sample["pseudo"], expected)
    off = build_train_sets(*tree, {**NO_AUG, "use_pseudo_labels": False}, pseudo_label_dir=tmp_path / "pl")
    assert not off["weak"][0]["has_pseudo"]


def test_pseudo_labels_missing_file_or_clip(tree, tmp_path):
    sets = build_train_sets(*tree, NO_AUG)
    write_pseudo_labels(tmp_path / "pl", sets, drop="w3")
    with pytest.raises(KeyError, match=r"lacks 1 clip\(s\) of set 'weak_train'.*w3"):
        build_train_sets(*tree, NO_AUG, pseudo_label_dir=tmp_path / "pl")
    (tmp_path / "pl" / "synth_train.hdf5").unlink()
    with pytest.raises(FileNotFoundError, match="synth_train.hdf5"):
        build_train_sets(*tree, NO_AUG, pseudo_label_dir=tmp_path / "pl")
    lookup = PseudoLabels(tmp_path / "pl", "synth_train", allow_missing_file=True)
    pseudo, has = lookup.lookup("anything")
    assert not has and pseudo.shape == (NUM_CLASSES, NUM_FRAMES) and not pseudo.any()


def test_pseudo_labels_in_dataloader_workers(tree, tmp_path):
    sets = build_train_sets(*tree, NO_AUG)
    write_pseudo_labels(tmp_path / "pl", sets)
    sets = build_train_sets(*tree, NO_AUG, pseudo_label_dir=tmp_path / "pl")
    concat, sampler = MultiSetBatchSampler.for_sets(sets, (2, 2, 1, 2, 1), seed=0)
    loader = DataLoader(concat, batch_sampler=sampler, num_workers=2)
    batches = list(loader)
    assert len(batches) == len(sampler) == 3  # desed_strong: 6 clips // 2
    batch = batches[0]
    assert batch["audio"].shape == (8, 160000) and batch["strong"].shape == (8, NUM_CLASSES, NUM_FRAMES)
    assert batch["has_pseudo"].all() and batch["mask"].dtype == torch.bool
    slices = sampler.sub_batch_slices
    assert set(batch["dataset"][slices["maestro"]]) == {"maestro_real_train"}
    assert set(batch["dataset"][slices["unlabeled"]]) == {"unlabeled_train"}


# --------------------------------------------------------------------------------------------------
# Waveform wrappers
# --------------------------------------------------------------------------------------------------
class ListDataset(Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return dict(self.samples[i])


def fake_sample(label: str | None, dc: float, pseudo_value: float, mask_domain: str = "desed") -> dict:
    strong = torch.zeros(NUM_CLASSES, NUM_FRAMES)
    if label is not None:
        strong[CLASS_TO_INDEX[label], 10:20] = 1.0
    return {"audio": torch.full((160000,), dc) + torch.randn(160000) * 0.1, "strong": strong,
            "weak": strong.amax(dim=1), "mask": domain_mask(mask_domain, True),
            "pseudo": torch.full((NUM_CLASSES, NUM_FRAMES), pseudo_value), "has_pseudo": True,
            "dataset": "synth_train", "filename": f"{label}"}


def test_mixup_dataset_mixes_labels_with_one_coefficient():
    torch.manual_seed(0)
    base = ListDataset([fake_sample("Dog", 0.5, 0.2), fake_sample("Cat", -0.3, 0.8, "maestro")])
    mixed = MixupDataset(base, p=1.0)
    for _ in range(10):
        sample = mixed[0]
        dog = sample["strong"][CLASS_TO_INDEX["Dog"], 15].item()
        cat = sample["strong"][CLASS_TO_INDEX["Cat"], 15].item()
        if cat == 0:  # partner was the sample itself
            assert dog == pytest.approx(1.0)
            continue
        lam = dog
        assert 0.5 <= lam <= 1.0 and cat == pytest.approx(1 - lam, abs=1e-6)
        torch.testing.assert_close(sample["weak"], sample["strong"].amax(dim=1))
        assert sample["pseudo"][0, 0].item() == pytest.approx(lam * 0.2 + (1 - lam) * 0.8, abs=1e-6)
        assert sample["mask"].sum() == 27  # union of a DESED and a MAESTRO mask (here: all classes)
        assert abs(sample["audio"].mean().item()) < 1e-4  # DC removed
        assert sample["audio"].shape == (160000,) and sample["filename"] == "Dog"
    untouched = MixupDataset(base, p=0.0)[0]
    torch.testing.assert_close(untouched["strong"], base[0]["strong"])


def test_mixup_weak_clips_mix_weak_linearly():
    torch.manual_seed(1)
    first, second = fake_sample(None, 0.0, 0.0), fake_sample(None, 0.0, 0.0)
    first["weak"][CLASS_TO_INDEX["Dog"]] = 1.0
    second["weak"][CLASS_TO_INDEX["Cat"]] = 1.0
    mixed = MixupDataset(ListDataset([first, second]), p=1.0)
    for _ in range(10):
        sample = mixed[0]
        total = sample["weak"][CLASS_TO_INDEX["Dog"]] + sample["weak"][CLASS_TO_INDEX["Cat"]]
        assert total.item() == pytest.approx(1.0) and not sample["strong"].any()


def test_convolve_centered_matches_reference_alignment():
    torch.manual_seed(0)
    audio = torch.randn(1000)
    for length in (7, 8, 33):
        response = torch.randn(length)
        pad = length // 2
        expected = torchaudio.transforms.FFTConvolve(mode="valid")(
            torch.nn.functional.pad(audio, (pad, pad)).reshape(1, -1), response.reshape(1, -1)
        ).squeeze()[: len(audio)]
        torch.testing.assert_close(convolve_centered(audio, response), expected, atol=1e-4, rtol=1e-4)


def test_dir_dataset_shapes_labels_and_identity(tree):
    base = ListDataset([fake_sample("Dog", 0.0, 0.1)])
    identity = DIRDataset(base, [torch.tensor([1.0])], p=1.0)[0]
    torch.testing.assert_close(identity["audio"], base[0]["audio"], atol=1e-5, rtol=1e-5)
    echo = DIRDataset(base, [torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])], p=1.0)[0]  # centred delay of 2 samples
    torch.testing.assert_close(echo["audio"][2:], base[0]["audio"][:-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(echo["strong"], base[0]["strong"])
    root, resources = tree
    write_clip(resources / "dirs" / "device_a" / "ir.wav", seconds=0.05, sr=44100)
    sets = build_train_sets(root, resources, {"wavmix_p": 0.5, "dir_p": 1.0, "dir_weak": False})
    assert isinstance(sets["maestro"], DIRDataset) and isinstance(sets["maestro"].dataset, MixupDataset)
    assert isinstance(sets["weak"], ClipDataset) and isinstance(sets["unlabeled"], DIRDataset)
    check_sample(sets["synth"][0], eval_set=False)
    with pytest.raises(FileNotFoundError, match="impulse responses"):
        load_impulse_responses(resources / "no_dirs")


# --------------------------------------------------------------------------------------------------
# The generated demo dataset (data_util.demo, tiny preset)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory):
    from data_util import demo

    root = tmp_path_factory.mktemp("demo") / "tiny"
    demo.generate(root, preset="tiny", seed=0)
    return root, root / "resources", demo.expected_counts("tiny")


def test_demo_every_set_loads_with_expected_counts(demo_tree):
    from data_util.tsv import read_filename_list

    root, resources, counts = demo_tree
    excluded = {name: len(read_filename_list(resources / path)) for name, path in layout.EXCLUDE_LISTS.items()}
    sets = build_train_sets(root, resources, {"dir_p": 0.5})  # wavmix + the demo's impulse responses
    assert len(sets["unlabeled"]) == counts["unlabeled_train"] - excluded["unlabeled_train"]
    weak_val = build_eval_set("weak_val", root, resources)
    assert len(weak_val) == counts["weak_train"] - round(0.9 * counts["weak_train"])
    assert len(sets["weak"]) <= counts["weak_train"] - len(weak_val)
    maestro_val = build_eval_set("maestro_real_val", root, resources)
    assert len(sets["maestro"]) + len(maestro_val) == counts["maestro_real_train"]
    for name in ("synth_val", "devtest", "maestro_real_dev", "eval_public", "eval_private"):
        ds = build_eval_set(name, root, resources)
        assert len(ds) == counts[name], name
        check_sample(ds[len(ds) - 1], eval_set=True)
    concat, sampler = MultiSetBatchSampler.for_sets(sets, (2, 2, 2, 2, 2), seed=0)
    batch = next(iter(DataLoader(concat, batch_sampler=sampler, num_workers=0)))
    assert batch["audio"].shape == (10, 160000) and torch.isfinite(batch["audio"]).all()
    assert batch["strong"][sampler.sub_batch_slices["synth"]].any()
