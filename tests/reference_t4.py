"""The reference fixtures in ``tests/fixtures/reference_t4`` and their deterministic weights (see its README).

Shared by the full-model equivalence tests (``test_sed_model.py``) and the CRNN-internals tests
(``test_crnn.py``): the fill rule is applied by state-dict key name, so the same weights land in our model as
in the reference model that produced the fixtures (CPJKU/cpjku_dcase24, CPU, float32, eval mode).
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "reference_t4"
SUMMARY = json.loads((FIXTURES / "summary.json").read_text())
FILL_STD = 0.02
RUNNING_VAR_SCALE = 5.0


def fixture_fill(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The README's deterministic weights for every floating tensor, seeded by crc32 of ``prefix + key``.

    ``prefix`` is the key's prefix inside the full SED state dict (e.g. ``"cnn."`` for the CNN submodule), so a
    submodule gets exactly the values it holds inside the released-format model.
    """
    filled = {}
    for key, tensor in state_dict.items():
        name = prefix + key
        if not tensor.dtype.is_floating_point:
            filled[key] = torch.zeros_like(tensor)  # num_batches_tracked keeps its initial value (0)
            continue
        rng = np.random.default_rng(zlib.crc32(name.encode()) + SUMMARY["seed_offset"])
        value = FILL_STD * rng.standard_normal(tuple(tensor.shape)).astype(np.float32)
        if name.endswith("running_var"):
            value = 1 + RUNNING_VAR_SCALE * np.abs(value)
        elif tensor.ndim == 1 and name.endswith("weight"):
            value = 1 + value
        filled[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return filled


def rel_err(ours: np.ndarray | torch.Tensor, ref: np.ndarray) -> float:
    """‖ours − ref‖ / ‖ref‖ in float64."""
    if isinstance(ours, torch.Tensor):
        ours = ours.detach().numpy()
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(ours.astype(np.float64) - ref) / np.linalg.norm(ref))
