"""Optimizer parameter groups of the SED model for stage 1 and stage 2 (layer-wise LR decay).

What the reference (CPJKU/cpjku_dcase24 ``separate_params`` / ``get_optimizer`` in ``ex_stage{1,2}.py``)
trains, and how we build the same thing:

- The reference's wrapper calls ``param.detach_()`` on every ``as_model`` parameter at construction,
  which sets ``requires_grad=False`` on the backbone *and on ``as_model.head_linear_layer``*.
- Stage 1: one group with every parameter outside ``as_model`` plus ``head_linear_layer``, at ``crnn_lr``.
  The head is in the group but has no gradient, so it never changes: stage 1 trains the CNN, ``cat_tf``,
  the GRU, ``dense`` and ``dense_softmax`` (and ``pool_conv`` with ``embed_pool="conv"``).
- Stage 2: a ``cnn_lr`` group (CRNN parameters whose name contains "cnn"), an ``rnn_lr`` group (the other
  CRNN parameters and, again without effect, the head), and 14 transformer groups, top first
  ([final norm, block 11, …, block 0, embeddings]) at ``pt_lr * pt_lr_scale**i``, re-enabling gradients
  on those. ``pt_trainable_layers=k`` keeps only the top k transformer groups.

Here ``param_groups`` returns only parameters that train and makes ``requires_grad`` agree with the groups
(True inside, False outside), so "trainable" has one meaning. The head stays frozen by default as in the
reference (``train_audioset_head=True`` trains it with ``rnn_lr``). Every group carries its
``weight_decay`` explicitly and a ``name`` for logging. The reference's fPaSST grouping by ``'blocks.1'``
(which put blocks 10 and 11 into block 1's group, and silently left unmatched names out) is not repeated:
the backbone's own ``lr_groups()`` names every parameter exactly once, and this module checks it.

``layer_decay_groups`` gives the groups of a bare backbone for downstream fine-tuning (``helpers.training.downstream``).
"""
from __future__ import annotations

from torch import nn

STAGES = (1, 2)
AS_MODEL_PREFIX = "as_model."
BACKBONE_PREFIX = "as_model.model."
AUDIOSET_HEAD_PREFIX = "as_model.head_linear_layer."
CNN_PREFIX = "cnn."


def backbone_lr_groups(backbone: nn.Module, prefix: str = "") -> list[list[str]]:
    """The backbone's ``lr_groups()`` (top first) with ``prefix`` before each name, checked to cover it exactly once."""
    groups = [[prefix + name for name in group] for group in backbone.lr_groups()]
    names = [name for group in groups for name in group]
    expected = {prefix + name for name, _ in backbone.named_parameters()}
    duplicates = sorted({name for name in names if names.count(name) > 1})
    missing = sorted(expected - set(names))
    unknown = sorted(set(names) - expected)
    if duplicates or missing or unknown:
        raise ValueError(
            f"{type(backbone).__name__}.lr_groups() must name each parameter exactly once; "
            f"duplicates={duplicates[:5]}, missing={missing[:5]}, unknown={unknown[:5]}"
        )
    return groups


def _transformer_groups(model: nn.Module) -> list[list[str]]:
    """The SED model's backbone groups as full SED-model names."""
    return backbone_lr_groups(model.as_model.model, BACKBONE_PREFIX)


def layer_decay_groups(backbone: nn.Module, *, lr: float, decay: float, weight_decay: float,
                       prefix: str = "") -> list[dict]:
    """Optimizer groups of a bare backbone with layer-wise learning-rate decay, as PretrainedSED's downstream
    fine-tuning (``ex_dcase2016task2.py``): block k of ``depth`` (k = 0 at the bottom) trains at
    ``lr · decay^(depth - k)``, so the top block gets ``lr · decay`` and the bottom one ``lr · decay^depth``; the final
    norm shares the top block's rate, the embeddings (patch embedding, positions, ...) the bottom block's.

    Groups are named ``pt{i}`` (i = 0 for the top group) and hold names with ``prefix`` (the backbone's position in
    the module the optimizer sees). Empty groups (BEATs without a predictor) are left out.
    """
    groups = backbone_lr_groups(backbone, prefix)
    depth = len(groups) - 2  # [final norm, block depth-1, ..., block 0, embeddings]
    parameters = dict(backbone.named_parameters())
    result = []
    for i, names in enumerate(groups):
        if names:
            exponent = min(max(i, 1), depth)
            result.append({"name": f"pt{i}", "params": [parameters[n[len(prefix):]] for n in names],
                           "lr": lr * decay ** exponent, "weight_decay": weight_decay})
    return result


def _trainable_transformer_groups(pt_trainable_layers: int | str, n_groups: int) -> int:
    if pt_trainable_layers == "all":
        return n_groups
    if isinstance(pt_trainable_layers, bool) or not isinstance(pt_trainable_layers, int) \
            or not 0 <= pt_trainable_layers <= n_groups:
        raise ValueError(
            f"optimizer.pt_trainable_layers={pt_trainable_layers!r}: expected 'all' or an int in [0, {n_groups}] "
            f"(number of top transformer groups to train, of {n_groups})"
        )
    return pt_trainable_layers


def param_groups(
    model: nn.Module,
    *,
    cnn_lr: float,
    rnn_lr: float,
    pt_lr: float = 0.0,
    pt_lr_scale: float = 1.0,
    pt_trainable_layers: int | str = "all",
    weight_decay: float,
    stage: int,
    train_audioset_head: bool = False,
) -> list[dict]:
    """Optimizer groups for ``model`` (an ``SEDModel``); also sets ``requires_grad`` to match them.

    Stage 1 uses ``cnn_lr`` / ``rnn_lr`` for the CNN and the rest of the CRNN (the reference's single
    ``crnn_lr``: pass it as both); ``pt_*`` are ignored. Stage 2 adds the transformer groups named
    ``pt{i}`` (i = 0 is the top). Groups with no parameters are left out (e.g. BEATs' top group when the
    backbone has no ``predictor``). Each dict: ``name``, ``params``, ``lr``, ``weight_decay``.
    """
    if stage not in STAGES:
        raise ValueError(f"param_groups: stage={stage!r}, expected one of {STAGES}")
    params = dict(model.named_parameters())
    cnn, rnn = [], []
    for name in params:
        if not name.startswith(AS_MODEL_PREFIX):
            (cnn if name.startswith(CNN_PREFIX) else rnn).append(name)
        elif name.startswith(AUDIOSET_HEAD_PREFIX) and train_audioset_head:
            rnn.append(name)

    named_groups: list[tuple[str, list[str], float]] = [("cnn", cnn, cnn_lr), ("rnn", rnn, rnn_lr)]
    if stage == 2:
        transformer = _transformer_groups(model)
        n_trainable = _trainable_transformer_groups(pt_trainable_layers, len(transformer))
        for i, names in enumerate(transformer[:n_trainable]):
            named_groups.append((f"pt{i}", names, pt_lr * pt_lr_scale ** i))

    for param in params.values():
        param.requires_grad_(False)
    groups = []
    for group_name, names, lr in named_groups:
        if not names:
            continue
        for name in names:
            params[name].requires_grad_(True)
        groups.append({"name": group_name, "params": [params[n] for n in names], "lr": lr,
                       "weight_decay": weight_decay})
    return groups


__all__ = ["param_groups", "backbone_lr_groups", "layer_decay_groups", "STAGES"]
