"""The synthetic demo dataset: layout, file formats, MAESTRO chunking, determinism, domain separation."""
from __future__ import annotations

import filecmp
import json
import re
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from data_util import demo
from data_util.classes import CLASSES, DESED_CLASSES, MAESTRO_CLASSES, MAESTRO_EVAL_CLASSES
from data_util.layout import EXCLUDE_LISTS, SETS

CHUNK_NAME = re.compile(r"^(?P<recording>[a-z_]+_\d\d)-(?P<onset>\d{6})-(?P<offset>\d{6})\.wav$")
DESED_LABELLED = ("synth_train", "strong_train", "synth_val", "devtest", "eval_public")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """One tiny demo tree (seed 0) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("demo") / "tiny"
    counts = demo.generate(root, "tiny", seed=0)
    assert counts == demo.EXPECTED_COUNTS["tiny"]
    return root


def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def wav_header(path: Path) -> tuple[int, int, int, int]:
    """(sample rate, channels, bytes per sample, frames), read from the header only."""
    with wave.open(str(path), "rb") as f:
        return f.getframerate(), f.getnchannels(), f.getsampwidth(), f.getnframes()


def tsv_path(tree: Path, set_name: str, attribute: str = "labels") -> Path:
    spec = SETS[set_name]
    base = tree / demo.RESOURCES_SUBDIR if spec.labels_in_resources else tree
    return base / getattr(spec, attribute)


def test_counts_per_set_match_expected_counts(tree):
    for name, spec in SETS.items():
        files = list((tree / spec.audio).glob("*.wav"))
        assert len(files) == demo.EXPECTED_COUNTS["tiny"][name], name


def test_expected_counts_follow_the_maestro_validation_hop():
    hop1, hop5 = demo.expected_counts("tiny"), demo.expected_counts("tiny", maestro_val_hop=5)
    assert hop5["maestro_real_dev"] < hop1["maestro_real_dev"]
    assert {k: v for k, v in hop5.items() if k != "maestro_real_dev"} == \
           {k: v for k, v in hop1.items() if k != "maestro_real_dev"}
    with pytest.raises(ValueError, match="unknown demo preset"):
        demo.expected_counts("huge")


def test_every_wav_is_16k_mono_pcm16(tree):
    for spec in SETS.values():
        for path in (tree / spec.audio).glob("*.wav"):
            rate, channels, width, frames = wav_header(path)
            assert (rate, channels, width) == (16000, 1, 2), path
            assert 0 < frames <= demo.CLIP_SAMPLES, path


def test_originals_at_44k_match_the_16k_clips(tree):
    for name in demo.SETS_WITH_ORIGINALS:
        spec = SETS[name]
        originals = sorted((tree / spec.original_audio).glob("*.wav"))
        assert [p.name for p in originals] == sorted(p.name for p in (tree / spec.audio).glob("*.wav"))
        for path in originals:
            rate, channels, width, frames = wav_header(path)
            _, _, _, frames_16k = wav_header(tree / spec.audio / path.name)
            assert (rate, channels, width) == (44100, 1, 2)
            assert abs(frames - frames_16k * 44100 / 16000) < 1  # same length (polyphase output is rounded up)


def test_tsv_headers(tree):
    expected = {"strong": ["filename", "onset", "offset", "event_label"], "weak": ["filename", "event_labels"],
                "soft": ["filename", "onset", "offset", "event_label", "confidence"]}
    for name, spec in SETS.items():
        if spec.labels:
            assert read_tsv(tsv_path(tree, name))[0] == expected[spec.label_kind], name
        if spec.durations:
            assert read_tsv(tsv_path(tree, name, "durations"))[0] == ["filename", "duration"], name
    for relative in EXCLUDE_LISTS.values():
        assert read_tsv(tree / demo.RESOURCES_SUBDIR / relative)[0] == ["filename"]


def test_strong_labels_lie_inside_their_clips(tree):
    for name in DESED_LABELLED + ("external_strong_train", "external_strong_val"):
        folder = tree / SETS[name].audio
        _, rows = read_tsv(tsv_path(tree, name))
        assert rows, name
        for filename, onset, offset, label in rows:
            duration = wav_header(folder / filename)[3] / 16000
            assert 0 <= float(onset) < float(offset) <= duration + 1e-9, (name, filename)
            assert label in DESED_CLASSES


def test_weak_labels_are_comma_joined_desed_classes(tree):
    _, rows = read_tsv(tsv_path(tree, "weak_train"))
    assert len(rows) == demo.EXPECTED_COUNTS["tiny"]["weak_train"]
    label_sets = [row[1].split(",") for row in rows]
    assert all(labels and set(labels) <= set(DESED_CLASSES) for labels in label_sets)
    assert any(len(labels) > 1 for labels in label_sets)
    assert all(labels == sorted(set(labels)) for labels in label_sets)


def test_durations_equal_audio_lengths(tree):
    for name, spec in SETS.items():
        if spec.durations is None or spec.domain == "maestro":
            continue
        _, rows = read_tsv(tsv_path(tree, name, "durations"))
        folder = tree / spec.audio
        assert {r[0] for r in rows} == {p.name for p in folder.glob("*.wav")}, name
        for filename, duration in rows:
            assert float(duration) == pytest.approx(wav_header(folder / filename)[3] / 16000, abs=1e-9)
    # some real-style clips are shorter than 10 s (padding must be exercised)
    _, rows = read_tsv(tsv_path(tree, "eval_private", "durations"))
    _, more = read_tsv(tsv_path(tree, "external_strong_train", "durations"))
    assert any(float(d) < 10 for _, d in rows + more)


def test_maestro_chunk_bounds_follow_the_dcase_preparation():
    sr = 16000
    # 11.5 s at 1 s hop: full windows at 0 and 1 s, then the shorter rest from 2 s
    assert demo.maestro_chunk_bounds(int(11.5 * sr), 10 * sr, sr) == [(0, 160000), (16000, 176000), (32000, 184000)]
    # 14.2 s at 5 s hop: one full window, then 5 s .. 14.2 s
    assert demo.maestro_chunk_bounds(int(14.2 * sr), 10 * sr, 5 * sr) == [(0, 160000), (80000, 227200)]
    # an exact fit has no extra chunk
    assert demo.maestro_chunk_bounds(12 * sr, 10 * sr, sr) == [(0, 160000), (16000, 176000), (32000, 192000)]


@pytest.mark.parametrize("set_name, hop_cs", [("maestro_real_train", 100), ("maestro_real_dev", 100)])
def test_maestro_chunks_names_hops_and_lengths(tree, set_name, hop_cs):
    folder = tree / SETS[set_name].audio
    _, duration_rows = read_tsv(tsv_path(tree, "maestro_real_dev", "durations"))
    durations = {stem: float(d) for stem, d in duration_rows}
    assert all(not stem.endswith(".wav") for stem in durations)  # by recording stem
    chunks: dict[str, list[tuple[int, int]]] = {}
    for path in folder.glob("*.wav"):
        match = CHUNK_NAME.match(path.name)
        assert match, path.name
        onset, offset = int(match["onset"]), int(match["offset"])
        assert wav_header(path)[3] == (offset - onset) * 160  # the name is the truth in centiseconds
        chunks.setdefault(match["recording"], []).append((onset, offset))
    assert set(chunks) <= set(durations)
    for recording, bounds in chunks.items():
        bounds.sort()
        assert [b[0] for b in bounds] == list(range(0, hop_cs * len(bounds), hop_cs))
        assert all(off - on == 1000 for on, off in bounds[:-1]) and bounds[-1][1] - bounds[-1][0] <= 1000
        assert bounds[-1][1] == round(durations[recording] * 100)  # the last chunk ends with the recording
    scenes = {recording.rsplit("_", 1)[0] for recording in chunks}
    assert scenes == set(demo.MAESTRO_SCENES)


def test_maestro_labels_are_soft_and_chunk_relative(tree):
    confidences = []
    for set_name in ("maestro_real_train", "maestro_real_dev"):
        folder = tree / SETS[set_name].audio
        _, rows = read_tsv(tsv_path(tree, set_name))
        names = [r[0] for r in rows]
        assert names == sorted(names)
        for filename, onset, offset, label, confidence in rows:
            chunk_seconds = wav_header(folder / filename)[3] / 16000
            assert 0 <= float(onset) < float(offset) <= chunk_seconds + 1e-9
            assert label in MAESTRO_CLASSES
            confidences.append(float(confidence))
    confidences = np.array(confidences)
    assert np.all((confidences > 0) & (confidences <= 1))
    assert np.any(confidences <= 0.5) and np.any(confidences > 0.5)


def test_domains_are_separated_and_eval_sets_cover_all_classes(tree):
    for name in DESED_LABELLED:
        _, rows = read_tsv(tsv_path(tree, name))
        assert {r[3] for r in rows} == set(DESED_CLASSES), name  # every DESED class, nothing else
    for name in ("maestro_real_train", "maestro_real_dev"):
        _, rows = read_tsv(tsv_path(tree, name))
        assert {r[3] for r in rows} <= set(MAESTRO_CLASSES)
    _, rows = read_tsv(tsv_path(tree, "maestro_real_dev"))
    assert set(MAESTRO_EVAL_CLASSES) <= {r[3] for r in rows if float(r[4]) > 0.5}


def test_resources_side_files(tree):
    resources = tree / demo.RESOURCES_SUBDIR
    for set_name, relative in EXCLUDE_LISTS.items():
        _, rows = read_tsv(resources / relative)
        assert len(rows) == demo.EXCLUDED_PER_LIST
        assert all((tree / SETS[set_name].audio / r[0]).is_file() for r in rows)  # real demo files
    _, train = read_tsv(tsv_path(tree, "external_strong_train"))
    _, val = read_tsv(tsv_path(tree, "external_strong_val"))
    _, durations = read_tsv(tsv_path(tree, "external_strong_train", "durations"))
    train_names, val_names = {r[0] for r in train}, {r[0] for r in val}
    assert not train_names & val_names
    folder_names = {p.name for p in (tree / SETS["external_strong_train"].audio).glob("*.wav")}
    assert train_names | val_names == {r[0] for r in durations} == folder_names
    irs = sorted((resources / "dirs").rglob("*.wav"))
    assert len(irs) == len(demo.DEVICE_NAMES) * demo.IRS_PER_DEVICE
    assert all(wav_header(p)[0] == 16000 and wav_header(p)[3] < 16000 for p in irs)


def test_same_seed_gives_identical_bytes_whatever_the_workers(tree, tmp_path):
    again = tmp_path / "again"
    demo.generate(again, "tiny", seed=0, workers=2)
    files = sorted(p.relative_to(tree) for p in tree.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    mismatched = [f for f in files if not filecmp.cmp(tree / f, again / f, shallow=False)]
    assert not mismatched


def test_different_seed_gives_different_data_and_the_validation_hop_is_configurable(tree, tmp_path):
    other = tmp_path / "other"
    counts = demo.generate(other, "tiny", seed=1, maestro_val_hop=5)
    assert counts == demo.expected_counts("tiny", maestro_val_hop=5)
    synth = Path(SETS["synth_train"].audio) / "0.wav"
    assert (tree / synth).read_bytes() != (other / synth).read_bytes()
    assert tsv_path(tree, "weak_train").read_text() != tsv_path(other, "weak_train").read_text()
    onsets: dict[str, list[int]] = {}
    for path in (other / SETS["maestro_real_dev"].audio).glob("*.wav"):
        match = CHUNK_NAME.match(path.name)
        onsets.setdefault(match["recording"], []).append(int(match["onset"]))
    assert all(sorted(v) == list(range(0, 500 * len(v), 500)) for v in onsets.values())
    with pytest.raises(ValueError, match="multiple of 0.01 s"):
        demo.generate(tmp_path / "bad", "tiny", maestro_val_hop=0.005)


def test_generate_refuses_to_overwrite_foreign_folders(tree, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        demo.generate(tmp_path, "tiny")
    with pytest.raises(FileExistsError, match="refusing"):
        demo.generate(tmp_path, "tiny", overwrite=True)
    with pytest.raises(FileExistsError, match="refusing"):
        demo.generate(tmp_path, "tiny", reuse=True)
    assert demo.demo_tree_state(tmp_path, "tiny", 0) == "foreign"
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="unknown demo preset"):
        demo.generate(tmp_path / "new", "huge")


def test_reuse_keeps_a_complete_tree_and_regenerates_an_incomplete_or_different_one(tree, tmp_path, monkeypatch,
                                                                                     capsys):
    root = tmp_path / "demo_data"
    shutil.copytree(tree, root)
    recipe_output = root / "predictions" / "i1_ensemble" / "devtest.hdf5"  # what the demo recipe writes inside
    recipe_output.parent.mkdir(parents=True)
    recipe_output.write_text("kept")
    assert demo.demo_tree_state(root, "tiny", 0) == "complete"
    assert demo.generate(root, "tiny", seed=0, reuse=True) == demo.EXPECTED_COUNTS["tiny"]
    assert recipe_output.read_text() == "kept"  # nothing was regenerated
    assert demo.main(["--out", str(root), "--preset", "tiny", "--reuse"]) == 0
    with pytest.raises(SystemExit) as exit_info:  # without --reuse: one line, no traceback
        demo.main(["--out", str(root), "--preset", "tiny"])
    assert exit_info.value.code == 1 and "--reuse" in capsys.readouterr().err

    victim = sorted((root / SETS["devtest"].audio).glob("*.wav"))[0]
    victim.unlink()
    assert demo.demo_tree_state(root, "tiny", 0) == "incomplete"
    demo.generate(root, "tiny", seed=0, reuse=True)
    assert filecmp.cmp(victim, tree / victim.relative_to(root), shallow=False) and not recipe_output.exists()

    assert demo.demo_tree_state(root, "tiny", 1) == demo.demo_tree_state(root, "small", 0) == "different"

    def interrupted(*args):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:  # another seed: the tree is replaced; stopped early, it reads "incomplete"
        patch.setattr(demo, "_run", interrupted)
        with pytest.raises(KeyboardInterrupt):
            demo.generate(root, "tiny", seed=1, reuse=True)
    manifest = json.loads((root / demo.DEMO_MANIFEST).read_text())
    assert manifest["seed"] == 1 and manifest["complete"] is False and not victim.exists()
    assert demo.demo_tree_state(root, "tiny", 1) == "incomplete"
    assert demo.demo_tree_state(tmp_path / "nothing", "tiny", 0) == "empty"


@pytest.mark.parametrize("name", CLASSES)
def test_every_class_has_a_synthesizer(name):
    sound = demo.CLASS_SOUNDS[name]
    assert 0 < sound.min_s <= sound.max_s
    for seconds in (0.02, 1.5):
        n = int(seconds * 16000)
        waveform = sound.synth(np.random.default_rng(0), n)
        assert waveform.shape == (n,) and np.all(np.isfinite(waveform)) and waveform.std() > 0


def test_class_table_documents_every_class():
    table = demo.describe_classes()
    assert all(f"| {name} |" in table for name in CLASSES)
    assert set(demo.CLASS_SOUNDS) == set(CLASSES)
    assert set().union(*demo.MAESTRO_SCENES.values()) == set(MAESTRO_CLASSES)
