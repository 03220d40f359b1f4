"""bench/diagnose_fusion.py on the tiny demo data: the table, the JSON and that its control is like for like."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch


@pytest.mark.integration
def test_fusion_diagnostic_measures_both_archs_and_the_zero_token_control(demo_tiny, tmp_path, capsys):
    from bench import diagnose_fusion

    root, _ = demo_tiny
    out = tmp_path / "fusion.json"
    threads = torch.get_num_threads()
    record = diagnose_fusion.main(["--data", str(root), "--batches", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    # process-wide settings it changes while measuring are restored (later tests read warnings from the log)
    assert logging.root.manager.disable == logging.NOTSET and torch.get_num_threads() == threads
    assert json.loads(out.read_text())["columns"] == record["columns"]
    columns = record["columns"]
    assert list(columns) == ["atst", "atst tokens=0", "beats", "beats tokens=0", "beats pooled"]
    for label, _ in diagnose_fusion.ROWS:
        assert label in printed
    for arch in ("atst", "beats"):
        full, control = columns[arch], columns[f"{arch} tokens=0"]
        # the same initial weights, batch and random draws: the CNN side is identical, the transformer side silent
        assert full["in_rms_cnn"] == pytest.approx(control["in_rms_cnn"], rel=1e-6)
        assert control["in_rms_transformer"] == 0 and control["grad_cat_tf_transformer"] == 0
        assert full["in_rms_transformer"] > 0 and full["grad_cat_tf_transformer"] > 0
        assert full["grad_transformer"] == 0  # stage 1: the transformer is frozen
        assert all(math.isfinite(full[key]) for key in ("grad_cnn", "grad_rnn", "grad_heads", "loss"))
    assert columns["atst"]["dims"] == "32 | 527" and columns["beats"]["dims"] == "32 | 64"  # 527 head logits / raw tokens
    # the reference's BEATs token sequence (8t+f, interpolated in time) hands the CRNN frames of changing frequency
    # bands: consecutive frames nearly unrelated; averaged over frequency they follow time, as ATST's do
    reference, pooled = columns["beats"]["adjacent_cos_frames"], columns["beats pooled"]["adjacent_cos_frames"]
    assert reference < 0.2 < 0.5 < pooled and columns["atst"]["adjacent_cos_frames"] > 0.5
