"""The reference recipe as data: the training and prediction commands of the reference README
(CPJKU/cpjku_dcase24, iteration 2), verbatim, and the config each training command resolves to.

The demo (``helpers.demo_recipe``) prints where its settings differ from these; the tests run every command
(``tests/test_config.py``, ``tests/test_reference_commands_run.py``).
"""
from __future__ import annotations

import ast
import copy
import shlex

import configs


STAGE1_TRAIN = [
    """python -m ex_stage1 with arch=atst_frame loss_weights="(0.5, 0.25, 0.12, 0.1, 0.1, 1.5)" trainer.max_epochs=200 optimizer.crnn_lr=0.0005 filter_augment.apply=0 mix_augment.apply_mixstyle=0 ssl_no_class_mask=1 wandb.name=s1.i2,atst""",
    """python -m ex_stage1 with arch=fpasst loss_weights="(0.5, 0.25, 0.12, 0.1, 0.1, 1.5)" trainer.max_epochs=200 optimizer.crnn_lr=0.0005 filter_augment.apply=0 exclude_maestro_weak_ssl=1 t4_wrapper.embed_pool=int t4_wrapper.interpolation_mode=nearest-exact mix_augment.apply_mixstyle=0 passt_mel.fmax_aug_range=2000 wandb.name=s1.i2,pfasst""",
    """python -m ex_stage1 with arch=beats loss_weights="(0.5, 0.25, 0.08, 0.1, 0.1, 1.5)" trainer.max_epochs=200 optimizer.crnn_lr=0.0005 filter_augment.apply=0 t4_wrapper.no_wrapper=1 ssl_no_class_mask=1 trainer.accumulate_grad_batches=4 "training.batch_sizes=(3, 3, 3, 5, 5)" t4_wrapper.embed_pool=int t4_wrapper.interpolation_mode=nearest-exact wandb.name=s1.i2,beats""",
]

STAGE2_TRAIN = [
    """python -m ex_stage2 with arch=atst_frame trainer.accumulate_grad_batches=8 loss_weights="(12, 3, 0.25, 1, 60, 0)" t4_wrapper.model_init_id=atst_stage1 optimizer.pt_lr_scale=0.5 optimizer.cnn_lr=1e-5 optimizer.rnn_lr=1e-4 freq_warp.include_maestro=1 optimizer.adamw=1 optimizer.weight_decay=1e-3 wandb.name=s2.i2,atst""",
    """python -m ex_stage2 with arch=fpasst trainer.accumulate_grad_batches=8 loss_weights="(12, 3, 0.25, 1, 60, 0)" t4_wrapper.model_init_id=passt_stage1 freq_warp.apply=0 optimizer.adamw=1 optimizer.weight_decay=1e-3 passt_mel.fmin_aug_range=1 passt_mel.fmax_aug_range=2000 optimizer.cnn_lr=5e-5 optimizer.rnn_lr=5e-4 exclude_maestro_weak_ssl=1 t4_wrapper.embed_pool=int t4_wrapper.interpolation_mode=nearest-exact wandb.name=s2.i2,passt""",
    """python -m ex_stage2 with arch=beats loss_weights="(12, 3, 0.25, 1, 60, 0)" trainer.accumulate_grad_batches=36 "training.batch_sizes=(3, 2, 2, 3, 3)" t4_wrapper.model_init_id=beats_stage1 freq_warp.include_maestro=1 optimizer.adamw=1 optimizer.weight_decay=1e-3 t4_wrapper.no_wrapper=1 optimizer.cnn_lr=5e-5 optimizer.rnn_lr=5e-4 t4_wrapper.embed_pool=int t4_wrapper.interpolation_mode=nearest-exact exclude_maestro_weak_ssl=1 wandb.name=s2.i2,beats""",
]

STAGE2_PREDICTIONS = [
    """python -m ex_stage2 store_predictions with arch=atst_frame t4_wrapper.model_init_id=atst_stage2""",
    """python -m ex_stage2 store_predictions with arch=fpasst pretrained_name=passt_stage2""",
    """python -m ex_stage2 store_predictions with arch=beats t4_wrapper.no_wrapper=1 pretrained_name=beats_stage2""",
    """python -m ex_stage2 ensemble_predictions with pretrained_names='("atst_stage2", "passt_stage2", "beats_stage2")' out_name="ensemble_3\"""",
    """python -m ex_stage2 eval_predictions with arch=atst_frame pretrained_name="ensemble_3\"""",
]

ALL = STAGE1_TRAIN + STAGE2_TRAIN + STAGE2_PREDICTIONS


def command_updates(command: str) -> dict:
    """The ``key=value`` words after ``with`` in ``command`` as Python values (a literal where one parses, as
    Sacred's command line does, else the text)."""
    words = shlex.split(command)
    updates = {}
    for word in words[words.index("with") + 1:]:
        key, text = word.split("=", 1)
        try:
            updates[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            updates[key] = text
    return updates


def training_command(stage: int, arch: str) -> str:
    """The README's training command of ``arch`` for ``stage`` (1 or 2)."""
    commands = STAGE1_TRAIN if stage == 1 else STAGE2_TRAIN
    found = [c for c in commands if f" arch={arch} " in c]
    if len(found) != 1:
        raise ValueError(f"no reference stage-{stage} training command for arch={arch!r}")
    return found[0]


def apply_updates(config: dict, updates: dict) -> dict:
    """Set dotted keys (``"optimizer.crnn_lr": 5e-4``) in a nested config dict, in place, as Sacred does."""
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = copy.deepcopy(value)
    return config


def reference_config(stage: int, arch: str) -> dict:
    """The config the README's stage-``stage`` training command of ``arch`` resolves to."""
    return apply_updates(configs.default_config(stage), command_updates(training_command(stage, arch)))


__all__ = ["STAGE1_TRAIN", "STAGE2_TRAIN", "STAGE2_PREDICTIONS", "ALL", "command_updates", "training_command",
           "apply_updates", "reference_config"]
