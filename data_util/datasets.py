"""Datasets of the DCASE 2024 Task 4 system: label encoding, per-set datasets, wrappers and factories.

One sample is a dict (the data contract, docs/DATA.md):

- ``audio``  float32 [160000]: 16 kHz mono, zero-padded or cropped to 10 s;
- ``strong`` float32 [27, 156]: frame labels (soft confidences for MAESTRO), all-zero for weak/unlabeled;
- ``weak``   float32 [27]: clip labels (weak clips), max over time of ``strong`` (strong clips), zeros (unlabeled);
- ``mask``   bool [27]: classes the clip's domain is annotated for (invalid classes get no loss);
- ``pseudo`` float32 [27, 156] and ``has_pseudo`` bool: sigmoid of a previous iteration's logits, or zeros;
- ``dataset`` str (set name, e.g. ``weak_train``), ``filename`` str (stem);
- evaluation sets also ``duration`` float (seconds of real audio).

Training sets random-crop clips longer than 10 s (labels shifted accordingly); evaluation sets always take
the first 10 s (the reference random-cropped there too). The factories :func:`build_train_sets` and
:func:`build_eval_set` follow the reference's ``get_training_dataset`` / ``get_validation_dataset`` /
``get_test_dataset`` (data_util/t4_24_datasets.py of CPJKU/cpjku_dcase24); deviations are listed in
docs/DATA.md and docs/DIFFERENCES.md.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Mapping, Sequence

import numpy as np
import scipy.signal
import torch
from torch.utils.data import ConcatDataset, Dataset

import configs
from data_util import layout
from data_util.audio import (
    AUDIO_EXTENSIONS,
    CLIP_SAMPLES,
    SAMPLE_RATE,
    AudioReadError,
    pad_or_crop,
    read_audio,
)
from data_util.classes import (
    CLASS_TO_INDEX,
    DESED_CLASSES,
    DESED_DOMAIN,
    DESED_MAESTRO_ALIAS,
    MAESTRO_CLASSES,
    MAESTRO_DESED_ALIAS,
    MAESTRO_DOMAIN,
    NUM_CLASSES,
    VALID_CLASSES,
)
from data_util.maestro import split_maestro
from data_util.pseudo_labels import PseudoLabels
from data_util.tsv import Event, read_durations_tsv, read_filename_list, read_strong_tsv, read_weak_tsv

log = logging.getLogger(__name__)

# Label frames: the reference encoder (audio_len=10, frame_hop=256, net_pooling=4, fs=16000).
ENCODER_FRAME_HOP = 256
ENCODER_NET_POOLING = 4
NUM_FRAMES = int(int(CLIP_SAMPLES / ENCODER_FRAME_HOP) / ENCODER_NET_POOLING)  # 156
FRAME_HOP_SECONDS = ENCODER_FRAME_HOP * ENCODER_NET_POOLING / SAMPLE_RATE  # 0.064
CLIP_SECONDS = CLIP_SAMPLES / SAMPLE_RATE

# Names of the training sub-sets, in the reference's batch order (training.batch_sizes follows it).
TRAIN_SET_NAMES: tuple[str, ...] = ("maestro", "desed_strong", "synth", "weak", "unlabeled")
# Sets build_eval_set knows: layout sets plus the two validation splits of training sets.
WEAK_VAL = "weak_val"
MAESTRO_REAL_VAL = "maestro_real_val"  # the maestro_split part of maestro_real_train (validation during training)
EVAL_SET_NAMES: tuple[str, ...] = (
    "synth_val", WEAK_VAL, "external_strong_val", "devtest", MAESTRO_REAL_VAL, "maestro_real_dev",
    "eval_public", "eval_private",
)
MIXUP_BETA_ALPHA = 0.2
MAX_REPLACEMENT_TRIES = 10  # skip_unreadable: consecutive unreadable files before giving up
MAX_LISTED_FILES = 10


# --------------------------------------------------------------------------------------------------
# Label encoding
# --------------------------------------------------------------------------------------------------
def time_to_frame(seconds: float) -> float:
    """Fractional label frame of a time (the reference encoder's arithmetic), clipped to [0, 156]."""
    frame = seconds * SAMPLE_RATE / ENCODER_FRAME_HOP / ENCODER_NET_POOLING
    return float(np.clip(frame, 0, NUM_FRAMES))


def encode_strong(events: Iterable[Event], num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Frame labels float32 [27, num_frames] of events (seconds relative to the clip start).

    An event covers frames ``int(onset / 0.064)`` up to ``ceil(offset / 0.064)`` (exclusive), clipped to the
    clip, with value ``confidence``. Overlapping or touching same-class events take the maximum (the
    reference overwrote, so the last event in file order won).
    """
    strong = np.zeros((NUM_CLASSES, num_frames), dtype=np.float32)
    for event in events:
        first = int(time_to_frame(event.onset))
        stop = min(int(np.ceil(time_to_frame(event.offset))), num_frames)
        row = strong[CLASS_TO_INDEX[event.label]]
        row[first:stop] = np.maximum(row[first:stop], event.confidence)
    return strong


def encode_weak(labels: Iterable[str]) -> np.ndarray:
    """Clip labels float32 [27] (1 for each label present)."""
    weak = np.zeros(NUM_CLASSES, dtype=np.float32)
    for label in labels:
        weak[CLASS_TO_INDEX[label]] = 1.0
    return weak


def alias_events(events: Sequence[Event], alias: Mapping[str, str]) -> tuple[Event, ...]:
    """``events`` followed by a copy of every event whose label has an alias, relabelled (duplication)."""
    duplicates = [Event(e.onset, e.offset, alias[e.label], e.confidence) for e in events if e.label in alias]
    return tuple(events) + tuple(duplicates)


def alias_labels(labels: Sequence[str], alias: Mapping[str, str]) -> tuple[str, ...]:
    """Weak ``labels`` plus the alias of each label that has one."""
    return tuple(labels) + tuple(alias[label] for label in labels if label in alias)


def domain_mask(domain: str, include_alias_targets: bool) -> torch.Tensor:
    """bool [27]: a domain's own classes, plus the alias targets (Speech/Dishes or their MAESTRO twins)."""
    if domain not in VALID_CLASSES:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(VALID_CLASSES)}")
    own_classes = DESED_CLASSES if domain == DESED_DOMAIN else MAESTRO_CLASSES
    own = VALID_CLASSES[domain] if include_alias_targets else own_classes
    mask = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    mask[[CLASS_TO_INDEX[name] for name in own]] = True
    return mask


# --------------------------------------------------------------------------------------------------
# Unreadable-file bookkeeping (shared by DataLoader workers through an append-only file)
# --------------------------------------------------------------------------------------------------
class UnreadableLog:
    """Records files that could not be read and were replaced by another sample.

    Workers are separate processes, so records go to a small append-only tsv (one ``write`` per line is
    atomic for short lines); :meth:`summary` reads it back from any process.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        if path is None:
            fd, path = tempfile.mkstemp(prefix="t4_unreadable_", suffix=".tsv")
            os.close(fd)
        self.path = Path(path)
        self.path.touch()

    def record(self, set_name: str, error: AudioReadError) -> None:
        line = f"{set_name}\t{error.path}\t{error.reason}".replace("\n", " ") + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)

    def summary(self) -> dict[str, dict[str, str]]:
        """``{set_name: {file: reason}}`` of every file replaced so far (each file once)."""
        result: dict[str, dict[str, str]] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            set_name, path, reason = line.split("\t", 2)
            result.setdefault(set_name, {})[path] = reason
        return result


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipEntry:
    """One clip of a set: its audio file name and labels (``None`` = that kind of label is absent)."""

    filename: str
    events: tuple[Event, ...] | None = None  # strong / soft labels
    weak_labels: tuple[str, ...] | None = None

    @property
    def stem(self) -> str:
        return _stem(self.filename)


class ClipDataset(Dataset):
    """The clips of one set as sample dicts (see the module docstring).

    ``train=True`` random-crops long clips; ``train=False`` is deterministic and adds ``duration``
    (``durations[filename or stem]`` when listed, else the real audio length, at most 10 s).
    With ``unreadable_log`` set, a file that cannot be read is recorded and replaced by the next readable
    clip of the set instead of raising :class:`AudioReadError`.
    """

    def __init__(
        self,
        set_name: str,
        audio_dir: str | os.PathLike,
        clips: Sequence[ClipEntry],
        *,
        mask: torch.Tensor,
        train: bool,
        pseudo_labels: PseudoLabels | None = None,
        durations: Mapping[str, float] | None = None,
        unreadable_log: UnreadableLog | None = None,
    ):
        self.set_name = set_name
        self.audio_dir = Path(audio_dir)
        self.clips = list(clips)
        self.mask = mask
        self.train = train
        self.pseudo_labels = pseudo_labels or PseudoLabels(None, set_name)
        self.durations = dict(durations or {})
        self.unreadable_log = unreadable_log
        self.pseudo_labels.check_covers(c.stem for c in self.clips)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def stems(self) -> list[str]:
        return [c.stem for c in self.clips]

    def __getitem__(self, index: int) -> dict:
        if self.unreadable_log is None:
            return self._load(index)
        for attempt in range(MAX_REPLACEMENT_TRIES):
            candidate = (index + attempt) % len(self.clips)
            try:
                return self._load(candidate)
            except AudioReadError as error:
                log.warning("%s: replacing unreadable clip: %s", self.set_name, error)
                self.unreadable_log.record(self.set_name, error)
        raise AudioReadError(
            self.audio_dir, f"{MAX_REPLACEMENT_TRIES} consecutive clips of set {self.set_name!r} from index "
            f"{index} are unreadable; see {self.unreadable_log.path}"
        )

    def _load(self, index: int) -> dict:
        clip_entry = self.clips[index]
        waveform = read_audio(self.audio_dir / clip_entry.filename)
        needs_crop = self.train and len(waveform) > CLIP_SAMPLES
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item())) if needs_crop else None
        clip = pad_or_crop(waveform, CLIP_SAMPLES, random_crop=needs_crop, rng=rng)

        if clip_entry.events is not None:
            shift = clip.start / SAMPLE_RATE
            strong = encode_strong(
                Event(e.onset - shift, e.offset - shift, e.label, e.confidence) for e in clip_entry.events
            )
            weak = strong.max(axis=1)
        else:
            strong = np.zeros((NUM_CLASSES, NUM_FRAMES), dtype=np.float32)
            weak = encode_weak(clip_entry.weak_labels or ())
        pseudo, has_pseudo = self.pseudo_labels.lookup(clip_entry.stem)
        sample = {
            "audio": torch.from_numpy(clip.audio),
            "strong": torch.from_numpy(strong),
            "weak": torch.from_numpy(weak),
            "mask": self.mask.clone(),
            "pseudo": torch.from_numpy(pseudo),
            "has_pseudo": has_pseudo,
            "dataset": self.set_name,
            "filename": clip_entry.stem,
        }
        if not self.train:
            listed = self.durations.get(clip_entry.filename, self.durations.get(clip_entry.stem))
            sample["duration"] = float(listed) if listed is not None else clip.num_real / SAMPLE_RATE
        return sample


# --------------------------------------------------------------------------------------------------
# Waveform-level augmentation wrappers
# --------------------------------------------------------------------------------------------------
def draw_mix_coefficient(alpha: float = MIXUP_BETA_ALPHA) -> float:
    """A waveform-mixing weight ``l ~ Beta(alpha, alpha)``, ``l = max(l, 1 - l)`` (the sample stays dominant)."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    return max(lam, 1.0 - lam)


def mix_waveforms(first: torch.Tensor, second: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam·first + (1 - lam)·second`` of two equally long waveforms, each and the mixture without DC (float32)."""
    # waveform maths in numpy: single-threaded, where torch's intra-op threads only add overhead
    a, b = first.numpy(), second.numpy()
    audio = lam * (a - a.mean()) + (1.0 - lam) * (b - b.mean())
    return torch.from_numpy((audio - audio.mean()).astype(np.float32))


class WaveformMixDataset(Dataset):
    """Waveform mixing inside one training set: with probability ``p`` a sample is mixed with a uniformly drawn
    partner of the same dataset, ``l`` from :func:`draw_mix_coefficient`, waveforms by :func:`mix_waveforms`.
    Each sample layout mixes its labels in :meth:`mix_labels` (``MixupDataset`` here, ``data_util.hear.HearWavmix``,
    ``data_util.audioset_strong.WavMixDataset``)."""

    def __init__(self, dataset: Dataset, p: float, alpha: float):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"wavmix probability must be in [0, 1], got {p}")
        self.dataset = dataset
        self.p = p
        self.alpha = alpha

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        if torch.rand(()) >= self.p:
            return sample
        partner = self.dataset[int(torch.randint(len(self.dataset), ()))]
        return self.mix(sample, partner, draw_mix_coefficient(self.alpha))

    def mix(self, sample: dict, partner: dict, lam: float) -> dict:
        """The mixture of ``sample`` (weight ``lam``) and ``partner``."""
        mixed = dict(sample)
        mixed["audio"] = mix_waveforms(sample["audio"], partner["audio"], lam)
        self.mix_labels(mixed, sample, partner, lam)
        return mixed

    def mix_labels(self, mixed: dict, sample: dict, partner: dict, lam: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} must say how its labels mix (mix_labels)")


class MixupDataset(WaveformMixDataset):
    """Waveform mixup inside one (training) set, with probability ``p`` per sample.

    Partner: a uniformly drawn sample of the same dataset; coefficient ``l ~ Beta(0.2, 0.2)``,
    ``l = max(l, 1 - l)`` (the sample stays dominant); both waveforms and the mixture have their DC removed.
    ``strong`` and ``pseudo`` mix with the same ``l``; ``weak`` is recomputed as the max over time of the
    mixed ``strong`` for strongly labelled clips, else mixed linearly; ``mask`` is the union of both masks
    and ``has_pseudo`` the conjunction. The reference also linearly mixed the class-mask slot (its tuple
    position 4, which it believed held weak pseudo-labels); equal masks made that harmless, we take the union.
    """

    def __init__(self, dataset: Dataset, p: float = 0.5, alpha: float = MIXUP_BETA_ALPHA):
        super().__init__(dataset, p, alpha)

    def mix_labels(self, mixed: dict, sample: dict, partner: dict, lam: float) -> None:
        mixed["strong"] = lam * sample["strong"] + (1.0 - lam) * partner["strong"]
        if sample["strong"].any() or partner["strong"].any():
            mixed["weak"] = mixed["strong"].amax(dim=1)
        else:
            mixed["weak"] = lam * sample["weak"] + (1.0 - lam) * partner["weak"]
        mixed["pseudo"] = lam * sample["pseudo"] + (1.0 - lam) * partner["pseudo"]
        mixed["has_pseudo"] = bool(sample["has_pseudo"] and partner["has_pseudo"])
        mixed["mask"] = sample["mask"] | partner["mask"]


def load_impulse_responses(dirs_dir: str | os.PathLike) -> list[torch.Tensor]:
    """All ``**/*.wav`` under ``dirs_dir`` (sorted), mono 16 kHz float32 [M] each."""
    paths = sorted(Path(dirs_dir).rglob("*.wav"))
    if not paths:
        raise FileNotFoundError(
            f"no device impulse responses (*.wav) under {dirs_dir}; run download_resources.py "
            f"(dirs.zip) or set training.dir_p=0"
        )
    return [torch.from_numpy(read_audio(p)) for p in paths]


class DIRDataset(Dataset):
    """Convolve the audio with a random device impulse response, with probability ``p`` per sample.

    The convolution is centred like the reference (pad ``M // 2`` both sides, 'valid' FFT convolution,
    keep the first ``len(audio)`` samples); labels are unchanged.
    """

    def __init__(self, dataset: Dataset, impulse_responses: Sequence[torch.Tensor], p: float):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dir_p must be in [0, 1], got {p}")
        if not impulse_responses:
            raise ValueError("DIRDataset needs at least one impulse response")
        self.dataset = dataset
        self.impulse_responses = list(impulse_responses)
        self.p = p

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        if torch.rand(()) >= self.p:
            return sample
        response = self.impulse_responses[int(torch.randint(len(self.impulse_responses), ()))]
        sample = dict(sample)
        sample["audio"] = convolve_centered(sample["audio"], response)
        return sample


def convolve_centered(audio: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """``audio`` [L] convolved with ``response`` [M], aligned as the reference's padded 'valid' convolution."""
    full = scipy.signal.fftconvolve(audio.numpy(), response.numpy())  # [L + M - 1], single-threaded
    start = len(response) - 1 - len(response) // 2
    return torch.from_numpy(np.ascontiguousarray(full[start:start + len(audio)], dtype=np.float32))


# --------------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------------
class TrainingDataConfig(configs.t4.Training):
    """The experiments' ``training`` block (keys, types and defaults: ``configs.t4.Training``), checked."""

    @classmethod
    def from_mapping(cls, config: Mapping | None) -> "TrainingDataConfig":
        """The block of ``config`` (missing keys take the schema's defaults); unknown keys raise ``KeyError``,
        wrong values ``ValueError``, each naming the key."""
        config = dict(config or {})
        found = configs.schema.problems(config, cls, prefix="training.")
        unknown = [p for p in found if p.startswith("unknown config key")]
        if unknown:
            raise KeyError("; ".join(unknown))
        if found:
            raise ValueError("; ".join(found))
        return cls(**config)


def train_source_sets(include_external_strong: bool = True) -> tuple[str, ...]:
    """The layout sets (audio folders, tsvs, pseudo-label files) that :func:`build_train_sets` reads."""
    sets = ("maestro_real_train", "strong_train", "synth_train", "weak_train", "unlabeled_train")
    return sets + (("external_strong_train",) if include_external_strong else ())


def build_train_sets(
    dataset_root: str | os.PathLike,
    resources_dir: str | os.PathLike,
    training_cfg: Mapping | TrainingDataConfig | None = None,
    pseudo_label_dir: str | os.PathLike | None = None,
) -> dict[str, Dataset]:
    """The five training sub-sets ``{name: Dataset}`` in the reference's batch order (``TRAIN_SET_NAMES``).

    maestro = MAESTRO-real train split; desed_strong = AudioSet strong (+ external strong, concatenated);
    synth; weak = ``weak_split`` part of weak; unlabeled. Exclude lists apply when
    ``exclude_overlapping``. Pseudo-labels are read from ``pseudo_label_dir/<set>.hdf5`` when
    ``use_pseudo_labels`` and a folder is given (then every file must exist); otherwise zeros.
    """
    cfg = training_cfg if isinstance(training_cfg, TrainingDataConfig) else TrainingDataConfig.from_mapping(training_cfg)
    root, resources = Path(dataset_root), Path(resources_dir)
    folder = Path(pseudo_label_dir) if (cfg.use_pseudo_labels and pseudo_label_dir is not None) else None
    if folder is not None:
        needed = train_source_sets(cfg.include_external_strong)
        missing = [str(folder / f"{name}.hdf5") for name in needed if not (folder / f"{name}.hdf5").is_file()]
        if missing:
            raise FileNotFoundError(
                f"training.use_pseudo_labels=True but pseudo-label file(s) are missing: {missing}; download them "
                f"(download_resources.py), write them (store_predictions + ensemble_predictions) or set "
                f"training.use_pseudo_labels=False"
            )
    unreadable = UnreadableLog() if cfg.skip_unreadable else None
    desed_mask = domain_mask(DESED_DOMAIN, include_alias_targets=cfg.use_desed_maestro_alias)
    maestro_mask = domain_mask(MAESTRO_DOMAIN, include_alias_targets=True)
    desed_alias = DESED_MAESTRO_ALIAS if cfg.use_desed_maestro_alias else {}

    def strong_set(name: str, clips: list[ClipEntry], mask: torch.Tensor) -> ClipDataset:
        spec = layout.SETS[name]
        return ClipDataset(name, root / spec.audio, clips, mask=mask, train=True,
                           pseudo_labels=PseudoLabels(folder, name), unreadable_log=unreadable)

    # MAESTRO real: the maestro_split part of maestro_real_train, MAESTRO -> DESED aliases always on
    maestro_clips = _tsv_clips("maestro_real_train", root, resources)
    maestro_train_names, _ = split_maestro([c.filename for c in maestro_clips], cfg.maestro_split, cfg.seed)
    maestro_clips = _select(maestro_clips, maestro_train_names)
    maestro = strong_set("maestro_real_train", _with_alias(_drop_eventless(maestro_clips), MAESTRO_DESED_ALIAS),
                         maestro_mask)

    exclude = lambda name: _exclude_stems(name, resources) if cfg.exclude_overlapping else set()  # noqa: E731
    strong_excluded = exclude("strong_train")  # layout.EXCLUDED_MAY_BE_ABSENT: their audio need not exist
    strong_clips = _without(_tsv_clips("strong_train", root, resources, strong_excluded), strong_excluded)
    desed_strong: Dataset = strong_set("strong_train", _with_alias(_drop_eventless(strong_clips), desed_alias),
                                       desed_mask)
    if cfg.include_external_strong:
        external_clips = _drop_eventless(_tsv_clips("external_strong_train", root, resources))
        external = strong_set("external_strong_train", _with_alias(external_clips, desed_alias), desed_mask)
        desed_strong = ConcatDataset([desed_strong, external])

    synth_clips = _drop_eventless(_tsv_clips("synth_train", root, resources))
    synth: Dataset = strong_set("synth_train", _with_alias(synth_clips, desed_alias), desed_mask)

    weak_train_clips, _ = _weak_split(_tsv_clips("weak_train", root, resources), cfg.weak_split, cfg.seed)
    weak_train_clips = _without(weak_train_clips, exclude("weak_train"))
    weak: Dataset = strong_set("weak_train", _with_alias(weak_train_clips, desed_alias), desed_mask)

    unlabeled_clips = _without(_folder_clips("unlabeled_train", root), exclude("unlabeled_train"))
    unlabeled: Dataset = strong_set("unlabeled_train", unlabeled_clips, desed_mask)

    sets: dict[str, Dataset] = {
        "maestro": maestro, "desed_strong": desed_strong, "synth": synth, "weak": weak, "unlabeled": unlabeled,
    }
    if cfg.wavmix_p > 0:
        mixed = {"strong": ("maestro", "desed_strong", "synth"),
                 "labeled": ("maestro", "desed_strong", "synth", "weak"),
                 "all": TRAIN_SET_NAMES}[cfg.wavmix_target]
        sets = {name: MixupDataset(ds, cfg.wavmix_p) if name in mixed else ds for name, ds in sets.items()}
    if cfg.dir_p > 0:
        responses = load_impulse_responses(resources / "dirs")
        convolved = {"desed_strong": cfg.dir_desed_strong, "synth": cfg.dir_desed_strong, "weak": cfg.dir_weak,
                     "unlabeled": cfg.dir_unlabeled, "maestro": cfg.dir_maestro}
        sets = {name: DIRDataset(ds, responses, cfg.dir_p) if convolved[name] else ds for name, ds in sets.items()}
    for name, ds in sets.items():
        log.info("training set %s: %d clips", name, len(ds))
    return sets


def build_eval_set(
    name: str,
    dataset_root: str | os.PathLike,
    resources_dir: str | os.PathLike,
    *,
    weak_split: float = 0.9,
    maestro_split: float = 0.9,
    seed: int = 42,
    skip_unreadable: bool = False,
) -> ClipDataset:
    """A deterministic validation / test set by name (``EVAL_SET_NAMES``), with ``duration`` per sample.

    Labels are not aliased; masks are as in the reference's validation/test sets: DESED sets the 10 DESED
    classes, MAESTRO sets the 17 MAESTRO classes plus Speech and Dishes. ``weak_val`` and
    ``maestro_real_val`` are the held-out parts of the training splits (same ``*_split`` and ``seed``).
    Clips listed in a label tsv without events are kept (the reference dropped them).
    """
    if name not in EVAL_SET_NAMES:
        raise KeyError(f"unknown evaluation set {name!r}; expected one of {EVAL_SET_NAMES}")
    root, resources = Path(dataset_root), Path(resources_dir)
    source = {WEAK_VAL: "weak_train", MAESTRO_REAL_VAL: "maestro_real_train"}.get(name, name)
    spec = layout.SETS[source]
    if name == WEAK_VAL:
        _, clips = _weak_split(_tsv_clips(source, root, resources), weak_split, seed)
    elif name == MAESTRO_REAL_VAL:
        clips = _tsv_clips(source, root, resources)
        _, valid_names = split_maestro([c.filename for c in clips], maestro_split, seed)
        clips = _select(clips, valid_names)
    elif spec.labels is None:
        clips = _folder_clips(source, root)
    else:
        clips = _tsv_clips(source, root, resources)
    durations = {}
    if spec.durations is not None:
        durations = read_durations_tsv(layout.resolve(spec.durations, root, resources, spec.labels_in_resources))
    mask = domain_mask(spec.domain, include_alias_targets=spec.domain == MAESTRO_DOMAIN)
    return ClipDataset(name, root / spec.audio, clips, mask=mask, train=False, durations=durations,
                       unreadable_log=UnreadableLog() if skip_unreadable else None)


def build_prediction_set(name: str, dataset_root: str | os.PathLike) -> ClipDataset:
    """Every audio file of a prediction set's folder (sorted), unlabelled, deterministic, ``mask`` all True.

    For ``store_predictions`` (``layout.PREDICTION_SETS``): like the reference, whole folders, so
    ``weak_train`` and ``weak_val`` both cover all weak clips and ``external_strong_train`` all external clips;
    the model runs without a class mask, hence the all-True ``mask``.
    """
    if name not in layout.PREDICTION_SETS:
        raise KeyError(f"unknown prediction set {name!r}; expected one of {layout.PREDICTION_SETS}")
    source = "weak_train" if name == WEAK_VAL else name
    clips = _folder_clips(source, Path(dataset_root))
    return ClipDataset(name, Path(dataset_root) / layout.SETS[source].audio, clips,
                       mask=torch.ones(NUM_CLASSES, dtype=torch.bool), train=False)


def find_clip_datasets(dataset: Dataset) -> list[ClipDataset]:
    """The ClipDatasets inside wrappers (Mixup/DIR) and ConcatDatasets."""
    if isinstance(dataset, ClipDataset):
        return [dataset]
    if isinstance(dataset, ConcatDataset):
        return [c for d in dataset.datasets for c in find_clip_datasets(d)]
    if isinstance(dataset, (MixupDataset, DIRDataset)):
        return find_clip_datasets(dataset.dataset)
    return []


def unreadable_summary(datasets: Iterable[Dataset]) -> dict[str, dict[str, str]]:
    """``{set_name: {file: reason}}`` of clips replaced because they were unreadable (all workers)."""
    logs = {c.unreadable_log.path: c.unreadable_log for d in datasets for c in find_clip_datasets(d)
            if c.unreadable_log is not None}
    summary: dict[str, dict[str, str]] = {}
    for unreadable in logs.values():
        for set_name, files in unreadable.summary().items():
            summary.setdefault(set_name, {}).update(files)
    return summary


# --------------------------------------------------------------------------------------------------
# Helpers: clip lists from tsvs and folders
# --------------------------------------------------------------------------------------------------
def _stem(filename: str) -> str:
    path = Path(filename)
    return path.stem if path.suffix.lower() in AUDIO_EXTENSIONS else path.name


def _audio_files(folder: Path) -> set[str]:
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder {folder} does not exist{_prepare_hint(folder)}")
    with os.scandir(folder) as entries:
        return {e.name for e in entries if e.is_file() and Path(e.name).suffix.lower() in AUDIO_EXTENSIONS}


def _prepare_hint(folder: Path) -> str:
    original = Path(str(folder).rstrip("/").removesuffix("_16k"))  # the default rule of SetSpec.original_audio
    if str(folder).endswith("_16k") and original.is_dir():
        return f"; its 44.1 kHz originals exist in {original}: run `python -m ex_stage1 prepare_data`"
    return ""


def _check_audio_exists(set_name: str, folder: Path, clips: Sequence[ClipEntry],
                        may_be_absent: Collection[str] = ()) -> None:
    present = _set_audio_files(set_name, folder)
    missing = [c.filename for c in clips if c.filename not in present and c.stem not in may_be_absent]
    if missing:
        raise FileNotFoundError(
            f"set {set_name!r}: {len(missing)} of {len(clips)} audio files listed in its labels are missing "
            f"from {folder}, e.g. {missing[:MAX_LISTED_FILES]}{_prepare_hint(folder)}"
        )


def _tsv_clips(name: str, root: Path, resources: Path, may_be_absent: Collection[str] = ()) -> list[ClipEntry]:
    """Clips of a labelled layout set in tsv order, after checking that their audio exists (except the stems
    ``may_be_absent``: excluded clips that the caller drops before reading audio)."""
    spec = layout.SETS[name]
    labels_path = layout.resolve(spec.labels, root, resources, spec.labels_in_resources)
    if spec.label_kind == "weak":
        clips = [ClipEntry(f, weak_labels=tuple(labels)) for f, labels in read_weak_tsv(labels_path).items()]
    else:
        table = read_strong_tsv(labels_path, soft=spec.label_kind == "soft")
        clips = [ClipEntry(f, events=tuple(events)) for f, events in table.items()]
    _check_audio_exists(name, root / spec.audio, clips, may_be_absent)
    return clips


def _folder_clips(name: str, root: Path) -> list[ClipEntry]:
    """Every audio file of a layout set's folder, sorted (unlabelled)."""
    return [ClipEntry(f) for f in sorted(_set_audio_files(name, root / layout.SETS[name].audio))]


def _set_audio_files(name: str, folder: Path) -> set[str]:
    """Audio file names of a layout set's folder; logs when their number differs from the real data's."""
    present = _audio_files(folder)
    expected = layout.SETS[name].expected_files
    if expected is not None and len(present) != expected:
        log.info("%s: %d audio files in %s (the real data has %d)", name, len(present), folder, expected)
    return present


def _exclude_stems(name: str, resources: Path) -> set[str]:
    return {_stem(f) for f in read_filename_list(resources / layout.EXCLUDE_LISTS[name])}


def _without(clips: list[ClipEntry], excluded_stems: set[str]) -> list[ClipEntry]:
    kept = [c for c in clips if c.stem not in excluded_stems]
    if len(kept) != len(clips):
        log.info("excluded %d clips overlapping evaluation data", len(clips) - len(kept))
    return kept


def _select(clips: list[ClipEntry], filenames: Iterable[str]) -> list[ClipEntry]:
    wanted = set(filenames)
    return [c for c in clips if c.filename in wanted]


def _drop_eventless(clips: list[ClipEntry]) -> list[ClipEntry]:
    """Training strong sets keep only clips with events (the reference's ``dropna``)."""
    return [c for c in clips if c.events]


def _with_alias(clips: list[ClipEntry], alias: Mapping[str, str]) -> list[ClipEntry]:
    if not alias:
        return clips
    return [
        ClipEntry(c.filename,
                  events=alias_events(c.events, alias) if c.events is not None else None,
                  weak_labels=alias_labels(c.weak_labels, alias) if c.weak_labels is not None else None)
        for c in clips
    ]


def _weak_split(clips: list[ClipEntry], split: float, seed: int) -> tuple[list[ClipEntry], list[ClipEntry]]:
    """The reference's ``weak_df.sample(frac=split, random_state=seed)``: train in sampled order, rest kept.

    pandas draws ``RandomState(seed).choice(n, round(split * n), replace=False)``; we draw the same.
    """
    if not 0.0 <= split <= 1.0:
        raise ValueError(f"weak_split must be in [0, 1], got {split}")
    chosen = np.random.RandomState(seed).choice(len(clips), size=round(split * len(clips)), replace=False)
    chosen_set = set(chosen.tolist())
    return [clips[i] for i in chosen], [c for i, c in enumerate(clips) if i not in chosen_set]
