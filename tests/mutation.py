"""Mutation testing of the numeric core: ``make mutation`` (``python -m tests.mutation``). Not part of CI.

Two passes, one module after the other (CPU-heavy; see docs/MUTATION.md for the last report):

1. **mutmut** (3.x) per module of ``TARGETS``, each in its own scratch copy of the project under ``.mutation/<name>``
   (mutmut reads its config from the working folder and writes ``mutants/`` there), with only that module's fast
   tests as the oracle. mutmut maps every test to the functions it calls and runs, per mutant, only the tests that
   reach the mutated function. Afterwards ``cd .mutation/<name> && ../../.venv/bin/mutmut show <mutant>`` shows a
   mutant, ``mutmut browse`` all of them.
2. **Hand mutants** (``HAND_MUTANTS``): realistic bugs (BatchNorm eps, the MAESTRO overlap-add mean, the
   soft-label cut, ...), and **constant mutants**: every module-level numeric constant of the target files changed
   (an int + 1, a float doubled), which mutmut cannot do because it only mutates function bodies. Each is applied
   to a scratch copy (``.mutation/hand``), the module's tests run, and the mutant must fail at least one of them.

Writes ``.mutation/summary.json`` and prints one table: module, mutants, killed, survived, other (timeouts,
mutants no test reaches, suspicious), and the names of the survivors.

    python -m tests.mutation                      # everything (hours on 2 cores)
    python -m tests.mutation --only crnn maestro  # some modules
    python -m tests.mutation --hand-only          # the hand and constant mutants only (tens of minutes)
    python -m tests.mutation --rerun-survivors    # after writing tests: the earlier survivors only
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"
# What the tests import; copied into every scratch folder (the tests must not see the original tree).
PACKAGES = ("models", "helpers", "data_util", "configs")
FILES = ("pytest.ini",)
# Fast tests only: slow training runs and end-to-end recipes are no oracle for a numeric module.
FAST = ["-m", "not slow and not integration"]
KILLED, SURVIVED = "killed", "survived"
# Lines that only word an error or a log message: their expression (the whole message, however many lines) is not
# mutated. The conditions that raise and the exception types' effects are still mutated elsewhere.
MESSAGE_LINES = (r"raise \w+\(", r"\blog\.\w+\(", r"warnings\.warn\(")


@dataclass(frozen=True)
class Target:
    name: str
    paths: tuple[str, ...]  # files to mutate
    tests: tuple[str, ...]  # the module's tests (pytest node ids or files)
    functions: tuple[str, ...] = ()  # mutmut name globs restricting the mutants (empty: every function)


EVALUATION_TESTS = ("tests/test_maestro_segments.py", "tests/test_score_tables.py", "tests/test_metrics_arguments.py",
                    "tests/test_mpauc_oracle.py", "tests/test_metrics.py")
TARGETS = (
    Target("crnn", ("models/crnn.py",), ("tests/test_crnn.py",)),
    Target("sed_model", ("models/sed_model.py",), ("tests/test_sed_model.py", "tests/test_crnn.py")),
    Target("mel", ("models/mel.py",), ("tests/test_mel.py", "tests/test_sed_model.py", "tests/test_augment.py")),
    # The transformer front-ends live in the backbone files: only their classes are mutated.
    Target("frontends", ("models/atst_frame.py", "models/fpasst.py", "models/beats.py"),
           ("tests/test_atst_fpasst.py", "tests/test_beats.py"),
           ("models.atst_frame.xǁATSTMelǁ*", "models.fpasst.xǁPaSSTMelǁ*", "models.beats.xǁBEATsFbankǁ*",
            "models.beats.x_kaldi_mel*")),
    Target("losses", ("helpers/training/losses.py",), ("tests/test_losses.py",)),
    Target("metrics", ("helpers/evaluation/metrics.py",), EVALUATION_TESTS),
    Target("scores", ("helpers/evaluation/scores.py",), EVALUATION_TESTS),
    Target("maestro", ("helpers/evaluation/maestro.py",), EVALUATION_TESTS),
    Target("csebbs", ("helpers/evaluation/csebbs.py",), ("tests/test_csebbs_merging.py", "tests/test_csebbs.py")),
)


# Constant mutants of the backbone files need only their own backbone's tests.
CONSTANT_TESTS = {"models/atst_frame.py": ("tests/test_atst_fpasst.py",),
                  "models/fpasst.py": ("tests/test_atst_fpasst.py",), "models/beats.py": ("tests/test_beats.py",)}


@dataclass(frozen=True)
class HandMutant:
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


HAND_MUTANTS = (
    HandMutant("models/crnn.py", "BATCHNORM_EPS = 1e-3", "BATCHNORM_EPS = 1e-5", ("tests/test_crnn.py",),
               "BatchNorm eps of PyTorch's default instead of the reference's"),
    HandMutant("models/crnn.py", "BATCHNORM_MOMENTUM = 0.99", "BATCHNORM_MOMENTUM = 0.01", ("tests/test_crnn.py",),
               "BatchNorm momentum in Keras' convention"),
    HandMutant("models/crnn.py", "return x * torch.sigmoid(self._channel_linear(x))", "return 0.5 * x",
               ("tests/test_crnn.py",), "context gating replaced by a constant 0.5 gate"),
    HandMutant("models/crnn.py", "LEAKY_RELU_SLOPE = 0.2", "LEAKY_RELU_SLOPE = 0.01", ("tests/test_crnn.py",),
               "LeakyReLU slope"),
    HandMutant("models/sed_model.py", "ATTENTION_CLAMP_MIN = 1e-7", "ATTENTION_CLAMP_MIN = 0.0",
               ("tests/test_sed_model.py",), "attention clamp"),
    HandMutant("helpers/evaluation/maestro.py", "summed / np.maximum(counts, 1.0)[:, None]", "summed",
               ("tests/test_metrics.py", "tests/test_mpauc_oracle.py"), "MAESTRO overlap-add: sum instead of mean"),
    HandMutant("helpers/evaluation/maestro.py", "MIN_SOFT_LABEL_CONFIDENCE = 0.5", "MIN_SOFT_LABEL_CONFIDENCE = 0.4",
               ("tests/test_metrics.py", "tests/test_mpauc_oracle.py"), "MAESTRO soft-label cut"),
    HandMutant("helpers/evaluation/scores.py", 'keep & (table["confidence"] > min_confidence)',
               'keep & (table["confidence"] >= min_confidence)',
               ("tests/test_metrics.py", "tests/test_mpauc_oracle.py"), "soft-label cut > 0.5 -> >= 0.5"),
    HandMutant("helpers/evaluation/metrics.py", "PARTIAL_AUROC_MAX_FPR = 0.1", "PARTIAL_AUROC_MAX_FPR = 0.2",
               ("tests/test_metrics.py", "tests/test_mpauc_oracle.py"), "partial AUROC max FPR"),
    HandMutant("helpers/evaluation/metrics.py", "SEGMENT_LENGTH = 1.0", "SEGMENT_LENGTH = 0.5",
               ("tests/test_metrics.py", "tests/test_mpauc_oracle.py"), "segment length"),
)


@dataclass
class Result:
    name: str
    statuses: dict[str, str] = field(default_factory=dict)  # mutant -> status
    seconds: float = 0.0
    diffs: dict[str, list[str]] = field(default_factory=dict)  # survivor -> its changed lines

    @property
    def survivors(self) -> list[str]:
        return sorted(k for k, v in self.statuses.items() if v == SURVIVED)

    def row(self) -> dict:
        counts = {status: list(self.statuses.values()).count(status) for status in set(self.statuses.values())}
        return {"module": self.name, "mutants": len(self.statuses), "killed": counts.get(KILLED, 0),
                "survived": counts.get(SURVIVED, 0),
                "other": {k: v for k, v in counts.items() if k not in (KILLED, SURVIVED)},
                "survivors": {name: self.diffs.get(name, []) for name in self.survivors},
                "seconds": round(self.seconds)}


def scratch_copy(folder: Path, fresh: bool = True) -> None:
    """A copy of what the tests need (sources, tests with fixtures, pytest.ini) in ``folder``.

    ``fresh=False`` keeps an earlier mutmut run (its ``mutants/`` and results) and refreshes sources and tests: a
    survivor is re-applied function by function (:func:`apply_mutant`), valid while that function is unchanged.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    if not fresh:  # today's sources and tests; mutmut's mutants/ and results stay
        for stale in [folder / name for name in PACKAGES + ("tests",) + FILES] + [folder / "configs.py"]:
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES + ("tests",):
        shutil.copytree(REPO / package, folder / package, ignore=ignore)
    for name in FILES:
        shutil.copy2(REPO / name, folder / name)


def _lines(key: str, values) -> str:
    return f"{key} =\n" + "".join(f"    {v}\n" for v in values)


def mutmut_config(target: Target) -> str:
    return "[mutmut]\n" + "".join([
        _lines("source_paths", PACKAGES),
        _lines("only_mutate", target.paths),
        _lines("pytest_add_cli_args_test_selection", list(target.tests) + FAST),
        _lines("pytest_add_cli_args", ["-p", "no:cacheprovider", "-W", "ignore::UserWarning"]),
        _lines("do_not_mutate_patterns", MESSAGE_LINES),
        "also_copy =\n    pytest.ini\n",
        # torch is not fork-safe once it has run: fork the workers from a clean server process
        "process_isolation = forkserver\n",
        "use_git_change_detection = false\n",
    ])


def _statuses(folder: Path, env: dict) -> str:
    return subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=folder, env=env, capture_output=True,
                          text=True, check=False).stdout


def _module_path(mutant: str) -> str:
    """``models.mel.xǁCNNMelǁ_scale__mutmut_3`` -> ``models/mel.py``."""
    module = re.split(r"\.x[ǁ_]", mutant, maxsplit=1)[0]
    return module.replace(".", "/") + ".py"


def _pytest(folder: Path, tests, env: dict) -> str:
    """Run ``tests`` (fast tier) in ``folder``; killed (a test failed), survived (all passed) or an error."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *FAST, *tests],
                         cwd=folder, env=env, capture_output=True, text=True, check=False)
    return KILLED if run.returncode == 1 else SURVIVED if run.returncode == 0 else f"error {run.returncode}"


def apply_mutant(name: str) -> None:
    """Write mutant ``name`` into its source file under the working folder (a mutmut scratch folder).

    ``mutmut apply`` (3.8.1) replaces the first method of that name in the file, whatever its class (e.g. the
    first ``__init__``); this finds the function by class and name.
    """
    import libcst as cst
    from mutmut.mutation.diff_apply import read_mutant_function, read_mutants_module
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    path = Path(_module_path(name))
    mutant = read_mutant_function(read_mutants_module(path), name)
    function_name, class_name = orig_function_and_class_names_from_key(name)
    module = cst.parse_module(path.read_text())
    body = module.body
    if class_name is not None:
        body = next(c for c in body if isinstance(c, cst.ClassDef) and c.name.value == class_name).body.body
    original = next(f for f in body if isinstance(f, cst.FunctionDef) and f.name.value == function_name)
    path.write_text(module.deep_replace(original, mutant.with_changes(leading_lines=original.leading_lines)).code)


def rerun_survivors(target: Target, folder: Path, statuses: dict[str, str], env: dict) -> None:
    """Test the earlier survivors again with the current tests: each is applied to the scratch sources
    (:func:`apply_mutant`), the target's tests run there, and the file is restored. Updates ``statuses``."""
    scratch_copy(folder, fresh=False)
    for name in sorted(k for k, v in statuses.items() if v == SURVIVED):
        path = _module_path(name)
        applied = subprocess.run([sys.executable, "-c", f"import tests.mutation as m; m.apply_mutant({name!r})"],
                                 cwd=folder, env=env, capture_output=True, text=True, check=False)
        try:
            statuses[name] = _pytest(folder, target.tests, env) if applied.returncode == 0 else "error (apply)"
        finally:
            shutil.copy2(REPO / path, folder / path)
        print(f"  {statuses[name]:9s} {name}", flush=True)


def run_mutmut(target: Target, max_children: int, rerun: bool = False) -> Result:
    """One mutmut run over ``target`` in a fresh scratch copy; ``rerun``: keep the earlier run and test its
    survivors again with the current tests (see :func:`rerun_survivors`)."""
    folder = WORK / target.name
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    start = time.perf_counter()
    log = folder / "mutmut.log"
    if not (rerun and (folder / "mutants").is_dir()):
        scratch_copy(folder)
        (folder / "setup.cfg").write_text(mutmut_config(target))
        with open(log, "w") as out:
            subprocess.run([str(MUTMUT), "run", "--max-children", str(max_children), *target.functions],
                           cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    result = Result(target.name)
    listing = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=folder, env=env, capture_output=True,
                             text=True, check=False).stdout
    for line in listing.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name and (not target.functions or any(fnmatch.fnmatch(name, g) for g in target.functions)):
            result.statuses[name] = status
    if not result.statuses:
        print(f"{target.name}: mutmut produced no results; see {log}", file=sys.stderr)
    if rerun:
        rerun_survivors(target, folder, result.statuses, env)
    for name in result.survivors:
        diff = subprocess.run([str(MUTMUT), "show", name], cwd=folder, env=env, capture_output=True, text=True,
                              check=False).stdout
        result.diffs[name] = [line for line in diff.splitlines()
                              if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    result.seconds = time.perf_counter() - start
    return result


def _changed_number(value):
    """The mutated value of a numeric constant: an int + 1, a float doubled (1.0 for 0.0)."""
    if isinstance(value, int):
        return value + 1
    return value * 2 if value != 0 else 1.0


def constant_mutants(targets) -> list[HandMutant]:
    """One mutant per module-level UPPER_CASE constant holding a number (its first number changed), for the files
    of ``targets`` with their tests: what mutmut, which mutates function bodies only, never changes."""
    mutants = []
    for target in targets:
        for path in target.paths:
            source = (REPO / path).read_text()
            lines = source.splitlines()
            for node in ast.parse(source).body:
                if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                        and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()):
                    continue
                numbers = [n for n in ast.walk(node.value) if isinstance(n, ast.Constant)
                           and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)]
                if not numbers or numbers[0].lineno != node.lineno:
                    continue
                number = numbers[0]
                line = lines[node.lineno - 1]
                literal = line[number.col_offset:number.end_col_offset]
                new_line = line[:number.col_offset] + repr(_changed_number(number.value)) + line[number.end_col_offset:]
                if source.count(line) != 1:
                    continue
                why = f"{node.targets[0].id}: {literal} -> {_changed_number(number.value)!r}"
                mutants.append(HandMutant(path, line, new_line, CONSTANT_TESTS.get(path, target.tests), why))
    return mutants


def run_hand_mutants(mutants=HAND_MUTANTS, name: str = "hand mutants") -> Result:
    folder = WORK / "hand"
    scratch_copy(folder)
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    result = Result(name)
    start = time.perf_counter()
    for mutant in mutants:
        path = folder / mutant.path
        original = path.read_text()
        if original.count(mutant.old) != 1:
            raise SystemExit(f"hand mutant {mutant.why!r}: {mutant.old!r} is not once in {mutant.path}; update HAND_MUTANTS")
        path.write_text(original.replace(mutant.old, mutant.new))
        try:
            status = _pytest(folder, mutant.tests, env)
        finally:
            path.write_text(original)
        result.statuses[f"{mutant.path}: {mutant.why}"] = status
        print(f"  {status:9s} {mutant.path}: {mutant.why}", flush=True)
    result.seconds = time.perf_counter() - start
    return result


def print_table(results: list[Result]) -> None:
    print(f"\n{'module':14s} {'mutants':>8s} {'killed':>7s} {'survived':>9s}  other")
    for r in results:
        row = r.row()
        print(f"{row['module']:14s} {row['mutants']:8d} {row['killed']:7d} {row['survived']:9d}  {row['other'] or ''}")
    for r in results:
        for name in r.survivors:
            print(f"  survived: {name}")


def merged_summary(path: Path, rows: list[dict]) -> list[dict]:
    """The rows of an earlier summary at ``path`` with the modules run now replaced (modules run one at a time
    build up one report)."""
    earlier = json.loads(path.read_text()) if path.is_file() else []
    names = {row["module"] for row in rows}
    return [row for row in earlier if row["module"] not in names] + rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=[t.name for t in TARGETS], help="mutmut only these modules")
    parser.add_argument("--hand-only", action="store_true", help="skip mutmut, run the hand mutants only")
    parser.add_argument("--max-children", type=int, default=1, help="mutmut workers (default 1: a shared CPU)")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="keep the earlier mutmut runs and test their survivors again with the current tests")
    parser.add_argument("--mutmut-only", action="store_true", help="skip the hand and constant mutants")
    parser.add_argument("--functions", nargs="+", default=(),
                        help="mutmut only these mutant-name globs, e.g. 'helpers.evaluation.csebbs.x_merge_segments*'")
    args = parser.parse_args(argv)
    WORK.mkdir(exist_ok=True)
    targets = [t for t in TARGETS if not args.only or t.name in args.only]
    if args.functions:
        targets = [dataclasses.replace(t, functions=tuple(args.functions)) for t in targets]
    results = [] if args.mutmut_only else [run_hand_mutants(), run_hand_mutants(constant_mutants(targets), "constants")]
    if not args.hand_only:
        for target in targets:
            print(f"mutmut: {target.name} ({', '.join(target.paths)})", flush=True)
            results.append(run_mutmut(target, args.max_children, args.rerun_survivors))
            print_table(results[-1:])
    summary = WORK / "summary.json"
    summary.write_text(json.dumps(merged_summary(summary, [r.row() for r in results]), indent=1))
    print_table(results)
    print(f"\nwritten: {summary}")
    hand = [r for r in results if r.name in ("hand mutants", "constants")]
    return 0 if not any(r.survivors for r in hand) else 1


if __name__ == "__main__":
    sys.exit(main())
