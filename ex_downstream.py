"""Fine-tune a pre-trained transformer on a HEAR-format sound event detection task (PretrainedSED's downstream recipe).

    python -m ex_downstream with task_path=<HEAR task folder> arch=atst_frame pretrained_name=<checkpoint> [key=value]
    python -m ex_downstream with pretrainedsed_atst_full task_path=hear/tasks/dcase2016_task2-hear2021-full
    python -m ex_downstream with pretrainedsed_beats_linear task_path=hear/tasks/dcase2016_task2-hear2021-full
    python -m ex_downstream test with task_path=... ckpt_path=<run>/checkpoints/best-*.ckpt
    python -m ex_downstream check_task with task_path=...
    python -m ex_downstream with demo arch=beats                 # the demo HEAR task, tiny model, CPU

Prints the onset-F1 / error-rate table of the best checkpoint on the validation and test splits. All keys and
defaults: ``configs.downstream``; docs/CONFIG.md; the method: docs/DOWNSTREAM.md.
"""
from sacred import Experiment

import configs
import configs.downstream as downstream_config
from helpers.experiment import add_checked_config, run, user_errors
from models.registry import arch_names, extra_arch_blocks

ex = Experiment("hear_downstream", save_git_info=False)
add_checked_config(ex, downstream_config.default_config(),
                   lambda config: downstream_config.validate(config, extra_arch_blocks()),
                   downstream_config.NAMED_CONFIGS)


@ex.main
def main(_config):
    """Fine-tune (or linear-probe), then validate and test the best checkpoint; print the HEAR scores."""
    from helpers.evaluation.hear import format_table  # lazy: sed_eval loads only for the commands that score
    from helpers.training.downstream import score_rows, train  # lazy: Lightning loads only to train or test

    with user_errors(ex):
        downstream_config.require_run_keys(dict(_config), arch_names())
        result = train(_config)
    print(format_table(score_rows(result)))
    print(f"best checkpoint: {result['best_model_path']}")
    return result


@ex.command
def test(_config):
    """Validate and test a downstream checkpoint (``ckpt_path=``) on the task's splits; print the HEAR scores."""
    from helpers.evaluation.hear import format_table  # lazy: sed_eval loads only for the commands that score
    from helpers.training.downstream import score_rows, test_checkpoint  # lazy: Lightning loads only to test

    with user_errors(ex):
        if not _config.get("ckpt_path"):
            raise configs.ConfigError("the test command needs ckpt_path=<checkpoint of an ex_downstream run>")
        result = test_checkpoint(_config)
    print(format_table(score_rows(result)))
    return result


@ex.command(unobserved=True)
def check_task(_config):
    """Read and check the HEAR task folder: labels, files and events per split."""
    from data_util.hear import read_task  # lazy: only this command reads the task alone

    with user_errors(ex):
        if not _config.get("task_path"):
            raise configs.ConfigError("check_task needs task_path=<HEAR task folder>")
        splits = [*_config["train_splits"], *_config["valid_splits"], *_config["test_splits"]]
        task = read_task(_config["task_path"], splits)
    print(f"{task.path}: {len(task.labels)} labels ({', '.join(task.labels)})")
    for split, files in task.files.items():
        seconds = sum(f.num_samples for f in files) / task.sample_rate
        print(f"  {split:8s} {len(files):5d} files  {seconds / 60:8.1f} min  {sum(len(f.events) for f in files):6d} events")
    return 0


if __name__ == "__main__":
    run(ex)
