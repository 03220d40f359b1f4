"""``check_data`` of AudioSet-strong: one table of the source files and the prepared dataset, then every problem.

``python -m ex_audioset_strong check_data [with source_path=... dataset_path=...]`` exits with status 1 when the
prepared dataset (what training reads) is missing or malformed; the source files are needed only by
``prepare_data`` and are reported as warnings when absent next to a complete dataset.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from data_util.audioset_strong import FIELDS, SPLITS, load_dataset_dict
from data_util.audioset_strong_prepare import (
    HDF5_FILES,
    LABEL_FILES,
    REPORT_FILE,
    SourceError,
    find_source_files,
    read_strong_labels,
)

ERROR, WARNING, OK = "ERROR", "WARNING", "ok"
REQUIRED_FIELDS = ("filename", "mp3_bytes", "events")  # what training reads (PretrainedSED's builder has them)


@dataclass
class Row:
    item: str
    path: str
    found: str
    status: str = OK


@dataclass
class CheckReport:
    rows: list[Row] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (severity, message, fix)

    @property
    def ok(self) -> bool:
        return not any(severity == ERROR for severity, _, _ in self.problems)

    def add(self, row: Row, severity: str | None = None, message: str = "", fix: str = "") -> None:
        if severity:
            row.status = severity
            self.problems.append((severity, f"{row.item}: {message}", fix))
        self.rows.append(row)


def _check_sources(source: Path, report: CheckReport, severity: str) -> None:
    try:
        hdf5, labels, _ = find_source_files(source)
    except SourceError as error:
        report.add(Row("source files", str(source), "incomplete"), severity, str(error).splitlines()[0],
                   "put PaSST's HDF5 files and the official strong-label tsvs into source_path (only prepare_data "
                   "reads them)")
        return
    for split, path in hdf5.items():
        try:
            with h5py.File(path, "r") as f:
                missing = [k for k in ("audio_name", "mp3", "target") if k not in f]
                count = len(f["audio_name"]) if "audio_name" in f else 0
        except OSError as error:
            report.add(Row(HDF5_FILES[split], str(path), "unreadable"), ERROR, str(error),
                       "download the file again (truncated?)")
            continue
        if missing:
            report.add(Row(HDF5_FILES[split], str(path), f"{count} clips"), ERROR, f"no dataset(s) {missing}",
                       "this is not one of PaSST's AudioSet HDF5 files")
        else:
            report.add(Row(HDF5_FILES[split], str(path), f"{count} clips"))
    for kind, path in labels.items():
        try:
            clips = read_strong_labels(path)
            report.add(Row(LABEL_FILES[kind][0], str(path), f"{len(clips)} clips"))
        except SourceError as error:
            report.add(Row(LABEL_FILES[kind][0], str(path), "malformed"), ERROR, str(error),
                       "use the official tsv (segment_id, start_time_seconds, end_time_seconds, label)")


def _check_dataset(dataset: Path, report: CheckReport) -> bool:
    try:
        dataset_dict = load_dataset_dict(dataset)
    except (FileNotFoundError, ValueError) as error:
        report.add(Row("prepared dataset", str(dataset), "missing"), ERROR, str(error).splitlines()[0],
                   "python -m ex_audioset_strong prepare_data with source_path=<source folder> "
                   f"dataset_path={dataset}")
        return False
    for split in SPLITS:
        rows = dataset_dict[split]
        missing = [f for f in REQUIRED_FIELDS if f not in rows.column_names]
        absent = [f for f in FIELDS if f not in rows.column_names and f not in missing]
        row = Row(f"split {split}", str(dataset / split), f"{len(rows)} clips")
        if missing:
            report.add(row, ERROR, f"missing field(s) {missing}", "prepare the dataset again with prepare_data")
        elif len(rows) == 0:
            report.add(row, ERROR, "no clips", "check the source files and prepare the dataset again")
        elif absent:
            report.add(row, WARNING, f"no field(s) {absent} (built by another tool?)",
                       "durations: set validation_strong.durations=<eval_durations.csv>")
        else:
            report.add(row)
    prepared = dataset / REPORT_FILE
    if prepared.is_file():
        details = json.loads(prepared.read_text(encoding="utf-8"))
        bad = len(details.get("undecodable", {}))
        report.add(Row("conversion report", str(prepared),
                       f"{sum(details.get('segments_without_audio', {}).values())} labelled clips without audio, "
                       f"{bad} undecodable"))
    return True


def check_data(source: str | os.PathLike, dataset: str | os.PathLike) -> CheckReport:
    report = CheckReport()
    complete = _check_dataset(Path(dataset), report)
    _check_sources(Path(source), report, WARNING if complete else ERROR)
    return report


def format_report(report: CheckReport) -> str:
    header = Row("item", "path", "found", "status")
    table = [header] + report.rows
    widths = [max(len(getattr(r, name)) for r in table) for name in ("item", "path", "found", "status")]
    lines = []
    for i, row in enumerate(table):
        cells = [row.item, row.path, row.found, row.status]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("all data present" if not report.problems else
                 f"{sum(p[0] == ERROR for p in report.problems)} error(s), "
                 f"{sum(p[0] == WARNING for p in report.problems)} warning(s)")
    for severity, message, fix in report.problems:
        lines.append(f"  [{severity}] {message}")
        lines.append(f"      fix: {fix}")
    return "\n".join(lines)


__all__ = ["check_data", "format_report", "CheckReport"]
