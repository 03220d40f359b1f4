"""MultiSetBatchSampler: composition, epoch length, reshuffling, DDP shards, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from data_util.sampler import MultiSetBatchSampler

SIZES = (30, 25, 40, 100, 61)
BATCH = (3, 2, 2, 5, 4)
NAMES = ("maestro", "desed_strong", "synth", "weak", "unlabeled")
OFFSETS = np.cumsum((0,) + SIZES)


def set_of(index: int) -> int:
    return int(np.searchsorted(OFFSETS, index, side="right") - 1)


def make(**kwargs) -> MultiSetBatchSampler:
    return MultiSetBatchSampler(SIZES, BATCH, seed=kwargs.pop("seed", 0), names=NAMES, **kwargs)


def test_composition_and_epoch_length():
    sampler = make()
    batches = list(sampler)
    assert len(batches) == len(sampler) == min(s // b for s, b in zip(SIZES, BATCH)) == 10
    for batch in batches:
        assert len(batch) == sum(BATCH) == sampler.batch_size
        assert [set_of(i) for i in batch] == [k for k, b in enumerate(BATCH) for _ in range(b)]
    for k in range(len(SIZES)):  # no clip twice within an epoch
        drawn = [i for batch in batches for i in batch if set_of(i) == k]
        assert len(drawn) == len(set(drawn)) == 10 * BATCH[k]


def test_sub_batch_slices_by_name():
    slices = make().sub_batch_slices
    assert slices == {"maestro": slice(0, 3), "desed_strong": slice(3, 5), "synth": slice(5, 7),
                      "weak": slice(7, 12), "unlabeled": slice(12, 16)}
    batch = next(iter(make()))
    assert {set_of(i) for i in batch[slices["weak"]]} == {3}


def test_reshuffled_per_epoch_and_deterministic_per_seed():
    sampler = make()
    epoch0 = list(sampler)
    assert list(sampler) == epoch0  # same epoch, same order
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    assert list(make(seed=0)) == epoch0 and list(make(seed=1)) != epoch0


def test_ddp_ranks_are_disjoint_and_equally_long():
    ranks = [make(rank=r, world_size=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(3)
    batches = [list(s) for s in ranks]
    assert len(batches[0]) == len(batches[1]) == len(ranks[0]) == min((s // 2) // b for s, b in zip(SIZES, BATCH))
    seen = [{i for batch in rank_batches for i in batch} for rank_batches in batches]
    assert not seen[0] & seen[1]
    assert batches[0] != batches[1]


def test_resume_mid_epoch_continues_the_same_order():
    sampler = make()
    sampler.set_epoch(2)
    full = list(sampler)
    state = sampler.state_dict(batches_done=4)
    assert state == {"epoch": 2, "batches_done": 4, "seed": 0}
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # Lightning calls set_epoch with the resumed epoch first
    assert list(resumed) == full[4:]
    resumed.set_epoch(3)
    assert len(list(resumed)) == len(resumed)  # the next epoch is complete again
    with pytest.raises(ValueError, match="seed"):
        make(seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="batches_done"):
        make().load_state_dict({"epoch": 0, "batches_done": 999, "seed": 0})


def test_state_dict_without_argument_counts_yielded_batches():
    sampler = make()
    iterator = iter(sampler)
    next(iterator), next(iterator)
    assert sampler.state_dict()["batches_done"] == 2


def test_drop_last_false_keeps_composition():
    sampler = MultiSetBatchSampler((5, 9), (2, 2), seed=0, drop_last=False)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    assert all(len(b) == 4 for b in batches)
    assert {i for b in batches for i in b[:2]} == set(range(5))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="one entry per training set"):
        MultiSetBatchSampler((10, 10), (1, 2, 3), seed=0)
    with pytest.raises(ValueError, match="smaller than one sub-batch"):
        MultiSetBatchSampler((10, 3), (2, 4), seed=0)
    with pytest.raises(ValueError, match="rank"):
        MultiSetBatchSampler((10, 10), (2, 2), seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="positive"):
        MultiSetBatchSampler((10, 10), (2, 0), seed=0)


class IndexDataset(Dataset):
    def __init__(self, n, offset):
        self.n, self.offset = n, offset

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor(self.offset + i)  # the global index


def test_works_as_dataloader_batch_sampler():
    datasets = {name: IndexDataset(size, int(o)) for name, size, o in zip(NAMES, SIZES, OFFSETS)}
    concat, sampler = MultiSetBatchSampler.for_sets(datasets, BATCH, seed=0)
    assert sampler.names == NAMES
    loader = DataLoader(concat, batch_sampler=sampler, num_workers=0)
    batches = [b.tolist() for b in loader]
    assert batches == list(sampler)


def test_seeded_samples_are_independent_of_and_do_not_change_the_global_rng():
    from data_util.sampler import SeededSamples

    class Noisy(Dataset):
        def __len__(self):
            return 100

        def __getitem__(self, index):
            return float(torch.rand(())) + index  # a random augmentation drawn from torch's global RNG

    sampler = make(seeded=True)
    batches = list(sampler)
    assert all(isinstance(key, tuple) and len(key) == 2 for key in batches[0])
    assert [i for i, _ in batches[0]] == list(make())[0]  # same indices as the unseeded sampler
    data = SeededSamples(Noisy())
    torch.manual_seed(1)
    first = [data[key] for key in batches[3]]
    state = torch.get_rng_state()
    torch.manual_seed(2)
    assert [data[key] for key in batches[3]] == first  # whatever the caller's RNG state
    torch.manual_seed(1)
    assert torch.equal(torch.get_rng_state(), state)  # loading did not advance the global RNG
    assert len({seed for batch in batches for _, seed in batch}) == sum(len(b) for b in batches)  # all distinct


def test_seeded_sampler_resumes_with_the_same_seeds():
    sampler = make(seeded=True)
    sampler.set_epoch(2)
    full = list(sampler)
    resumed = make(seeded=True)
    resumed.load_state_dict({"epoch": 2, "batches_done": 4, "seed": 0})
    assert list(resumed) == full[4:]
    other_epoch = make(seeded=True)
    other_epoch.set_epoch(3)
    assert [s for _, s in list(other_epoch)[0]] != [s for _, s in full[0]]
