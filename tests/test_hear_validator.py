"""The HEAR 2021 validator (hearvalidator 2021.0.6, its own code) passes on hear_api for the three architectures.

The validator is installed without dependencies into ``.hear-validator/`` (``make hear-validate`` does the same; it
cannot join the project lock: it declares Python < 3.9) and runs with helpers.hear_validate's tensorflow stand-in.
"""
from __future__ import annotations

import subprocess

import pytest

from helpers.hear_validate import DEFAULT_DIR, install_validator, validate_all, validator_installed, \
    write_tiny_checkpoints


@pytest.mark.integration
def test_the_hear_validator_passes_for_every_architecture(tmp_path):
    if not validator_installed(DEFAULT_DIR):
        try:
            install_validator(DEFAULT_DIR)
        except subprocess.CalledProcessError as e:
            pytest.skip(f"hearvalidator could not be installed from the package index ({e}); run make hear-validate")
    checkpoints = write_tiny_checkpoints(tmp_path)
    results = validate_all(checkpoints, DEFAULT_DIR, "cpu")
    assert set(results) == {"atst_frame", "fpasst", "beats"}
    for arch, process in results.items():
        assert process.returncode == 0 and "Looks good!" in process.stdout, process.stdout + process.stderr
        assert "Checking get_scene_embeddings" in process.stdout  # every check of the validator ran
