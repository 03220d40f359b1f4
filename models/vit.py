"""The pre-LN Vision-Transformer block shared by ATST-Frame and fPaSST.

Both backbones use the timm/DeiT block of "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021):
``x = x + attn(norm1(x)); x = x + mlp(norm2(x))`` with LayerNorm eps 1e-6, exact GELU and a 4x MLP.
Upstream: audiossl ``atstframe/transformer.py`` (ATST, ``qkv_bias=False``) and the PaSST / timm
``vision_transformer.py`` (fPaSST, ``qkv_bias=True``). Attribute names (``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) are checkpoint keys and must not change.

What we changed: attention runs through ``F.scaled_dot_product_attention`` (fused kernels on GPU);
an eager path with an explicit softmax does the same maths for parity tests and debugging
(``use_sdpa=False``). Attention dropout is applied only in training mode.

The module also holds the two helpers both backbones need for layer-wise learning rates and for
dropping top layers (``layerwise_lr_groups``, ``removed_block_prefixes``).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6  # both audiossl and timm/DeiT build their LayerNorms with eps 1e-6


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, use_sdpa: bool = True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.use_sdpa = use_sdpa
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, H, N, head_dim]
        dropout_p = self.attn_drop if self.training else 0.0
        if self.use_sdpa:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=self.scale)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale  # [B, H, N, N]
            attn = F.dropout(attn.softmax(dim=-1), p=dropout_p)
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)  # [B, N, H * head_dim]
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample in training mode."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        return x * keep / keep_prob


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, use_sdpa: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
                              use_sdpa=use_sdpa)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def build_blocks(*, embed_dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, full_depth: int,
                 drop_top_layers: int, drop_rate: float, attn_drop_rate: float, drop_path_rate: float,
                 use_sdpa: bool) -> nn.ModuleList:
    """The first ``full_depth - drop_top_layers`` blocks of a ``full_depth``-block transformer.

    The stochastic-depth rate grows linearly from 0 to ``drop_path_rate`` over the *full* depth (as in
    timm/audiossl), so keeping fewer blocks does not change the rate of the blocks that remain.
    """
    if not 0 <= drop_top_layers < full_depth:
        raise ValueError(f"drop_top_layers={drop_top_layers} must be in [0, depth={full_depth}): "
                         "at least one transformer block has to remain")
    # plain Python (not torch.linspace) so that models can be built on the meta device
    drop_path_rates = [drop_path_rate * i / max(full_depth - 1, 1) for i in range(full_depth)]
    return nn.ModuleList(
        Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
              attn_drop=attn_drop_rate, drop_path=drop_path_rates[i], use_sdpa=use_sdpa)
        for i in range(full_depth - drop_top_layers)
    )


def set_use_sdpa(module: nn.Module, use_sdpa: bool) -> None:
    """Switch every ``Attention`` inside ``module`` between the fused and the eager path."""
    for sub in module.modules():
        if isinstance(sub, Attention):
            sub.use_sdpa = use_sdpa


def layerwise_lr_groups(parameter_names: Iterable[str], *, blocks_prefix: str, final_norm_prefix: str,
                        depth: int) -> list[list[str]]:
    """Parameter names in ``depth + 2`` groups, top first, for layer-wise learning-rate decay.

    Groups: [final norm, block depth-1, ..., block 0, everything else (embeddings)]. Block membership is
    matched with a trailing dot (``blocks.1.``), so ``blocks.10`` never lands in block 1's group (a bug of
    the reference's stage-2 grouping); every name ends up in exactly one group.
    """
    top: list[str] = []
    blocks: list[list[str]] = [[] for _ in range(depth)]
    embeddings: list[str] = []
    for name in parameter_names:
        if name.startswith(final_norm_prefix):
            top.append(name)
        elif name.startswith(blocks_prefix):
            index = int(name[len(blocks_prefix):].split(".", 1)[0])
            blocks[index].append(name)
        else:
            embeddings.append(name)
    return [top, *reversed(blocks), embeddings]


def removed_block_prefixes(*, blocks_prefix: str, kept_depth: int, full_depth: int) -> list[str]:
    """State-dict prefixes of the blocks removed by ``drop_top_layers`` (e.g. ``["blocks.10.", "blocks.11."]``)."""
    return [f"{blocks_prefix}{i}." for i in range(kept_depth, full_depth)]
