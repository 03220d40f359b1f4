"""The dataset doctor on complete, damaged, empty and not-yet-resampled trees."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from data_util import demo, doctor
from data_util.layout import EXCLUDE_LISTS, SETS

STAGE1_SETS = [name for name, spec in SETS.items() if not spec.stage2_only]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """One complete tiny demo tree, never modified (tests damage linked copies of it)."""
    root = tmp_path_factory.mktemp("doctor") / "tiny"
    demo.generate(root, "tiny", seed=0)
    return root


@pytest.fixture
def tree(pristine, tmp_path) -> Path:
    """A private copy of the tiny tree; files are hard links (fast), so tests delete or replace, never edit."""
    copy = tmp_path / "tree"
    shutil.copytree(pristine, copy, copy_function=os.link)
    return copy


def check(root: Path, **kwargs) -> doctor.Report:
    return doctor.check_data(root, root / demo.RESOURCES_SUBDIR, **kwargs)


def statuses(report: doctor.Report) -> dict[str, str]:
    return {row.name: row.status for row in report.rows}


def replace_text(path: Path, text: str) -> None:
    path.unlink()  # break the hard link before writing
    path.write_text(text, encoding="utf-8")


def test_complete_tree_is_ok_at_both_stages(pristine, capsys):
    for stage in (1, 2):
        report = check(pristine, stage=stage)
        assert report.ok and not report.warnings, doctor.format_report(report)
        assert set(statuses(report).values()) == {doctor.OK}
        assert report.exact_counts and "tiny" in report.expected_source
    assert [row.name for row in check(pristine, stage=1).rows] == STAGE1_SETS + ["exclude lists"]
    assert [row.name for row in check(pristine, stage=2).rows] == list(SETS) + ["exclude lists", "dirs"]
    assert doctor.require_data(pristine, pristine / "resources", stage=2).ok
    assert doctor.main(["--root", str(pristine), "--stage", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("expected  status") == 1  # one table
    assert "all data present" in out
    assert doctor.DEMO_MANIFEST == demo.DEMO_MANIFEST


def test_every_problem_is_listed_in_one_error(tree):
    removed = {
        "weak_train": tree / SETS["weak_train"].audio,
        "maestro_real_train": tree / SETS["maestro_real_train"].audio,
        "devtest": tree / SETS["devtest"].durations,
        "external_strong_val": tree / "resources" / SETS["external_strong_val"].labels,
        "exclude lists": tree / "resources" / EXCLUDE_LISTS["unlabeled_train"],
    }
    shutil.rmtree(removed["weak_train"])
    shutil.rmtree(tree / SETS["weak_train"].original_audio)
    for path in (tree / SETS["maestro_real_train"].audio).iterdir():  # an empty folder
        path.unlink()
    for key in ("devtest", "external_strong_val", "exclude lists"):
        removed[key].unlink()
    with pytest.raises(doctor.DataCheckError) as caught:
        doctor.require_data(tree, tree / "resources", stage=1)
    message = str(caught.value)
    for path in removed.values():
        assert str(path) in message
    assert "download_resources.py" in message or "data_util.demo" in message
    got = statuses(caught.value.report)
    assert got["weak_train"] == doctor.MISSING
    assert got["maestro_real_train"] == doctor.EMPTY
    assert got["devtest"] == got["external_strong_val"] == got["exclude lists"] == doctor.MISSING_TSV
    assert got["synth_train"] == doctor.OK


def test_real_data_hints_when_no_demo_manifest(tree):
    (tree / doctor.DEMO_MANIFEST).unlink()
    shutil.rmtree(tree / SETS["maestro_real_dev"].audio)
    (tree / "resources" / EXCLUDE_LISTS["weak_train"]).unlink()
    report = check(tree, stage=1)
    # real expected counts (10,000 synth clips, ...) only warn: the real data often lacks a few clips
    assert not report.exact_counts
    assert {p.status for p in report.warnings} == {doctor.COUNT}
    fixes = {p.set_name: p.fix for p in report.errors}
    assert "zenodo.org/records/7244360" in fixes["maestro_real_dev"]
    assert "download_resources.py" in fixes["exclude lists"]


@pytest.mark.parametrize("make", ["nonexistent", "empty"])
def test_missing_or_empty_root(tmp_path, make, capsys):
    root = tmp_path / "data"
    if make == "empty":
        root.mkdir()
    report = doctor.check_data(root, tmp_path / "resources", stage=2)
    assert not report.ok
    assert set(statuses(report).values()) <= {doctor.MISSING, doctor.MISSING_TSV}
    assert all(statuses(report)[name] == doctor.MISSING for name in SETS)
    assert any("dataset root does not exist" in p.message for p in report.errors) == (make == "nonexistent")
    assert doctor.main(["--root", str(root), "--resources", str(tmp_path / "resources")]) == 1
    assert "MISSING" in capsys.readouterr().out


def test_only_44k_originals_need_resampling(tree):
    spec = SETS["weak_train"]
    shutil.rmtree(tree / spec.audio)
    report = check(tree)
    assert statuses(report)["weak_train"] == doctor.NEEDS_RESAMPLING
    (problem,) = [p for p in report.errors if p.set_name == "weak_train"]
    assert "prepare_data" in problem.fix and str(tree / spec.original_audio) in problem.fix
    # half-done resampling is reported the same way
    (tree / spec.audio).mkdir()
    originals = sorted((tree / spec.original_audio).iterdir())
    os.link(originals[0], tree / spec.audio / originals[0].name)
    assert statuses(check(tree))["weak_train"] == doctor.NEEDS_RESAMPLING


def test_bad_header_and_missing_audio_are_reported(tree):
    labels = tree / SETS["synth_train"].labels
    replace_text(labels, labels.read_text().replace("onset\toffset", "start\tend", 1))
    devtest = tree / SETS["devtest"].audio
    victim = sorted(devtest.iterdir())[0]
    victim.unlink()
    report = check(tree)
    got = statuses(report)
    assert got["synth_train"] == doctor.BAD_TSV
    assert got["devtest"] == doctor.MISSING_FILES
    messages = " ".join(p.message for p in report.errors)
    assert "['onset', 'offset']" in messages and victim.name in messages
    assert any(p.status == doctor.COUNT and p.set_name == "devtest" for p in report.errors)  # exact for demos


def test_excluded_files_may_be_absent(tree):
    exclude = tree / "resources" / EXCLUDE_LISTS["strong_train"]
    excluded = exclude.read_text().splitlines()[1]
    (tree / SETS["strong_train"].audio / excluded).unlink()
    report = check(tree, expected={name: None for name in SETS})  # counts aside
    assert statuses(report)["strong_train"] == doctor.OK


def test_maestro_durations_must_cover_the_recordings(tree):
    durations = tree / SETS["maestro_real_dev"].durations
    dropped = sorted((tree / SETS["maestro_real_dev"].audio).iterdir())[0].name.split("-")[0]
    lines = [line for line in durations.read_text().splitlines() if not line.startswith(dropped + "\t")]
    replace_text(durations, "\n".join(lines) + "\n")
    report = check(tree)
    assert any(p.status == doctor.MISSING_FILES and dropped in p.message for p in report.errors)


def test_explicit_expected_counts_and_stage_selection(tree):
    shutil.rmtree(tree / SETS["eval_public"].audio)
    assert check(tree, stage=1).ok  # evaluation sets are stage 2 only
    assert statuses(check(tree, stage=2))["eval_public"] == doctor.MISSING
    wrong = dict(demo.EXPECTED_COUNTS["tiny"], synth_train=13)
    report = check(tree, expected=wrong, sets=["synth_train"], require_exclude_lists=False)
    assert [row.name for row in report.rows] == ["synth_train"]
    assert statuses(report)["synth_train"] == doctor.COUNT and not report.ok
    assert check(tree, expected=wrong, sets=["synth_train"], exact_counts=False).ok
    assert check(tree, expected="tiny", stage=1).ok
    with pytest.raises(ValueError, match="unknown set"):
        check(tree, sets=["synth"])
    with pytest.raises(ValueError, match="stage"):
        check(tree, stage=3)


def test_real_devtest_tsvs_with_placeholder_audio(tmp_path):
    """The real devtest tsvs (tests/fixtures/desed_devtest) and 1,168 empty files pass: no audio is decoded."""
    fixtures = Path(__file__).parent / "fixtures" / "desed_devtest"
    spec = SETS["devtest"]
    (tmp_path / spec.audio).mkdir(parents=True)
    for relative, name in ((spec.labels, "validation.tsv"), (spec.durations, "validation_durations.tsv")):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures / name, tmp_path / relative)
    names = [line.split("\t")[0] for line in (fixtures / "validation_durations.tsv").read_text().splitlines()[1:]]
    for name in names:
        (tmp_path / spec.audio / name).touch()
    report = doctor.check_data(tmp_path, tmp_path / "resources", sets=["devtest"], require_exclude_lists=False)
    assert report.ok and not report.warnings, doctor.format_report(report)
    assert statuses(report) == {"devtest": doctor.OK} and report.rows[0].found == spec.expected_files == 1168
    (tmp_path / spec.audio / names[0]).unlink()
    report = doctor.check_data(tmp_path, tmp_path / "resources", sets=["devtest"], require_exclude_lists=False)
    assert [p.status for p in report.warnings] == [doctor.COUNT]  # real data: a count mismatch only warns
    # but a clip that the tsvs name and that is gone fails (labels and durations tsv both report it)
    assert {p.status for p in report.errors} == {doctor.MISSING_FILES}
    assert all(names[0] in p.message for p in report.errors)
