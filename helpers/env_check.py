"""Environment check: is this Python environment the one the lock describes, and do torch and torchaudio load?

Run first by `make test` and `make demo` (and by `.ci/run` through them):

    python -m helpers.env_check [--lock requirements.txt]

It checks, in order, and reports every problem at once, one line each, then the command that fixes it:
1. the Python version is the one the lock was made for (3.11);
2. every package pinned in the lock is installed at the locked version (a torch/torchaudio build from PyTorch's
   own index, e.g. ``2.11.0+cpu`` or ``2.11.0+cu128``, matches ``2.11.0``; the CUDA runtime packages that only
   PyPI's default torch build needs are then not required);
3. ``pip check`` finds no broken requirement;
4. torch imports, torchaudio imports and its compiled library loads (a torch/torchaudio pair of different
   builds fails here with an ``undefined symbol`` error), and the operations the project uses run.

Exit status 0 when all pass, 1 otherwise. Standard library only until step 4, so a broken torch install cannot
stop the check from printing its verdict.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LOCK = REPO_ROOT / "requirements.txt"
LOCK_PYTHON = (3, 11)
FIX_COMMAND = "make venv-rebuild   (or: .venv/bin/pip install -r requirements.txt)"

# Packages that PyPI's default (CUDA) torch wheel depends on; a torch build from PyTorch's index
# (a local version label such as +cpu or +cu128) brings its own or none.
CUDA_RUNTIME_PREFIXES = ("nvidia-", "cuda-", "triton")
TORCH_BUILD_PACKAGES = ("torch", "torchaudio")

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised package name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of a pip-compile / uv lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    if not pins:
        raise ValueError(f"{path}: no 'name==version' lines; is this the lock file? Regenerate it with `make lock`.")
    return pins


def installed_versions() -> dict[str, str]:
    """What pip installed into this environment's site-packages (not copies vendored elsewhere on ``sys.path``:
    importing ``pkg_resources`` puts setuptools' own vendored ``packaging`` there)."""
    site_dirs = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
    return {canonical(dist.metadata["Name"]): dist.version
            for dist in metadata.distributions(path=site_dirs) if dist.metadata["Name"]}


def public_version(version: str) -> str:
    """``2.11.0+cpu`` -> ``2.11.0`` (the local label names the build, not the release)."""
    return version.split("+", 1)[0]


def same_version(installed: str, locked: str) -> bool:
    """PEP 440 equality (``0.1.1-2209072238`` is ``0.1.1.post2209072238``); plain text when unparsable."""
    try:
        from packaging.version import InvalidVersion, Version  # lazy: a broken environment must still get its report
    except ImportError:
        return installed == locked
    try:
        return Version(installed) == Version(locked)
    except InvalidVersion:
        return installed == locked


def version_mismatches(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    """One line per locked package that is missing or at another version."""
    torch_build = installed.get("torch", "")
    custom_torch_build = "+" in torch_build
    lines = []
    for name, want in sorted(locked.items()):
        have = installed.get(name)
        if name in TORCH_BUILD_PACKAGES and have is not None:
            if same_version(public_version(have), public_version(want)):
                continue
        elif custom_torch_build and name.startswith(CUDA_RUNTIME_PREFIXES):
            continue  # PyTorch's own torch builds do not use PyPI's CUDA runtime wheels
        elif have is not None and same_version(have, want):
            continue
        lines.append(f"{name}: installed {have or 'nothing'}, locked {want}")
    return lines


def pip_check() -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if result.returncode == 0:
        return []
    output = (result.stdout + result.stderr).strip().splitlines()
    return [f"pip check: {line}" for line in output if line.strip()] or ["pip check failed without output"]


def torch_problems() -> list[str]:
    """Import torch and torchaudio, load torchaudio's compiled library and run the ops the project uses."""
    try:
        import torch  # lazy: a broken torch install is what this check reports
    except Exception as error:  # noqa: BLE001 - any import failure is the finding
        return [f"torch does not import: {type(error).__name__}: {_first_line(error)}"]
    try:
        import torchaudio  # lazy: as torch above
        import torchaudio.compliance.kaldi as kaldi  # lazy: as torch above
        import torchaudio.functional as audio_functional  # lazy: as torch above
    except Exception as error:  # noqa: BLE001
        return [f"torchaudio {_dist_version('torchaudio')} does not load with torch {torch.__version__}: "
                f"{type(error).__name__}: {_first_line(error)}"]
    try:
        waveform = torch.zeros(1, 1600)
        kaldi.fbank(waveform, num_mel_bins=8, sample_frequency=16000)
        audio_functional.resample(waveform, 16000, 8000)
        torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=256, n_mels=8)(waveform)
    except Exception as error:  # noqa: BLE001
        return [f"torchaudio {torchaudio.__version__} loads but its operations fail: {_first_line(error)}"]
    return []


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def check(lock_path: Path = DEFAULT_LOCK, import_torch: bool = True) -> list[str]:
    """Every problem found, one line each; empty when the environment matches the lock."""
    problems = []
    if sys.version_info[:2] != LOCK_PYTHON:
        problems.append(f"python: running {sys.version.split()[0]}, the lock is for "
                        f"{'.'.join(map(str, LOCK_PYTHON))} (make uses python3.11 when it exists)")
    problems += version_mismatches(read_lock(lock_path), installed_versions())
    problems += pip_check()
    if import_torch:
        problems += torch_problems()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="lock file (default: requirements.txt)")
    parser.add_argument("--no-torch", action="store_true", help="skip importing torch/torchaudio")
    args = parser.parse_args(argv)
    if not args.lock.is_file():
        print(f"env_check: lock file {args.lock} not found; run from the repository or pass --lock.")
        return 1
    problems = check(args.lock, import_torch=not args.no_torch)
    if not problems:
        print(f"env_check: OK (python {sys.version.split()[0]}, {len(read_lock(args.lock))} locked packages match, "
              f"torch and torchaudio load)")
        return 0
    print(f"env_check: this environment does not match {args.lock.name}:")
    for line in problems:
        print(f"  {line}")
    print(f"fix: {FIX_COMMAND}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
