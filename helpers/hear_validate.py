"""Run the HEAR 2021 validator (``hearvalidator`` 2021.0.6) on ``hear_api`` for every architecture.

    python -m helpers.hear_validate [--install] [--validator-dir .hear-validator] [--checkpoints DIR] [--device cpu]
    make hear-validate                          # the same, installing the validator first

The validator declares ``python_requires < 3.9`` and imports tensorflow at module level, so it is not in the project
lock (Python 3.11). ``--install`` puts it, without dependencies, into its own folder (``pip install --no-deps
--ignore-requires-python --target .hear-validator hearvalidator==2021.0.6``; the project's venv is not touched), and
each run gets a minimal stand-in module ``tensorflow`` (``TENSORFLOW_STAND_IN``): the validator only asks it whether
the model is a ``tf.Module`` (ours is a ``torch.nn.Module``); its TensorFlow code paths are never taken. Everything
else is the validator's own code, run as ``python -m hearvalidator.validate hear_api --model <file> --device <dev>``.

Without ``--checkpoints``, tiny random checkpoints are written to a temporary folder, one per architecture and each
in another format ``hear_api.load_model`` reads (``write_tiny_checkpoints``): ATST-Frame as a stage checkpoint,
fPaSST as a PretrainedSED file, BEATs as an official BEATs file. Prints one row per architecture; exit status 1 if
the validator fails on any.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import configs
from models.checkpoints import save_sed_checkpoint
from models.factory import build_model, create_backbone

VALIDATOR = "hearvalidator==2021.0.6"
DEFAULT_DIR = configs.REPO_ROOT / ".hear-validator"
TENSORFLOW_STAND_IN = '''"""Stand-in for tensorflow, for hearvalidator only (t4sed helpers/hear_validate.py).

hearvalidator imports tensorflow at module level and asks ``isinstance(model, tf.Module)``; PyTorch models never
reach its TensorFlow code. Anything else used from this module is an error.
"""


class Module:
    """No PyTorch model is an instance of this class."""


def __getattr__(name):
    raise AttributeError(f"tensorflow.{name}: this is t4sed's stand-in for hearvalidator; only tf.Module exists")
'''
TINY = {"embed_dim": 64, "depth": 2}
PRETRAINEDSED_HEAD_CLASSES = 447  # the AudioSet-strong heads of the released PretrainedSED files


def validator_installed(folder: Path) -> bool:
    return (Path(folder) / "hearvalidator" / "validate.py").is_file()


def install_validator(folder: Path) -> None:
    """``hearvalidator`` (no dependencies) into ``folder`` with this interpreter's pip; the venv is not touched."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-requires-python",
                    "--target", str(folder), VALIDATOR], check=True)


def write_tiny_checkpoints(folder: Path) -> dict[str, tuple[str, Path]]:
    """Tiny random checkpoints, one per architecture in a different format: ``{arch: (format, path)}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    found = {}
    # ATST-Frame: a stage checkpoint (student / teacher + its training config: the heads come from there)
    config = configs.resolve_config(2, configs.demo_config(2), {"arch": "atst_frame"})
    state = build_model(config).state_dict()
    path = folder / "tiny_atst_stage2.ckpt"
    save_sed_checkpoint(path, state, state, config=config)
    found["atst_frame"] = ("stage checkpoint", path)
    # fPaSST: a PretrainedSED release file (flat model.* + AudioSet-strong heads; 64-wide heads, as released)
    backbone = create_backbone("fpasst", **TINY, num_heads=1)
    state = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    for head in ("strong_head", "weak_head"):
        state[f"{head}.weight"] = torch.zeros(PRETRAINEDSED_HEAD_CLASSES, TINY["embed_dim"])
        state[f"{head}.bias"] = torch.zeros(PRETRAINEDSED_HEAD_CLASSES)
    path = folder / "tiny_fpasst_strong_1.pt"
    torch.save(state, path)
    found["fpasst"] = ("PretrainedSED file", path)
    # BEATs: an official BEATs file ({"cfg", "model"}; the heads show in the weights)
    backbone = create_backbone("beats", **TINY, num_heads=2, predictor_classes=0)
    path = folder / "tiny_beats_official.pt"
    torch.save({"cfg": {"encoder_embed_dim": TINY["embed_dim"], "encoder_layers": TINY["depth"],
                        "encoder_attention_heads": 2}, "model": backbone.state_dict()}, path)
    found["beats"] = ("official BEATs file", path)
    return found


def run_validator(checkpoint: Path, validator_dir: Path, device: str, stand_in_dir: Path,
                  module: str = "hear_api") -> subprocess.CompletedProcess:
    """``python -m hearvalidator.validate <module> --model <checkpoint> --device <device>`` (output captured)."""
    path = os.pathsep.join([str(stand_in_dir), str(validator_dir), str(configs.REPO_ROOT),
                            os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "hearvalidator.validate", module, "--model", str(checkpoint),
                           "--device", device], cwd=configs.REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path}, timeout=1800)


def validate_all(checkpoints: dict[str, tuple[str, Path]], validator_dir: Path, device: str) \
        -> dict[str, subprocess.CompletedProcess]:
    """The validator on each checkpoint, with the tensorflow stand-in; ``{arch: completed process}``."""
    with tempfile.TemporaryDirectory() as stand_in:
        (Path(stand_in) / "tensorflow.py").write_text(TENSORFLOW_STAND_IN)
        return {arch: run_validator(path, validator_dir, device, Path(stand_in))
                for arch, (_, path) in checkpoints.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.hear_validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--validator-dir", type=Path, default=DEFAULT_DIR, help="where hearvalidator is installed")
    parser.add_argument("--install", action="store_true", help="install hearvalidator there first if missing")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="a folder for the tiny checkpoints (kept); default: a temporary folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--verbose", action="store_true", help="print the validator's output")
    args = parser.parse_args(argv)
    if not validator_installed(args.validator_dir):
        if not args.install:
            print(f"error: hearvalidator is not installed in {args.validator_dir}; run `make hear-validate` or add "
                  "--install", file=sys.stderr)
            return 2
        install_validator(args.validator_dir)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = write_tiny_checkpoints(args.checkpoints or Path(tmp))
        results = validate_all(checkpoints, args.validator_dir, args.device)
    failed = 0
    print(f"{'arch':12s} {'checkpoint format':22s} result")
    for arch, process in results.items():
        ok = process.returncode == 0 and "Looks good!" in process.stdout
        failed += not ok
        print(f"{arch:12s} {checkpoints[arch][0]:22s} {'passed' if ok else 'FAILED'}")
        if args.verbose or not ok:
            print(process.stdout + process.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
