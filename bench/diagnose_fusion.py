"""Where the demo's SED models fuse the CNN and the transformer: activation scales and gradient norms.

    python -m bench.diagnose_fusion                              # stage 1, ATST-Frame and BEATs, at initialisation
    python -m bench.diagnose_fusion --checkpoint beats=<stage-1 best ckpt> --checkpoint atst_frame=<...> --stage 2

For each arch (the demo's tiny random-initialised model, ``with demo`` plus the demo recipe's settings of that arch
and stage, ``helpers.demo_recipe``), as a control the same model with its transformer tokens zeroed (the CRNN
alone), and for BEATs also with its tokens averaged over frequency (``pooled``: ``beats.pool_frequency=True``),
``SEDSystem.training_step`` runs on the same demo training batches (forward and backward of the stage's full loss,
no optimizer step; one fixed random stream per batch). Measured at the fusion layer ``cat_tf``
(``Linear(cnn_dim + transformer_dim -> n_RNN_cell)``, see ``models/sed_model.py``):

- ``in rms``: root mean square of its two inputs, the CNN frames and the aligned transformer frames (before dropout);
- ``out rms``: RMS of each part's contribution to its output (``W_cnn x_cnn`` and ``W_tf x_tf``): which branch the
  GRU hears;
- ``grad``: gradient norms of the loss summed over the batches, per sub-network (CNN, ``cat_tf``'s CNN and
  transformer columns, GRU, the two heads, the transformer, which trains only in stage 2);
- ``adjacent-frame cos``: mean cosine similarity of consecutive frames after removing each clip's mean (1: a
  smooth sequence, 0: consecutive frames unrelated), for the transformer's tokens and for the frames it hands the
  CRNN after ``embed_pool``; ``clip share``: the part of their variance that differs between clips at the same
  frame (content) rather than repeating in every clip (position).

Prints a table and writes ``bench/results/diagnose_fusion_stage<N>_<data>.json``. A diagnostic, not a speed
benchmark (no timings).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import platform
import sys
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

import configs  # noqa: E402
from data_util.atomic import atomic_write_text  # noqa: E402
from helpers import demo_recipe  # noqa: E402
from helpers.reference_recipe import apply_updates  # noqa: E402
from helpers.training.system import SEDSystem  # noqa: E402
from helpers.training.train import T4DataModule, initialise_student  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
ARCHS = ("atst_frame", "beats")
DEFAULT_BATCHES = 4
LABEL_FRAMES = 156
# (label, key) of the printed rows, in order
ROWS = (
    ("fusion dims (CNN | transformer)", "dims"),
    ("in rms CNN frames", "in_rms_cnn"),
    ("in rms transformer frames", "in_rms_transformer"),
    ("out rms from CNN (W_cnn x)", "out_rms_cnn"),
    ("out rms from transformer (W_tf x)", "out_rms_transformer"),
    ("grad CNN", "grad_cnn"),
    ("grad cat_tf CNN columns", "grad_cat_tf_cnn"),
    ("grad cat_tf transformer columns", "grad_cat_tf_transformer"),
    ("grad GRU", "grad_rnn"),
    ("grad heads (dense, dense_softmax)", "grad_heads"),
    ("grad transformer", "grad_transformer"),
    ("adjacent-frame cos, tokens", "adjacent_cos_tokens"),
    ("adjacent-frame cos, CRNN frames", "adjacent_cos_frames"),
    ("clip share of variance, CRNN frames", "clip_share_frames"),
    ("loss (mean over batches)", "loss"),
)


# Extra columns: (arch, label suffix, settings over the demo's): BEATs with its tokens averaged over frequency (the
# demo, like the reference, interpolates the raw 8·t + f frequency-patch token sequence in time).
VARIANTS = (("beats", "pooled", {"beats.pool_frequency": True}),)


def demo_config(arch: str, stage: int, data: Path, checkpoint: str | None, extra: dict | None = None) -> dict:
    """What the demo recipe's training step of ``arch`` and ``stage`` resolves to (``with demo`` + its updates)."""
    overrides = demo_recipe.STAGE1_OVERRIDES if stage == 1 else demo_recipe.STAGE2_OVERRIDES
    config = configs.demo_defaults(stage)
    updates = {"arch": arch, "seed": demo_recipe.DEMO_SEED, "base_path": str(data),
               "resources_path": str(data / "resources"), **demo_recipe.ARCH_SETTINGS.get(arch, {}), **overrides,
               **(extra or {})}
    if checkpoint:
        updates["t4_wrapper.model_init_id"] = checkpoint
    return apply_updates(config, updates)


def _adjacent_cos(frames: Tensor) -> float:
    """Mean cosine similarity of consecutive frames (B, T, D), each clip's mean removed."""
    centred = frames - frames.mean(dim=1, keepdim=True)
    return float(torch.nn.functional.cosine_similarity(centred[:, :-1], centred[:, 1:], dim=-1).mean())


def _clip_share(frames: Tensor) -> float:
    """Variance across clips at the same frame / total variance (B, T, D)."""
    total = (frames - frames.mean(dim=(0, 1), keepdim=True)).pow(2).mean()
    across_clips = (frames - frames.mean(dim=0, keepdim=True)).pow(2).mean()
    return float(across_clips / total) if total > 0 else float("nan")


def _grad_norm(parameters) -> float:
    squares = [float(p.grad.pow(2).sum()) for p in parameters if p.grad is not None]
    return math.sqrt(sum(squares))


def _rms(x: Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def measure(config: dict, stage: int, batches: list, slices: dict, *, zero_tokens: bool) -> dict:
    """Run the training step on ``batches`` (no optimizer step) and measure the fusion layer of the student."""
    torch.manual_seed(demo_recipe.DEMO_SEED)  # the same initial weights as the demo run of this config
    student, teacher = initialise_student(config, stage)
    system = SEDSystem(config, stage, student, teacher=teacher, sub_batch_slices=slices)
    system._share_frozen_transformer = system.frozen_transformers_identical()  # as on_train_start does
    system.train()
    seen: dict[str, list[Tensor]] = {"cnn": [], "frames": [], "tokens": []}

    def patch(model, record: bool) -> None:
        """Zero the tokens (control) and record the student's fusion inputs; on this instance only."""
        align, cnn_frames = model.align_embeddings, model.cnn_frames

        def aligned(tokens: Tensor, frames: int) -> Tensor:
            out = align(tokens, frames)
            if zero_tokens:
                out = torch.zeros_like(out)
            if record:
                seen["tokens"].append(tokens.detach())
                seen["frames"].append(out.detach())
            return out

        def cnn(features: Tensor) -> Tensor:
            out = cnn_frames(features)
            if record:
                seen["cnn"].append(out.detach())
            return out

        model.align_embeddings, model.cnn_frames = aligned, cnn

    patch(student, record=True)
    patch(system.teacher, record=False)  # the control's teacher is a CRNN alone too
    losses = []
    for index, batch in enumerate(batches):
        torch.manual_seed(demo_recipe.DEMO_SEED + index)  # the same augmentation and dropout draws for every model
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*self.log.*")  # no trainer attached: logging is a no-op
            loss = system.training_step(batch, index)
        loss.backward()
        losses.append(float(loss.detach()))

    cnn_x, frames, tokens = (torch.cat(seen[key]) for key in ("cnn", "frames", "tokens"))
    C = cnn_x.shape[-1]
    weight = student.cat_tf.weight.detach()
    grad = student.cat_tf.weight.grad
    return {
        "dims": f"{C} | {frames.shape[-1]}",
        "in_rms_cnn": _rms(cnn_x), "in_rms_transformer": _rms(frames),
        "out_rms_cnn": _rms(cnn_x @ weight[:, :C].T), "out_rms_transformer": _rms(frames @ weight[:, C:].T),
        "grad_cnn": _grad_norm(student.cnn.parameters()),
        "grad_cat_tf_cnn": float(grad[:, :C].norm()), "grad_cat_tf_transformer": float(grad[:, C:].norm()),
        "grad_rnn": _grad_norm(student.rnn.parameters()),
        "grad_heads": _grad_norm([*student.dense.parameters(), *student.dense_softmax.parameters()]),
        "grad_transformer": _grad_norm(student.as_model.parameters()),
        "adjacent_cos_tokens": _adjacent_cos(tokens),
        "adjacent_cos_frames": None if zero_tokens else _adjacent_cos(frames),
        "clip_share_frames": None if zero_tokens else _clip_share(frames),
        "loss": sum(losses) / len(losses),
    }


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    return "-" if value is None or math.isnan(value) else f"{value:.4g}"


def format_table(columns: dict[str, dict]) -> str:
    width = max(len(label) for label, _ in ROWS) + 1
    column_width = max(16, *(len(name) + 2 for name in columns))
    lines = [f"{'':{width}s}" + "".join(f"{name:>{column_width}s}" for name in columns)]
    for label, key in ROWS:
        lines.append(f"{label:{width}s}" + "".join(f"{_cell(m.get(key)):>{column_width}s}" for m in columns.values()))
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=configs.DEMO_DATASET_PATH, help="demo dataset root")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1)
    parser.add_argument("--archs", nargs="+", choices=configs.ARCHS, default=ARCHS)
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES, help="training batches to measure on")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="ARCH=PATH",
                        help="start that arch from a SED checkpoint (t4_wrapper.model_init_id), e.g. its stage-1 "
                             "result for --stage 2; repeatable")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/diagnose_fusion_stage<N>_*.json)")
    args = parser.parse_args(argv)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    unknown = sorted(set(checkpoints) - set(args.archs))
    if unknown:
        parser.error(f"--checkpoint names {unknown}, which are not in --archs {args.archs}")
    data = args.data.resolve()
    if not (data / "demo_manifest.json").is_file():
        parser.error(f"{data} holds no demo dataset: run `make demo-data` (or python -m data_util.demo --out {data} "
                     "--preset small --reuse) first")
    # the experiments' own warnings (random init, no checkpoint) are expected here; both settings are process-wide,
    # so they are restored afterwards (main() also runs inside the test suite)
    threads = torch.get_num_threads()
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    try:
        first = demo_config(args.archs[0], args.stage, data, checkpoints.get(args.archs[0]))
        datamodule = T4DataModule(first, args.stage)
        loader = iter(datamodule.train_dataloader())
        batches = [next(loader) for _ in range(args.batches)]  # the same batches for every model
        slices = datamodule.sub_batch_slices()

        columns = {}
        for arch in args.archs:
            config = demo_config(arch, args.stage, data, checkpoints.get(arch))
            short = "atst" if arch == "atst_frame" else arch
            columns[short] = measure(config, args.stage, batches, slices, zero_tokens=False)
            columns[f"{short} tokens=0"] = measure(config, args.stage, batches, slices, zero_tokens=True)
            for name, suffix, extra in VARIANTS:
                if name == arch:
                    variant = demo_config(arch, args.stage, data, checkpoints.get(arch), extra)
                    columns[f"{short} {suffix}"] = measure(variant, args.stage, batches, slices, zero_tokens=False)
        title = (f"Fusion layer (cat_tf) of the demo models, stage {args.stage}, {args.batches} demo training batches of "
                 f"{sum(int(b) for b in first['training']['batch_sizes'])} clips"
                 + (f", from {checkpoints}" if checkpoints else ", at initialisation (seed "
                    f"{demo_recipe.DEMO_SEED})"))
        print(title)
        print(format_table(columns))

        out = args.out or RESULTS_DIR / f"diagnose_fusion_stage{args.stage}_{data.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"title": title, "columns": columns, "stage": args.stage, "batches": args.batches,
                  "checkpoints": checkpoints, "data": str(data), "torch": torch.__version__,
                  "machine": platform.machine(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
        atomic_write_text(out, json.dumps(record, indent=1) + "\n")
        print(f"wrote {out}")
        return record
    finally:
        logging.disable(logging.NOTSET)
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
