"""The CRNN parts of the SED model: a 7-block CNN with context gating and a bidirectional GRU.

The DCASE Task 4 baseline architecture as the DCASE 2024 winning system (CPJKU/cpjku_dcase24,
``models/baseline/CNN.py`` and ``RNN.py``) uses it. Attribute names are checkpoint keys and match
the released checkpoints: ``cnn.conv{i}``, ``cnn.batchnorm{i}``, ``cnn.cg{i}.linear`` inside
``CNN``, and ``rnn`` (an ``nn.GRU``) inside ``BidirectionalGRU``. Written from scratch.

BatchNorm is built with ``eps=1e-3, momentum=0.99`` exactly as the reference passes them. In PyTorch's
convention (running = (1 - momentum)·running + momentum·batch) that makes the running statistics
follow almost only the latest batch (the value looks like a Keras decay that was carried over). The
released checkpoints' running statistics were accumulated that way, so we keep it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

BATCHNORM_EPS = 1e-3
BATCHNORM_MOMENTUM = 0.99  # PyTorch convention; see the module docstring
LEAKY_RELU_SLOPE = 0.2
ACTIVATIONS = ("cg", "glu", "relu", "leakyrelu")
NORMALIZATIONS = ("batch", "layer")


class _ChannelLinear(nn.Module):
    """Base of the two gates: a Linear over the channel axis of (B, C, T, F) maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.linear = nn.Linear(channels, channels)

    def _channel_linear(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, T, F)


class ContextGating(_ChannelLinear):
    """x · sigmoid(Linear_C(x)): each channel is gated by a learned mix of all channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self._channel_linear(x))


class GLU(_ChannelLinear):
    """Linear_C(x) · sigmoid(x): the baseline's gated linear unit (reference ``GLU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._channel_linear(x) * torch.sigmoid(x)


def _activation(name: str, channels: int) -> tuple[str, nn.Module]:
    """(attribute prefix, module) for an activation name; the prefix is part of the checkpoint key."""
    key = name.lower()
    if key == "cg":
        return "cg", ContextGating(channels)
    if key == "glu":
        return "glu", GLU(channels)
    if key == "relu":
        return "relu", nn.ReLU()
    if key == "leakyrelu":
        return "relu", nn.LeakyReLU(LEAKY_RELU_SLOPE)
    raise ValueError(f"t4_wrapper.activation={name!r} is unknown; expected one of {ACTIVATIONS}")


def _per_layer(name: str, values: Sequence, n_layers: int) -> list:
    values = list(values)
    if len(values) != n_layers:
        raise ValueError(
            f"t4_wrapper.{name} has {len(values)} entries {values}, expected one per CNN layer "
            f"({n_layers}, the length of nb_filters)"
        )
    return values


class CNN(nn.Module):
    """Conv → norm → activation → dropout → average pool, repeated; (B, C, T, F) → (B, C', T', F').

    The layers live in one ``nn.Sequential`` named ``cnn`` (keys ``cnn.conv0.weight`` …).
    ``pooling[i]`` is (time, frequency). Default sizes are the released models': 626 × 128 → 156 × 1.
    """

    def __init__(
        self,
        *,
        n_in_channel: int = 1,
        activation: str = "cg",
        conv_dropout: float = 0.0,
        kernel_size: Sequence = (3,) * 7,
        padding: Sequence = (1,) * 7,
        stride: Sequence = (1,) * 7,
        nb_filters: Sequence[int] = (16, 32, 64, 128, 128, 128, 128),
        pooling: Sequence = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2)),
        normalization: str = "batch",
    ):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"CNN normalization={normalization!r} is unknown; expected one of {NORMALIZATIONS}")
        n_layers = len(nb_filters)
        kernel_size = _per_layer("kernel_size", kernel_size, n_layers)
        padding = _per_layer("padding", padding, n_layers)
        stride = _per_layer("stride", stride, n_layers)
        pooling = _per_layer("pooling", pooling, n_layers)
        self.nb_filters = list(nb_filters)
        self.pooling = [tuple(p) if isinstance(p, (list, tuple)) else (p, p) for p in pooling]

        layers = nn.Sequential()
        for i, n_out in enumerate(self.nb_filters):
            n_in = n_in_channel if i == 0 else self.nb_filters[i - 1]
            layers.add_module(f"conv{i}", nn.Conv2d(n_in, n_out, kernel_size[i], stride[i], padding[i]))
            if normalization == "batch":
                norm = nn.BatchNorm2d(n_out, eps=BATCHNORM_EPS, momentum=BATCHNORM_MOMENTUM)
                layers.add_module(f"batchnorm{i}", norm)
            else:
                layers.add_module(f"layernorm{i}", nn.GroupNorm(1, n_out))
            prefix, act = _activation(activation, n_out)
            layers.add_module(f"{prefix}{i}", act)
            layers.add_module(f"dropout{i}", nn.Dropout(conv_dropout))
            layers.add_module(f"pooling{i}", nn.AvgPool2d(self.pooling[i]))
        # Channels-last convolution weights make oneDNN run the whole stack (convolutions, batch norm, pooling) in
        # NHWC, where the context gates' Linear over channels needs no transposing copies: about 1.5x faster on CPU
        # (NHWC is also cuDNN's tensor-core layout). Keys and values are unchanged; load_state_dict copies into these.
        self.cnn = layers.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(x)


class BidirectionalGRU(nn.Module):
    """A batch-first bidirectional GRU returning the per-step outputs (B, T, 2·n_hidden)."""

    def __init__(self, *, n_in: int, n_hidden: int, dropout: float = 0.0, num_layers: int = 2):
        super().__init__()
        self.rnn = nn.GRU(
            n_in, n_hidden, num_layers=num_layers, bidirectional=True, batch_first=True, dropout=dropout
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(x)
        return outputs


__all__ = ["CNN", "BidirectionalGRU", "ContextGating", "GLU", "ACTIVATIONS"]
