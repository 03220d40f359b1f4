"""The commands of the reference README (CPJKU/cpjku_dcase24), verbatim: kept in ``helpers.reference_recipe`` (the
demo compares its settings with them); re-exported here for the tests."""
from helpers.reference_recipe import ALL, STAGE1_TRAIN, STAGE2_PREDICTIONS, STAGE2_TRAIN

# The command of the reference README's "Example Command AudioSet Strong Pre-training" section. It uses
# strong_augment.* and apply_style where the reference's code says strong_augmentations / apply_mixstyle:
# docs/DIFFERENCES.md. Not in ALL: its named configs are words without "=".
AUDIOSET_STRONG_TRAIN = [
    """python -m ex_audioset_strong with atst_frame_arch_16khz audio_set_strong_pretraining strong_supervised_loss_weight=1.0 weak_supervised_loss_weight=0.0 weak_distillation_loss_weight=0.0 training_strong.batch_size=64 training_weak.batch_size=64 validation_weak.batch_size=128 validation_strong.batch_size=128 trainer.max_epochs=10 optimizer.lr_pt=1e-5 optimizer.lr=1e-5 optimizer.num_warmup_steps=5387 optimizer.initial_lr=1e-3 optimizer.initial_lr_pt=1e-5 trainer.check_val_every_n_epoch=1 strong_wrapper.rnn_dim=1024 strong_wrapper.rnn_layers=2 strong_wrapper.skip_audiosetwrapper=True strong_wrapper.rnn_dropout=0.0 skip_checkpoint=False atst_mel.freq_scale=1.0 strong_augment.gain_augment=0.0 strong_augment.filter_augment.apply=False strong_augment.time_augment.apply_mask=False strong_augment.time_augment.apply_shift=False strong_augment.mix_augment.apply_mixup=True strong_augment.mix_augment.mixup_p=0.3 strong_augment.mix_augment.apply_style=False""",
]

__all__ = ["ALL", "AUDIOSET_STRONG_TRAIN", "STAGE1_TRAIN", "STAGE2_TRAIN", "STAGE2_PREDICTIONS"]
