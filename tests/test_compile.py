"""compile=True: in-place torch.compile with the eager fallback, and the config key (CPU; no inductor run here)."""
from __future__ import annotations

import logging

import pytest
import torch

import configs
from models.compile import compile_in_place
from models.factory import create_frontends, create_model
from models.registry import ARCH_SPECS

TINY_BACKBONE = dict(embed_dim=32, depth=1, num_heads=2)
TINY_WRAPPER = dict(nb_filters=[4, 8, 8, 8, 8, 8, 8], n_RNN_cell=8)


def _tiny_model_and_inputs(arch: str = "atst_frame"):
    torch.manual_seed(0)
    model = create_model(arch, backbone_kwargs=TINY_BACKBONE, **ARCH_SPECS[arch].wrapper_defaults,
                         **TINY_WRAPPER).eval()
    cnn_mel, transformer_frontend = create_frontends(arch)
    wav = 0.1 * torch.randn(2, 16_000 * 10)
    return model, (cnn_mel(wav), transformer_frontend(wav))


def _failing_backend(graph_module, example_inputs):
    raise RuntimeError("no C++ compiler for this test")


def test_failed_compilation_falls_back_to_eager_with_one_warning(caplog):
    model, inputs = _tiny_model_and_inputs()
    keys = list(model.state_dict())
    with torch.no_grad():
        expected = model(*inputs, return_strong_logits=True)
        compile_in_place(model, "the tiny model", backend=_failing_backend)
        with caplog.at_level(logging.WARNING, logger="models.compile"):
            first = model(*inputs, return_strong_logits=True)
            second = model(*inputs, return_strong_logits=True)
    warnings = [r.getMessage() for r in caplog.records if r.name == "models.compile"]
    assert len(warnings) == 1, warnings
    assert "torch.compile of the tiny model failed" in warnings[0] and "running it without compilation" in warnings[0]
    assert "\n" not in warnings[0]
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)
    assert list(model.state_dict()) == keys  # no _orig_mod. prefix


def test_unknown_backend_is_reported_at_once_and_the_model_stays_eager(caplog):
    model, inputs = _tiny_model_and_inputs()
    with caplog.at_level(logging.WARNING, logger="models.compile"):
        compile_in_place(model, "the tiny model", backend="no-such-backend")
    assert any("no-such-backend" in r.getMessage() or "failed" in r.getMessage() for r in caplog.records)
    assert model._compiled_call_impl is None


def test_compiled_model_gives_the_eager_outputs_and_keeps_its_keys():
    """Dynamo's 'eager' backend traces the whole model (graph capture, guards) without a C++ compiler."""
    model, inputs = _tiny_model_and_inputs()
    keys = list(model.state_dict())
    with torch.no_grad():
        expected = model(*inputs, return_strong_logits=True)
        compile_in_place(model, "the tiny model", backend="eager")
        got = model(*inputs, return_strong_logits=True)
    torch.testing.assert_close(got, expected)
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("stage", [1, 2])
def test_compile_key_defaults_to_false_and_must_be_a_bool(stage):
    config = configs.default_config(stage)
    assert config["compile"] is False
    configs.validate_config({**config, "compile": True}, stage)
    with pytest.raises(configs.ConfigError, match=r"compile='yes' must be True or False"):
        configs.validate_config({**config, "compile": "yes"}, stage)


@pytest.mark.parametrize("module", ["ex_stage1", "ex_stage2"])
def test_compile_is_a_command_line_key_of_both_stages(module):
    from tests.test_config import _print_config

    assert _print_config(f"python -m {module} with arch=atst_frame compile=True")["compile"] is True
