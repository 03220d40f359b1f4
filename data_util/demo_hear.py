"""A small synthetic HEAR-format sound event detection task, made with the demo dataset's synthesizers.

``python -m data_util.demo_hear --out demo_data/hear/demo_office_events-demo-full`` writes the folder layout of a
HEAR 2021 event task (``data_util.hear``; e.g. DCASE 2016 Task 2, ``dcase2016_task2-hear2021-full``):
``task_metadata.json``, ``labelvocabulary.csv``, ``{train,valid,test}.json`` with events in milliseconds and 16 kHz
mono wav files in ``16000/<split>/``. Like DCASE 2016 Task 2 (office sounds, 11 classes, 120 s scenes) but small:
five "office" labels rendered by the synthesizers of ``data_util.demo`` (``DEMO_LABELS``), polyphonic scenes of
``--seconds`` (default 20 s) on pink/brown noise, several events per scene, every label in every split.
``ex_downstream with demo`` fine-tunes and evaluates on it. Deterministic given the seed.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from data_util.demo import EVENT_SNR_DB_RANGE, SAMPLE_RATE, clear_output_dir, render_events, write_wav

# HEAR label -> the demo synthesizer (data_util.demo.CLASS_SOUNDS) that renders it
DEMO_LABELS = {
    "doorslam": "door opens/closes",  # low thump, then a latch click
    "keysDrop": "cutlery and dishes",  # dense metallic clinks
    "knock": "footsteps",  # low thumps at 2/s
    "phone": "Alarm_bell_ringing",  # gated partials (a ringing phone)
    "speech": "Speech",  # voiced syllables
}
SPLIT_FILES = {"train": 8, "valid": 3, "test": 3}
SCENE_SECONDS = 20.0
EVENTS_PER_SCENE = 6
TASK_NAME = "demo_office_events"
MANIFEST = "demo_hear_manifest.json"


def _scene_labels(rng: np.random.Generator, index: int) -> tuple[str, ...]:
    """Labels of one scene's events: the first scene of a split has every label (so each split has all of them)."""
    labels = list(DEMO_LABELS)
    chosen = list(rng.permutation(labels)) if index == 0 else []
    chosen += list(rng.choice(labels, EVENTS_PER_SCENE - len(chosen)))
    return tuple(str(label) for label in chosen)


def metadata(seconds: float) -> dict:
    """``task_metadata.json`` with the fields of hear-preprocess's task configs."""
    return {"task_name": TASK_NAME, "version": "demo", "embedding_type": "event", "prediction_type": "multilabel",
            "split_mode": "trainvaltest", "splits": list(SPLIT_FILES), "sample_duration": seconds,
            "evaluation": ["event_onset_200ms_fms", "segment_1s_er"], "mode": "full", "sample_rate": SAMPLE_RATE,
            "note": "synthetic demo task of t4sed (data_util.demo_hear); labels rendered by demo synthesizers"}


def generate(out_dir: str | Path, seed: int = 0, *, seconds: float = SCENE_SECONDS,
             split_files: dict[str, int] | None = None, overwrite: bool = False) -> dict[str, int]:
    """Write the task under ``out_dir``; returns the number of files per split."""
    root = Path(out_dir)
    clear_output_dir(root, MANIFEST, overwrite)
    split_files = dict(split_files or SPLIT_FILES)
    n_samples = round(seconds * SAMPLE_RATE)
    for split_index, (split, count) in enumerate(split_files.items()):
        audio_dir = root / str(SAMPLE_RATE) / split
        audio_dir.mkdir(parents=True, exist_ok=True)
        events = {}
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            labels = _scene_labels(rng, i)
            audio, rendered = render_events(rng, n_samples, tuple(DEMO_LABELS[label] for label in labels),
                                            EVENT_SNR_DB_RANGE)
            name = f"{split}_{i:03d}.wav"
            write_wav(audio_dir / name, audio)
            to_label = {synth: label for label, synth in DEMO_LABELS.items()}
            events[name] = [{"label": to_label[e.label], "start": round(e.onset * 1000, 3),
                             "end": round(e.offset * 1000, 3)} for e in sorted(rendered, key=lambda e: e.onset)]
        (root / f"{split}.json").write_text(json.dumps(events, indent=1) + "\n", encoding="utf-8")
    with (root / "labelvocabulary.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(sorted(DEMO_LABELS)))
    task = metadata(seconds) | {"splits": list(split_files)}
    (root / "task_metadata.json").write_text(json.dumps(task, indent=1) + "\n", encoding="utf-8")
    (root / MANIFEST).write_text(json.dumps({"generator": "data_util.demo_hear", "seed": seed, "seconds": seconds,
                                             "files": split_files}, indent=1) + "\n", encoding="utf-8")
    return split_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_util.demo_hear", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the task folder to create")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=SCENE_SECONDS, help="length of every scene")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo task at --out")
    args = parser.parse_args(argv)
    counts = generate(args.out, args.seed, seconds=args.seconds, overwrite=args.overwrite)
    print(f"wrote the demo HEAR task to {args.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
