"""Paths and shared configuration blocks of both Sacred experiments.

Resolution rules (documented in README.md):
- the dataset root is the Sacred key ``base_path`` when given, else the environment variable
  ``T4_DATASET_PATH``, else ``DEFAULT_DATASET_PATH`` (``./data`` in the repository);
- ``resources/`` (checkpoints, predictions, pseudo-labels, impulse responses, split tsvs) is always the
  folder next to this file, whatever the working directory.
"""
from __future__ import annotations

import os
from pathlib import Path

from data_util.classes import MEDIAN_WINDOWS

REPO_ROOT = Path(__file__).resolve().parent
RESOURCES_DIR = REPO_ROOT / "resources"
PRETRAINED_MODELS_DIR = RESOURCES_DIR / "pretrained_models"
PREDICTIONS_DIR = RESOURCES_DIR / "predictions"
PSEUDO_LABELS_DIR = RESOURCES_DIR / "pseudo-labels"
DIRS_DIR = RESOURCES_DIR / "dirs"
DEMO_DATASET_PATH = REPO_ROOT / "demo_data"

DATASET_ENV_VAR = "T4_DATASET_PATH"
DEFAULT_DATASET_PATH = REPO_ROOT / "data"


def resolve_dataset_path(base_path: str | os.PathLike | None = None) -> Path:
    """The dataset root: ``base_path`` if set, else ``$T4_DATASET_PATH``, else ``DEFAULT_DATASET_PATH``."""
    if base_path not in (None, ""):
        return Path(base_path).expanduser().resolve()
    env = os.environ.get(DATASET_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return DEFAULT_DATASET_PATH


def resolve_resource(name_or_path: str | os.PathLike, folder: Path, suffixes: tuple[str, ...] = ()) -> Path:
    """A file given either as a path or as a name inside a resources folder (with optional suffixes tried)."""
    candidate = Path(name_or_path).expanduser()
    tried = []
    for base in ((candidate,) if candidate.is_absolute() else (candidate, folder / candidate)):
        for suffix in ("",) + suffixes:
            path = base.with_name(base.name + suffix) if suffix else base
            tried.append(path)
            if path.is_file():
                return path.resolve()
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a file nor a name in {folder}; looked for: "
        + ", ".join(str(p) for p in tried)
    )


def _folder_key(config, key: str, default: Path) -> Path:
    value = config.get(key)
    return Path(value).expanduser().resolve() if value not in (None, "") else default


def dataset_root(config) -> Path:
    """``base_path`` of a resolved config (see ``resolve_dataset_path``)."""
    return resolve_dataset_path(config.get("base_path"))


def resources_dir(config) -> Path:
    """``resources_path``: the data-side resources (external-strong splits, exclude lists, impulse responses)."""
    return _folder_key(config, "resources_path", RESOURCES_DIR)


def model_dir(config) -> Path:
    """``model_path``: where checkpoint names are looked up (None: ``resources/pretrained_models``)."""
    return _folder_key(config, "model_path", PRETRAINED_MODELS_DIR)


def output_dir(config) -> Path:
    """``output_path``: where ``store_predictions`` writes (None: ``resources/predictions``)."""
    return _folder_key(config, "output_path", PREDICTIONS_DIR)


def preds_dir(config) -> Path:
    """``preds_path``: where ensemble / eval / pseudo-label names are looked up (None: ``resources/predictions``)."""
    return _folder_key(config, "preds_path", PREDICTIONS_DIR)


# --------------------------------------------------------------------------------------------------------------------
# Sacred configuration of both experiments.
#
# Keys and defaults are the reference's (CPJKU/cpjku_dcase24 ex_stage1.py / ex_stage2.py), so its README commands work
# verbatim. Stage differences are the explicit ``if stage == 1`` branches below. Keys we removed or added are listed in
# docs/DIFFERENCES.md and docs/CONFIG.md. ``validate_config`` rejects every key that is not in this tree.
# --------------------------------------------------------------------------------------------------------------------
ARCHS = ("atst_frame", "fpasst", "beats")
NUM_LOSS_WEIGHTS = 6  # (maestro strong, DESED real strong, synth strong, weak, SSL, pseudo-label)
NUM_SUB_BATCHES = 5  # (MAESTRO real, DESED real strong + external strong, synth, weak, unlabeled)


def default_config(stage: int) -> dict:
    """The full default config tree of ``ex_stage{stage}``."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    s1 = stage == 1
    sample_rate = 16_000
    config = dict(
        arch=None,  # required: atst_frame | fpasst | beats
        base_path=None,  # dataset root; None -> $T4_DATASET_PATH -> ./data (see resolve_dataset_path)
        resources_path=None,  # folder with external_strong_split/, exclude/, dirs/; None -> the repo's resources/
        pseudo_labels=None,  # folder (or name in resources/predictions) of pseudo-label files; None -> resources/pseudo-labels
        model_path=None,  # folder where checkpoint names are looked up; None -> resources/pretrained_models
        ckpt_path=None,  # training: a Lightning checkpoint (e.g. <run>/checkpoints/last.ckpt) to resume; `test`: the checkpoint
        audio_len=10,
        sample_rate=sample_rate,
        gain_augment=0,
        ema_factor=0.999,
        val_thresholds=[0.5],
        test_n_thresholds=50,
        atst_checkpoint="atst_as.ckpt",
        beats_checkpoint="beats_as.pt",
        # torch.compile of the SED model (training: student and teacher; store_predictions), as the reference's
        # AudioSet-strong experiment's key; a compilation failure falls back to eager with one warning
        compile=False,
        trainer=dict(
            max_epochs=200 if s1 else 250,
            devices=1,
            benchmark=True,
            num_sanity_val_steps=0,
            precision="16-mixed",
            default_root_dir="./outputs",
            accumulate_grad_batches=1,
            check_val_every_n_epoch=10,
        ),
        optimizer=dict(
            crnn_lr=0.001,
            pt_lr=0.0,
            pt_lr_scale=1.0,
            pt_trainable_layers=0,  # stage 1: the transformer is frozen
            adamw=True,
            weight_decay=1e-2,
            betas=(0.9, 0.999),
            schedule_mode="cos",
            num_warmup_steps=4000,
            gamma=0.999996,  # schedule_mode="exp"
            lr_end=1e-7,  # schedule_mode="linear"
        )
        if s1
        else dict(
            cnn_lr=0.0001,
            rnn_lr=0.001,
            pt_lr=0.0001,
            pt_lr_scale=1.0,
            pt_trainable_layers="all",
            adamw=False,
            weight_decay=1e-4,
            betas=(0.9, 0.999),
            schedule_mode="cos",
            num_warmup_steps=270,
            gamma=0.999996,
            lr_end=1e-7,
        ),
        mel=dict(
            n_mels=128,
            n_fft=2048,
            hop_length=256,
            win_length=2048,
            sample_rate=sample_rate,
            f_min=0,
            f_max=8000,
            window_fn="hamming",
            wkwargs={"periodic": False},
            power=1,
        ),
        passt_mel=dict(
            n_mels=128,
            sr=16_000,
            win_length=400,
            hopsize=160,
            n_fft=512,
            freqm=0,
            timem=0,
            htk=False,
            fmin=0.0,
            fmax=None,
            norm=1,
            fmin_aug_range=1 if s1 else 10,
            fmax_aug_range=1 if s1 else 1000,
            fast_norm=True,
            preamp=True,
            trainable=False,
            padding="center",
            periodic_window=True,
        ),
        fpasst=dict(
            arch="passt_deit_bd_p16_384",
            n_classes=527,
            embed_dim=768,
            sample_rate=16_000,
            pos_embed_length=250,
            frame_patchout=0,
            in_channels=16,
            pretrained_name="passt_as_strong",
            depth=12,
            num_heads=12,
            drop_top_layers=0,
        ),
        atst_frame=dict(
            pretrained_name="atst_as_strong",
            embed_dim=768,
            depth=12,
            num_heads=12,
            drop_top_layers=0,
            per_sample_top_db=False,
        ),
        beats=dict(
            pretrained_name=None,
            embed_dim=768,
            depth=12,
            num_heads=12,
            drop_top_layers=0,
        ),
        encoder=dict(audio_len=10, frame_len=2048, frame_hop=256, net_pooling=4, fs=sample_rate),
        t4_wrapper=dict(
            audioset_classes=527,
            no_wrapper=False,
            n_in_channel=1,
            nclass=27,
            activation="cg",
            dropout=0.3 if s1 else 0.5,
            attention=True,
            n_RNN_cell=256,
            n_layers_RNN=2,
            dropout_recurrent=0,
            embedding_size=768,
            model_init_id=None,
            model_init_mode="student" if s1 else "teacher",  # checkpoint entry the *teacher* starts from
            kernel_size=[3] * 7,
            padding=[1] * 7,
            stride=[1] * 7,
            nb_filters=[16, 32, 64, 128, 128, 128, 128],
            pooling=[[2, 2], [2, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]],
            embed_pool="aap",
            interpolation_mode="nearest",
            dropstep_recurrent=0.0,
            dropstep_recurrent_len=16,
        ),
        training=dict(
            sample_rate=sample_rate,
            audio_length=10.0,
            include_external_strong=True,
            exclude_overlapping=True,
            dir_p=0.0 if s1 else 0.5,
            dir_desed_strong=True,
            dir_weak=True,
            dir_unlabeled=True,
            dir_maestro=True,
            wavmix_p=0.5,
            wavmix_target="strong",
            use_desed_maestro_alias=True,
            use_pseudo_labels=True,
            batch_sizes=(12, 10, 10, 20, 20) if s1 else (7, 5, 5, 9, 9),
            num_workers=16,
            weak_split=0.9,
            maestro_split=0.9,
            seed=42,
            skip_unreadable=False,
            checkpoint_every_n_steps=None,  # ours: also write last.ckpt every N optimizer steps (mid-epoch resume)
        ),
        validation=dict(sample_rate=sample_rate, audio_length=10.0, batch_size=20, num_workers=16,
                        weak_split=0.9, maestro_split=0.9, seed=42),
        test=dict(sample_rate=sample_rate, audio_length=10.0, batch_size=20, num_workers=16),
        loss_weights=(0.08, 0.05, 0.08, 0.21, 0.58, 0.0) if s1 else (2, 1, 1, 1, 70, 0),
        ssl_scale_max=2.0 if s1 else 1.0,
        ssl_loss_warmup_steps=14_000 if s1 else 270,
        ssl_no_class_mask=False,
        include_maestro_ssl=True,
        exclude_maestro_weak_ssl=False,
        median_window=list(MEDIAN_WINDOWS),
        filter_augment=dict(apply=1, p=0.8, n_transform=2 if s1 else 1, filter_db_range=(-6, 6),
                            filter_bands=(3, 6), filter_minimum_bandwidth=6),
        time_augment=dict(apply_mask=not s1, apply_shift=False, mask_target="desed_strong", shift_range=0.075,
                          shift_target="desed", min_mask_ratio=0.05, max_mask_ratio=0.3),
        mix_augment=dict(
            apply_mixup=True, apply_mixstyle=True, mixup_p=0.5, mixstyle_p=0.5, mixstyle_alpha=0.3,
            mixup_unlabeled=True, mixup_desed_strong=True, mixup_maestro=True, mixup_weak=True,
            mixup_max_coef=True, mixup_desed_maestro=True, mixstyle_desed_strong=True, mixstyle_maestro=True,
            mixstyle_unlabeled=True, mixstyle_weak=True, mixstyle_desed_maestro=True,
        ),
        loss=dict(maestro_type="BCELoss", pseudo_type="BCELoss", selfsup_type="MSELoss",
                  harden_labels_maestro_p=0.0, harden_pseudo_labels_p=0.0),
        scaler=dict(statistic="instance", normtype="minmax", dims=(2, 3)),
        wandb=dict(name=None, project="dcase24_task4", offline=False, tags=[]),
    )
    if s1:
        config["pseudo_strong_no_class_mask"] = False
    else:
        config["freq_warp"] = dict(apply=1, p=0.5, include_maestro=False)
        config["use_ict_loss"] = True
        # store_predictions / ensemble_predictions / eval_predictions (top-level keys, as the reference's commands).
        config.update(
            pretrained_name=None,  # None -> t4_wrapper.model_init_id -> "atst_stage2"
            pretrained_names=("atst_stage2", "passt_stage2", "beats_stage2"),
            # ensemble_predictions: one non-negative weight per pretrained_names entry (normalised to sum 1);
            # None -> equal weights (the reference's plain mean)
            ensemble_weights=None,
            store_sets=None,  # ours: store_predictions writes only these sets (None: all 12)
            out_name=None,
            mode="student",
            batch_size=128,
            output_path=None,  # None -> resources/predictions
            preds_path=None,  # None -> resources/predictions
            overwrite=False,
            predict_precision="32",  # store_predictions: "32", or "bf16-mixed" / "16-mixed" (autocast on a GPU)
            classwise=True,
            step_filter_lengths=(0.38, 0.42, 0.46, 0.50, 0.54, 0.58, 0.62, 0.66),
            merge_thresholds_rel=(1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25),
            merge_thresholds_abs=(0.15, 0.175, 0.2, 0.225, 0.25, 0.275, 0.3, 0.325),
            num_jobs=None,  # cSEBBs tuning processes; None -> all cores
            cross_validation_folds=5,  # honest (cross-validated) cSEBBs figure for devtest; 0 disables it
        )
    return config


# Small model sizes for the demo and the end-to-end tests (random init, no checkpoint download).
TINY_BACKBONE = dict(embed_dim=64, depth=2, num_heads=2, drop_top_layers=0)


def demo_config(stage: int) -> dict:
    """Named config ``demo``: the demo dataset, tiny models, CPU, a few epochs, wandb off-line."""
    demo_root = str(DEMO_DATASET_PATH)
    return dict(
        base_path=demo_root,
        resources_path=str(DEMO_DATASET_PATH / "resources"),
        trainer=dict(max_epochs=3 if stage == 1 else 2, precision="32", accelerator="cpu", devices=1,
                     check_val_every_n_epoch=1, benchmark=False, default_root_dir="./outputs/demo",
                     log_every_n_steps=5),
        # a barely trained demo model is dragged back by the reference's SSL weight (60-70): smaller SSL weight,
        # no pseudo-label term (iteration 1), a higher CRNN learning rate for the few demo steps
        loss_weights=(0.5, 0.25, 0.12, 0.1, 0.1, 0) if stage == 1 else (12, 3, 0.25, 1, 6, 0),
        optimizer=dict(num_warmup_steps=20, crnn_lr=2e-3) if stage == 1 else dict(num_warmup_steps=10),
        atst_checkpoint=None,  # random init: no backbone file is read
        beats_checkpoint=None,
        atst_frame=dict(pretrained_name=None, **TINY_BACKBONE),
        fpasst=dict(pretrained_name=None, embed_dim=TINY_BACKBONE["embed_dim"], depth=2, num_heads=2),
        beats=dict(pretrained_name=None, **TINY_BACKBONE),
        t4_wrapper=dict(nb_filters=[8, 16, 16, 32, 32, 32, 32], n_RNN_cell=32, embedding_size=64),
        training=dict(batch_sizes=(2, 2, 2, 2, 2), num_workers=0),
        validation=dict(batch_size=8, num_workers=0),
        test=dict(batch_size=8, num_workers=0),
        ssl_loss_warmup_steps=50,
        wandb=dict(offline=True, project="dcase24_task4_demo"),
        model_path=demo_root + "/pretrained_models",
        **(dict(output_path=demo_root + "/predictions", preds_path=demo_root + "/predictions") if stage == 2 else {}),
    )


def merge_config(tree: dict, updates: dict) -> dict:
    """Recursively update ``tree`` in place with ``updates`` (as Sacred applies named configs); returns ``tree``."""
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            merge_config(tree[key], value)
        else:
            tree[key] = value
    return tree


def demo_defaults(stage: int) -> dict:
    """``default_config(stage)`` with the ``demo`` named config applied (what ``with demo`` resolves to)."""
    return merge_config(default_config(stage), demo_config(stage))


class ConfigError(ValueError):
    """A config key or value that the experiments do not accept."""


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("wkwargs",):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _trainer_arguments() -> set[str]:
    import inspect

    import pytorch_lightning as pl

    return {p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"}


# Keys Sacred itself adds to every config.
_SACRED_KEYS = {"seed"}


def ensemble_weight_errors(weights, pretrained_names) -> list[str]:
    """The problems of the stage-2 key ``ensemble_weights`` ([] when it is fine).

    Accepted: None (equal weights), or a list/tuple of finite non-negative numbers, one per ``pretrained_names``
    entry, with a positive sum. Shared by ``validate_config`` and ``ensemble_predictions`` (which can also be
    called without Sacred), so both give the same messages.
    """
    import math
    import numbers

    if weights is None:
        return []
    shown = f"ensemble_weights={weights!r}"
    if not isinstance(weights, (list, tuple)):
        return [f"{shown} must be a list of non-negative numbers, one per pretrained_names entry "
                "(e.g. ensemble_weights='(2, 1, 1)'), or None for equal weights"]
    not_numbers = [w for w in weights if isinstance(w, bool) or not isinstance(w, numbers.Real)]
    if not_numbers:
        return [f"{shown}: {not_numbers!r} are not numbers; every weight must be a non-negative number"]
    errors = []
    names = list(pretrained_names or ())
    if len(weights) != len(names):
        errors.append(f"{shown} has {len(weights)} values but pretrained_names={tuple(names)!r} has {len(names)}: "
                      "give one weight per ensemble member")
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        errors.append(f"{shown}: {bad!r} are negative or not finite; every weight must be a finite number >= 0")
    elif weights and sum(weights) <= 0:
        errors.append(f"{shown}: the weights sum to 0; at least one must be positive")
    return errors


def validate_config(config: dict, stage: int) -> None:
    """Raise one ``ConfigError`` listing every unknown key and every malformed value of ``config``."""
    schema = _flatten(default_config(stage))
    trainer_args = _trainer_arguments()
    errors = []
    for path, value in _flatten(config).items():
        if path in schema or path in _SACRED_KEYS:
            continue
        if path.startswith("trainer.") and path.split(".", 1)[1] in trainer_args:
            continue
        section = path.rsplit(".", 1)[0] if "." in path else None
        known = sorted(k for k in schema if section and k.startswith(section + "."))
        hint = f" (known keys of {section!r}: {', '.join(k.split('.')[-1] for k in known)})" if known else ""
        errors.append(f"unknown config key {path!r}{hint}")
    arch = config.get("arch")
    if arch is not None and arch not in ARCHS:
        errors.append(f"arch={arch!r} is not one of {', '.join(ARCHS)}")
    weights = config.get("loss_weights")
    if weights is not None and len(weights) != NUM_LOSS_WEIGHTS:
        errors.append(f"loss_weights needs {NUM_LOSS_WEIGHTS} values (maestro, DESED strong, synth, weak, SSL, "
                      f"pseudo-label), got {len(weights)}: {weights!r}")
    batch_sizes = config.get("training", {}).get("batch_sizes")
    if batch_sizes is not None and len(batch_sizes) != NUM_SUB_BATCHES:
        errors.append(f"training.batch_sizes needs {NUM_SUB_BATCHES} values (MAESTRO, DESED strong + external, "
                      f"synth, weak, unlabeled), got {len(batch_sizes)}: {batch_sizes!r}")
    every = config.get("training", {}).get("checkpoint_every_n_steps")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every <= 0):
        errors.append(f"training.checkpoint_every_n_steps={every!r} must be a positive integer or None")
    if not isinstance(config.get("compile", False), bool):
        errors.append(f"compile={config['compile']!r} must be True or False")
    if len(config.get("median_window", [0] * 27)) != 27:
        errors.append(f"median_window needs 27 values, got {len(config['median_window'])}")
    if config.get("mode", "student") not in ("student", "teacher"):
        errors.append(f"mode={config['mode']!r} must be 'student' or 'teacher'")
    wrapper = config.get("t4_wrapper", {})
    if wrapper.get("model_init_mode", "student") not in ("student", "teacher"):
        errors.append(f"t4_wrapper.model_init_mode={wrapper['model_init_mode']!r} must be 'student' or 'teacher'")
    if wrapper.get("embed_pool", "aap") not in ("aap", "int", "conv"):
        errors.append(f"t4_wrapper.embed_pool={wrapper['embed_pool']!r} must be one of aap, int, conv")
    if "ensemble_weights" in config:
        errors.extend(ensemble_weight_errors(config["ensemble_weights"], config.get("pretrained_names")))
    if errors:
        raise ConfigError(f"invalid ex_stage{stage} config:\n  - " + "\n  - ".join(errors))


def require_arch(arch) -> str:
    """``arch`` is required for every command that builds a model."""
    if arch not in ARCHS:
        raise ConfigError(f"arch is required: add 'with arch=<{'|'.join(ARCHS)}>' to the command (got {arch!r})")
    return arch
