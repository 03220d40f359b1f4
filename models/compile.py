"""``compile=True``: ``torch.compile`` of a model in place, falling back to eager execution with one line.

The reference's AudioSet-strong experiment has a ``compile`` key (default False); we honour it in training (student
and teacher), ``store_predictions`` and ``inference.py --compile``.

``compile_in_place(module)`` compiles the module's call the way ``nn.Module.compile`` does: the module object, its
attribute names and so its state-dict keys stay as they are (``torch.compile(module)`` would wrap it and prefix
every key with ``_orig_mod.``). Compilation happens at the first call; if it fails there (no C++ compiler for
inductor on the CPU, an unsupported operator, an old GPU), one warning names the module and the error, and the
module runs eagerly from then on, with the same results. Errors after a successful first call are the model's own
and propagate.

Compile a module only after any ``copy.deepcopy`` of it (e.g. the EMA teacher is a deep copy of the student): a
copy would share the original's compiled call.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


def compile_in_place(module: nn.Module, name: str, *, backend: str | Callable = "inductor",
                     mode: str | None = None, dynamic: bool | None = None) -> nn.Module:
    """Compile ``module``'s calls in place (state-dict keys unchanged); eager fallback with one warning."""
    eager_call = module._call_impl
    try:
        compiled_call = torch.compile(eager_call, backend=backend, mode=mode, dynamic=dynamic)
    except Exception as error:  # an unknown backend or mode is reported when torch.compile is called
        _warn(name, error)
        return module
    state = {"checked": False, "failed": False}

    def call(*args: Any, **kwargs: Any):
        if state["failed"]:
            return eager_call(*args, **kwargs)
        if state["checked"]:
            return compiled_call(*args, **kwargs)
        try:
            result = compiled_call(*args, **kwargs)
        except Exception as error:  # compilation runs (and fails) at the first call
            state["failed"] = True
            _warn(name, error)
            return eager_call(*args, **kwargs)
        state["checked"] = True
        return result

    # nn.Module.__call__ runs _compiled_call_impl when set: the mechanism of nn.Module.compile()
    module._compiled_call_impl = call
    return module


def _warn(name: str, error: BaseException) -> None:
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    log.warning("compile=True: torch.compile of %s failed (%s: %s); running it without compilation",
                name, type(error).__name__, first_line)


__all__ = ["compile_in_place"]
