"""AudioSet-strong data: class lists, label encoding, sampler weights, KD files, the converter and the datasets."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch

from data_util import audioset_strong as asd
from data_util import audioset_strong_check, audioset_strong_prepare, demo_audioset, kd_logits
from data_util.sampler import WeightedEpochBatchSampler


# ------------------------------------------------------------------------------------------------ classes, labels
def test_class_lists_are_the_public_ontology_lists():
    train, weak = asd.train_classes(), asd.weak_classes()
    assert len(train) == 447 and len(weak) == 527
    assert list(train.names) == sorted(train.names)  # PretrainedSED's order: Python sorted display names
    all_strong = asd.read_mid_names()
    assert len(all_strong) == 456 and all(all_strong[mid] == name for mid, name in zip(train.mids, train.names))
    assert train.index["Dog"] == train.names.index("Dog") and weak.mids[0] == "/m/09x0r"


def test_class_list_rejects_duplicates_and_wrong_columns(tmp_path):
    with pytest.raises(ValueError, match="duplicate MIDs"):
        asd.ClassList(("/m/1", "/m/1"), ("a", "b"))
    bad = tmp_path / "classes.tsv"
    bad.write_text("mid,name\n/m/1,a\n")
    with pytest.raises(ValueError, match="mid and display_name"):
        asd.read_class_list(bad)


@pytest.mark.parametrize("name, expected", [("balanced_train_segments/Yabc.mp3", "Yabc"), ("Yabc", "Yabc"),
                                            ("Yabc.mp3", "Yabc")])
def test_clip_ids(name, expected):
    assert asd.clip_id(name) == expected


def test_segment_ids_keep_underscores_of_the_youtube_id():
    assert asd.segment_clip_id("b0RFKhbpFJA_30000") == "Yb0RFKhbpFJA"
    assert asd.segment_clip_id("a_b-c_120000") == "Ya_b-c"


def test_overlapping_and_touching_events_of_a_class_merge():
    events = [(1.0, 2.0, "Dog"), (1.5, 3.0, "Dog"), (3.0, 4.0, "Dog"), (5.0, 6.0, "Dog"), (1.2, 1.4, "Cat")]
    assert asd.merge_overlapping(events) == [(1.2, 1.4, "Cat"), (1.0, 4.0, "Dog"), (5.0, 6.0, "Dog")]


def test_strong_labels_on_40ms_frames():
    index = {"Dog": 0, "Cat": 1}
    strong = asd.encode_strong([(0.05, 0.09, "Dog"), (9.99, 12.0, "Cat"), (1.0, 2.0, "Bird")], index)
    assert strong.shape == (2, 250) and strong.dtype == np.float32
    assert np.flatnonzero(strong[0]).tolist() == [1, 2]  # floor(0.05 / 0.04) = 1 .. ceil(0.09 / 0.04) = 3
    assert np.flatnonzero(strong[1]).tolist() == [249]  # clipped to the clip
    assert strong.sum() == 3  # "Bird" is not a training class


def test_events_field_in_both_layouts():
    as_columns = {"onset": [1.0, 1.5], "offset": [2.0, 3.0], "event_label": ["Dog", "Dog"]}
    as_rows = [{"onset": 1.0, "offset": 2.0, "event_label": "Dog"}, {"onset": 1.5, "offset": 3.0, "event_label": "Dog"}]
    assert asd.row_events(as_columns) == asd.row_events(as_rows) == [(1.0, 3.0, "Dog")]


def test_balanced_sample_weights_formula():
    counts = np.array([[10, 0], [0, 2], [5, 2]], dtype=np.float32)  # frames of class 0, class 1 per clip
    weights = asd.balanced_sample_weights(counts, offset=30)
    w0, w1 = 1000 / (15 + 30), 1000 / (4 + 30)
    np.testing.assert_allclose(weights, [10 * w0, 2 * w1, 5 * w0 + 2 * w1])


@pytest.mark.parametrize("packed", [True, False])
def test_weak_targets_packed_or_not(packed):
    target = np.zeros(527, dtype=np.uint8)
    target[[0, 137, 526]] = 1
    stored = np.packbits(target) if packed else target
    assert np.flatnonzero(audioset_strong_prepare.unpack_target(stored)).tolist() == [0, 137, 526]


def test_strong_label_files_official_tsv_and_csv(tmp_path):
    tsv = tmp_path / "audioset_train_strong.tsv"
    tsv.write_text("segment_id\tstart_time_seconds\tend_time_seconds\tlabel\nabc_0\t0.5\t1.25\t/m/0bt9lr\n"
                   "abc_0\t2\t3\t/m/01yrx\n")
    csv_file = tmp_path / "audioset_train_strong.csv"
    csv_file.write_text(",segment_id,start_time_seconds,end_time_seconds,label\n0,abc_0,0.5,1.25,/m/0bt9lr\n"
                        "1,abc_0,2,3,/m/01yrx\n")
    expected = {"Yabc": [(0.5, 1.25, "/m/0bt9lr"), (2.0, 3.0, "/m/01yrx")]}
    assert audioset_strong_prepare.read_strong_labels(tsv) == expected
    assert audioset_strong_prepare.read_strong_labels(csv_file) == expected
    tsv.write_text("segment\tonset\n")
    with pytest.raises(audioset_strong_prepare.SourceError, match="expected a header"):
        audioset_strong_prepare.read_strong_labels(tsv)


# ------------------------------------------------------------------------------------------------ sampler
def test_weighted_sampler_draws_by_weight_shards_and_resumes():
    weights = np.array([0, 1, 1, 1, 0, 5, 5, 5, 1, 1], dtype=float)
    full = WeightedEpochBatchSampler(10, 2, epoch_len=100, seed=3, weights=weights)
    assert full.epoch_len == 8  # at most the clips with a positive weight, without replacement
    drawn = [i for batch in full for i, _ in batch]
    assert sorted(drawn) == [1, 2, 3, 5, 6, 7, 8, 9]
    assert [[i for i, _ in b] for b in full] == [[i for i, _ in b] for b in full]  # deterministic per epoch
    full.set_epoch(1)
    assert [i for b in full for i, _ in b] != drawn
    shards = [WeightedEpochBatchSampler(10, 2, epoch_len=8, seed=3, weights=weights, rank=r, world_size=2)
              for r in (0, 1)]
    per_rank = [[i for b in s for i, _ in b] for s in shards]
    assert len(per_rank[0]) == len(per_rank[1]) == 4 and not set(per_rank[0]) & set(per_rank[1])
    resumed = WeightedEpochBatchSampler(10, 2, epoch_len=8, seed=3, weights=weights)
    resumed.load_state_dict({"epoch": 0, "batches_done": 2, "seed": 3})
    assert list(resumed) == list(WeightedEpochBatchSampler(10, 2, epoch_len=8, seed=3, weights=weights))[2:]


def test_uniform_sampler_and_bad_weights():
    sampler = WeightedEpochBatchSampler(5, 4, epoch_len=5, seed=0)
    assert len(sampler) == 2 and sorted(i for b in sampler for i, _ in b) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="finite values >= 0"):
        WeightedEpochBatchSampler(3, 1, epoch_len=3, seed=0, weights=[1, -1, 1])


# ------------------------------------------------------------------------------------------------ KD files
def test_strong_kd_file_round_trip_lookup_and_shift(tmp_path):
    logits = np.random.default_rng(0).normal(size=(3, 4, 250)).astype(np.float32)
    path = kd_logits.write_strong_kd(tmp_path / "kd.hdf5", ["Yb", "Ya", "Ym3"], logits, classes=list("abcd"),
                                     model="test", frame_hop=0.04)
    reader = kd_logits.StrongKDLogits(path)
    assert reader.filenames == ["Ya", "Yb", "Ym3"] and reader.classes == tuple("abcd")
    np.testing.assert_allclose(reader.logits("Yb"), logits[0], atol=2e-3)  # float16 storage
    # ids ending in m, p or 3 survive (PretrainedSED's rstrip(".mp3") would cut "Ym3" to "Y")
    assert reader.row("Ym3.mp3") == reader.row("m3") == 2 and reader.row("Yzz") is None
    shifted = reader.probabilities("Ya", frame_shift=3)
    np.testing.assert_allclose(shifted[:, :247], 1 / (1 + np.exp(-reader.logits("Ya")[:, 3:])), rtol=1e-5)
    ensemble = kd_logits.ensemble_strong_kd([path, path], tmp_path / "ens.hdf5", weights=[3, 1])
    np.testing.assert_allclose(kd_logits.StrongKDLogits(ensemble).logits("Ya"), reader.logits("Ya"), atol=2e-3)


def test_kd_writer_refuses_gaps_and_leaves_no_file(tmp_path):
    with pytest.raises(kd_logits.KDFileError, match="never written"):
        with kd_logits.StrongKDWriter(tmp_path / "kd.hdf5", ["Ya", "Yb"], classes=["a"], num_frames=250, model="",
                                      frame_hop=0.04) as writer:
            writer.write(["Ya"], np.zeros((1, 1, 250)))
    assert not (tmp_path / "kd.hdf5").exists()


class _RunsCode:
    """Pickles into a call of os.system: what a malicious mapping file could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_weak_kd_mapping_is_read_without_running_code(tmp_path):
    names = ["Yabc", "Ydef"]
    kd_logits.write_weak_kd(tmp_path / "weak.npy", tmp_path / "index.pkl", names, np.zeros((2, 527)))
    weak = kd_logits.WeakKDLogits(tmp_path / "weak.npy", tmp_path / "index.pkl", 527)
    assert weak.row("Ydef.mp3") == 1 and weak.probabilities("Yabc").shape == (527,)
    with open(tmp_path / "index.pkl", "rb") as f:
        assert pickle.load(f) == {"abc": 0, "def": 1}  # the reference's keys: YouTube ids without "Y"
    marker = tmp_path / "code_ran"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"abc": _RunsCode(marker)}, f)
    with pytest.raises(kd_logits.KDFileError, match="refused to load posix.system|refused to load os.system"):
        kd_logits.read_index_mapping(tmp_path / "evil.pkl")
    assert not marker.exists()
    (tmp_path / "index.json").write_text(json.dumps({"abc": 0}))
    assert kd_logits.read_index_mapping(tmp_path / "index.json") == {"abc": 0}


# ------------------------------------------------------------------------------------------------ converter
def test_converter_writes_the_splits_and_reports_problems(as_strong_demo):
    source, dataset = as_strong_demo
    report = json.loads((dataset / audioset_strong_prepare.REPORT_FILE).read_text())
    preset = demo_audioset.PRESETS["tiny"]
    expected = dict(preset.clips, unbalanced_train=preset.clips["unbalanced_train"] - demo_audioset.CORRUPT_CLIPS)
    assert report["clips"] == expected
    assert report["segments_without_audio"] == {"train": demo_audioset.CLIPS_WITHOUT_AUDIO, "eval": 0}
    assert report["audio_without_labels"] == preset.unlabelled
    assert len(report["undecodable"]) == demo_audioset.CORRUPT_CLIPS
    dataset_dict = asd.load_dataset_dict(dataset)
    row = dataset_dict["eval"][0]
    assert set(asd.FIELDS) <= set(row) and row["filename"].startswith("Y") and row["filename"].endswith(".mp3")
    labels = audioset_strong_prepare.read_strong_labels(source / "audioset_eval_strong.tsv")
    mid_names = asd.read_mid_names()
    expected_events = sorted((a, b, mid_names[m]) for a, b, m in labels[asd.clip_id(row["filename"])])
    assert sorted(asd.row_events(row["events"])) == sorted(asd.merge_overlapping(expected_events))
    assert 5.9 < row["duration"] < 10.6 and set(row["label_ids"]) <= set(asd.weak_classes().mids)


def test_converter_resumes_from_finished_shards(as_strong_demo, tmp_path):
    source, reference = as_strong_demo
    out = tmp_path / "dataset"
    parts = out.with_name(out.name + audioset_strong_prepare.PARTS_SUFFIX)
    jobs = audioset_strong_prepare.plan_shards(source, parts, shard_size=8)
    audioset_strong_prepare._reset_parts_if_plan_changed(parts, jobs)
    audioset_strong_prepare.convert_shard(jobs[0])  # an interrupted run finished one shard
    report = audioset_strong_prepare.prepare_audioset_strong(source, out, shard_size=8, progress=False)
    assert report.shards_reused == 1 and report.shards_written == len(jobs) - 1 and not parts.exists()
    resumed, fresh = asd.load_dataset_dict(out), asd.load_dataset_dict(reference)
    for split in asd.SPLITS:
        assert resumed[split]["filename"] == fresh[split]["filename"]
    with pytest.raises(FileExistsError, match="overwrite"):
        audioset_strong_prepare.prepare_audioset_strong(source, out, progress=False)


def test_missing_sources_are_listed_with_the_fix(tmp_path):
    with pytest.raises(audioset_strong_prepare.SourceError) as error:
        audioset_strong_prepare.find_source_files(tmp_path)
    assert "balanced_train_segments_mp3.hdf" in str(error.value) and "audioset_eval_strong.tsv" in str(error.value)


def test_check_data(as_strong_demo, tmp_path):
    source, dataset = as_strong_demo
    report = audioset_strong_check.check_data(source, dataset)
    assert report.ok and not report.problems, audioset_strong_check.format_report(report)
    missing = audioset_strong_check.check_data(tmp_path / "nothing", tmp_path / "no_dataset")
    text = audioset_strong_check.format_report(missing)
    assert not missing.ok and "prepare_data" in text and "source files" in text


# ------------------------------------------------------------------------------------------------ datasets
def test_dataset_samples(as_strong_demo):
    source, dataset = as_strong_demo
    dataset_dict = asd.load_dataset_dict(dataset)
    classes = asd.train_classes()
    kd = kd_logits.StrongKDLogits(source / "kd" / "strong_kd.hdf5")
    train = asd.AudioSetStrongDataset(dataset_dict["balanced_train"], classes, training=True, strong_kd=kd)
    sample = train[0]
    assert sample["audio"].shape == (160_000,) and sample["strong"].shape == (447, 250)
    assert sample["has_kd"] and sample["kd_strong"].shape == (447, 250) and sample["weak"].shape == (527,)
    # the demo teacher's logits are +-4 around the labels: its probabilities agree with the labels
    agree = ((sample["kd_strong"] > 0.5) == (sample["strong"] > 0.5)).float().mean()
    assert agree > 0.99
    # the weak labels of the HDF5 target hold the clip's sounding classes
    weak_names = {asd.weak_classes().names[i] for i in torch.nonzero(sample["weak"]).flatten().tolist()}
    strong_names = {classes.names[i] for i in torch.nonzero(sample["strong"].amax(dim=1)).flatten().tolist()}
    assert strong_names & set(asd.weak_classes().names) <= weak_names
    evaluation = asd.AudioSetStrongDataset(dataset_dict["eval"], classes, training=False)
    first = evaluation[0]
    assert not first["has_kd"] and 0 < first["duration"] <= 10.6
    mixed = asd.WavMixDataset(train, p=1.0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        assert mixed[0]["strong"].max() <= 1.0 and mixed[0]["audio"].shape == (160_000,)


def test_long_clips_are_cropped_with_their_labels(as_strong_demo):
    _, dataset = as_strong_demo
    rows = asd.load_dataset_dict(dataset)["unbalanced_train"]
    long = next(i for i, d in enumerate(rows["duration"]) if d > 10.2)
    classes = asd.train_classes()
    clips = asd.AudioSetStrongDataset(rows, classes, training=True)
    length = len(asd.decode_mp3(rows[long]["mp3_bytes"], "long"))
    events = asd.row_events(rows[long]["events"])
    starts = set()
    for seed in range(4):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            sample = clips[long]
            torch.manual_seed(seed)  # the crop start the dataset draws from torch's RNG
            start = int(np.random.default_rng(int(torch.randint(0, 2**62, ()).item())).integers(0, length - 160_000 + 1))
        shift = start / 16_000
        expected = asd.encode_strong([(a - shift, b - shift, c) for a, b, c in events], classes.index)
        assert torch.equal(sample["strong"], torch.from_numpy(expected))
        starts.add(start)
    assert len(starts) > 1


def test_cached_sample_weights(as_strong_demo, tmp_path):
    _, dataset = as_strong_demo
    copy = tmp_path / "dataset"
    shutil.copytree(dataset, copy)
    dataset_dict = asd.load_dataset_dict(copy)
    rows = [dataset_dict[s] for s in asd.TRAIN_SPLITS]
    weights = asd.cached_sample_weights(copy, rows, asd.train_classes())
    assert len(weights) == sum(len(r) for r in rows) and (weights > 0).all()
    cached = list(copy.glob("sample_weights_*.npy"))
    assert len(cached) == 1
    np.save(cached[0], np.full_like(weights, 7.0))  # the cache is what is read the second time
    assert (asd.cached_sample_weights(copy, rows, asd.train_classes()) == 7.0).all()
