"""Score tables, ground truth, DESED metrics and MAESTRO mpAUC against real data and hand-built cases."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sed_scores_eval.base_modules.scores import create_score_dataframe

from data_util.classes import CLASSES, DESED_CLASSES
from helpers.evaluation.maestro import (
    EVAL_CLASSES, infer_chunk_hop, mpauc, parse_chunk_name, recording_ground_truth, recording_scores_from_probabilities,
    recording_scores_from_tables, segment_scores,
)
from helpers.evaluation.metrics import desed_metrics
from data_util.prediction_files import read_predictions, write_predictions
from helpers.evaluation.scores import (
    frame_timestamps, merge_overlapping_events, read_durations, read_ground_truth, scores_from_logits,
    scores_from_probabilities,
)

FIXTURES = Path(__file__).parent / "fixtures"
SEBBS = FIXTURES / "sebbs_dcase2023task4a"
VERY_NEGATIVE_LOGIT = -30.0
PROBABILITY_CLIP = 1e-7

# sed_scores_eval on the 20 real score tables against their ground truth (provenance: tests/fixtures/README.md)
REFERENCE = {
    "psds1": 0.2697432829693092,
    "psds2": 0.5810546313412599,
    "collar_f1": 0.4469730324993483,
    "intersection_f1": 0.666178461481399,
    "segment_pauroc": 0.7928647700314096,
    "segment_auroc": 0.968612300196968,  # sed_scores_eval_np2 (linear interpolation)
}


def real_fixture_as_prediction_file(path):
    """The 20 real score tables as a 27-class prediction file (logit = log(p / (1 - p)))."""
    ids, tables = [], []
    for tsv in sorted((SEBBS / "scores").glob("*.tsv")):
        ids.append(tsv.stem)
        tables.append(pd.read_csv(tsv, sep="\t")[list(DESED_CLASSES)].to_numpy())
    p = np.clip(np.stack(tables), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    logits = np.full((len(ids), 156, len(CLASSES)), VERY_NEGATIVE_LOGIT, dtype=np.float32)
    logits[:, :, : len(DESED_CLASSES)] = np.log(p / (1 - p))
    return write_predictions(path, ids, logits, model="DCASE 2023 baseline scores (sebbs fixture)"), np.stack(tables)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    path, probabilities = real_fixture_as_prediction_file(tmp_path_factory.mktemp("real") / "eval_public.hdf5")
    names, logits = read_predictions(path)
    gt = read_ground_truth(SEBBS / "metadata" / "ground_truth.tsv")
    dur = read_durations(SEBBS / "metadata" / "audio_durations.tsv")
    return names, logits, probabilities, {k: gt[k] for k in names}, {k: dur[k] for k in names}


def test_real_scores_through_our_path_give_the_reference_values(real):
    names, logits, probabilities, gt, dur = real
    scores = scores_from_logits(names, logits)
    # the logit round trip returns the float32 probabilities to within one float32 step
    np.testing.assert_allclose(scores[names[0]][list(DESED_CLASSES)].to_numpy(), probabilities[0], atol=6e-8)
    metrics = desed_metrics(scores, gt, dur)
    for key, value in REFERENCE.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert set(k for k in metrics if k.startswith("psds1/")) == {f"psds1/{c}" for c in DESED_CLASSES}


def test_score_tables_equal_create_score_dataframe(real):
    names, logits, *_ = real
    tables = scores_from_logits(names[:3], logits[:3], ["Speech", "Dog", "car"])
    timestamps = np.arange(157) * 4 / (16000 / 256)  # the reference encoder's _frame_to_time
    for i, name in enumerate(names[:3]):
        probs = 1 / (1 + np.exp(-logits[i][:, [8, 4, 17]].astype(np.float64)))
        expected = create_score_dataframe(tables[name][["Speech", "Dog", "car"]].to_numpy(), timestamps,
                                          ["Speech", "Dog", "car"])
        pd.testing.assert_frame_equal(tables[name], expected, check_exact=True)
        np.testing.assert_allclose(tables[name][["Speech", "Dog", "car"]].to_numpy(), probs, rtol=1e-6)


def test_frame_timestamps_match_the_tsv_fixture():
    table = pd.read_csv(next((SEBBS / "scores").glob("*.tsv")), sep="\t")
    stamps = np.concatenate((table["onset"].to_numpy(), table["offset"].to_numpy()[-1:]))
    np.testing.assert_array_equal(frame_timestamps(156), stamps)
    assert frame_timestamps(156)[-1] == 9.984
    assert frame_timestamps(200)[-1] == 10.0  # clipped at the nominal clip length


def test_merge_overlapping_and_touching_events():
    events = [(0.0, 1.0, "Dog"), (1.0, 2.0, "Dog"), (1.5, 1.8, "Dog"), (3.0, 4.0, "Dog"), (0.5, 3.5, "Cat")]
    assert merge_overlapping_events(events) == [(0.0, 2.0, "Dog"), (3.0, 4.0, "Dog"), (0.5, 3.5, "Cat")]


def test_devtest_ground_truth_reader():
    gt = read_ground_truth(FIXTURES / "desed_devtest" / "validation.tsv", keep_empty=True)
    dur = read_durations(FIXTURES / "desed_devtest" / "validation_durations.tsv")
    assert len(gt) == 1168 and sum(1 for e in gt.values() if not e) == 15
    assert set(gt) == set(dur)
    assert all(not k.endswith(".wav") for k in gt)
    assert len(read_ground_truth(FIXTURES / "desed_devtest" / "validation.tsv")) == 1153


# --------------------------------------------------------------------------------------------- #
# MAESTRO
# --------------------------------------------------------------------------------------------- #
def _reference_segment_scores(frame_scores, stamps, clip_length):
    """Straightforward per-segment loop (the algorithm of the DCASE baseline), for comparison."""
    out = []
    for seg_onset in np.arange(0.0, clip_length, 1.0):
        seg_offset = seg_onset + 1.0
        keep = (stamps[1:] > seg_onset) & (stamps[:-1] < seg_offset)
        w = np.minimum(stamps[1:][keep], seg_offset) - np.maximum(stamps[:-1][keep], seg_onset)
        out.append((w[:, None] * frame_scores[keep]).sum(0) / w.sum())
    return np.array(out)


def test_segment_scores_equal_the_loop_bit_for_bit():
    rng = np.random.default_rng(0)
    probs = rng.random((5, 156, 4))
    stamps = frame_timestamps(156)
    for clip_length in (10.0, 9.984, 7.5):
        vectorised = segment_scores(probs, stamps, clip_length)
        for i in range(5):
            np.testing.assert_array_equal(vectorised[i], _reference_segment_scores(probs[i], stamps, clip_length))
    irregular = np.array([0.0, 0.3, 2.5, 2.6, 9.984])
    values = rng.random((4, 2))
    np.testing.assert_array_equal(segment_scores(values, irregular, 10.0),
                                  _reference_segment_scores(values, irregular, 10.0))


def test_chunk_names():
    assert parse_chunk_name("cafe_restaurant_07-000500-001500.wav") == ("cafe_restaurant_07", 5.0, 15.0)
    assert parse_chunk_name("a-b-000100-001100") == ("a-b", 1.0, 11.0)
    with pytest.raises(ValueError, match="does not match"):
        parse_chunk_name("cafe_restaurant_07_000500")


def _maestro_case(hop_s, rng, recordings=("rec_a", "rec_b"), duration=60.5):
    """Chunks of two recordings, ground truth with soft labels, and perfect chunk probabilities."""
    rows, chunk_ids, probs = [], [], []
    truth = {r: {c: rng.random(math.ceil(duration)) < 0.3 for c in EVAL_CLASSES} for r in recordings}
    stamps = frame_timestamps(156)
    centres = (stamps[:-1] + stamps[1:]) / 2
    for r in recordings:
        onset = 0
        while onset + 10 <= math.ceil(duration):
            offset = min(onset + 10.0, duration)
            cid = f"{r}-{int(onset * 100):06d}-{int(round(offset * 100)):06d}"
            chunk_ids.append(cid)
            p = np.zeros((156, len(CLASSES)))
            for c in EVAL_CLASSES:
                active = truth[r][c][onset: onset + 10]
                for s, on in enumerate(active):
                    if on and onset + s < duration:
                        rows.append((cid + ".wav", float(s), float(min(s + 1, offset - onset)), c, 0.9))
                    p[:, CLASSES.index(c)] = np.where(active[np.minimum(centres.astype(int), len(active) - 1)],
                                                      0.99, 0.01)
            # a soft label below 0.5 must be ignored
            rows.append((cid + ".wav", 0.0, 10.0, "car", 0.4))
            probs.append(p)
            onset += hop_s
    table = pd.DataFrame(rows, columns=["filename", "onset", "offset", "event_label", "confidence"])
    return chunk_ids, np.stack(probs), table, {r: duration for r in recordings}


@pytest.mark.parametrize("hop_s", [1, 5])
def test_mpauc_perfect_and_random(hop_s):
    rng = np.random.default_rng(hop_s)
    chunk_ids, probs, table, durations = _maestro_case(hop_s, rng)
    gt = recording_ground_truth(table)
    assert infer_chunk_hop(chunk_ids) == hop_s
    cols = [CLASSES.index(c) for c in EVAL_CLASSES]
    perfect = recording_scores_from_probabilities(chunk_ids, probs[:, :, cols], durations, EVAL_CLASSES)
    assert mpauc(perfect, gt, durations)["mean"] == pytest.approx(1.0)
    random = recording_scores_from_probabilities(chunk_ids, rng.random(probs.shape)[:, :, cols], durations,
                                                 EVAL_CLASSES)
    assert 0.0 <= mpauc(random, gt, durations)["mean"] < 0.25  # chance level is 0.05
    # the same through generic tables (the cSEBBs path) gives the same segment scores
    tables = scores_from_probabilities(chunk_ids, probs[:, :, cols], EVAL_CLASSES)
    via_tables = recording_scores_from_tables(tables, durations, EVAL_CLASSES)
    for r in perfect:
        np.testing.assert_allclose(via_tables[r].to_numpy(), perfect[r].to_numpy(), atol=1e-12)
        assert len(perfect[r]) == math.ceil(durations[r]) and perfect[r]["offset"].iloc[-1] == durations[r]


def test_maestro_ground_truth_shift_threshold_and_merge():
    table = pd.DataFrame(
        [("r-000000-001000.wav", 8.0, 10.0, "car", 0.8), ("r-000500-001500.wav", 5.0, 6.0, "car", 0.7),
         ("r-000500-001500.wav", 6.0, 7.0, "car", 0.6), ("r-000500-001500.wav", 0.0, 2.0, "birds_singing", 0.3),
         ("r-000500-001500.wav", 1.0, 2.0, "coffee machine", 0.9), ("r-000500-001500.wav", 0.0, 1.0, "car", 0.5)],
        columns=["filename", "onset", "offset", "event_label", "confidence"],
    )
    # car 8-10 (chunk 0) and 10-11, 11-12 (chunk at 5 s) touch -> one event 8-12; low confidence (0.3, and 0.5:
    # the cut is confidence > 0.5) and unscored classes are dropped
    assert recording_ground_truth(table) == {"r": [(8.0, 12.0, "car")]}
