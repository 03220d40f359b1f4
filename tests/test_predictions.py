"""Prediction files (data_util/prediction_files.py) and ensembles (helpers/predictions/ensemble.py)."""
from __future__ import annotations

import multiprocessing
import pickle

import h5py
import numpy as np
import pytest

from data_util.classes import CLASSES
from helpers.predictions.ensemble import EnsembleError, ensemble_files, ensemble_logits
from data_util.prediction_files import (
    FRAME_HOP_SECONDS, NUM_FRAMES, PredictionFile, PredictionFileError, read_predictions, write_predictions,
)


def _logits(n, seed=0):
    return np.random.default_rng(seed).normal(0, 3, (n, NUM_FRAMES, len(CLASSES))).astype(np.float32)


def _read_in_child(pred, queue):
    queue.put(float(pred.logits("b")[0, 0]))


def test_constants_match_the_contract():
    assert NUM_FRAMES == 156
    assert FRAME_HOP_SECONDS == pytest.approx(0.064)


def test_round_trip_sorts_and_keeps_attributes(tmp_path):
    logits = _logits(3)
    path = write_predictions(tmp_path / "set.hdf5", ["c.wav", "a", "b"], logits, model="atst test",
                             extra_attrs={"note": "x"})
    names, read = read_predictions(path)
    assert names == ["a", "b", "c"]
    np.testing.assert_array_equal(read, logits[[1, 2, 0]])
    with h5py.File(path) as f:
        assert [c.decode() if isinstance(c, bytes) else c for c in f.attrs["classes"]] == list(CLASSES)
        assert f.attrs["frame_hop"] == pytest.approx(0.064)
        assert f.attrs["model"] == "atst test" and f.attrs["note"] == "x"
    pred = PredictionFile(path)
    assert "b" in pred and "z" not in pred and len(pred) == 3 and pred.model == "atst test"
    np.testing.assert_array_equal(pred.logits("c"), logits[0])
    with pytest.raises(KeyError, match="'z'"):
        pred.logits("z")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_reference_format_without_attributes(tmp_path):
    logits = _logits(2)
    path = tmp_path / "ref.hdf5"
    with h5py.File(path, "w") as f:  # as the reference's store_predictions writes it
        f.create_dataset("filenames", data=np.array([b"x1", b"x2"]))
        f.create_dataset("strong_logits", data=logits)
    names, read = read_predictions(path)
    assert names == ["x1", "x2"]
    np.testing.assert_array_equal(read, logits)


@pytest.mark.parametrize(
    "attrs, match",
    [({"classes": np.array(list(reversed(CLASSES)), dtype=h5py.string_dtype())}, "classes"),
     ({"frame_hop": 0.04}, "frame_hop is 0.04")],
)
def test_wrong_classes_or_frame_hop_are_rejected(tmp_path, attrs, match):
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("filenames", data=np.array([b"x1"]))
        f.create_dataset("strong_logits", data=_logits(1))
        for k, v in attrs.items():
            f.attrs[k] = v
    with pytest.raises(PredictionFileError, match=match):
        read_predictions(path)


def test_wrong_shape_is_rejected(tmp_path):
    with pytest.raises(PredictionFileError, match=r"expected \(2, 156, 27\)"):
        write_predictions(tmp_path / "x.hdf5", ["a", "b"], np.zeros((2, 156, 10)), model="m")
    assert not list(tmp_path.iterdir())
    path = tmp_path / "y.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("filenames", data=np.array([b"a"]))
        f.create_dataset("strong_logits", data=np.zeros((1, 100, 27), np.float32))
    with pytest.raises(PredictionFileError, match="shape"):
        PredictionFile(path).filenames


def test_truncated_file_names_the_file(tmp_path):
    path = write_predictions(tmp_path / "t.hdf5", ["a", "b"], _logits(2), model="m")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PredictionFileError, match="t.hdf5"):
        read_predictions(path)


def test_nan_logits_are_errors(tmp_path):
    logits = _logits(2)
    logits[1, 5, 3] = np.nan
    with pytest.raises(PredictionFileError, match="non-finite"):
        write_predictions(tmp_path / "n.hdf5", ["a", "b"], logits, model="m")
    path = tmp_path / "raw.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("filenames", data=np.array([b"a", b"b"]))
        f.create_dataset("strong_logits", data=logits)
    with pytest.raises(PredictionFileError, match="'b'"):
        read_predictions(path)
    with pytest.raises(PredictionFileError, match="non-finite"):
        PredictionFile(path).logits("b")


def test_reader_is_lazy_picklable_and_fork_safe(tmp_path):
    logits = _logits(2)
    path = write_predictions(tmp_path / "w.hdf5", ["a", "b"], logits, model="m")
    pred = PredictionFile(path)
    assert pred._handle is None  # nothing opened yet
    assert pred.filenames == ["a", "b"]  # opened now, in this process
    clone = pickle.loads(pickle.dumps(pred))
    np.testing.assert_array_equal(clone.logits("a"), logits[0])
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_read_in_child, args=(pred, queue))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and queue.get(timeout=5) == pytest.approx(float(logits[1, 0, 0]))


def test_ensemble_is_order_independent_and_equals_the_reference_mean(tmp_path):
    a, b, c = _logits(3, 1), _logits(3, 2), _logits(3, 3)
    p1 = write_predictions(tmp_path / "m1.hdf5", ["x", "y", "z"], a, model="1")
    p2 = tmp_path / "m2.hdf5"
    with h5py.File(p2, "w") as f:  # reference format, different row order
        f.create_dataset("filenames", data=np.array([b"z", b"x", b"y"]))
        f.create_dataset("strong_logits", data=b[[2, 0, 1]])
    p3 = write_predictions(tmp_path / "m3.hdf5", ["y", "z", "x"], c[[1, 2, 0]], model="3")
    names, mean = ensemble_logits([p1, p2, p3])
    assert names == ["x", "y", "z"]
    np.testing.assert_array_equal(mean, np.mean(np.stack([a, b, c]), axis=0))  # bit-identical
    _, mean_reversed = ensemble_logits([p3, p2, p1])
    np.testing.assert_allclose(mean_reversed, mean, atol=1e-5)
    _, weighted = ensemble_logits([p1, p2], weights=[3, 1])
    np.testing.assert_allclose(weighted, 0.75 * a + 0.25 * b, atol=1e-5)
    out = ensemble_files([p1, p2, p3], tmp_path / "ens" / "devtest.hdf5")
    assert read_predictions(out)[0] == ["x", "y", "z"]


def test_ensemble_refuses_mismatches(tmp_path):
    p1 = write_predictions(tmp_path / "m1.hdf5", ["x", "y"], _logits(2), model="1")
    p2 = write_predictions(tmp_path / "m2.hdf5", ["x", "w"], _logits(2), model="2")
    with pytest.raises(EnsembleError, match="different clips"):
        ensemble_logits([p1, p2])
    p3 = tmp_path / "m3.hdf5"
    with h5py.File(p3, "w") as f:
        f.create_dataset("filenames", data=np.array([b"x", b"y"]))
        f.create_dataset("strong_logits", data=_logits(2))
        f.attrs["frame_hop"] = 0.02
    with pytest.raises(PredictionFileError, match="frame_hop"):
        ensemble_logits([p1, p3])
    with pytest.raises(ValueError, match="weights"):
        ensemble_logits([p1, p1], weights=[1.0])
