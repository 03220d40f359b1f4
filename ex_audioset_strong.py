"""AudioSet-strong pre-training of the transformers (teachers, KD students), evaluation, KD targets.

    python -m ex_audioset_strong prepare_data with source_path=/data/audioset dataset_path=/data/as_strong
    python -m ex_audioset_strong check_data with dataset_path=/data/as_strong
    python -m ex_audioset_strong with teacher arch=atst_frame dataset_path=/data/as_strong
    python -m ex_audioset_strong with kd_student arch=beats training_strong.kd_logits=<ensemble KD file>
    python -m ex_audioset_strong with evaluate arch=atst_frame atst_frame.pretrained_name=ATST-F_strong_1
    python -m ex_audioset_strong store_predictions with arch=atst_frame ckpt_path=<teacher>
    python -m ex_audioset_strong ensemble_predictions with ensemble_files='("a.hdf5", "b.hdf5")' kd_out=ens.hdf5
    python -m ex_audioset_strong export with arch=atst_frame ckpt_path=<run>/checkpoints/best-....ckpt

All keys and defaults: ``configs.audioset_strong``; docs/CONFIG.md; the method: docs/AUDIOSET_STRONG.md.
"""
import os
import sys

from sacred import Experiment

import configs
import configs.audioset_strong as as_config
from data_util.kd_logits import KDFileError
from helpers.errors import exit_on_user_error
from helpers.experiment import add_checked_config, run
from models.registry import arch_names, extra_arch_blocks

ex = Experiment("audioset_strong", save_git_info=False)
add_checked_config(ex, as_config.default_config(),
                   lambda config: as_config.validate_config(config, extra_arch_blocks()), as_config.NAMED_CONFIGS)


def user_errors():
    """A command's body: on the command line a user error (helpers.errors, plus KD files and existing outputs) is
    one message and exit status 2 (``T4SED_DEBUG=1`` shows the traceback); in-process runs get the exception."""
    return exit_on_user_error(getattr(ex, "exit_on_user_error", False), getattr(ex, "debug", False),
                              extra=(KDFileError, FileExistsError))


@ex.main
def main(_config):
    """Train (``ckpt_path=<last.ckpt>`` resumes) and export the final model; ``with evaluate``: validation only."""
    from helpers.training import audioset_strong_run  # lazy: Lightning loads only for the commands that run models

    with user_errors():
        configs.require_arch(_config["arch"], arch_names())
        if _config["evaluate"]:
            return audioset_strong_run.evaluate(_config)
        return audioset_strong_run.train(_config)


@ex.command(unobserved=True)
def prepare_data(_config):
    """PaSST HDF5 files + strong tsvs (``source_path``) -> the prepared dataset (``dataset_path``); resumable."""
    from data_util import audioset_strong_prepare as prepare  # lazy: each data command loads only its own module

    with user_errors():
        report = prepare.prepare_audioset_strong(
            as_config.source_dir(_config), as_config.dataset_dir(_config),
            workers=_config["prepare_workers"] or os.cpu_count() or 1, overwrite=bool(_config["overwrite"]))
    print(report.summary())
    return 0


@ex.command(unobserved=True)
def check_data(_config):
    """One table of the prepared dataset and the source files; exit 1 if the dataset is missing or malformed."""
    from data_util import audioset_strong_check as check  # lazy: each data command loads only its own module

    with user_errors():
        report = check.check_data(as_config.source_dir(_config), as_config.dataset_dir(_config))
    print(check.format_report(report))
    if not report.ok:
        sys.exit(1)
    return 0


@ex.command(unobserved=True)
def store_predictions(_config):
    """The strong logits of a teacher (``ckpt_path``) on ``store_splits``, as a KD file (``kd_out``)."""
    from helpers.predictions import audioset_strong as predictions  # lazy: torch loads only for this command

    with user_errors():
        return str(predictions.store_predictions(_config))


@ex.command(unobserved=True)
def ensemble_predictions(_config):
    """The mean of the logits of ``ensemble_files`` (weighted by ``ensemble_weights``) into ``kd_out``."""
    from helpers.predictions import audioset_strong as predictions  # lazy: torch loads only for this command

    with user_errors():
        return str(predictions.ensemble_predictions(_config))


@ex.command(unobserved=True)
def export(_config):
    """A training checkpoint (``ckpt_path``) -> ``.pt`` in PretrainedSED's layout + ``.json``, next to it."""
    from helpers.training import audioset_strong_run  # lazy: Lightning loads only for the commands that run models

    with user_errors():
        return str(audioset_strong_run.export_checkpoint(_config))


if __name__ == "__main__":
    run(ex)
