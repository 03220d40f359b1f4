"""``prepare_data``: create the 16 kHz audio folders from the 44.1 kHz originals.

The DCASE data is distributed at 44.1 kHz; the system reads 16 kHz copies in ``*_16k`` folders next to
the 44.1 kHz originals (``data_util.layout.SetSpec.original_audio``). The reference assumed those copies
existed and shipped no code to make them. This tool resamples every original whose 16 kHz copy is
missing (mono, same file name and format), in parallel, with a progress bar. It can be interrupted and
re-run: each file is written to a temporary name and renamed, so a file under its final name is always
complete, and files already converted are skipped.

CLI: ``python -m ex_stage1 prepare_data`` (wired by the experiments) or
``python -m data_util.prepare --dataset-root PATH [--sets synth_train weak_train] [--workers 8]``.
"""
from __future__ import annotations

import argparse
import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from configs import resolve_dataset_path
from data_util import layout
from data_util.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, AudioReadError, read_audio

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"  # temporary outputs are hidden files in the target folder


@dataclass
class PrepareResult:
    """What ``prepare_data`` did."""

    converted: int = 0
    skipped: int = 0  # 16 kHz copy already present
    failed: dict[str, str] = field(default_factory=dict)  # original file -> error
    missing_sets: list[str] = field(default_factory=list)  # neither originals nor 16 kHz folder found

    def as_dict(self) -> dict:
        return {"converted": self.converted, "skipped": self.skipped, "failed": len(self.failed),
                "missing_sets": list(self.missing_sets)}


def convert_file(source: str | os.PathLike, target: str | os.PathLike, target_sr: int = SAMPLE_RATE) -> None:
    """Write ``source`` as mono ``target_sr`` audio to ``target`` (same format), atomically."""
    source, target = Path(source), Path(target)
    waveform = np.clip(read_audio(source, target_sr), -1.0, 1.0)
    info = sf.info(str(source))
    subtype = info.subtype if sf.check_format(info.format, info.subtype) else None
    temporary = target.with_name(f"{TEMP_PREFIX}{os.getpid()}-{target.name}")
    try:
        sf.write(str(temporary), waveform, target_sr, format=info.format, subtype=subtype)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _convert_task(source: str, target: str, target_sr: int) -> tuple[str, str | None]:
    """Process-pool entry point: ``(source, error message or None)``."""
    try:
        convert_file(source, target, target_sr)
        return source, None
    except (AudioReadError, sf.LibsndfileError, OSError, RuntimeError, ValueError) as error:
        return source, str(error)


def _limit_threads() -> None:
    import torch  # lazy: only worker processes set torch's thread count

    torch.set_num_threads(1)  # one process per core already


def plan(dataset_root: str | os.PathLike, sets: Iterable[str] | None = None) -> tuple[list[tuple[Path, Path]], int, list[str]]:
    """``(files to convert as (original, target), files already present, sets with no audio at all)``."""
    root = Path(dataset_root)
    names = list(sets) if sets is not None else list(layout.SETS)
    unknown = [n for n in names if n not in layout.SETS]
    if unknown:
        raise KeyError(f"unknown set(s) {unknown}; expected names from data_util.layout.SETS: {list(layout.SETS)}")
    todo: list[tuple[Path, Path]] = []
    present = 0
    missing_sets: list[str] = []
    seen_folders: set[str] = set()
    for name in names:
        spec = layout.SETS[name]
        if spec.audio in seen_folders:  # external_strong_train / _val share one folder
            continue
        seen_folders.add(spec.audio)
        original, target = root / spec.original_audio, root / spec.audio
        if not original.is_dir():
            if not target.is_dir():
                missing_sets.append(name)
            continue
        existing = set(os.listdir(target)) if target.is_dir() else set()
        for source in sorted(original.iterdir()):
            if source.suffix.lower() not in AUDIO_EXTENSIONS or source.name.startswith("."):
                continue
            if source.name in existing:
                present += 1
            else:
                todo.append((source, target / source.name))
    return todo, present, missing_sets


def prepare_data(
    dataset_root: str | os.PathLike,
    sets: Iterable[str] | None = None,
    workers: int | None = None,
    *,
    target_sr: int = SAMPLE_RATE,
    progress: bool = True,
) -> PrepareResult:
    """Resample the 44.1 kHz originals of ``sets`` (default: all) into their missing ``_16k`` copies.

    ``workers``: processes (default: all cores; 0 or 1 = in this process). Returns the counts; failures
    are logged and reported per file, they do not stop the other files.
    """
    todo, present, missing_sets = plan(dataset_root, sets)
    result = PrepareResult(skipped=present, missing_sets=missing_sets)
    for name in missing_sets:
        log.warning("set %s: neither %s nor %s exists under %s", name, layout.SETS[name].original_audio,
                    layout.SETS[name].audio, dataset_root)
    for target_dir in sorted({t.parent for _, t in todo}):
        target_dir.mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = tqdm(total=len(todo), desc="resampling to 16 kHz", unit="file", disable=not progress or not todo)
    if workers <= 1:
        outcomes = (_convert_task(str(s), str(t), target_sr) for s, t in todo)
        _collect(outcomes, result, bar)
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_limit_threads) as pool:
            futures = [pool.submit(_convert_task, str(s), str(t), target_sr) for s, t in todo]
            _collect((f.result() for f in as_completed(futures)), result, bar)
    bar.close()
    log.info("prepare_data: %s", result.as_dict())
    return result


def _collect(outcomes, result: PrepareResult, bar) -> None:
    for source, error in outcomes:
        if error is None:
            result.converted += 1
        else:
            result.failed[source] = error
            log.error("could not convert %s: %s", source, error)
        bar.update(1)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 if any file failed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset-root", default=None, help="dataset root (default: $T4_DATASET_PATH or ./data)")
    parser.add_argument("--sets", nargs="*", default=None, help=f"sets to prepare (default all: {list(layout.SETS)})")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = prepare_data(resolve_dataset_path(args.dataset_root), args.sets, args.workers)
    print(
        f"converted {result.converted}, already present {result.skipped}, failed {len(result.failed)}"
        + (f", sets without audio: {result.missing_sets}" if result.missing_sets else "")
    )
    for source, error in result.failed.items():
        print(f"FAILED {source}: {error}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
