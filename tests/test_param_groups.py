"""Optimizer parameter groups: what trains in stage 1 and 2, layer-wise LRs, no parameter lost or doubled."""
from __future__ import annotations

import pytest
import torch

from models.param_groups import param_groups
from models.factory import create_model
from models.registry import ARCHS, ARCH_SPECS

# Full depth (12 blocks, so names like blocks.1 / blocks.10 / blocks.11 coexist) but tiny widths.
NARROW_BACKBONE = {
    "atst_frame": dict(embed_dim=32, depth=12, num_heads=2),
    "fpasst": dict(embed_dim=32, depth=12, num_heads=2),
    "beats": dict(embed_dim=32, depth=12, num_heads=2, patch_embed_dim=16),
}
TINY_WRAPPER = dict(nb_filters=[4, 8, 8, 8, 8, 8, 8], n_RNN_cell=8)
LRS = dict(cnn_lr=1e-5, rnn_lr=1e-4, pt_lr=1e-3, pt_lr_scale=0.5, weight_decay=1e-3)
BLOCK_PREFIX = {"atst_frame": "as_model.model.atst.blocks.", "fpasst": "as_model.model.blocks.",
                "beats": "as_model.model.encoder.layers."}


def narrow_model(arch: str, **backbone_kwargs):
    return create_model(arch, backbone_kwargs={**NARROW_BACKBONE[arch], **backbone_kwargs},
                        **ARCH_SPECS[arch].wrapper_defaults, **TINY_WRAPPER)


def group_names(model, groups) -> list[list[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [[name_of[id(p)] for p in group["params"]] for group in groups]


def assert_partition(model, groups):
    """Every trainable parameter is in exactly one group; nothing else is in a group."""
    names = [n for group in group_names(model, groups) for n in group]
    assert len(names) == len(set(names)), "a parameter is in two groups"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(names) == trainable
    assert all("weight_decay" in g and g["weight_decay"] == LRS["weight_decay"] for g in groups)


@pytest.mark.parametrize("arch", ARCHS)
def test_stage1_trains_the_crnn_only(arch):
    model = narrow_model(arch)
    groups = param_groups(model, stage=1, **LRS)
    assert_partition(model, groups)
    assert [g["name"] for g in groups] == ["cnn", "rnn"]
    cnn, rnn = group_names(model, groups)
    assert cnn and all(n.startswith("cnn.") for n in cnn)
    assert {n.split(".")[0] for n in rnn} == {"rnn", "dense", "dense_softmax", "cat_tf"}
    # the reference detaches the whole as_model, AudioSet head included: it never trains
    assert not any(p.requires_grad for p in model.as_model.parameters())
    torch.optim.AdamW(groups)  # a valid optimizer definition


@pytest.mark.parametrize("arch", ARCHS)
def test_stage2_layerwise_groups(arch):
    model = narrow_model(arch)
    groups = param_groups(model, stage=2, **LRS)
    assert_partition(model, groups)
    names = group_names(model, groups)
    by_name = {g["name"]: (g, n) for g, n in zip(groups, names)}
    # every backbone parameter trains (BEATs' top group holds only its unused predictor)
    backbone_params = {"as_model.model." + n for n, _ in model.as_model.model.named_parameters()}
    assert backbone_params <= {n for group in names for n in group}
    assert not any("head_linear_layer" in n for group in names for n in group)
    # blocks: group pt{i} (i = 1 … 12) holds exactly block 12 - i, at pt_lr · scale^i
    for i in range(1, 13):
        group, members = by_name[f"pt{i}"]
        block = f"{BLOCK_PREFIX[arch]}{12 - i}."
        assert members and all(n.startswith(block) for n in members), (i, members[:3])
        assert len(members) == sum(1 for n, _ in model.named_parameters() if n.startswith(block))
        assert group["lr"] == pytest.approx(LRS["pt_lr"] * LRS["pt_lr_scale"] ** i)
    top, _ = by_name["pt0"]
    assert top["lr"] == LRS["pt_lr"]
    assert by_name["pt13"][0]["lr"] == pytest.approx(LRS["pt_lr"] * 0.5 ** 13)
    assert by_name["cnn"][0]["lr"] == LRS["cnn_lr"] and by_name["rnn"][0]["lr"] == LRS["rnn_lr"]
    torch.optim.Adam(groups)


def test_no_blocks_1_prefix_bug():
    """The reference matched 'blocks.1' without a dot for fPaSST, so blocks 10 and 11 joined block 1's group."""
    model = narrow_model("fpasst")
    groups = param_groups(model, stage=2, **LRS)
    names = dict(zip((g["name"] for g in groups), group_names(model, groups)))
    assert all(n.startswith("as_model.model.blocks.1.") for n in names["pt11"])  # block 1 alone
    assert all(n.startswith("as_model.model.blocks.11.") for n in names["pt1"])
    assert all(n.startswith("as_model.model.blocks.10.") for n in names["pt2"])


@pytest.mark.parametrize("arch", ARCHS)
def test_pt_trainable_layers_keeps_top_groups(arch):
    model = narrow_model(arch)
    groups = param_groups(model, stage=2, pt_trainable_layers=3, **LRS)
    assert_partition(model, groups)
    pt = [g["name"] for g in groups if g["name"].startswith("pt")]
    assert set(pt) <= {"pt0", "pt1", "pt2"} and {"pt1", "pt2"} <= set(pt)
    frozen_block = f"{BLOCK_PREFIX[arch]}0."
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(frozen_block))
    # stage 2 after a frozen call makes everything trainable again: requires_grad follows the groups
    assert_partition(model, param_groups(model, stage=2, **LRS))
    none = param_groups(model, stage=2, pt_trainable_layers=0, **LRS)
    assert [g["name"] for g in none] == ["cnn", "rnn"]


def test_train_audioset_head_option():
    model = narrow_model("atst_frame")
    groups = param_groups(model, stage=2, train_audioset_head=True, **LRS)
    assert_partition(model, groups)
    rnn = dict(zip((g["name"] for g in groups), group_names(model, groups)))["rnn"]
    assert {"as_model.head_linear_layer.weight", "as_model.head_linear_layer.bias"} <= set(rnn)


def test_dropped_layers_and_bad_arguments():
    model = narrow_model("fpasst", drop_top_layers=2)
    groups = param_groups(model, stage=2, **LRS)
    assert_partition(model, groups)
    assert len([g for g in groups if g["name"].startswith("pt")]) == 10 + 2
    with pytest.raises(ValueError, match="stage"):
        param_groups(model, stage=3, **LRS)
    with pytest.raises(ValueError, match="pt_trainable_layers"):
        param_groups(model, stage=2, pt_trainable_layers=20, **LRS)
    with pytest.raises(ValueError, match="pt_trainable_layers"):
        param_groups(model, stage=2, pt_trainable_layers="top", **LRS)
