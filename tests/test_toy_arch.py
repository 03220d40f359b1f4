"""Adding a backbone is one model file and one registry entry.

A fifth, toy architecture is defined in this file (a backbone class, its ``build_frontend`` and its config block)
and registered with ``models.registry.register_arch``; it then trains (stage 1, then stage 2 from that
checkpoint), stores predictions and runs through the inference CLI, with no project file changed.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import configs
from configs.schema import Block, key
from data_util.prediction_files import read_predictions
from models import registry
from models.checkpoints import safe_load
from tests.test_training import one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

TOY_BANDS = 16
TOY_HOP = 640  # 40 ms at 16 kHz: 250 tokens per 10 s


class ToyFrontend(nn.Module):
    """Waveform [B, N] -> log band energies [B, 1, 16, N // 640] (no learnable part)."""

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        B, N = audio.shape
        frames = audio.float()[:, : N // TOY_HOP * TOY_HOP].reshape(B, -1, TOY_BANDS, TOY_HOP // TOY_BANDS)
        return frames.pow(2).mean(-1).add(1e-6).log().transpose(1, 2)[:, None]  # (B, 1, 16, T)


def build_frontend() -> ToyFrontend:
    return ToyFrontend()


class ToyBlock(nn.Module):
    def __init__(self, embed_dim: int, mlp_ratio: float):
        super().__init__()
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(embed_dim, round(embed_dim * mlp_ratio))
        self.mlp.fc2 = nn.Linear(round(embed_dim * mlp_ratio), embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp.fc2(torch.relu(self.mlp.fc1(x)))


class ToyBackbone(nn.Module):
    """Band energies [B, 1, 16, T] -> tokens [B, T, embed_dim]: a projection and residual MLP blocks."""

    def __init__(self, *, embed_dim: int = 16, depth: int = 2, num_heads: int = 1, mlp_ratio: float = 2.0,
                 drop_top_layers: int = 0):
        super().__init__()
        self.embed_dim, self.depth = embed_dim, depth - drop_top_layers
        self.proj = nn.Linear(TOY_BANDS, embed_dim)
        self.toy_blocks = nn.ModuleList(ToyBlock(embed_dim, mlp_ratio) for _ in range(self.depth))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.proj(features[:, 0].transpose(1, 2))  # (B, T, D)
        for block in self.toy_blocks:
            x = block(x)
        return self.norm(x)

    def lr_groups(self) -> list[list[str]]:
        """Top first: the final norm, the blocks from the top, the projection."""
        groups = [[f"norm.{n}" for n, _ in self.norm.named_parameters()]]
        for i in reversed(range(self.depth)):
            groups.append([f"toy_blocks.{i}.{n}" for n, _ in self.toy_blocks[i].named_parameters()])
        return groups + [[f"proj.{n}" for n, _ in self.proj.named_parameters()]]


@dataclass
class ToyConfig(Block):
    embed_dim: int = key(16, "token width", min=1)
    depth: int = key(2, "blocks", min=1)
    num_heads: int = key(1, "unused (no attention)", min=1)
    mlp_ratio: float = key(2.0, "", gt=0)
    drop_top_layers: int = key(0, "", min=0)
    pretrained_name: str | None = key(None, "")


TOY_SPEC = registry.ArchSpec(
    module=__name__,
    backbone_class="ToyBackbone",
    config_block=ToyConfig,
    block_pattern=r"toy_blocks\.(\d+)\.",
    embed_dim_key="norm.weight",
    mlp_in_key="toy_blocks.0.mlp.fc1.weight",
    feature_units_per_db=math.log(10.0) / 10.0,  # natural-log power
    frontend_frames_10s=250,
    tokens_10s=250,
    token_hop_s=0.04,
    embed_dim=16,
)


@pytest.fixture
def toy_arch():
    registry.register_arch("toy", TOY_SPEC)
    yield "toy"
    registry.unregister_arch("toy")


def _toy_config(stage, root, resources, out_dir, **trainer) -> dict:
    config = tiny_config(stage, "atst_frame", root, resources, out_dir, limit_val_batches=1, limit_test_batches=1,
                         **trainer)
    config.update(arch="toy", toy=configs.schema.tree(ToyConfig()))
    config["t4_wrapper"]["embedding_size"] = ToyConfig.embed_dim
    return config


def test_an_unregistered_arch_is_a_config_error(demo_tiny, tmp_path):
    from helpers.training.train import train

    root, resources = demo_tiny
    with pytest.raises(configs.ConfigError, match="unknown config key 'toy.embed_dim'|arch='toy' is not one of"):
        train(_toy_config(1, root, resources, tmp_path), 1)


@pytest.mark.integration
def test_a_registered_toy_arch_trains_stores_and_runs_inference(toy_arch, demo_tiny, tmp_path):
    import inference
    from helpers.predictions import commands
    from helpers.training.train import train

    root, resources = demo_tiny
    result1 = train(_toy_config(1, root, resources, tmp_path / "s1"), 1)
    checkpoint1 = safe_load(result1["best_model_path"])
    assert checkpoint1["global_step"] == 2 and checkpoint1["config"]["arch"] == "toy"
    assert any(k.startswith("as_model.model.toy_blocks.1.") for k in checkpoint1["student"])

    config2 = _toy_config(2, root, resources, tmp_path / "s2")
    config2["t4_wrapper"]["model_init_id"] = result1["best_model_path"]
    result2 = train(copy.deepcopy(config2), 2)
    student2 = safe_load(result2["best_model_path"])["student"]
    moved = [k for k, v in student2.items()
             if k.startswith("as_model.model.") and not torch.equal(v, checkpoint1["student"][k])]
    assert moved, "stage 2 left every toy backbone weight unchanged (its lr_groups were not trained)"

    store = configs.merge_config(copy.deepcopy(config2), {
        "pretrained_name": result2["best_model_path"], "output_path": str(tmp_path / "preds"),
        "out_name": "toy", "store_sets": ("devtest",), "batch_size": 8})
    files = commands.store_predictions(store, echo=lambda line: None)
    names, logits = read_predictions(files["devtest"])
    assert logits.shape == (len(names), 156, 27) and np.isfinite(logits).all()

    wav = tmp_path / "clip.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(16_000 * 12)).astype(np.float32), 16_000)
    out = tmp_path / "inference"
    assert inference.main(["--audio_file", str(wav), "--model_name", result2["best_model_path"], "--out", str(out),
                           "--no_plot", "--quiet", "--device", "cpu", "--hop_seconds", "10"]) == 0
    assert (out / "clip" / "clip_events.tsv").is_file()
    _, window_logits = read_predictions(out / "clip" / "clip_scores.hdf5")
    assert window_logits.shape == (2, 156, 27)
