"""AudioSet-strong evaluation: the class-chunked PSDS1 / pAUROC equal sed_scores_eval's values computed directly."""
from __future__ import annotations

import numpy as np
import pytest
import sed_scores_eval
from sed_scores_eval.base_modules.scores import create_score_dataframe

from helpers.evaluation import audioset_strong as ase

CLASSES = ["Dog", "Cat", "Speech", "Music", "Wind"]


def _case(seed: int = 0):
    """Hand-made clips: piecewise-constant scores raised by a random amount inside each event, a class that never
    occurs ("Wind"), an evaluation-only label ("Silence"), clips without events of the model's classes."""
    rng = np.random.default_rng(seed)
    N, T = 14, 250
    scores = (np.repeat(rng.random((N, 25, len(CLASSES))), 10, axis=1) * 0.6).astype(np.float32)
    truth = {}
    for i in range(N):
        events = []
        for c in rng.choice(4, size=int(rng.integers(0, 3)), replace=False):
            onset = round(float(rng.uniform(0, 8)), 3)
            offset = round(min(10.0, onset + float(rng.uniform(0.3, 2.0))), 3)
            events.append((onset, offset, CLASSES[c]))
            scores[i, int(onset / 0.04):int(offset / 0.04), c] += float(rng.uniform(0.1, 0.6))
        events.append((1.0, 2.0, "Silence"))
        truth[f"Y{i:02d}"] = events
    durations = {clip: float(rng.uniform(8.0, 10.0)) for clip in truth}
    return scores, [f"Y{i:02d}" for i in range(N)], truth, durations


def _direct(scores, names, truth, durations):
    """sed_scores_eval called once with every evaluated class (what PretrainedSED's validation does)."""
    classes = [c for c in CLASSES if any(e[2] == c for events in truth.values() for e in events)]
    gt = {k: [e for e in v if e[2] in classes] for k, v in truth.items()}
    gt = {k: v for k, v in gt.items() if v}
    timestamps = ase.frame_timestamps(scores.shape[1])
    tables = {k: create_score_dataframe(scores[names.index(k)][:, [CLASSES.index(c) for c in classes]], timestamps,
                                        classes) for k in gt}
    dur = {k: durations[k] for k in gt}
    psds = sed_scores_eval.intersection_based.psds(tables, gt, dur, dtc_threshold=0.7, gtc_threshold=0.7,
                                                   cttc_threshold=None, alpha_ct=0, alpha_st=1, max_efpr=100)
    auroc = sed_scores_eval.segment_based.auroc(tables, gt, dur, max_fpr=0.1, segment_length=1.0)
    return psds[0], float(np.mean(list(psds[1].values()))), auroc[0]["mean"], classes, len(gt)


@pytest.mark.parametrize("class_chunk", [1, 2, 16])
def test_chunked_evaluation_equals_sed_scores_eval(class_chunk):
    scores, names, truth, durations = _case()
    result = ase.evaluate(scores, names, CLASSES, truth, durations, class_chunk=class_chunk)
    psds, macro, pauroc, classes, clips = _direct(scores, names, truth, durations)
    assert 0.0 < psds < macro < 1.0  # a case where the pooled value (alpha_st = 1) and the macro mean differ
    assert result.psds1 == pytest.approx(psds, abs=1e-12)
    assert result.psds1_macro_averaged == pytest.approx(macro, abs=1e-12)
    assert result.pauroc == pytest.approx(pauroc, abs=1e-12)
    assert list(result.per_class) == classes == ["Dog", "Cat", "Speech", "Music"]
    assert result.num_clips == clips and result.num_classes == 4


def test_logits_and_probabilities_give_the_same_metrics():
    scores, names, truth, durations = _case(1)
    logits = np.log(np.clip(scores, 1e-6, None)) - np.log1p(-np.clip(scores, None, 1 - 1e-6))
    filtered = ase.median_filter_scores(scores, 9)
    assert ase.evaluate(ase.median_filter_scores(logits, 9), names, CLASSES, truth, durations).psds1 == \
        pytest.approx(ase.evaluate(filtered, names, CLASSES, truth, durations).psds1, abs=1e-12)


def test_missing_scores_or_durations_are_named():
    scores, names, truth, durations = _case()
    labelled = next(k for k, v in truth.items() if any(e[2] != "Silence" for e in v))
    with pytest.raises(KeyError, match="no duration"):
        ase.evaluate(scores, names, CLASSES, truth, {k: v for k, v in durations.items() if k != labelled})
    keep = [i for i, n in enumerate(names) if n != labelled]
    with pytest.raises(KeyError, match="have no scores"):
        ase.evaluate(scores[keep], [names[i] for i in keep], CLASSES, truth, durations)
    with pytest.raises(ValueError, match="no class of the model"):
        ase.evaluate(scores, names, CLASSES, {"Y00": [(0.0, 1.0, "Silence")]}, durations)
