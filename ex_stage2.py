"""Stage 2: fine-tune transformer + CRNN end to end; store, ensemble and evaluate predictions.

    python -m ex_stage2 with arch=atst_frame t4_wrapper.model_init_id=atst_stage1 [key=value ...]
    python -m ex_stage2 store_predictions with arch=fpasst pretrained_name=passt_stage2
    python -m ex_stage2 ensemble_predictions with pretrained_names='("atst_stage2", "passt_stage2")' out_name=ens
    python -m ex_stage2 eval_predictions with arch=atst_frame pretrained_name=ens

All keys and defaults: ``configs.default_config(2)``; docs/CONFIG.md.
"""
from sacred import Experiment

from helpers.experiment import run, setup_experiment, user_errors

STAGE = 2
ex = Experiment("dcase24_t4_desed", save_git_info=False)
setup_experiment(ex, STAGE)


@ex.command(unobserved=True)
def store_predictions(_config):
    """Write the strong logits of a checkpoint on every set: ``<output_path>/<pretrained_name>[_t]/<set>.hdf5``."""
    # lazy: torch and the model stack load only for these commands, not for print_config or check_data
    from helpers.predictions import commands as prediction_commands

    with user_errors(ex):
        return prediction_commands.store_predictions(_config)


@ex.command(unobserved=True)
def ensemble_predictions(_config):
    """Mean (weighted by `ensemble_weights`) of the logits of ``pretrained_names`` per set into ``<preds_path>/<out_name>/``."""
    # lazy: torch and the model stack load only for these commands, not for print_config or check_data
    from helpers.predictions import commands as prediction_commands

    with user_errors(ex):
        return prediction_commands.ensemble_predictions(_config)


@ex.command(unobserved=True)
def eval_predictions(_config):
    """PSDS1 (devtest, public eval), MAESTRO mpAUC, cSEBBs; report, plots and the private-eval submission."""
    # lazy: torch and the model stack load only for these commands, not for print_config or check_data
    from helpers.predictions import commands as prediction_commands

    with user_errors(ex):
        return prediction_commands.eval_predictions(_config)

if __name__ == "__main__":
    run(ex)
