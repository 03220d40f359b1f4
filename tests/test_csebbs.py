"""cSEBBs (helpers/evaluation/csebbs.py) against sebbs itself, and the end-to-end evaluation report."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sebbs.csebbs import CSEBBsPredictor
from sebbs.utils import sed_scores_from_sebbs

from data_util.classes import CLASSES, DESED_CLASSES, MAESTRO_CLASSES
from data_util.layout import SETS
from helpers.evaluation import csebbs
from helpers.evaluation.report import CSEBBsConfig, evaluate_predictions
from helpers.evaluation.maestro import segment_scores
from helpers.evaluation.metrics import PSDS1, PSDS2, psds
from data_util.prediction_files import write_predictions
from helpers.evaluation.scores import frame_timestamps, read_durations, read_ground_truth, scores_from_probabilities

SEBBS = Path(__file__).parent / "fixtures" / "sebbs_dcase2023task4a"
CLASSES_DESED = list(DESED_CLASSES)
# sebbs' default grid (``sebbs.csebbs.tune``'s defaults); tuned on the 20 real clips (oracle) -> PSDS1
# 0.40482480235591856: sebbs' own selection and predictions, scored by sed_scores_eval (tests/fixtures/README.md)
SEBBS_DEFAULT_GRID = csebbs.CSEBBsGrid((0.32, 0.48, 0.64), (0.15, 0.2, 0.3), (1.5, 2.0, 3.0))
SEBBS_DEFAULT_GRID_PSDS1 = 0.40482480235591856
SMALL_GRID = csebbs.CSEBBsGrid((0.38, 0.5), (0.2,), (2.0,))


@pytest.fixture(scope="module")
def real():
    ids = sorted(p.stem for p in (SEBBS / "scores").glob("*.tsv"))
    probabilities = np.stack([pd.read_csv(SEBBS / "scores" / f"{i}.tsv", sep="\t")[CLASSES_DESED].to_numpy()
                              for i in ids])
    scores = scores_from_probabilities(ids, probabilities, CLASSES_DESED)
    gt = read_ground_truth(SEBBS / "metadata" / "ground_truth.tsv")
    dur = read_durations(SEBBS / "metadata" / "audio_durations.tsv")
    return ids, probabilities, scores, {k: gt[k] for k in ids}, {k: dur[k] for k in ids}


def _same_boxes(a, b):
    return a.keys() == b.keys() and all(len(a[k]) == len(b[k]) and all(
        x[0] == y[0] and x[1] == y[1] and x[2] == y[2] and x[3] == y[3] for x, y in zip(a[k], b[k])) for k in a)


@pytest.mark.parametrize("step, t_abs, t_rel", [
    (0.5, 0.2, np.inf), (0.38, np.inf, 1.5), (0.66, np.inf, 3.25), (0.3, 1.0, 2.0),
    ({c: 0.38 + 0.03 * i for i, c in enumerate(CLASSES_DESED)},
     {c: (0.2 if i % 2 else np.inf) for i, c in enumerate(CLASSES_DESED)},
     {c: (np.inf if i % 2 else 2.0) for i, c in enumerate(CLASSES_DESED)}),
])
def test_boxes_and_tables_are_bit_identical_to_sebbs(real, step, t_abs, t_rel):
    ids, _, scores, _, dur = real
    predictor = CSEBBsPredictor(step, t_abs, t_rel, sound_classes=CLASSES_DESED)
    expected = predictor.predict(scores)
    clip_ids, boxes = csebbs.predict_boxes(predictor, scores, CLASSES_DESED)
    assert _same_boxes(csebbs.boxes_to_lists(boxes, clip_ids, CLASSES_DESED), expected)
    tables = csebbs.boxes_to_score_tables(boxes, clip_ids, CLASSES_DESED, [dur[c] for c in clip_ids])
    expected_tables = sed_scores_from_sebbs(expected, CLASSES_DESED, audio_duration=dur)
    for c in ids:
        pd.testing.assert_frame_equal(tables[c], expected_tables[c], check_exact=True)


def test_sebbs_1_0_2_tune_bug_is_worked_around(real):
    """sebbs 1.0.2's own ``tune`` builds candidates with ``sound_classes=None``: they yield no box at all and
    selection crashes. Ours (and ``library_tune``) give the candidates their classes; a clip of flat scores
    (one whole-clip box per class) and a clip without any box are handled."""
    from sebbs import csebbs as sebbs_csebbs

    ids, probabilities, _, gt, dur = real
    flat = probabilities.copy()
    flat[0] = 0.25
    scores = scores_from_probabilities(ids, flat, CLASSES_DESED)
    with pytest.raises(TypeError, match="NoneType"):
        sebbs_csebbs.tune(scores, gt, dur, step_filter_lengths=(0.5,), merge_thresholds_abs=(0.2,),
                          merge_thresholds_rel=(2.0,), selection_fn=sebbs_csebbs.select_best_psds)
    ours = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=SMALL_GRID, num_jobs=1, progress=False)
    library, best = csebbs.library_tune(scores, gt, dur, classes=CLASSES_DESED, grid=SMALL_GRID)
    assert ours.predictor.to_dict() == library.to_dict() and ours.best_values == best
    assert ours.predictor.sound_classes == CLASSES_DESED
    clip_ids, boxes = csebbs.predict_boxes(ours.predictor, scores)
    first = boxes.clip == 0
    assert np.all(boxes.onset[first] == 0.0) and np.all(boxes.offset[first] == 9.984)  # flat: whole clip
    keep = ~first  # drop every box of clip 0: a clip without boxes
    empty = csebbs.Boxes(*(getattr(boxes, f)[keep] for f in ("clip", "cls", "onset", "offset", "confidence")))
    tables = csebbs.boxes_to_score_tables(empty, clip_ids, CLASSES_DESED, [dur[c] for c in clip_ids])
    expected = sed_scores_from_sebbs({ids[0]: []}, CLASSES_DESED, audio_duration={ids[0]: dur[ids[0]]})[ids[0]]
    pd.testing.assert_frame_equal(tables[ids[0]], expected, check_exact=True)


def test_tune_selects_what_sebbs_selects_and_reproduces_the_reference_value(real):
    ids, _, scores, gt, dur = real
    ours = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=SEBBS_DEFAULT_GRID, num_jobs=1, progress=False)
    library, best = csebbs.library_tune(scores, gt, dur, classes=CLASSES_DESED, grid=SEBBS_DEFAULT_GRID)
    assert ours.predictor.to_dict() == library.to_dict()
    assert ours.best_values == best
    clip_ids, boxes = csebbs.predict_boxes(ours.predictor, scores)
    tables = csebbs.boxes_to_score_tables(boxes, clip_ids, CLASSES_DESED, [dur[c] for c in clip_ids])
    sebbs_tables = sed_scores_from_sebbs(library.predict(scores), CLASSES_DESED, audio_duration=dur)
    assert psds(sebbs_tables, gt, dur, PSDS1).value == pytest.approx(SEBBS_DEFAULT_GRID_PSDS1, abs=1e-12)
    assert psds(tables, gt, dur, PSDS1).value == pytest.approx(SEBBS_DEFAULT_GRID_PSDS1, abs=1e-12)


@pytest.mark.integration
@pytest.mark.slow  # sebbs' own single-process selection over 128 candidates: about a minute
def test_full_reference_grid_in_parallel_selects_what_sebbs_selects(real):
    ids, _, scores, gt, dur = real
    grid = csebbs.CSEBBsGrid()
    assert len(grid.candidates()) == 128
    ours = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=grid, num_jobs=2, progress=False)
    library, best = csebbs.library_tune(scores, gt, dur, classes=CLASSES_DESED, grid=grid)
    assert ours.predictor.to_dict() == library.to_dict()
    assert ours.best_values == best
    clip_ids, boxes = csebbs.predict_boxes(ours.predictor, scores)
    tables = csebbs.boxes_to_score_tables(boxes, clip_ids, CLASSES_DESED, [dur[c] for c in clip_ids])
    sebbs_tables = sed_scores_from_sebbs(library.predict(scores), CLASSES_DESED, audio_duration=dur)
    assert psds(tables, gt, dur, PSDS1).value == pytest.approx(psds(sebbs_tables, gt, dur, PSDS1).value, abs=1e-12)


def test_cross_validation(real):
    ids, _, scores, gt, dur = real
    result = csebbs.cross_validation(scores, gt, dur, classes=CLASSES_DESED, grid=SMALL_GRID, num_folds=2,
                                     num_jobs=1, progress=False)
    assert len(result.predictors) == 2 and sorted(sum(result.folds, [])) == sorted(gt)
    assert set(result.score_tables) == set(gt)
    assert 0.0 <= result.psds1 <= 1.0
    full = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=SMALL_GRID, num_jobs=1, progress=False)
    assert result.full.predictor.to_dict() == full.predictor.to_dict()


def test_apply_to_predictions_matches_the_reference_composition(real):
    ids, probabilities, scores, gt, dur = real
    rng = np.random.default_rng(0)
    full = np.concatenate((probabilities, rng.random((len(ids), 156, len(MAESTRO_CLASSES)))), axis=2)
    predictor = CSEBBsPredictor(0.46, np.inf, 2.25, sound_classes=CLASSES_DESED)
    tables = csebbs.apply_to_predictions(predictor, ids, full)
    # reference composition: sebbs boxes for DESED, 1 s segment boxes for MAESTRO, fill 0, no duration
    desed_boxes = predictor.predict(scores)
    stamps = frame_timestamps(156)
    for i, clip in enumerate(ids[:5]):
        seg = segment_scores(full[i, :, len(DESED_CLASSES):], stamps, 9.984)
        boxes = list(desed_boxes[clip]) + [
            (float(j), float(min(j + 1, 9.984)), name, float(seg[j, k]))
            for j in range(seg.shape[0]) for k, name in enumerate(MAESTRO_CLASSES)
        ]
        expected = sed_scores_from_sebbs({clip: sorted(boxes)}, list(CLASSES), fill_value=0.0)[clip]
        pd.testing.assert_frame_equal(tables[clip], expected, check_exact=True)


# --------------------------------------------------------------------------------------------- #
# end to end: evaluate_predictions on a tiny dataset in the real layout
# --------------------------------------------------------------------------------------------- #
def _write_tsv(path: Path, frame: pd.DataFrame):
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False)


def _tiny_dataset(root: Path, preds: Path, real, with_public=True):
    ids, probabilities, _, gt, dur = real
    rng = np.random.default_rng(1)
    logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))  # noqa: E731
    desed_logits = np.full((len(ids), 156, len(CLASSES)), -8.0, np.float32)
    desed_logits[:, :, :10] = logit(probabilities)
    gt_rows = [(f"{c}.wav", on, off, lab) for c in ids for on, off, lab in gt[c]]
    gt_table = pd.DataFrame(gt_rows, columns=["filename", "onset", "offset", "event_label"])
    dur_table = pd.DataFrame([(f"{c}.wav", dur[c]) for c in ids], columns=["filename", "duration"])
    sets = ["devtest"] + (["eval_public"] if with_public else [])
    for name in sets:
        _write_tsv(root / SETS[name].labels, gt_table)
        _write_tsv(root / SETS[name].durations, dur_table)
        write_predictions(preds / f"{name}.hdf5", ids, desed_logits, model="fixture")
    # MAESTRO: one 30 s recording in 1 s chunks, events of 'car' from 5 to 20 s
    chunks = [f"rec_x-{o * 100:06d}-{(o + 10) * 100:06d}" for o in range(21)]
    rows = [(f"{c}.wav", max(0.0, 5.0 - o), min(10.0, 20.0 - o), "car", 0.9)
            for o, c in enumerate(chunks) if 5.0 - o < 10 and 20.0 - o > 0]
    _write_tsv(root / SETS["maestro_real_dev"].labels,
               pd.DataFrame(rows, columns=["filename", "onset", "offset", "event_label", "confidence"]))
    _write_tsv(root / SETS["maestro_real_dev"].durations, pd.DataFrame([("rec_x", 30.0)], columns=["filename", "duration"]))
    m_logits = rng.normal(-3, 1, (len(chunks), 156, len(CLASSES))).astype(np.float32)
    write_predictions(preds / "maestro_real_dev.hdf5", chunks, m_logits, model="random")
    write_predictions(preds / "eval_private.hdf5", ["p1", "p2"], rng.normal(0, 2, (2, 156, 27)), model="random")


def test_evaluate_predictions_end_to_end(real, tmp_path):
    root, preds = tmp_path / "data", tmp_path / "resources" / "predictions" / "ens"
    _tiny_dataset(root, preds, real)
    lines = []
    cfg = CSEBBsConfig(step_filter_lengths=(0.38, 0.5), merge_thresholds_rel=(2.0,), merge_thresholds_abs=(0.2,),
                       cross_validation_folds=2, num_jobs=1)
    report = evaluate_predictions(preds, root, tmp_path / "resources", cfg, echo=lines.append, plots=True)
    prefixes = ["maestro_real_dev mpAUC: ", "maestro_real_dev mpAUC_csebbs (should be the same): ",
                "devtest psds1: ", "devtest psds1_csebbs: ", "eval_public psds1: ", "eval_public psds1_csebbs: "]
    for line, prefix in zip(lines, prefixes):
        assert line.startswith(prefix) and float(line[len(prefix):]) >= 0
    assert lines[len(prefixes)] == f"Storing predictions to {preds}."
    assert float(lines[0].split(": ")[1]) == pytest.approx(float(lines[1].split(": ")[1]), abs=1e-9)
    assert float(lines[2].split(": ")[1]) == pytest.approx(0.2697432829693092, abs=1e-6)
    saved = json.loads((preds / "eval_report.json").read_text())
    assert saved["console"] == lines[: len(prefixes) + 1]
    assert "devtest_psds1_csebbs_cross_validated" in saved["csebbs_cross_validated"]
    assert {"psds2", "collar_f1", "intersection_f1", "psds1/Speech"} <= set(saved["sets"]["devtest"]["raw"])
    for folder in ("Schmid_CPJKU_task4_X_runX.output", "Schmid_CPJKU_task4_X_runX_unprocessed.output"):
        files = sorted(p.name for p in (preds / folder).iterdir())
        assert files == ["p1.tsv", "p2.tsv"]
        table = pd.read_csv(preds / folder / "p1.tsv", sep="\t")
        assert list(table.columns) == ["onset", "offset", *CLASSES] and np.isfinite(table.to_numpy()).all()
    assert (preds / "plots" / "devtest_psd_roc.png").stat().st_size > 0
    assert report["sets"]["devtest"]["csebbs"]["psds1"] == float(lines[3].split(": ")[1])


def test_missing_sets_are_skipped_with_a_notice(real, tmp_path):
    root, preds = tmp_path / "data", tmp_path / "preds"
    _tiny_dataset(root, preds, real, with_public=False)
    (preds / "eval_private.hdf5").unlink()
    lines = []
    cfg = CSEBBsConfig(step_filter_lengths=(0.5,), merge_thresholds_rel=(2.0,), merge_thresholds_abs=(0.2,),
                       cross_validation_folds=0, num_jobs=1)
    evaluate_predictions(preds, root, tmp_path, cfg, echo=lines.append, plots=False)
    assert any(line.startswith("eval_public: skipped") for line in lines)
    assert any(line.startswith("eval_private: skipped") for line in lines)
    assert not any(line.startswith("Storing predictions") for line in lines)


def test_submission_tsv_text_equals_pandas():
    from io import StringIO

    from helpers.evaluation.report import table_to_tsv

    rng = np.random.default_rng(0)
    values = rng.random((20, 4))
    values[3, 2], values[4, 3], values[5, 1] = -np.inf, 1e-7, 0.0
    table = pd.DataFrame(values, columns=["onset", "offset", "Speech", "cutlery and dishes"])
    expected = StringIO()
    table.replace([-np.inf], 0.0).to_csv(expected, sep="\t", index=False)
    assert table_to_tsv(table) == expected.getvalue()


# --------------------------------------------------------------------------------------------- #
# the tuner against sebbs' own candidates and selection (oracles for the mutation pass, docs/MUTATION.md)
# --------------------------------------------------------------------------------------------- #
FOUR_CANDIDATES = csebbs.CSEBBsGrid((0.38, 0.5), (0.2,), (2.0,))


def _sebbs_selection(scores, gt, dur, candidates, audio_ids=None, settings=PSDS1, classwise=True):
    """sebbs' ``select_best_psds`` over ``candidates`` [(step, abs, rel)], each predictor built and run by sebbs
    (the classes set on each: sebbs 1.0.2's ``tune`` leaves them unset, see the bug test above)."""
    from sebbs import csebbs as sebbs_csebbs

    clip_scores = {c: scores[c] for c in gt}
    runs = []
    for step, t_abs, t_rel in candidates:
        predictor = CSEBBsPredictor(step, t_abs, t_rel, sound_classes=CLASSES_DESED)
        runs.append((predictor, predictor.predict(clip_scores)))
    predictor, best = sebbs_csebbs.select_best_psds(
        runs, gt, dur, audio_ids=audio_ids, dtc_threshold=settings.dtc_threshold, gtc_threshold=settings.gtc_threshold,
        cttc_threshold=settings.cttc_threshold, alpha_ct=settings.alpha_ct, unit_of_time=settings.unit_of_time,
        max_efpr=settings.max_efpr, classwise=classwise)
    predictor.sound_classes = CLASSES_DESED
    return predictor, best


def test_grid_enumerates_candidates_in_sebbs_order(real):
    """Selection keeps the first strictly best candidate, so the order decides ties: sebbs' own grid loop
    (``sebbs.csebbs._run``: per step length, the absolute thresholds, then the relative ones) is the oracle."""
    from sebbs import csebbs as sebbs_csebbs

    ids, _, scores, _, _ = real
    grid = csebbs.CSEBBsGrid((0.5, 0.38), (0.3, 0.15), (3.0, 1.5, 2.0))
    runs = sebbs_csebbs._run({ids[0]: scores[ids[0]]}, list(grid.step_filter_lengths), grid.merge_thresholds_abs,
                             grid.merge_thresholds_rel)
    expected = [(p.step_filter_length, p.merge_threshold_abs, p.merge_threshold_rel) for p, _ in runs]
    assert grid.candidates() == expected and len(expected) == 10
    assert all(type(v) is float for candidate in grid.candidates() for v in candidate)
    default = csebbs.CSEBBsGrid()  # the reference's grid (ex_stage2.eval_predictions; docs/EVALUATION.md)
    assert (default.step_filter_lengths, default.merge_thresholds_abs, default.merge_thresholds_rel) == (
        (0.38, 0.42, 0.46, 0.50, 0.54, 0.58, 0.62, 0.66), (0.15, 0.175, 0.2, 0.225, 0.25, 0.275, 0.3, 0.325),
        (1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25))
    assert default.classwise is True


def test_tune_with_one_setting_for_all_classes_selects_what_sebbs_selects(real):
    """``classwise=False``: every class gets the candidate of the best mean single-class PSDS."""
    ids, _, scores, gt, dur = real
    grid = csebbs.CSEBBsGrid((0.38, 0.5, 0.62), (0.2,), (2.0,), classwise=False)
    ours = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=grid, num_jobs=1, progress=False)
    expected, best = _sebbs_selection(scores, gt, dur, grid.candidates(), classwise=False)
    assert ours.predictor.to_dict() == expected.to_dict() and ours.best_values == best
    library, library_best = csebbs.library_tune(scores, gt, dur, classes=CLASSES_DESED, grid=grid)
    assert library.to_dict() == expected.to_dict() and library_best == best
    assert len({ours.predictor.step_filter_length[c] for c in CLASSES_DESED}) == 1
    assert len(set(best.values())) == 1
    classwise = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=dataclasses.replace(grid, classwise=True),
                            num_jobs=1, progress=False)
    assert classwise.predictor.to_dict() != ours.predictor.to_dict()  # the case tells the two modes apart


def test_tune_with_cross_trigger_settings_selects_what_sebbs_selects(real):
    """PSDS2 settings: the cross-trigger criterion reads the other classes' events (unused by PSDS1)."""
    ids, _, scores, gt, dur = real
    grid = csebbs.CSEBBsGrid((0.38, 0.62), (0.2,), (2.0, 3.0))
    ours = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=grid, settings=PSDS2, num_jobs=1, progress=False)
    expected, best = _sebbs_selection(scores, gt, dur, grid.candidates(), settings=PSDS2)
    assert ours.predictor.to_dict() == expected.to_dict() and ours.best_values == best
    library, library_best = csebbs.library_tune(scores, gt, dur, classes=CLASSES_DESED, grid=grid, settings=PSDS2)
    assert library.to_dict() == expected.to_dict() and library_best == best
    # every setting reaches both paths: a false-positive-rate limit per minute changes the values
    other = dataclasses.replace(PSDS2, max_efpr=20.0, unit_of_time="minute")
    ours_other = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=grid, settings=other, num_jobs=1,
                             progress=False)
    library_other = csebbs.library_tune(scores, gt, dur, classes=CLASSES_DESED, grid=grid, settings=other)
    assert ours_other.predictor.to_dict() == library_other[0].to_dict() and ours_other.best_values == library_other[1]
    assert ours_other.best_values != ours.best_values
    psds1 = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=grid, num_jobs=1, progress=False)
    assert psds1.best_values != ours.best_values


def test_parallel_tuning_equals_one_process(real):
    ids, _, scores, gt, dur = real
    one = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=FOUR_CANDIDATES, num_jobs=1, progress=False)
    two = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=FOUR_CANDIDATES, num_jobs=2, progress=False)
    assert two.predictor.to_dict() == one.predictor.to_dict() and two.best_values == one.best_values
    np.testing.assert_array_equal(two.candidate_values, one.candidate_values)
    assert one.candidate_values.shape == (4, len(CLASSES_DESED)) and np.isfinite(one.candidate_values).all()


def test_cross_validation_equals_sebbs_per_fold(real):
    """Each fold's predictor is sebbs' selection on the other folds; the held-out tables are sebbs' predictions
    of that fold with its durations; the cross-validated PSDS1 is sed_scores_eval's on all of them."""
    ids, _, scores, gt, dur = real
    grid = csebbs.CSEBBsGrid((0.38, 0.5, 0.62), (0.2, 0.3), (2.0, 3.0))
    result = csebbs.cross_validation(scores, gt, dur, classes=CLASSES_DESED, grid=grid, num_folds=3, seed=7,
                                     num_jobs=1, progress=False)
    assert result.folds == csebbs.make_folds(list(gt), 3, 7)
    expected_tables = {}
    for fold, predictor in zip(result.folds, result.predictors):
        train = [c for c in gt if c not in fold]
        expected, _ = _sebbs_selection(scores, gt, dur, grid.candidates(), audio_ids=train)
        assert predictor.to_dict() == expected.to_dict()
        boxes = expected.predict({c: scores[c] for c in fold})
        expected_tables.update(sed_scores_from_sebbs(boxes, CLASSES_DESED, audio_duration={c: dur[c] for c in fold}))
    assert list(result.score_tables) == list(gt)
    for c in gt:
        pd.testing.assert_frame_equal(result.score_tables[c], expected_tables[c], check_exact=True)
    assert result.psds1 == pytest.approx(psds(expected_tables, gt, dur, PSDS1).value, abs=1e-12)
    full, best = _sebbs_selection(scores, gt, dur, grid.candidates())
    assert result.full.predictor.to_dict() == full.to_dict() and result.full.best_values == best
    # the folds choose differently from the full set and from each other: a case that tells them apart
    assert len({json.dumps(p.to_dict(), sort_keys=True) for p in result.predictors + [full]}) > 2


def test_tuning_errors_and_worker_count(real, monkeypatch):
    ids, _, scores, gt, dur = real
    with pytest.raises(KeyError, match=r"1 annotated clips have no scores, e.g. \['" + ids[3]):
        csebbs.tune({c: s for c, s in scores.items() if c != ids[3]}, gt, dur, classes=CLASSES_DESED,
                    grid=FOUR_CANDIDATES, num_jobs=1, progress=False)
    for bad in (1, len(ids) + 1):
        with pytest.raises(ValueError, match=rf"num_folds must be in \[2, {len(ids)}\], got {bad}"):
            csebbs.make_folds(ids, bad)
    assert len(csebbs.make_folds(ids, 2)) == 2 and len(csebbs.make_folds(ids, len(ids))) == len(ids)
    monkeypatch.setattr(csebbs.os, "cpu_count", lambda: 6)
    assert [csebbs.resolve_num_jobs(n) for n in (None, 0, -1, 1, 3)] == [6, 6, 6, 1, 3]
    monkeypatch.setattr(csebbs.os, "cpu_count", lambda: None)
    assert csebbs.resolve_num_jobs(None) == 1


def test_tuning_reports_progress_only_when_asked(real, caplog):
    ids, _, scores, gt, dur = real
    for progress in (True, False):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=csebbs.log.name):
            csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=FOUR_CANDIDATES, num_jobs=1, progress=progress)
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        if progress:
            assert [line.split(" (")[0] for line in lines] == [
                "cSEBBs tuning: 1/2 candidate groups done", "cSEBBs tuning: 2/2 candidate groups done"]
        else:
            assert lines == []


def test_cross_validation_warns_when_a_class_has_no_events_outside_a_fold(real, caplog):
    """20 clips, 3 folds drawn with seed 4: no Cat event outside fold 1 (sebbs' selection stops with an
    assertion there); ours warns and that fold keeps the grid's first candidate for Cat."""
    ids, _, scores, gt, dur = real
    grid = csebbs.CSEBBsGrid((0.38, 0.5, 0.62), (0.2, 0.3), (2.0, 3.0))
    with caplog.at_level(logging.WARNING, logger=csebbs.log.name):
        result = csebbs.cross_validation(scores, gt, dur, classes=CLASSES_DESED, grid=grid, num_folds=3, seed=4,
                                         num_jobs=1, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("cSEBBs cross-validation fold 1: no events of ['Cat']")
    first = grid.candidates()[0]
    chosen = result.predictors[1].to_dict()
    assert (chosen["step_filter_length"]["Cat"], chosen["merge_threshold_abs"]["Cat"],
            chosen["merge_threshold_rel"]["Cat"]) == first
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=csebbs.log.name):
        csebbs.cross_validation(scores, gt, dur, classes=CLASSES_DESED, grid=FOUR_CANDIDATES, num_folds=3, seed=7,
                                num_jobs=1, progress=False)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("steps, workers, tasks", [(8, 1, 8), (8, 2, 8), (8, 9, 16), (8, 16, 16), (2, 3, 4),
                                                   (2, 8, 8), (1, 64, 16), (3, 0, 3)])
def test_tuning_tasks_cover_the_grid_once_and_keep_every_worker_busy(steps, workers, tasks):
    """A step's thresholds are split only as far as needed to give each worker a task (every task repeats the
    step's change-point detection), at most one threshold pair per task."""
    grid = csebbs.CSEBBsGrid(csebbs.STEP_FILTER_LENGTHS[:steps])
    got = csebbs._tasks(grid, workers)
    assert len(got) == tasks
    assert sorted((s, a, r) for s, chunk in got for a, r in chunk) == sorted(grid.candidates())
    sizes = {len(chunk) for _, chunk in got}
    assert max(sizes) - min(sizes) <= 1  # balanced
    first = got[0][1]
    assert first == grid.thresholds()[:: len(got) // steps]  # dealt round-robin: abs and rel thresholds mixed


def test_float32_scores_give_the_boxes_of_their_float64_values(real):
    """Score tables or probabilities in float32 (as stored in HDF5) are widened first: every step runs in float64
    like sebbs on tables read from tsv."""
    ids, probabilities, scores, _, _ = real
    predictor = CSEBBsPredictor(0.46, np.inf, 2.25, sound_classes=CLASSES_DESED)
    narrow = {c: t.astype(np.float32) for c, t in scores.items()}
    widened = {c: t.astype(np.float64) for c, t in narrow.items()}
    ids_narrow, narrow_boxes = csebbs.predict_boxes(predictor, narrow)
    ids_wide, wide_boxes = csebbs.predict_boxes(predictor, widened)
    assert ids_narrow == ids_wide
    for f in ("clip", "cls", "onset", "offset", "confidence"):
        assert getattr(narrow_boxes, f).dtype == getattr(wide_boxes, f).dtype
        np.testing.assert_array_equal(getattr(narrow_boxes, f), getattr(wide_boxes, f))
    rng = np.random.default_rng(3)
    full = np.concatenate((probabilities, rng.random((len(ids), 156, len(MAESTRO_CLASSES)))), axis=2)
    full32 = full.astype(np.float32)
    got = csebbs.apply_to_predictions(predictor, ids, full32)
    expected = csebbs.apply_to_predictions(predictor, ids, full32.astype(np.float64))
    for clip in ids:
        pd.testing.assert_frame_equal(got[clip], expected[clip], check_exact=True)


def test_apply_to_predictions_returns_the_class_order_whatever_the_box_classes(real):
    ids, probabilities, _, _, _ = real
    full = np.concatenate((probabilities, np.full((len(ids), 156, len(MAESTRO_CLASSES)), 0.25)), axis=2)
    reversed_desed = CLASSES_DESED[::-1]
    predictor = CSEBBsPredictor(0.46, np.inf, 2.25, sound_classes=reversed_desed)
    got = csebbs.apply_to_predictions(predictor, ids[:3], full[:3], box_classes=reversed_desed)
    expected = csebbs.apply_to_predictions(predictor, ids[:3], full[:3])
    for clip in ids[:3]:
        assert list(got[clip].columns) == ["onset", "offset", *CLASSES]
        pd.testing.assert_frame_equal(got[clip], expected[clip], check_exact=True)


def test_one_job_tunes_in_this_process_and_results_carry_values_and_time(real, monkeypatch, caplog):
    """``num_jobs=1`` never starts a process pool (sandboxes, notebooks); progress is logged by default;
    the results hold the candidate values and the wall time of the call."""
    import time

    ids, _, scores, gt, dur = real

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started with num_jobs=1")

    monkeypatch.setattr(csebbs, "ProcessPoolExecutor", no_pool)
    with caplog.at_level(logging.INFO, logger=csebbs.log.name):
        start = time.perf_counter()
        tuned = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=FOUR_CANDIDATES, num_jobs=1)
        middle = time.perf_counter()
        cv = csebbs.cross_validation(scores, gt, dur, classes=CLASSES_DESED, grid=FOUR_CANDIDATES, num_folds=3,
                                     seed=7, num_jobs=1)
        end = time.perf_counter()
    progress = [r for r in caplog.records if r.levelno == logging.INFO and "candidate groups done" in r.getMessage()]
    assert len(progress) == 4  # two groups (step lengths) per call
    assert 0.0 < tuned.seconds <= middle - start and 0.0 < cv.full.seconds <= end - middle
    assert cv.full.candidate_values.shape == tuned.candidate_values.shape == (4, len(CLASSES_DESED))
    np.testing.assert_array_equal(cv.full.candidate_values, tuned.candidate_values)
    assert cv.full.best_values == tuned.best_values


def test_parallel_tuning_forks_one_worker_per_task_at_most(real, monkeypatch, caplog):
    """Workers are forked (no re-import of the caller's main module: scripts without a ``__main__`` guard work),
    never more than there are tasks, and progress is logged per finished task as in one process."""
    ids, _, scores, gt, dur = real
    pools = []
    real_pool = csebbs.ProcessPoolExecutor

    def recording_pool(*args, **kwargs):
        pools.append(kwargs)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(csebbs, "ProcessPoolExecutor", recording_pool)
    with caplog.at_level(logging.INFO, logger=csebbs.log.name):
        tuned = csebbs.tune(scores, gt, dur, classes=CLASSES_DESED, grid=FOUR_CANDIDATES, num_jobs=8)
    assert len(pools) == 1 and pools[0]["max_workers"] == 4  # 2 steps x 2 threshold pairs: 4 tasks
    assert pools[0]["mp_context"].get_start_method() == "fork"
    lines = sorted(r.getMessage().split(" (")[0] for r in caplog.records if r.levelno == logging.INFO)
    assert lines == [f"cSEBBs tuning: {i}/4 candidate groups done" for i in (1, 2, 3, 4)]
    assert np.isfinite(tuned.candidate_values).all()
