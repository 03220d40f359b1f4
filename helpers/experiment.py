"""What both Sacred experiments share: the config tree, named configs, strict key checking, data commands.

``ex_stage1.py`` and ``ex_stage2.py`` create their ``Experiment`` and call ``setup_experiment(ex, stage)``; they
only add what differs (stage 2's prediction commands).
"""
from __future__ import annotations

import inspect
import logging
import sys
from typing import Callable, Mapping

import configs
from helpers.errors import debug_enabled, exit_on_user_error
from models.registry import arch_names, extra_arch_blocks

log = logging.getLogger(__name__)


class _DropSacredConfigNoise(logging.Filter):
    """Sacred warns about every key a named config adds or retypes; ``configs.validate_config`` checks keys instead."""

    NOISE = ("Added new config entry", "Changed type of config entry")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def _experiment_logger() -> logging.Logger:
    logger = logging.getLogger("t4sed")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))
        handler.addFilter(_DropSacredConfigNoise())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def add_checked_config(ex, defaults: dict, validate: Callable[[dict], None],
                       named_configs: Mapping[str, dict] | None = None) -> None:
    """Sacred plumbing every experiment shares: the default tree, named configs, and a config hook that runs
    ``validate`` (which raises ``configs.ConfigError``) on the resolved config before any command; on the command
    line the error is one clean message and exit status 2. Used by the T4 stages here and by any other experiment
    built on the same config schema machinery."""
    ex.logger = _experiment_logger()
    ex.add_config(defaults)
    for name, updates in (named_configs or {}).items():
        ex.add_named_config(name, updates)

    @ex.config_hook
    def _validate(config, command_name, logger):
        try:
            validate(config)
        except configs.ConfigError as e:
            if getattr(ex, "exit_on_config_error", False) and not getattr(ex, "debug", False):  # command line
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
            raise
        return {}

    ex.capture(_all_sections(defaults))


def setup_experiment(ex, stage: int) -> None:
    """Add config, named configs, config validation and the data commands to ``ex``."""
    add_checked_config(ex, configs.default_config(stage),
                       lambda config: configs.validate_config(config, stage, extra_arch_blocks()),
                       {"demo": configs.demo_config(stage)})

    @ex.main
    def main(_config):
        """Train (``python -m ex_stage{1,2} with arch=... [ckpt_path=<last.ckpt> to resume]``), then test the best."""
        from helpers.training.train import train  # lazy: Lightning loads only for the commands that train or test

        with user_errors(ex):
            configs.require_arch(_config["arch"], arch_names())
            return train(_config, stage)

    @ex.command
    def test(_config):
        """Test a checkpoint (``ckpt_path=<file or name in resources/pretrained_models>``) on the test sets."""
        # lazy: Lightning loads only for the commands that train or test
        from helpers.training.train import test_checkpoint

        with user_errors(ex):
            configs.require_arch(_config["arch"], arch_names())
            if not _config["ckpt_path"]:
                raise configs.ConfigError("the test command needs ckpt_path=<checkpoint file or name>")
            return test_checkpoint(_config, stage, _config["ckpt_path"])

    @ex.command(unobserved=True)
    def check_data(_config):
        """Print one table of every data set (folder, files found, expected, status); exit 1 if anything is missing."""
        from data_util import doctor  # lazy: each data command loads only its own module

        with user_errors(ex):
            report = doctor.check_data(configs.dataset_root(_config), configs.resources_dir(_config), stage=stage,
                                       sample_audio=doctor.DEFAULT_AUDIO_SAMPLES)
        print(doctor.format_report(report))
        if not report.ok:
            sys.exit(1)
        return 0

    @ex.command(unobserved=True)
    def prepare_data(_config):
        """Resample the 44.1 kHz originals into the missing ``_16k`` folders (parallel, resumable, atomic per file)."""
        from data_util import prepare  # lazy: each data command loads only its own module

        with user_errors(ex):
            result = prepare.prepare_data(configs.dataset_root(_config))
        print(result.as_dict())
        if result.failed:
            sys.exit(1)
        return 0


def _all_sections(config: dict):
    """A captured function taking every top-level key, so that Sacred treats all sections as used.

    Sacred raises its own ``ConfigAddedError`` for a new key only when no captured function takes the key or a parent
    of it, and lets a typo under a used parent pass as a warning. ``configs.validate_config`` (the config hook above)
    is the single authority on keys instead: it checks every key at every depth and reports all errors at once.
    """

    def config_sections(**sections):
        return sections

    config_sections.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in config]
    )
    return config_sections


def user_errors(ex):
    """Context of a command's body: on the command line a user error (``helpers.errors``) is one message and exit
    status 2, unless debugging (``T4SED_DEBUG=1``, ``--debug``); in-process runs (``ex.run``) get the exception."""
    return exit_on_user_error(getattr(ex, "exit_on_user_error", False), getattr(ex, "debug", False))


def run(ex, argv=None) -> None:
    """Command-line entry point: Sacred's, with config and other user errors shown as one clear message."""
    argv = argv if argv is not None else sys.argv
    ex.exit_on_config_error = True
    ex.exit_on_user_error = True
    ex.debug = debug_enabled(argv)
    ex.run_commandline(argv)
