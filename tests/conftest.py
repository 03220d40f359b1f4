"""Shared test fixtures: one tiny demo dataset per test session."""
import os

import pytest

# Tests never log to wandb and never touch the network.
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def demo_tiny(tmp_path_factory):
    """The `tiny` demo preset (real layout) generated once; returns (dataset_root, resources_dir). Read-only."""
    from data_util import demo

    root = tmp_path_factory.mktemp("demo") / "tiny"
    demo.generate(root, preset="tiny", seed=0)
    return root, root / demo.RESOURCES_SUBDIR


@pytest.fixture(scope="session")
def as_strong_demo(tmp_path_factory):
    """The tiny AudioSet-strong demo source set, converted once; returns (source folder, prepared dataset). Read-only."""
    from data_util import demo_audioset
    from data_util.audioset_strong_prepare import prepare_audioset_strong

    root = tmp_path_factory.mktemp("as_strong")
    demo_audioset.generate(root / "source", preset="tiny", seed=0)
    prepare_audioset_strong(root / "source", root / "dataset", workers=1, shard_size=8, progress=False)
    return root / "source", root / "dataset"


@pytest.fixture(scope="session")
def hear_demo_task(tmp_path_factory):
    """The demo HEAR event task (data_util.demo_hear) generated once; returns its folder. Read-only."""
    from data_util import demo_hear

    root = tmp_path_factory.mktemp("hear") / "demo_office_events-demo-full"
    demo_hear.generate(root, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_backbone_files(tmp_path_factory):
    """Tiny random checkpoints, one per architecture in another format (helpers.hear_validate): {arch: (format, path)}."""
    from helpers.hear_validate import write_tiny_checkpoints

    return write_tiny_checkpoints(tmp_path_factory.mktemp("tiny_backbones"))
