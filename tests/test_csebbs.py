"""cSEBBs (helpers/evaluation/csebbs.py) against sebbs itself, and the end-to-end evaluation report."""
from __future__ import annotations

import json
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
from helpers.evaluation.metrics import PSDS1, psds
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
