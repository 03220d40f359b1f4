"""The SED model: a CRNN fused with a pretrained transformer's frame embeddings.

Semantics of the DCASE 2024 Task 4 winning system's ``Task4CRNNEmbeddingsWrapper``
(Schmid et al., arXiv 2407.12997; code CPJKU/cpjku_dcase24 ``models/wrapper.py``), written from scratch:

    cnn_features (B, 1, 128, 626) ──► CNN ──► (B, 156, 128) ─┐
    transformer_features ──► as_model ──► (B, T_tok, D) ──► pool/interpolate to 156 ─┤
                                   concat ─► dropout ─► cat_tf ─► BiGRU ─► dropout ─► dense (strong)
                                                                                   └► dense_softmax (attention)

``as_model`` is an ``AudioSetWrapper`` holding the backbone as ``model`` and, unless ``no_wrapper``,
the AudioSet frame head ``head_linear_layer`` (D → 527, applied per token after pooling the tokens to
250 if needed), so the CRNN receives 527 frame logits (ATST-Frame, fPaSST) or the raw D-dim tokens
(BEATs, ``no_wrapper=True``). Attribute names are checkpoint keys: ``state_dict()`` equals the
``student`` / ``teacher`` entries of the released ``{atst,passt,beats}_stage{1,2}.ckpt`` key for key.

The weak head is attention pooling with the softmax over the **class** axis (a quirk of the reference
kept because the checkpoints were trained with it), clamped to [1e-7, 1]. A class mask (True = valid)
puts -1e30 on invalid attention logits and sets strong and weak outputs of invalid classes to 0.

What we changed: no printing, no checkpoint loading inside the constructor (see ``models/checkpoints.py``),
the heads run in float32 for ``return_strong_logits`` too, the reference's unused ``pad_mask`` argument
and its multi-head ``nclass`` tuple (which could not be built) are not supported.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from models.crnn import CNN, BidirectionalGRU

AUDIOSET_CLASSES = 527
# The AudioSet wrapper's token rate: 250 tokens per 10 s (40 ms), as the frame heads were trained.
AUDIOSET_SEQ_LEN = 250
ATTENTION_CLAMP_MIN = 1e-7
MASK_FILL = -1e30
# embed_pool="conv" is a depthwise Conv1d mapping 250 tokens to 156 frames (kernel 250 - 156 + 1).
CONV_POOL_IN_FRAMES = 250
CONV_POOL_OUT_FRAMES = 156
EMBED_POOLS = ("aap", "int", "conv")


class AudioSetWrapper(nn.Module):
    """The backbone (``model``) plus, optionally, the AudioSet frame head ``head_linear_layer``.

    With the head: tokens are adaptive-average-pooled to ``seq_len`` when their count differs (e.g.
    BEATs' 496 tokens), then mapped per token to ``audioset_classes`` logits. Without it: the raw tokens.
    """

    def __init__(self, model: nn.Module, *, use_head: bool, audioset_classes: int = AUDIOSET_CLASSES,
                 embed_dim: int = 768, seq_len: int = AUDIOSET_SEQ_LEN):
        super().__init__()
        self.model = model
        self.use_head = use_head
        self.seq_len = seq_len
        self.out_dim = audioset_classes if use_head else embed_dim
        if use_head:
            self.head_linear_layer = nn.Linear(embed_dim, audioset_classes)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        tokens = self.model(spec)  # (B, T_tok, D)
        if not self.use_head:
            return tokens
        if tokens.shape[1] != self.seq_len:
            tokens = F.adaptive_avg_pool1d(tokens.transpose(1, 2), self.seq_len).transpose(1, 2)  # (B, 250, D)
        return self.head_linear_layer(tokens)  # (B, 250, 527)


class SEDModel(nn.Module):
    """CRNN + transformer SED model (the reference's ``Task4CRNNEmbeddingsWrapper``).

    Keyword arguments are the reference's ``t4_wrapper`` config keys (minus ``name``, ``model_init_id``,
    ``model_init_mode``, which concern checkpoint loading; see ``models.registry.split_wrapper_config``).
    ``embedding_size`` defaults to ``backbone.embed_dim``. Defaults are the released models' settings.

    Why one class of this size: its attributes (``cnn``, ``as_model``, ``cat_tf``, ``rnn``, ``dense``,
    ``dense_softmax``) are the released checkpoints' keys, so grouping them into sub-modules would rename every
    key. The parts with their own logic live elsewhere (``models.crnn``: CNN, BiGRU; the backbones); what is
    left here is wiring plus short steps (``cnn_frames``, ``align_embeddings``, ``trunk``, the heads).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        audioset_classes: int = AUDIOSET_CLASSES,
        no_wrapper: bool = False,
        n_in_channel: int = 1,
        nclass: int = 27,
        activation: str = "cg",
        dropout: float = 0.5,
        attention: bool | str = True,
        n_RNN_cell: int = 256,
        n_layers_RNN: int = 2,
        dropout_recurrent: float = 0.0,
        dropstep_recurrent: float = 0.0,
        dropstep_recurrent_len: int = 16,
        embedding_size: int | None = None,
        kernel_size: Sequence = (3,) * 7,
        padding: Sequence = (1,) * 7,
        stride: Sequence = (1,) * 7,
        nb_filters: Sequence[int] = (16, 32, 64, 128, 128, 128, 128),
        pooling: Sequence = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2)),
        embed_pool: str = "aap",
        interpolation_mode: str = "nearest",
    ):
        super().__init__()
        backbone_dim = getattr(backbone, "embed_dim", None)
        if embedding_size is None:
            if backbone_dim is None:
                raise ValueError("SEDModel: the backbone has no `embed_dim` attribute; pass embedding_size")
            embedding_size = backbone_dim
        elif backbone_dim is not None and embedding_size != backbone_dim:
            raise ValueError(
                f"t4_wrapper.embedding_size={embedding_size} differs from the backbone's embed_dim={backbone_dim}"
            )
        if not isinstance(nclass, int) or isinstance(nclass, bool):
            raise ValueError(f"t4_wrapper.nclass={nclass!r} must be an int (multi-head tuples are not supported)")
        if attention not in (True, False, "legacy"):
            raise ValueError(f"t4_wrapper.attention={attention!r}; expected True, False or 'legacy'")
        if embed_pool not in EMBED_POOLS:
            raise ValueError(f"t4_wrapper.embed_pool={embed_pool!r} is unknown; expected one of {EMBED_POOLS}")
        if not 0.0 <= dropstep_recurrent <= 1.0:
            raise ValueError(f"t4_wrapper.dropstep_recurrent={dropstep_recurrent!r} must be in [0, 1]")
        self.nclass = nclass
        self.attention = attention in (True, "legacy")
        self.embed_pool = embed_pool
        self.interpolation_mode = interpolation_mode
        self.dropstep_recurrent = float(dropstep_recurrent)
        self.dropstep_recurrent_len = int(dropstep_recurrent_len)

        # Registration order = the released state-dict key order (cnn, rnn, dense, dense_softmax, as_model, cat_tf).
        self.cnn = CNN(
            n_in_channel=n_in_channel, activation=activation, conv_dropout=dropout, kernel_size=kernel_size,
            padding=padding, stride=stride, nb_filters=nb_filters, pooling=pooling,
        )
        self.rnn = BidirectionalGRU(n_in=n_RNN_cell, n_hidden=n_RNN_cell, dropout=dropout_recurrent,
                                    num_layers=n_layers_RNN)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(2 * n_RNN_cell, nclass)
        self.dense_softmax = nn.Linear(2 * n_RNN_cell, nclass)
        self.as_model = AudioSetWrapper(backbone, use_head=not no_wrapper, audioset_classes=audioset_classes,
                                        embed_dim=embedding_size)
        transformer_dim = self.as_model.out_dim
        if embed_pool == "conv":
            kernel = CONV_POOL_IN_FRAMES - CONV_POOL_OUT_FRAMES + 1
            conv = nn.Conv1d(transformer_dim, transformer_dim, kernel_size=kernel, groups=transformer_dim)
            with torch.no_grad():  # starts as a moving average
                conv.weight.fill_(1.0 / kernel)
                conv.bias.zero_()
            self.pool_conv = nn.Sequential(conv)  # key pool_conv.0.* as in the reference
        # The CNN's output channels (the reference multiplied by n_in_channel, which only fits n_in_channel=1).
        cnn_dim = self.cnn.nb_filters[-1]
        self.cat_tf = nn.Linear(cnn_dim + transformer_dim, n_RNN_cell)

    @property
    def backbone(self) -> nn.Module:
        return self.as_model.model

    # ----------------------------------------------------------------------------------------- trunk
    def cnn_frames(self, cnn_features: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) scaled mel → CNN frame features (B, T', C)."""
        x = self.cnn(cnn_features.transpose(2, 3))  # (B, C, T', F')
        B, C, T, Fr = x.shape
        if Fr != 1:
            raise ValueError(
                f"the CNN left {Fr} frequency bins (expected 1): input {tuple(cnn_features.shape)} does not "
                f"match the pooling {self.cnn.pooling}"
            )
        return x.squeeze(-1).permute(0, 2, 1)  # (B, T', C)

    def align_embeddings(self, embeddings: torch.Tensor, frames: int) -> torch.Tensor:
        """Transformer frames (B, T_tok, D) → (B, frames, D) by ``embed_pool``."""
        x = embeddings.transpose(1, 2)  # (B, D, T_tok)
        if self.embed_pool == "aap":
            x = F.adaptive_avg_pool1d(x, frames)
        elif self.embed_pool == "int":
            x = F.interpolate(x, size=frames, mode=self.interpolation_mode)
        else:
            if frames != CONV_POOL_OUT_FRAMES or x.shape[-1] != CONV_POOL_IN_FRAMES:
                raise ValueError(
                    f"embed_pool='conv' maps exactly {CONV_POOL_IN_FRAMES} transformer frames to "
                    f"{CONV_POOL_OUT_FRAMES} CNN frames (10 s clips); got {x.shape[-1]} → {frames}"
                )
            x = self.pool_conv(x)
        return x.transpose(1, 2)  # (B, frames, D)

    def _dropstep(self, x: torch.Tensor) -> torch.Tensor:
        """Zero a random run of up to ``dropstep_recurrent_len`` steps per clip (reference: torchaudio TimeMasking)."""
        masking = torchaudio.transforms.TimeMasking(self.dropstep_recurrent_len, iid_masks=True,
                                                    p=self.dropstep_recurrent)
        return masking(x.transpose(1, 2)).transpose(1, 2)  # masks along time, (B, T, C)

    def trunk(self, cnn_features: torch.Tensor, transformer_features: torch.Tensor,
              transformer_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Both branches fused and through the BiGRU: (B, T', 2·n_RNN_cell), before the heads.

        ``transformer_tokens``: ``self.as_model(transformer_features)`` computed by the caller (stage 1 computes
        the frozen transformer once for student and teacher); None computes it here.
        """
        cnn_x = self.cnn_frames(cnn_features)  # (B, T', C)
        if transformer_tokens is None:
            transformer_tokens = self.as_model(transformer_features)
        embeddings = self.align_embeddings(transformer_tokens, cnn_x.shape[1])  # (B, T', D)
        if self.dropstep_recurrent and self.training:
            cnn_x = self._dropstep(cnn_x)
            embeddings = self._dropstep(embeddings)
        x = self.cat_tf(self.dropout(torch.cat((cnn_x, embeddings), dim=-1)))  # (B, T', n_RNN_cell)
        return self.dropout(self.rnn(x))

    # ----------------------------------------------------------------------------------------- heads
    def _heads(self, x: torch.Tensor, class_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        strong = torch.sigmoid(self.dense(x))  # (B, T, C)
        invalid = None
        if class_mask is not None:
            if class_mask.shape != (x.shape[0], self.nclass):
                raise ValueError(
                    f"class_mask has shape {tuple(class_mask.shape)}, expected (batch, nclass) = "
                    f"({x.shape[0]}, {self.nclass})"
                )
            invalid = ~class_mask.bool()[:, None, :].expand_as(strong)  # (B, T, C)
        if self.attention:
            attention_logits = self.dense_softmax(x)  # (B, T, C)
            if invalid is not None:
                attention_logits = attention_logits.masked_fill(invalid, MASK_FILL)
            # Softmax over the class axis (reference quirk, kept for the released checkpoints).
            attention = torch.softmax(attention_logits, dim=-1).clamp(min=ATTENTION_CLAMP_MIN, max=1.0)
            weak = (strong * attention).sum(1) / attention.sum(1)  # (B, C)
        else:
            weak = strong.mean(1)
        if invalid is not None:
            strong = strong.masked_fill(invalid, 0.0)
            weak = weak.masked_fill(invalid[:, 0], 0.0)
        return strong.transpose(1, 2), weak  # (B, C, T), (B, C)

    def forward(
        self,
        cnn_features: torch.Tensor,
        transformer_features: torch.Tensor,
        class_mask: torch.Tensor | None | Sequence[torch.Tensor | None] = None,
        return_strong_logits: bool = False,
        transformer_tokens: torch.Tensor | None = None,
    ):
        """Strong (B, nclass, T') and weak (B, nclass) probabilities.

        class_mask: None, a bool tensor (B, nclass) with True for valid classes, or a tuple/list of those;
        a sequence returns a tuple of (strong, weak) pairs, one per mask, from one trunk pass (the reference's
        ``classes_mask=(valid_mask, None)``). ``return_strong_logits=True`` returns only the strong logits
        (B, T', nclass), time-major, as prediction files store them. ``transformer_tokens``: see :meth:`trunk`.
        """
        x = self.trunk(cnn_features, transformer_features, transformer_tokens)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            if return_strong_logits:
                return self.dense(x)  # (B, T', nclass)
            if class_mask is None or torch.is_tensor(class_mask):
                return self._heads(x, class_mask)
            return tuple(self._heads(x, mask) for mask in class_mask)


__all__ = ["SEDModel", "AudioSetWrapper", "EMBED_POOLS", "AUDIOSET_CLASSES"]
