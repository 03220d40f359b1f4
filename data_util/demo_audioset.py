"""A small synthetic AudioSet-strong source set in the real formats (for the demo and the tests).

``python -m data_util.demo_audioset --out demo_data/audioset_strong/source [--preset tiny] [--seed 0]`` writes what
``python -m ex_audioset_strong prepare_data`` reads from a real AudioSet copy:

- ``{balanced_train,unbalanced_train,eval}_segments_mp3.hdf``: PaSST's HDF5 layout (``audio_name``
  ``<split folder>/Y<id>.mp3``, ``mp3`` the encoded 32 kHz mono mp3 as uint8, ``target`` the 527 weak labels
  bit-packed);
- ``audioset_train_strong.tsv``, ``audioset_eval_strong.tsv`` (the official format: ``segment_id`` =
  ``<id>_<start ms>``, ``start_time_seconds``, ``end_time_seconds``, ``label`` = MID) and ``mid_to_display_name.tsv``;
- ``eval_durations.csv`` (PretrainedSED's ``Y<id>,<seconds>`` list);
- ``kd/strong_kd.hdf5`` (a strong KD logit file of the training clips, PretrainedSED's format) and
  ``kd/weak_kd.npy`` + ``kd/weak_kd_index.pkl`` (weak KD logits and the id -> row pickle of the reference): a
  made-up "teacher" whose logits are the labels (+4 inside events, -4 outside) plus noise.

Audio: the 27 synthesizers of the T4 demo (``data_util.demo.CLASS_SOUNDS``), each standing for a real AudioSet
class (:data:`DEMO_CLASSES`, real MIDs), 1-4 events on coloured noise. Some clips are shorter than 10 s and one is
longer; and, to exercise the converter's report: HDF5 clips without strong labels, labelled segments whose clip has
no audio, an evaluation label of a class outside the training classes, a training-only class, and one clip whose
mp3 bytes are corrupt. Deterministic in ``seed``.
"""
from __future__ import annotations

import argparse
import io
import logging
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import soundfile as sf
from scipy import signal as sp_signal

from data_util import demo
from data_util.audioset_strong import read_mid_names, train_classes, weak_classes
from data_util.kd_logits import write_strong_kd

log = logging.getLogger(__name__)

SOURCE_SAMPLE_RATE = 32_000  # PaSST's HDF5 files hold 32 kHz mp3s
KD_FRAMES = 250
KD_LOGIT_SCALE = 4.0
KD_NOISE = 1.0
EVAL_ONLY_MID = "/m/028v0c"  # Silence: a strong-label class outside the 447 training classes
TRAIN_ONLY_CLASS = "large_vehicle"  # its AudioSet class never occurs in the demo's evaluation labels
CORRUPT_CLIPS = 1  # unbalanced-train clips whose mp3 bytes are cut to garbage
CLIPS_WITHOUT_AUDIO = 3  # labelled training segments whose clip is in no HDF5 file
LONG_CLIP_SECONDS = 10.5

# demo synthesizer (data_util.demo.CLASS_SOUNDS) -> the AudioSet-strong training class it stands for
DEMO_CLASSES: dict[str, str] = {
    "Alarm_bell_ringing": "Alarm",
    "Blender": "Blender, food processor",
    "Cat": "Cat",
    "Dishes": "Dishes, pots, and pans",
    "Dog": "Dog",
    "Electric_shaver_toothbrush": "Electric shaver, electric razor",
    "Frying": "Frying (food)",
    "Running_water": "Water tap, faucet",
    "Speech": "Male speech, man speaking",
    "Vacuum_cleaner": "Vacuum cleaner",
    "cutlery and dishes": "Cutlery, silverware",
    "furniture dragging": "Scrape",
    "people talking": "Conversation",
    "children voices": "Child speech, kid speaking",
    "coffee machine": "Steam",
    "footsteps": "Walk, footsteps",
    "large_vehicle": "Truck",
    "car": "Car passing by",
    "brakes_squeaking": "Squeal",
    "cash register beeping": "Beep, bleep",
    "announcement": "Narration, monologue",
    "shopping cart": "Rattle",
    "metro leaving": "Subway, metro, underground",
    "metro approaching": "Train",
    "door opens/closes": "Door",
    "wind_blowing": "Wind",
    "birds_singing": "Bird vocalization, bird call, bird song",
}


@dataclass(frozen=True)
class Preset:
    clips: dict[str, int]  # per HDF5 split: clips with strong labels
    unlabelled: dict[str, int]  # per HDF5 split: extra clips without strong labels


PRESETS = {
    "tiny": Preset(clips={"balanced_train": 12, "unbalanced_train": 16, "eval": 16},
                   unlabelled={"balanced_train": 2, "unbalanced_train": 2, "eval": 1}),
    "small": Preset(clips={"balanced_train": 120, "unbalanced_train": 280, "eval": 150},
                    unlabelled={"balanced_train": 10, "unbalanced_train": 20, "eval": 5}),
}
HDF5_NAMES = {"balanced_train": "balanced_train_segments_mp3.hdf", "unbalanced_train": "unbalanced_train_segments_mp3.hdf",
              "eval": "eval_segments_mp3.hdf"}


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _youtube_ids(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    ids = []
    while len(ids) < count:
        video_id = "".join(rng.choice(demo._YOUTUBE_ID_CHARS, 11))
        if video_id not in taken:
            taken.add(video_id)
            ids.append(video_id)
    return ids


def _mp3_bytes(audio_16k: np.ndarray) -> bytes:
    audio = sp_signal.resample_poly(audio_16k, SOURCE_SAMPLE_RATE // 1000, demo.SAMPLE_RATE // 1000)
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0).astype(np.float32), SOURCE_SAMPLE_RATE, format="MP3")
    return buffer.getvalue()


def generate(out_dir: str | Path, preset: str = "tiny", seed: int = 0, *, overwrite: bool = False) -> dict[str, int]:
    """Write the source set to ``out_dir``; returns the number of clips with strong labels per split."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    spec = PRESETS[preset]
    names = train_classes()
    mids = dict(zip(names.names, names.mids))
    missing = sorted(set(DEMO_CLASSES.values()) - set(mids))
    if missing:
        raise ValueError(f"demo classes not among the training classes: {missing}")
    weak = {mid: i for i, mid in enumerate(weak_classes().mids)}
    taken: set[str] = set()
    labels = {"train": [], "eval": []}  # (segment id, onset, offset, MID)
    kd_names, kd_logits, weak_logits = [], [], []
    durations = []
    demo_synths = tuple(DEMO_CLASSES)
    for split_index, split in enumerate(HDF5_NAMES):
        rng = _rng(seed, split_index)
        count, extra = spec.clips[split], spec.unlabelled[split]
        ids = _youtube_ids(rng, count + extra, taken)
        synths = demo_synths if split != "eval" else tuple(s for s in demo_synths if s != TRAIN_ONLY_CLASS)
        clip_labels = demo._balanced_labels(rng, synths, count + extra)
        rows = []
        for i, (video_id, synth_labels) in enumerate(zip(ids, clip_labels)):
            seconds = 10.0
            if i % 5 == 3:
                seconds = float(rng.uniform(6.0, 9.9))
            elif i == 1 and split == "unbalanced_train":
                seconds = LONG_CLIP_SECONDS
            n_samples = int(round(seconds * 1000)) * demo.MS
            audio, events = demo.render_events(_rng(seed, split_index, 1000 + i), n_samples, synth_labels,
                                                demo.EVENT_SNR_DB_RANGE)
            data = _mp3_bytes(audio)
            if split == "unbalanced_train" and i < CORRUPT_CLIPS:
                data = bytes(rng.integers(0, 256, 2000, dtype=np.uint8))
            clip_mids = [mids[DEMO_CLASSES[e.label]] for e in events]
            target = np.zeros(len(weak), dtype=np.uint8)
            target[[weak[m] for m in clip_mids if m in weak]] = 1
            rows.append((f"{split}_segments/Y{video_id}.mp3", data, np.packbits(target)))
            if i >= count:
                continue  # a clip without strong labels
            kind = "eval" if split == "eval" else "train"
            segment = f"{video_id}_{int(rng.integers(0, 30)) * 10000}"
            for event, mid in zip(events, clip_mids):
                labels[kind].append((segment, event.onset, event.offset, mid))
            if split == "eval":
                durations.append((f"Y{video_id}", n_samples / demo.SAMPLE_RATE))
                if i % 4 == 0:
                    labels[kind].append((segment, 1.0, 2.5, EVAL_ONLY_MID))
            else:
                kd_names.append(f"Y{video_id}")
                kd_logits.append(_teacher_logits(rng, events, names.index, mids))
                weak_logits.append(KD_LOGIT_SCALE * (2.0 * target - 1.0) + KD_NOISE * rng.standard_normal(len(weak)))
        _write_hdf5(out / HDF5_NAMES[split], rows)
    for video_id in _youtube_ids(_rng(seed, 99), CLIPS_WITHOUT_AUDIO, taken):
        labels["train"].append((f"{video_id}_0", 0.5, 3.0, mids["Dog"]))
    for kind, rows in labels.items():
        _write_labels(out / f"audioset_{kind}_strong.tsv", rows)
    mid_names = read_mid_names()
    with open(out / "mid_to_display_name.tsv", "w", encoding="utf-8") as f:
        f.writelines(f"{mid}\t{name}\n" for mid, name in sorted(mid_names.items()))
    with open(out / "eval_durations.csv", "w", encoding="utf-8") as f:
        f.writelines(f"{name},{seconds:.3f}\n" for name, seconds in durations)
    kd = out / "kd"
    kd.mkdir(exist_ok=True)
    write_strong_kd(kd / "strong_kd.hdf5", kd_names, np.stack(kd_logits), classes=names.names,
                    model="demo teacher (labels + noise)", frame_hop=0.04)
    np.save(kd / "weak_kd.npy", np.stack(weak_logits).astype(np.float32))
    with open(kd / "weak_kd_index.pkl", "wb") as f:
        pickle.dump({name[1:]: i for i, name in enumerate(kd_names)}, f)  # the reference's keys: ids without "Y"
    return dict(spec.clips)


def _teacher_logits(rng: np.random.Generator, events, index: dict[str, int], mids: dict[str, str]) -> np.ndarray:
    logits = np.full((len(index), KD_FRAMES), -KD_LOGIT_SCALE, dtype=np.float32)
    for event in events:
        row = index[DEMO_CLASSES[event.label]]
        first, stop = int(event.onset / 0.04), int(np.ceil(event.offset / 0.04))
        logits[row, first:min(stop, KD_FRAMES)] = KD_LOGIT_SCALE
    return logits + KD_NOISE * rng.standard_normal(logits.shape).astype(np.float32)


def _write_hdf5(path: Path, rows) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=np.array([r[0].encode() for r in rows], dtype="S"))
        mp3 = f.create_dataset("mp3", shape=(len(rows),), dtype=h5py.vlen_dtype(np.uint8))
        for i, row in enumerate(rows):
            mp3[i] = np.frombuffer(row[1], dtype=np.uint8)
        f.create_dataset("target", data=np.stack([r[2] for r in rows]))


def _write_labels(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n")
        for segment, onset, offset, mid in rows:
            f.write(f"{segment}\t{onset:.3f}\t{offset:.3f}\t{mid}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_util.demo_audioset", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    counts = generate(args.out, args.preset, args.seed, overwrite=args.overwrite)
    print(f"wrote the {args.preset} AudioSet-strong demo source set to {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
