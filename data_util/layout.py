"""Where every file of the DCASE 2024 Task 4 data lives, relative to the dataset root.

One table (``SETS``) names each set by the name the reference uses for it (also the name of its
prediction / pseudo-label file), its 16 kHz audio folder, its label tsv, its durations tsv and the
expected number of audio files in the real data. ``resources/`` files are resolved from the
repository root (see ``configs.RESOURCES_DIR``), never from the working directory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SetSpec:
    """One data set of the Task 4 layout. Paths are relative to the dataset root unless ``*_in_resources``."""

    name: str
    audio: str  # folder of 16 kHz audio
    labels: str | None = None  # label tsv (strong, weak or soft), or None for unlabelled / private sets
    durations: str | None = None  # ``filename duration`` tsv
    label_kind: str | None = None  # "strong" | "weak" | "soft" | None
    domain: str = "desed"  # "desed" | "maestro" (decides the class mask)
    labels_in_resources: bool = False  # label/durations tsvs live in resources/, not under the dataset root
    expected_files: int | None = None  # audio files in the real data (before excluding), None = not fixed
    stage2_only: bool = False  # only the stage-2 experiment reads it (evaluation sets)
    original: str | None = None  # folder of the 44.1 kHz originals when it is not ``audio`` without ``_16k``

    @property
    def original_audio(self) -> str:
        """The folder of the 44.1 kHz originals that ``prepare_data`` resamples into ``audio``.

        As the DESED / MAESTRO downloads ship them: the 16 kHz folder's name without the ``_16k`` suffix
        (``audio/train/weak`` → ``audio/train/weak_16k``), except where ``original`` says otherwise.
        """
        return self.original or self.audio.rstrip("/").removesuffix("_16k")


SETS: dict[str, SetSpec] = {
    s.name: s
    for s in (
        SetSpec("synth_train", "dcase_synth/audio/train/synthetic21_train/soundscapes_16k",
                "dcase_synth/metadata/train/synthetic21_train/soundscapes.tsv", label_kind="strong",
                expected_files=10000),
        SetSpec("strong_train", "audio/train/strong_label_real_16k", "metadata/train/audioset_strong.tsv",
                label_kind="strong", expected_files=3470),
        SetSpec("external_strong_train", "audio/external_strong_16k",
                "external_strong_split/external_audioset_strong_train.tsv",
                "external_strong_split/external_audioset_strong_dur.tsv", label_kind="strong",
                labels_in_resources=True, expected_files=7383),
        SetSpec("external_strong_val", "audio/external_strong_16k",
                "external_strong_split/external_audioset_strong_eval.tsv",
                "external_strong_split/external_audioset_strong_dur.tsv", label_kind="strong",
                labels_in_resources=True, expected_files=7383),
        SetSpec("weak_train", "audio/train/weak_16k", "metadata/train/weak.tsv", label_kind="weak",
                expected_files=1578),
        SetSpec("unlabeled_train", "audio/train/unlabel_in_domain_16k", expected_files=14412),
        SetSpec("synth_val", "audio/validation/synthetic21_validation/soundscapes_16k",
                "dcase_synth/metadata/validation/synthetic21_validation/soundscapes.tsv",
                "dcase_synth/metadata/validation/synthetic21_validation/durations.tsv", label_kind="strong",
                expected_files=2500, original="dcase_synth/audio/validation/synthetic21_validation/soundscapes"),
        SetSpec("devtest", "audio/validation/validation_16k", "metadata/validation/validation.tsv",
                "metadata/validation/validation_durations.tsv", label_kind="strong", expected_files=1168),
        SetSpec("maestro_real_train", "audio/maestro_real_train_16k", "metadata/maestro_real_train.tsv",
                label_kind="soft", domain="maestro", expected_files=7503),
        SetSpec("maestro_real_dev", "audio/maestro_real_validation_16k", "metadata/maestro_real_validation.tsv",
                "metadata/maestro_real_durations.tsv", label_kind="soft", domain="maestro", expected_files=3474),
        SetSpec("eval_public", "eval/desed_public_eval/audio/eval/public_16k",
                "eval/desed_public_eval/metadata/eval/public.tsv",
                "eval/desed_public_eval/metadata/eval/public_durations.tsv", label_kind="strong",
                expected_files=692, stage2_only=True),
        SetSpec("eval_private", "eval/eval24/audio_16k", None, "eval/eval24/eval24_durations.tsv",
                stage2_only=True),
    )
}

# Clips of the training sets that overlap evaluation data (``filename`` tsvs in resources/exclude/).
EXCLUDE_LISTS: dict[str, str] = {
    "unlabeled_train": "exclude/unlabeled_exclude.tsv",
    "weak_train": "exclude/weak_exclude.tsv",
    "strong_train": "exclude/audioset_strong_exclude.tsv",
}

# Sets whose excluded clips training drops before reading any audio (and before checking that it exists), so the
# audio of an excluded clip may be absent. Not weak_train: its held-out split (weak_val) keeps excluded clips.
EXCLUDED_MAY_BE_ABSENT: tuple[str, ...] = ("strong_train",)

# Sets whose predictions ``store_predictions`` writes (the reference's 12; weak_val is a split of weak_train).
PREDICTION_SETS: tuple[str, ...] = (
    "synth_train", "weak_train", "strong_train", "external_strong_train", "unlabeled_train", "synth_val",
    "weak_val", "devtest", "maestro_real_dev", "maestro_real_train", "eval_public", "eval_private",
)

# Sets that get pseudo-labels during training (a prediction file of the same name).
PSEUDO_LABEL_SETS: tuple[str, ...] = (
    "synth_train", "strong_train", "external_strong_train", "weak_train", "unlabeled_train", "maestro_real_train",
)


def resolve(spec_path: str, dataset_root: Path, resources_dir: Path, in_resources: bool) -> Path:
    """Absolute path of a layout entry."""
    return (resources_dir if in_resources else dataset_root) / spec_path
