"""User errors on the command line: one message naming the file / key / value and the fix, no traceback.

A *user error* is a problem with what the user gave (a config value, a data set, a checkpoint file, an audio file,
a prediction folder), as opposed to a bug. Its exception already carries the whole message, so the command-line
entry points (``helpers.experiment.run`` for both Sacred experiments, ``inference.main``) print ``error: <message>``
to stderr and exit with status 2 instead of showing a traceback. The traceback is still one switch away: the
environment variable ``T4SED_DEBUG=1`` (or Sacred's own ``--debug`` / ``-d`` flag of the experiments) re-raises
the exception unchanged. In-process callers (tests, notebooks, ``ex.run``) always get the exception itself.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

import configs

DEBUG_ENV = "T4SED_DEBUG"
DEBUG_FLAGS = ("--debug", "-d")  # Sacred's flags: the experiments re-raise with them
USER_ERROR_EXIT_CODE = 2

# torch's DataLoader re-raises a worker's exception with the worker's traceback as text in the message.
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions whose message is the whole story (each names the file, key or value and says what to do)."""
    # lazy: these modules pull in torch, which `print_config` / `check_data` do not need (all six imports)
    from data_util.audio import AudioReadError  # lazy: as above
    from data_util.doctor import DataCheckError  # lazy: as above
    from data_util.hear import HearTaskError  # lazy: as above
    from data_util.prediction_files import PredictionCommandError, PredictionFileError  # lazy: as above
    from data_util.tsv import TsvFormatError  # lazy: as above
    from models.checkpoints import CheckpointError  # lazy: as above

    return (configs.ConfigError, DataCheckError, CheckpointError, TsvFormatError, AudioReadError,
            PredictionCommandError, PredictionFileError, FileNotFoundError, HearTaskError)


def debug_enabled(argv: Sequence[str] | None = None) -> bool:
    """``T4SED_DEBUG`` is set to anything but ``0`` / empty, or ``argv`` holds ``--debug`` / ``-d``."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    return any(flag in DEBUG_FLAGS for flag in (argv or ()))


def user_message(error: BaseException) -> str:
    """The message to show for ``error``: its text, without the worker traceback a DataLoader adds."""
    text = str(error)
    if _WORKER_TRACEBACK in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last
    return text


@contextmanager
def exit_on_user_error(enabled: bool, debug: bool, extra: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Inside the block, a user error prints ``error: <message>`` and exits with status 2, when ``enabled`` (the
    command line) and not ``debug``; otherwise it propagates unchanged. ``extra``: more user-error types."""
    try:
        yield
    except BaseException as error:
        if not isinstance(error, user_error_types() + extra):
            raise
        if not enabled or debug:
            raise
        print(f"error: {user_message(error)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
