"""The dataset doctor: is every file of the Task 4 layout where the experiments expect it?

``check_data(dataset_root, resources_dir, stage=1)`` walks ``data_util.layout.SETS`` with directory listings,
parses every tsv with the reader training uses (``data_util.tsv``: what it rejects, the doctor rejects, with the
same message), and with ``sample_audio=N`` reads the headers of the first N audio files of each folder (no audio
is decoded, so it takes seconds on the real data). It returns a ``Report``: one row per set (folder, files
found, files expected, status) plus every problem with the path and the fix. ``format_report`` renders the
table; ``require_data`` raises one ``DataCheckError`` listing every problem. Training runs the same checks on
the sets it will touch before its first step (``data_util.preflight``).

Statuses, worst first: MISSING (no audio folder), NEEDS RESAMPLING (only the 44.1 kHz originals are there,
or fewer 16 kHz files than originals), EMPTY (folder without wav files), MISSING TSV (label / durations /
exclude tsv absent), BAD TSV (a header or row the training reader rejects: missing column, non-numeric or
negative time, onset after offset, unknown label, ...), MISSING FILES (a tsv names audio that is not in the
folder), BAD AUDIO (a sampled file has no readable header, no frames or is truncated; another sample rate than
16 kHz is a warning: it is resampled on every read), COUNT (number of files differs from the expected one), OK.

Counts: on the real data a count mismatch is a warning (DESED users often miss a few YouTube clips, and the
reference's exact-size asserts were its most common crash); on a demo tree (``demo_manifest.json`` at the root,
written by ``data_util.demo``) or with an explicit ``expected`` mapping / preset they are exact, i.e. errors.
Stage 1 checks the training and validation sets, stage 2 also ``eval_public`` and ``eval_private`` and the
device impulse responses in ``resources/dirs`` (stage 2 uses ``training.dir_p=0.5`` by default).

CLI: ``python -m data_util.doctor --root <dataset> [--resources <dir>] [--stage 1|2] [--preset tiny]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import configs
from data_util.layout import EXCLUDED_MAY_BE_ABSENT, EXCLUDE_LISTS, SETS, SetSpec, resolve
from data_util.tsv import TsvFormatError, read_durations_tsv, read_filename_list, read_strong_tsv, read_weak_tsv

OK = "OK"
MISSING = "MISSING"
NEEDS_RESAMPLING = "NEEDS RESAMPLING"
EMPTY = "EMPTY"
MISSING_TSV = "MISSING TSV"
BAD_TSV = "BAD TSV"
MISSING_FILES = "MISSING FILES"
BAD_AUDIO = "BAD AUDIO"
COUNT = "COUNT"
STATUS_ORDER = (MISSING, NEEDS_RESAMPLING, EMPTY, MISSING_TSV, BAD_TSV, MISSING_FILES, BAD_AUDIO, COUNT, OK)

ERROR, WARNING = "error", "warning"
SHOW_NAMES = 5  # names listed per "tsv names files that are not in the folder" problem

DEMO_MANIFEST = "demo_manifest.json"  # same name as data_util.demo.DEMO_MANIFEST (which needs numpy to import)
AUDIO_SUFFIX = ".wav"
DEFAULT_AUDIO_SAMPLES = 3  # audio headers read per folder by `check_data` and before training
EXPECTED_SAMPLE_RATE = 16_000

# The reader training uses for each tsv kind (data_util.tsv); its errors name the file and line.
TSV_READERS: dict[str, Callable[[Path], Iterable[str]]] = {
    "strong": read_strong_tsv,
    "soft": lambda path: read_strong_tsv(path, soft=True),
    "weak": read_weak_tsv,
    "durations": read_durations_tsv,
    "exclude": read_filename_list,
}

TASK_PAGE = ("https://dcase.community/challenge2024/"
             "task-sound-event-detection-with-heterogeneous-training-dataset-and-potentially-missing-labels")
DOWNLOAD_HINTS: dict[str, str] = {
    "desed": f"download DESED as in the DCASE 2024 Task 4 instructions ({TASK_PAGE}; script "
             "DCASE-REPO/DESED_task recipes/dcase2024_task4_baseline/generate_dcase_task4_2024.py); "
             "missing YouTube clips can be requested from the task organisers",
    "external": "download the external strongly-labelled AudioSet clips "
                "(https://saoyear.github.io/post/downloading-real-waveforms-for-desed/)",
    "maestro": "download MAESTRO Real (https://zenodo.org/records/7244360) and cut it into 10 s chunks with "
               "DESED_task recipes/dcase2024_task4_baseline/dprep/download_prep_maestro.py "
               "(generate_dcase_task4_2024.py --only_maestro)",
    "eval_public": "download the DESED public evaluation set (https://github.com/turpaultn/DESED)",
    "eval_private": f"download the DCASE 2024 Task 4 evaluation set ({TASK_PAGE})",
}
SET_SOURCES: dict[str, str] = {
    "synth_train": "desed", "strong_train": "desed", "weak_train": "desed", "unlabeled_train": "desed",
    "synth_val": "desed", "devtest": "desed", "external_strong_train": "external",
    "external_strong_val": "external", "maestro_real_train": "maestro", "maestro_real_dev": "maestro",
    "eval_public": "eval_public", "eval_private": "eval_private",
}
RESOURCES_HINT = "run `python download_resources.py` (it fetches the resources-side tsvs and impulse responses)"
RESAMPLE_HINT = "run `python -m ex_stage1 prepare_data` to resample the 44.1 kHz originals in {original} to 16 kHz"
DEMO_HINT = "regenerate the demo tree: `python -m data_util.demo --out {root} --preset {preset} --overwrite`"
ROOT_HINT = ("point the experiments at the dataset: `with base_path=/path/to/dataset` or the environment "
             "variable T4_DATASET_PATH")


class DataCheckError(RuntimeError):
    """The dataset is incomplete or malformed; the message lists every problem and its fix."""

    def __init__(self, report: "Report"):
        self.report = report
        super().__init__(format_problems(report, severities=(ERROR,)))


@dataclass(frozen=True)
class Problem:
    severity: str  # ERROR | WARNING
    status: str  # one of STATUS_ORDER
    set_name: str
    path: Path
    message: str
    fix: str


@dataclass
class SetCheck:
    """One table row."""

    name: str
    folder: str  # as shown in the table (relative to the dataset root or marked as resources)
    found: int | None
    expected: int | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def status(self) -> str:
        statuses = [p.status for p in self.problems] or [OK]
        return min(statuses, key=STATUS_ORDER.index)


@dataclass
class Report:
    dataset_root: Path
    resources_dir: Path
    stage: int
    exact_counts: bool
    expected_source: str
    rows: list[SetCheck] = field(default_factory=list)
    general: list[Problem] = field(default_factory=list)  # problems that belong to no row (e.g. no root)

    @property
    def problems(self) -> list[Problem]:
        return self.general + [p for row in self.rows for p in row.problems]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------------------------------------------------------------
# Helpers: listings and tsvs
# ---------------------------------------------------------------------------------------------------------------------


def _wav_names(folder: Path) -> set[str] | None:
    """Names of the wav files directly in ``folder``; None when the folder does not exist."""
    if not folder.is_dir():
        return None
    with os.scandir(folder) as entries:
        return {e.name for e in entries if e.name.lower().endswith(AUDIO_SUFFIX) and e.is_file()}


def _read_tsv(path: Path, kind: str) -> tuple[list[str], str | None]:
    """(file names of the rows, error message or None), read with the reader training uses."""
    try:
        return list(TSV_READERS[kind](path)), None
    except TsvFormatError as e:  # the reader's message starts with the path, which the report shows already
        return [], str(e).removeprefix(f"{path}, ").removeprefix(f"{path}: ")
    except (OSError, UnicodeDecodeError) as e:
        return [], f"cannot read it: {e}"


def _stem(name: str) -> str:
    return name[: -len(AUDIO_SUFFIX)] if name.lower().endswith(AUDIO_SUFFIX) else name


def _maestro_recording(chunk_name: str) -> str:
    """``cafe_restaurant_07-000100-001100.wav`` -> ``cafe_restaurant_07``."""
    return chunk_name.rsplit("-", 2)[0]


def _shown(names: Iterable[str]) -> str:
    names = sorted(names)
    more = f" and {len(names) - SHOW_NAMES} more" if len(names) > SHOW_NAMES else ""
    return ", ".join(names[:SHOW_NAMES]) + more


# ---------------------------------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------------------------------


def _resolve_expected(dataset_root: Path, expected, exact_counts: bool | None):
    """(expected counts per set, exact?, where they come from, demo manifest or None)."""
    manifest_path = dataset_root / DEMO_MANIFEST
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{manifest_path} is not a readable demo manifest: {e}") from e
    if expected is None and manifest is not None:
        counts, exact, source = manifest["counts"], True, f"demo manifest (preset {manifest.get('preset')!r})"
    elif expected is None:
        counts = {name: spec.expected_files for name, spec in SETS.items()}
        exact, source = False, "real DCASE 2024 Task 4 data (before excluding)"
    elif isinstance(expected, str):
        from data_util.demo import EXPECTED_COUNTS  # lazy: numpy only when a preset is named

        if expected not in EXPECTED_COUNTS:
            raise ValueError(f"unknown demo preset {expected!r}; expected one of {sorted(EXPECTED_COUNTS)}")
        counts, exact, source = EXPECTED_COUNTS[expected], True, f"demo preset {expected!r}"
    elif isinstance(expected, Mapping):
        counts, exact, source = dict(expected), True, "given counts"
    else:
        raise TypeError(f"expected must be None, a demo preset name or a mapping set -> count, got {expected!r}")
    return counts, (exact if exact_counts is None else exact_counts), source, manifest


class _Checker:
    """Checks one set at a time, collecting problems with the right fix text."""

    def __init__(self, dataset_root: Path, resources_dir: Path, manifest: dict | None, exact: bool):
        self.root, self.resources, self.manifest, self.exact = dataset_root, resources_dir, manifest, exact
        self.excluded: dict[str, set[str]] = {}  # set name -> stems of its exclude list

    def fix(self, set_name: str, kind: str) -> str:
        """kind: 'audio' (download), 'resample', 'resources' (download_resources.py)."""
        if self.manifest is not None:
            return DEMO_HINT.format(root=self.root, preset=self.manifest.get("preset", "tiny"))
        if kind == "resources":
            return RESOURCES_HINT
        return DOWNLOAD_HINTS[SET_SOURCES.get(set_name, "desed")]

    def problem(self, row: SetCheck, status: str, path: Path, message: str, fix: str, severity: str = ERROR):
        row.problems.append(Problem(severity, status, row.name, path, message, fix))

    def tsv_path(self, spec: SetSpec, relative: str) -> Path:
        return resolve(relative, self.root, self.resources, spec.labels_in_resources)

    def check_set(self, spec: SetSpec, expected: int | None, sample_audio: int = 0) -> SetCheck:
        folder = self.root / spec.audio
        row = SetCheck(spec.name, spec.audio, None, expected)
        names = _wav_names(folder)
        original = self.root / spec.original_audio
        original_names = _wav_names(original) or set()
        row.found = None if names is None else len(names)
        if not names and original_names:
            self.problem(row, NEEDS_RESAMPLING, folder,
                         f"no 16 kHz audio, but {len(original_names)} original(s) in {original}",
                         RESAMPLE_HINT.format(original=original))
        elif names is None:
            self.problem(row, MISSING, folder, "audio folder does not exist", self.fix(spec.name, "audio"))
        elif not names:
            self.problem(row, EMPTY, folder, "audio folder holds no .wav files", self.fix(spec.name, "audio"))
        elif len(original_names - names) > 0 and len(names) < len(original_names):
            self.problem(row, NEEDS_RESAMPLING, folder,
                         f"{len(original_names - names)} of the {len(original_names)} originals in {original} "
                         "have no 16 kHz version", RESAMPLE_HINT.format(original=original))
        if names and expected is not None and len(names) != expected:
            self.problem(row, COUNT, folder, f"{len(names)} audio files, expected {expected}",
                         self.fix(spec.name, "audio"), severity=ERROR if self.exact else WARNING)
        if spec.labels is not None:
            self.check_tsv(row, spec, spec.labels, spec.label_kind or "strong", names)
        if spec.durations is not None:
            self.check_tsv(row, spec, spec.durations, "durations", names)
        if names and sample_audio > 0:
            self.check_audio(row, spec, folder, sorted(names)[:sample_audio])
        return row

    def check_audio(self, row: SetCheck, spec: SetSpec, folder: Path, names: list[str]):
        """Read the headers of ``names``: unreadable, empty or truncated files are errors, other rates warnings."""
        from data_util.audio import AudioReadError, read_header  # lazy: soundfile/torch only when audio is sampled

        unreadable, other_rates = [], []
        for name in names:
            try:
                info = read_header(folder / name)
            except AudioReadError as e:
                unreadable.append(f"{name} ({e.reason})")
                continue
            if info.samplerate != EXPECTED_SAMPLE_RATE:
                other_rates.append(f"{name} ({info.samplerate} Hz)")
        if unreadable:
            self.problem(row, BAD_AUDIO, folder, f"{len(unreadable)} of {len(names)} sampled audio file(s) are "
                         f"unreadable: {', '.join(unreadable[:SHOW_NAMES])}", self.fix(spec.name, "audio"))
        if other_rates:
            self.problem(row, BAD_AUDIO, folder, f"{len(other_rates)} of {len(names)} sampled file(s) are not "
                         f"{EXPECTED_SAMPLE_RATE} Hz: {', '.join(other_rates[:SHOW_NAMES])}; they are resampled on "
                         "every read (slower)", RESAMPLE_HINT.format(original=folder), severity=WARNING)

    def check_tsv(self, row: SetCheck, spec: SetSpec, relative: str, kind: str, names: set[str] | None):
        path = self.tsv_path(spec, relative)
        fix = self.fix(spec.name, "resources" if spec.labels_in_resources else "audio")
        if not path.is_file():
            self.problem(row, MISSING_TSV, path, f"{kind} tsv does not exist", fix)
            return
        listed, error = _read_tsv(path, kind)
        if error:
            self.problem(row, BAD_TSV, path, error, fix)
        if not names:
            return  # the folder problem is already reported
        if spec.domain == "maestro" and kind == "durations":
            # MAESTRO durations are per recording (stems), the folder holds its chunks
            recordings = {_maestro_recording(Path(n).stem) for n in names}
            absent = recordings - set(listed)
            what = "recording(s) of the chunks in the folder have no duration"
        else:
            # training drops the excluded clips of these sets before reading any audio; elsewhere all must exist
            may_be_absent = self.excluded.get(spec.name, set()) if spec.name in EXCLUDED_MAY_BE_ABSENT else set()
            absent = {n for n in set(listed) - names if _stem(n) not in may_be_absent}
            what = "file(s) named in the tsv are not in the audio folder"
        if absent:
            self.problem(row, MISSING_FILES, path, f"{len(absent)} {what}: {_shown(absent)}", fix)

    def check_exclude_lists(self, set_names: Iterable[str]) -> SetCheck:
        lists = {name: EXCLUDE_LISTS[name] for name in set_names if name in EXCLUDE_LISTS}
        row = SetCheck("exclude lists", "[resources] exclude/", 0, len(lists))
        for set_name, relative in lists.items():
            path = self.resources / relative
            if not path.is_file():
                self.problem(row, MISSING_TSV, path, f"exclude list of {set_name} does not exist",
                             self.fix(set_name, "resources"))
                continue
            listed, error = _read_tsv(path, "exclude")
            if error:
                self.problem(row, BAD_TSV, path, error, self.fix(set_name, "resources"))
            row.found += 1
            self.excluded[set_name] = {_stem(n) for n in listed}
        return row

    def check_dirs(self) -> SetCheck:
        folder = self.resources / "dirs"
        row = SetCheck("dirs", "[resources] dirs/", None, None)
        if not folder.is_dir():
            self.problem(row, MISSING, folder, "device impulse responses (training.dir_p > 0) do not exist",
                         self.fix("dirs", "resources"))
            return row
        row.found = sum(1 for p in folder.rglob("*") if p.suffix.lower() == AUDIO_SUFFIX and p.is_file())
        if not row.found:
            self.problem(row, EMPTY, folder, "no .wav impulse responses below it", self.fix("dirs", "resources"))
        return row


def check_data(dataset_root, resources_dir, *, sets: Iterable[str] | None = None, expected=None, stage: int = 1,
               exact_counts: bool | None = None, require_exclude_lists: bool = True,
               require_dirs: bool | None = None, sample_audio: int = 0) -> Report:
    """Check the dataset layout; never raises for data problems (see ``require_data``).

    sets: names of ``SETS`` to check (default: stage 1 = training + validation sets, stage 2 = all).
    expected: None (the demo manifest's counts if the root is a demo tree, else ``SetSpec.expected_files``),
        a demo preset name, or a mapping set -> number of audio files.
    exact_counts: count mismatches are errors (default: True for demo trees / given counts, False for real data).
    require_exclude_lists: check ``resources/exclude/*.tsv`` (the default ``training.exclude_overlapping=True``).
    require_dirs: check ``resources/dirs`` (default: only at stage 2, where ``training.dir_p`` defaults to 0.5).
    sample_audio: read the headers of the first ``sample_audio`` audio files (sorted) of each set's folder.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    dataset_root, resources_dir = Path(dataset_root), Path(resources_dir)
    if sets is None:
        sets = [name for name, spec in SETS.items() if stage == 2 or not spec.stage2_only]
    unknown = [name for name in sets if name not in SETS]
    if unknown:
        raise ValueError(f"unknown set name(s) {unknown}; expected names from data_util.layout.SETS: {list(SETS)}")
    counts, exact, source, manifest = _resolve_expected(dataset_root, expected, exact_counts)
    report = Report(dataset_root, resources_dir, stage, exact, source)
    if not dataset_root.is_dir():
        report.general.append(Problem(ERROR, MISSING, "-", dataset_root, "dataset root does not exist", ROOT_HINT))
    checker = _Checker(dataset_root, resources_dir, manifest, exact)
    exclude_row = checker.check_exclude_lists(sets) if require_exclude_lists else None  # first: names to tolerate
    for name in sets:
        report.rows.append(checker.check_set(SETS[name], counts.get(name), sample_audio))
    if exclude_row is not None and exclude_row.expected:
        report.rows.append(exclude_row)
    if require_dirs if require_dirs is not None else stage == 2:
        report.rows.append(checker.check_dirs())
    return report


def require_data(dataset_root, resources_dir, **kwargs) -> Report:
    """``check_data`` that raises ``DataCheckError`` (listing every problem and its fix) when anything is wrong."""
    report = check_data(dataset_root, resources_dir, **kwargs)
    if not report.ok:
        raise DataCheckError(report)
    return report


# ---------------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------------


def _cell(value) -> str:
    return "-" if value is None else str(value)


def format_report(report: Report) -> str:
    """One table (set, folder, files found, expected, status), then the problems with their fixes."""
    header = ("set", "folder", "found", "expected", "status")
    table = [header] + [(r.name, r.folder, _cell(r.found), _cell(r.expected), r.status) for r in report.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = (False, False, True, True, False)
    lines = [f"dataset root: {report.dataset_root}", f"resources:    {report.resources_dir}",
             f"stage {report.stage}; expected counts: {report.expected_source} "
             f"({'exact' if report.exact_counts else 'a mismatch is a warning'})", ""]
    for i, row in enumerate(table):
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    n_errors, n_warnings = len(report.errors), len(report.warnings)
    lines.append("all data present" if report.ok and not n_warnings else
                 f"{n_errors} error(s), {n_warnings} warning(s)")
    if report.problems:
        lines.append(format_problems(report))
    return "\n".join(lines)


def format_problems(report: Report, severities: tuple[str, ...] = (ERROR, WARNING)) -> str:
    """Every problem with its path and fix, errors first."""
    chosen = [p for severity in severities for p in report.problems if p.severity == severity]
    lines = [f"{len(chosen)} problem(s) with the dataset at {report.dataset_root} "
             f"(resources: {report.resources_dir}):"]
    for p in chosen:
        lines.append(f"  [{p.severity}] {p.status} {p.set_name}: {p.path}: {p.message}")
        lines.append(f"      fix: {p.fix}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI; exit status 0 when the data is complete, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m data_util.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="dataset root (default: $T4_DATASET_PATH or ./data, as the experiments)")
    parser.add_argument("--resources", help="resources folder (default: <root>/resources for a demo tree, "
                                            "else the repository's resources/)")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), help="check only these sets")
    parser.add_argument("--preset", help="compare with the exact counts of this demo preset")
    parser.add_argument("--sample-audio", type=int, default=DEFAULT_AUDIO_SAMPLES, metavar="N",
                        help="read the headers of the first N audio files of each folder (0: none; default: %(default)s)")
    args = parser.parse_args(argv)

    root = configs.resolve_dataset_path(args.root)
    if args.resources:
        resources = Path(args.resources)
    elif (root / DEMO_MANIFEST).is_file():
        resources = root / "resources"
    else:
        resources = configs.RESOURCES_DIR
    report = check_data(root, resources, sets=args.sets, expected=args.preset, stage=args.stage,
                        sample_audio=args.sample_audio)
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
