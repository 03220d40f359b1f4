"""HEAR-format tasks: the reader and its errors, frame targets (HEAR's rule), crops, whole files, wavmix, the demo."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from data_util import demo_hear
from data_util.hear import (
    HearCropDataset,
    HearFileDataset,
    HearTaskError,
    HearWavmix,
    frame_targets,
    num_frames,
    read_task,
)

SPLITS = ("train", "valid", "test")
HOP = 0.04


def _copy_task(src, tmp_path):
    dst = tmp_path / "task"
    shutil.copytree(src, dst)
    return dst


def test_demo_task_has_the_hear_layout_and_every_label_in_every_split(hear_demo_task):
    task = read_task(hear_demo_task, SPLITS)
    assert task.labels == tuple(sorted(demo_hear.DEMO_LABELS))
    metadata = json.loads((hear_demo_task / "task_metadata.json").read_text())
    assert (metadata["embedding_type"], metadata["prediction_type"], metadata["splits"]) == \
        ("event", "multilabel", list(SPLITS))
    for split, count in demo_hear.SPLIT_FILES.items():
        files = task.files[split]
        assert len(files) == count
        assert {e["label"] for f in files for e in f.events} == set(task.labels)
        for file in files:
            assert file.path == hear_demo_task / "16000" / split / file.filename
            assert file.num_samples == round(demo_hear.SCENE_SECONDS * 16_000)
            assert all(0 <= e["start"] < e["end"] <= demo_hear.SCENE_SECONDS * 1000 for e in file.events)
            info = sf.info(str(file.path))
            assert (info.samplerate, info.channels) == (16_000, 1)


def test_demo_task_is_deterministic(tmp_path):
    counts = {"train": 1, "valid": 1}
    demo_hear.generate(tmp_path / "a", seed=3, seconds=4.0, split_files=counts)
    demo_hear.generate(tmp_path / "b", seed=3, seconds=4.0, split_files=counts)
    for name in ("train.json", "valid.json", "16000/train/train_000.wav"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        demo_hear.generate(tmp_path / "a", seed=3, seconds=4.0, split_files=counts)


def test_frame_targets_follow_hears_rule():
    # frame k is centred at (k + 0.5) * 40 ms: 20, 60, 100, 140, 180, 220 ms
    events = [{"label": "b", "start": 60.0, "end": 140.0},  # centres 60, 100 and (end + 0.0001 tolerance) 140
              {"label": "a", "start": 150.0, "end": 179.9}]  # no centre inside: no frame
    targets = frame_targets(events, 6, HOP, {"a": 0, "b": 1})
    assert targets.dtype == np.float32 and targets.shape == (2, 6)
    np.testing.assert_array_equal(targets[1], [0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(targets[0], [0, 0, 0, 0, 0, 0])
    assert num_frames(17_120, HOP) == 27 and num_frames(31_680, HOP) == 50 and num_frames(160_000, HOP) == 250
    assert num_frames(10, HOP) == 1


def test_crops_are_frame_aligned_cuts_of_the_file(hear_demo_task):
    task = read_task(hear_demo_task, ["train"])
    files = task.select(["train"])
    crops = HearCropDataset(files, task.labels, crop_s=10.0, hop_s=HOP)
    assert len(crops) == 2 * len(files)  # 20 s files: two 10 s crops per epoch
    torch.manual_seed(0)
    sample = crops[1]
    assert sample["audio"].shape == (160_000,) and sample["targets"].shape == (len(task.labels), 250)
    file = files[0]
    audio = sf.read(str(file.path), dtype="float32")[0]
    full = frame_targets(file.events, num_frames(len(audio), HOP), HOP, task.label_index)
    starts = [k for k in range(0, len(audio) - 160_000 + 1, 640) if np.array_equal(audio[k:k + 160_000],
                                                                                     sample["audio"].numpy())]
    assert starts, "the crop is not a cut of the file at a frame boundary"
    offset = starts[0] // 640
    np.testing.assert_array_equal(sample["targets"].numpy(), full[:, offset:offset + 250])


def test_short_files_are_zero_padded(hear_demo_task):
    task = read_task(hear_demo_task, ["train"])
    crops = HearCropDataset(task.select(["train"])[:1], task.labels, crop_s=30.0, hop_s=HOP)
    assert len(crops) == 1
    sample = crops[0]
    assert sample["audio"].shape == (480_000,) and sample["targets"].shape[1] == 750
    assert torch.all(sample["audio"][320_000:] == 0) and torch.all(sample["targets"][:, 500:] == 0)


def test_whole_files_and_wavmix(hear_demo_task):
    task = read_task(hear_demo_task, ["valid", "train"])
    files = HearFileDataset(task.select(["valid"]), task.labels, hop_s=HOP)
    item = files[0]
    assert item["audio"].shape == (320_000,) and item["targets"].shape == (len(task.labels), 500)
    assert item["filename"] == "valid_000.wav"
    crops = HearCropDataset(task.select(["train"]), task.labels, crop_s=10.0, hop_s=HOP)
    torch.manual_seed(1)
    mixed = [HearWavmix(crops, p=1.0)[i] for i in range(6)]
    for sample in mixed:
        assert abs(float(sample["audio"].mean())) < 1e-4  # DC removed
        values = set(np.unique(sample["targets"].numpy()).round(6))
        assert values - {0.0, 1.0}, "wavmix with p=1 must mix the targets"
    torch.manual_seed(1)
    unmixed = HearWavmix(crops, p=0.0)[0]
    assert set(np.unique(unmixed["targets"].numpy())) <= {0.0, 1.0}


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "task_metadata.json").unlink(), "task_metadata.json is missing"),
    (lambda root: (root / "task_metadata.json").write_text(json.dumps(
        {"embedding_type": "scene", "prediction_type": "multiclass"})), "only sound event detection tasks"),
    (lambda root: (root / "16000" / "test" / "test_001.wav").unlink(), r"1 audio file\(s\) .* missing: .*test_001.wav"),
    (lambda root: (root / "labelvocabulary.csv").write_text("idx,label\n0,doorslam\n2,knock\n"), "idx must be 0..1"),
    (lambda root: (root / "valid.json").write_text(json.dumps({"valid_000.wav": [{"label": "cat", "start": 0,
                                                                                  "end": 1}]})),
     "label 'cat' is not in labelvocabulary.csv"),
])
def test_broken_tasks_give_one_clear_error(hear_demo_task, tmp_path, breakage, message):
    root = _copy_task(hear_demo_task, tmp_path)
    breakage(root)
    with pytest.raises(HearTaskError, match=message):
        read_task(root, SPLITS)


def test_unknown_split_and_missing_folder(hear_demo_task, tmp_path):
    with pytest.raises(HearTaskError, match=r"names the splits \['train', 'valid', 'test'\], not 'fold00'"):
        read_task(hear_demo_task, ["fold00"])
    with pytest.raises(HearTaskError, match="is not a folder"):
        read_task(tmp_path / "nothing", SPLITS)
