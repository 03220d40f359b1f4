"""``prepare_data`` of AudioSet-strong: PaSST HDF5 files + strong-label tsvs -> the on-disk ``datasets`` dataset.

Source folder (``source_path``; the files may also sit in a ``mp3/`` sub-folder, as PaSST lays them out):

- ``balanced_train_segments_mp3.hdf``, ``unbalanced_train_segments_mp3.hdf``, ``eval_segments_mp3.hdf``: PaSST's
  HDF5 files with the datasets ``audio_name`` (``[<folder>/]Y<YouTube id>.mp3``), ``mp3`` (the encoded file, uint8)
  and ``target`` (527 weak labels, bit-packed as ``numpy.packbits`` or one byte per class);
- ``audioset_train_strong.tsv`` and ``audioset_eval_strong.tsv`` (the official strong labels: ``segment_id``,
  ``start_time_seconds``, ``end_time_seconds``, ``label`` = MID; PretrainedSED's ``.csv`` copies work too);
- optionally ``mid_to_display_name.tsv`` (the official MID -> name list; else ``audioset_classes/strong_all.tsv``).

The train labels go with the clips of both training HDF5 files (``balanced_train``, ``unbalanced_train``), the eval
labels with ``eval_segments_mp3.hdf`` (``eval``): the splits and fields of PretrainedSED's builder (see
:mod:`data_util.audioset_strong`). Work is cut into shards of ``shard_size`` clips converted in ``workers``
processes; each finished shard is saved under ``<dataset_path>.parts/`` and skipped when the command runs again,
so an interrupted run resumes. The final dataset is written to a temporary folder and renamed into place.
Reported: labelled segments whose clip is in no HDF5 file (no audio), HDF5 clips without strong labels (not
used), label MIDs without a display name, and clips whose audio cannot be decoded (left out).

CLI: ``python -m ex_audioset_strong prepare_data with source_path=... dataset_path=...`` or
``python -m data_util.audioset_strong_prepare --source ... --out ...``.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import re
import shutil
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from data_util.audioset_strong import (
    SPLITS,
    clip_id,
    encoded_duration,
    read_mid_names,
    segment_clip_id,
    weak_classes,
)

log = logging.getLogger(__name__)

HDF5_FILES = {"balanced_train": "balanced_train_segments_mp3.hdf", "unbalanced_train": "unbalanced_train_segments_mp3.hdf",
              "eval": "eval_segments_mp3.hdf"}
LABEL_FILES = {"train": ("audioset_train_strong.tsv", "audioset_train_strong.csv"),
               "eval": ("audioset_eval_strong.tsv", "audioset_eval_strong.csv")}
SPLIT_LABELS = {"balanced_train": "train", "unbalanced_train": "train", "eval": "eval"}
MID_NAMES_FILE = "mid_to_display_name.tsv"
SOURCE_SUBFOLDERS = ("", "mp3")
LABEL_COLUMNS = ("segment_id", "start_time_seconds", "end_time_seconds", "label")
NUM_WEAK_CLASSES = 527
DEFAULT_SHARD_SIZE = 2000
PARTS_SUFFIX = ".parts"
REPORT_FILE = "prepare_report.json"
MAX_LISTED = 20  # clip ids shown per problem in the report
_BYTES_OBJECT = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")


class SourceError(FileNotFoundError):
    """Source files missing or malformed; the message lists every problem and the fix."""


@dataclass
class PrepareReport:
    """What ``prepare_data`` found and wrote (also saved as ``prepare_report.json`` next to the dataset)."""

    clips: dict[str, int] = field(default_factory=dict)  # written per split
    segments_without_audio: dict[str, int] = field(default_factory=dict)  # per label file
    audio_without_labels: dict[str, int] = field(default_factory=dict)  # HDF5 clips not in the labels, per split
    unknown_mids: list[str] = field(default_factory=list)
    undecodable: dict[str, str] = field(default_factory=dict)  # clip id -> error
    examples_without_audio: list[str] = field(default_factory=list)
    shards_reused: int = 0
    shards_written: int = 0

    def summary(self) -> str:
        lines = [f"clips written: {self.clips}",
                 f"labelled clips without audio (skipped): {self.segments_without_audio}"
                 + (f", e.g. {self.examples_without_audio[:5]}" if self.examples_without_audio else ""),
                 f"HDF5 clips without strong labels (not used): {self.audio_without_labels}",
                 f"shards reused from an earlier run: {self.shards_reused}, written now: {self.shards_written}"]
        if self.unknown_mids:
            lines.append(f"label MIDs without a display name (events kept with the MID as name): {self.unknown_mids}")
        if self.undecodable:
            lines.append(f"clips whose audio cannot be decoded (left out): {len(self.undecodable)}, e.g. "
                         f"{dict(list(self.undecodable.items())[:3])}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ sources
def find_source_files(source: str | os.PathLike) -> tuple[dict[str, Path], dict[str, Path], Path | None]:
    """(HDF5 file per split, label file per label set, MID name file or None); one error lists what is missing."""
    source = Path(source)
    folders = [source / sub for sub in SOURCE_SUBFOLDERS]

    def first(names: Sequence[str]) -> Path | None:
        return next((folder / name for folder in folders for name in names if (folder / name).is_file()), None)

    hdf5 = {split: first([name]) for split, name in HDF5_FILES.items()}
    labels = {kind: first(names) for kind, names in LABEL_FILES.items()}
    missing = [f"{HDF5_FILES[s]} (PaSST's AudioSet HDF5 files)" for s, p in hdf5.items() if p is None]
    missing += [f"{' or '.join(LABEL_FILES[k])} (official AudioSet strong labels, "
                "https://research.google.com/audioset/download_strong.html)" for k, p in labels.items() if p is None]
    if missing:
        raise SourceError(f"AudioSet-strong source folder {source} (source_path) lacks:\n  - " + "\n  - ".join(missing)
                          + f"\nlooked in {', '.join(str(f) for f in folders)}")
    return hdf5, labels, first([MID_NAMES_FILE])


def read_strong_labels(path: str | os.PathLike) -> dict[str, list[tuple[float, float, str]]]:
    """``{Y<id>: [(onset, offset, MID), ...]}`` of an official strong-label tsv (or PretrainedSED's csv copy)."""
    path = Path(path)
    delimiter = "," if path.suffix == ".csv" else "\t"
    events: dict[str, list] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None or any(column not in header for column in LABEL_COLUMNS):
            raise SourceError(f"{path}: expected a header with the columns {', '.join(LABEL_COLUMNS)}, got {header}")
        columns = [header.index(c) for c in LABEL_COLUMNS]
        for line_no, row in enumerate(reader, 2):
            if not row:
                continue
            try:
                segment, onset, offset, mid = (row[i] for i in columns)
                events[segment_clip_id(segment)].append((float(onset), float(offset), mid))
            except (IndexError, ValueError) as error:
                raise SourceError(f"{path}:{line_no}: malformed row {row!r} ({error})") from error
    return dict(events)


def hdf5_clip_ids(path: str | os.PathLike) -> list[str]:
    """The clip ids (``Y<id>``) of a PaSST HDF5 file, in file order."""
    with h5py.File(path, "r") as f:
        for key in ("audio_name", "mp3", "target"):
            if key not in f:
                raise SourceError(f"{path}: not a PaSST AudioSet HDF5 file (no dataset {key!r}; found {list(f)})")
        return [clip_id(name.decode("utf-8") if isinstance(name, bytes) else str(name)) for name in f["audio_name"][()]]


def unpack_target(target: np.ndarray, num_classes: int = NUM_WEAK_CLASSES) -> np.ndarray:
    """A weak-label vector from the HDF5 ``target``: bit-packed (``ceil(527 / 8)`` bytes) or one value per class."""
    target = np.asarray(target)
    if target.shape[-1] == num_classes:
        return (target > 0).astype(np.uint8)
    if target.dtype == np.uint8 and target.shape[-1] == (num_classes + 7) // 8:
        return np.unpackbits(target, count=num_classes)
    raise SourceError(f"weak target of shape {target.shape} and dtype {target.dtype}: expected {num_classes} values "
                      f"or {(num_classes + 7) // 8} bit-packed bytes")


# ------------------------------------------------------------------------------------------------ shards
@dataclass(frozen=True)
class ShardJob:
    split: str
    index: int
    hdf5: str
    rows: tuple[int, ...]  # rows of the HDF5 file
    events: tuple[tuple[tuple[float, float, str, str], ...], ...]  # per row: (onset, offset, name, MID)
    out_dir: str


def _features():
    import datasets  # lazy: the Hugging Face stack loads only for the conversion

    return datasets.Features({
        "filename": datasets.Value("string"),
        "filepath": datasets.Value("string"),
        "mp3_bytes": datasets.Value("binary"),
        "duration": datasets.Value("float64"),
        "labels": datasets.Sequence(datasets.Value("string")),
        "label_ids": datasets.Sequence(datasets.Value("string")),
        "events": datasets.Sequence({"onset": datasets.Value("float64"), "offset": datasets.Value("float64"),
                                     "event_label": datasets.Value("string"),
                                     "event_label_id": datasets.Value("string")}),
    })


def convert_shard(job: ShardJob) -> tuple[str, int, int, dict[str, str]]:
    """Read one shard's clips from the HDF5 file and save them as a dataset; ``(split, index, clips, undecodable)``."""
    import datasets  # lazy: the Hugging Face stack loads only for the conversion

    datasets.disable_progress_bars()
    weak = weak_classes()
    columns = {name: [] for name in _features()}
    undecodable = {}
    with h5py.File(job.hdf5, "r") as f:
        names, mp3s, targets = f["audio_name"], f["mp3"], f["target"]
        for row, events in zip(job.rows, job.events):
            raw_name = names[row]
            name = clip_id(raw_name.decode("utf-8") if isinstance(raw_name, bytes) else str(raw_name))
            data = np.asarray(mp3s[row], dtype=np.uint8).tobytes()
            try:
                duration = encoded_duration(data)
            except Exception as error:  # noqa: BLE001 - any libsndfile failure means the clip is unusable
                undecodable[name] = _BYTES_OBJECT.sub("the mp3 bytes", str(error))
                continue
            weak_labels = np.flatnonzero(unpack_target(targets[row]))
            columns["filename"].append(name + ".mp3")
            columns["filepath"].append(f"{Path(job.hdf5).name}:{name}.mp3")
            columns["mp3_bytes"].append(data)
            columns["duration"].append(duration)
            columns["labels"].append([weak.names[i] for i in weak_labels])
            columns["label_ids"].append([weak.mids[i] for i in weak_labels])
            columns["events"].append({"onset": [e[0] for e in events], "offset": [e[1] for e in events],
                                      "event_label": [e[2] for e in events], "event_label_id": [e[3] for e in events]})
    out = Path(job.out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_dict(columns, features=_features()).save_to_disk(str(tmp))
    (tmp / "undecodable.json").write_text(json.dumps(undecodable), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return job.split, job.index, len(columns["filename"]), undecodable


def _limit_threads() -> None:
    import torch  # lazy: only worker processes set torch's thread count

    torch.set_num_threads(1)


def plan_shards(source: str | os.PathLike, parts_dir: Path, shard_size: int = DEFAULT_SHARD_SIZE,
                report: PrepareReport | None = None) -> list[ShardJob]:
    """Every shard of every split (finished ones included); fills ``report``'s label/audio statistics."""
    report = report if report is not None else PrepareReport()
    hdf5, label_files, mid_file = find_source_files(source)
    mid_names = read_mid_names(mid_file)
    labels = {kind: read_strong_labels(path) for kind, path in label_files.items()}
    unknown = set()
    jobs = []
    matched: dict[str, set[str]] = defaultdict(set)
    for split in SPLITS:
        kind = SPLIT_LABELS[split]
        ids = hdf5_clip_ids(hdf5[split])
        rows = [(row, name) for row, name in enumerate(ids) if name in labels[kind]]
        report.audio_without_labels[split] = len(ids) - len(rows)
        matched[kind].update(name for _, name in rows)
        for index, start in enumerate(range(0, len(rows), shard_size)):
            chunk = rows[start:start + shard_size]
            events = []
            for _, name in chunk:
                clip_events = []
                for onset, offset, mid in labels[kind][name]:
                    if mid not in mid_names:
                        unknown.add(mid)
                    clip_events.append((onset, offset, mid_names.get(mid, mid), mid))
                events.append(tuple(clip_events))
            jobs.append(ShardJob(split, index, str(hdf5[split]), tuple(r for r, _ in chunk), tuple(events),
                                 str(parts_dir / split / f"{index:05d}")))
    for kind, clips in labels.items():
        without = sorted(set(clips) - matched[kind])
        report.segments_without_audio[kind] = len(without)
        report.examples_without_audio += without[:MAX_LISTED]
    report.unknown_mids = sorted(unknown)
    return jobs


def _reset_parts_if_plan_changed(parts: Path, jobs: Sequence[ShardJob]) -> None:
    """Shards of an earlier run are reused only when the plan (sources, shard size) is the same."""
    plan = hashlib.sha1(json.dumps([(j.split, j.index, j.hdf5, j.rows) for j in jobs]).encode()).hexdigest()
    plan_file = parts / "plan.sha1"
    if parts.is_dir() and (not plan_file.is_file() or plan_file.read_text().strip() != plan):
        log.info("the sources or the shard size changed since the interrupted run: converting every shard again")
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(plan + "\n")


def prepare_audioset_strong(source: str | os.PathLike, dataset_path: str | os.PathLike, *, workers: int = 1,
                            shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False,
                            progress: bool = True) -> PrepareReport:
    """Convert the source files into the prepared dataset at ``dataset_path`` (see the module docstring)."""
    import datasets  # lazy: the Hugging Face stack loads only for the conversion

    datasets.disable_progress_bars()  # one progress bar (ours) for the whole conversion
    out = Path(dataset_path)
    if (out / "dataset_dict.json").is_file() and not overwrite:
        raise FileExistsError(f"{out} already holds a prepared dataset; pass overwrite=True (CLI: --overwrite) to "
                              "build it again")
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size} must be >= 1")
    parts = out.with_name(out.name + PARTS_SUFFIX)
    report = PrepareReport()
    jobs = plan_shards(source, parts, shard_size, report)
    _reset_parts_if_plan_changed(parts, jobs)
    done = [job for job in jobs if (Path(job.out_dir) / "dataset_info.json").is_file()]
    todo = [job for job in jobs if job not in done]
    report.shards_reused = len(done)
    undecodable = {}
    for job in done:
        undecodable.update(json.loads((Path(job.out_dir) / "undecodable.json").read_text(encoding="utf-8")))
    bar = tqdm(total=sum(len(j.rows) for j in todo), desc="AudioSet-strong -> dataset", unit="clip",
               disable=not progress or not todo)
    if workers <= 1:
        outcomes = (convert_shard(job) for job in todo)
        for (_, _, _, bad), job in zip(outcomes, todo):
            undecodable.update(bad)
            bar.update(len(job.rows))
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_limit_threads) as pool:
            futures = {pool.submit(convert_shard, job): job for job in todo}
            for future in as_completed(futures):
                undecodable.update(future.result()[3])
                bar.update(len(futures[future].rows))
    bar.close()
    report.shards_written = len(todo)
    report.undecodable = dict(sorted(undecodable.items()))

    splits = {}
    for split in SPLITS:
        shards = [datasets.load_from_disk(job.out_dir) for job in jobs if job.split == split]
        splits[split] = datasets.concatenate_datasets(shards) if shards else \
            datasets.Dataset.from_dict({name: [] for name in _features()}, features=_features())
        report.clips[split] = len(splits[split])
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.DatasetDict(splits).save_to_disk(str(tmp))
    (tmp / REPORT_FILE).write_text(json.dumps(asdict(report), indent=1) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    shutil.rmtree(parts, ignore_errors=True)
    log.info("prepared AudioSet-strong at %s:\n%s", out, report.summary())
    return report


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_util.audioset_strong_prepare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="folder with the PaSST HDF5 files and the strong-label tsvs")
    parser.add_argument("--out", required=True, help="where the prepared dataset is written")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = prepare_audioset_strong(args.source, args.out, workers=args.workers, shard_size=args.shard_size,
                                         overwrite=args.overwrite)
    except (SourceError, FileExistsError, ValueError) as error:
        print(f"error: {error}")
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
