"""A batch sampler that builds every batch from fixed-size parts of several data sets.

The training batch of the system is the concatenation of sub-batches, in order, e.g. 12 MAESTRO clips,
10 DESED strong, 10 synthetic, 20 weak and 20 unlabeled (``training.batch_sizes``). Each sub-set is
drawn from its own random permutation (a new one each epoch, via ``set_epoch``), and an epoch ends when
the first sub-set runs out: ``min(len_i // batch_size_i)`` batches (per rank). The reference's
``ConcatDatasetBatchSampler`` (after SpeechBrain) did the same with one ``RandomSampler`` per set; ours
adds deterministic seeding, DDP sharding, named sub-batch slices and mid-epoch resume.

DDP: each rank takes a disjoint, equally long share (``rank::world_size``) of every permutation, so the
ranks together see each clip at most once per epoch. With Lightning, pass the trainer's rank and world
size and set ``Trainer(use_distributed_sampler=False)`` so Lightning does not wrap the sampler.

Per-sample seeds (``seeded=True``): every index comes as ``(index, seed)``, the seed a function of (sampler
seed, epoch, rank, batch, position) only, and :class:`SeededSamples` runs the dataset's ``__getitem__`` under
that seed (random crops, waveform mixing, impulse responses draw from torch's RNG). So a clip's random
choices do not depend on which worker loads it, on DataLoader prefetching, or on where a run was resumed,
and loading never advances the training process's own RNG: a run resumed mid-epoch gets the same batches
and the same augmentation draws as an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

_SEED_HIGH = 2**62


class _ResumableEpochs(Sampler[list]):
    """The epoch / position bookkeeping both batch samplers share: ``set_epoch``, and ``state_dict`` /
    ``load_state_dict`` so that a run resumed mid-epoch skips the batches already trained on. Subclasses set
    ``seed``, ``epoch = 0``, ``_resume_batches = 0``, ``_batches_yielded = 0`` and implement ``__len__``."""

    seed: int
    epoch: int
    _resume_batches: int
    _batches_yielded: int

    def set_epoch(self, epoch: int) -> None:
        """Select the draws of ``epoch`` (called by Lightning before each epoch)."""
        if epoch != self.epoch:
            self._resume_batches = 0
        self.epoch = int(epoch)

    def state_dict(self, batches_done: int | None = None) -> dict:
        """Position for resuming: ``{"epoch", "batches_done", "seed"}``.

        Pass ``batches_done`` from the training loop: DataLoader workers prefetch, so the sampler's own
        count of yielded batches runs ahead of the batches actually trained on.
        """
        done = self._batches_yielded if batches_done is None else int(batches_done)
        return {"epoch": self.epoch, "batches_done": done, "seed": self.seed}

    def load_state_dict(self, state: Mapping) -> None:
        """Resume: the next iteration of ``state["epoch"]`` starts after ``state["batches_done"]`` batches."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"sampler state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
        self.epoch = int(state["epoch"])
        self._resume_batches = int(state["batches_done"])
        if not 0 <= self._resume_batches <= len(self):
            raise ValueError(f"batches_done={self._resume_batches} is outside [0, {len(self)}] for this sampler")


class MultiSetBatchSampler(_ResumableEpochs):
    """Batches of global indices into a ``ConcatDataset`` of sets with sizes ``dataset_sizes``.

    Batch = ``batch_sizes[0]`` indices from set 0, then ``batch_sizes[1]`` from set 1, ... Epoch length is
    ``min(shard_i // batch_sizes[i])`` with ``shard_i = dataset_sizes[i] // world_size`` (``drop_last``);
    with ``drop_last=False`` it is ``min(ceil(shard_i / batch_sizes[i]))`` and a set that runs out in the
    last batch is topped up from the start of its permutation, so every batch keeps its composition.
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        batch_sizes: Sequence[int],
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        names: Sequence[str] | None = None,
        seeded: bool = False,
    ):
        if len(dataset_sizes) != len(batch_sizes):
            raise ValueError(
                f"got {len(dataset_sizes)} data sets but {len(batch_sizes)} batch sizes {tuple(batch_sizes)}; "
                f"training.batch_sizes needs one entry per training set"
            )
        if any(b <= 0 for b in batch_sizes):
            raise ValueError(f"batch sizes must be positive, got {tuple(batch_sizes)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        names = tuple(names) if names is not None else tuple(f"set{i}" for i in range(len(dataset_sizes)))
        if len(names) != len(dataset_sizes):
            raise ValueError(f"got {len(names)} names {names} for {len(dataset_sizes)} data sets")
        shards = [size // world_size for size in dataset_sizes]
        if any(s == 0 for s in shards):
            raise ValueError(f"every data set needs at least world_size={world_size} clips, got sizes {tuple(dataset_sizes)}")
        too_small = [(n, s, b) for n, s, b in zip(names, shards, batch_sizes) if s < b]
        if too_small and drop_last:
            raise ValueError(
                "data set(s) smaller than one sub-batch per rank (name, clips per rank, batch size): "
                f"{too_small}; no full batch can be built"
            )
        self.dataset_sizes = tuple(int(s) for s in dataset_sizes)
        self.batch_sizes = tuple(int(b) for b in batch_sizes)
        self.names = names
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.seeded = bool(seeded)
        self.offsets = tuple(int(o) for o in np.cumsum((0,) + self.dataset_sizes[:-1]))
        self.epoch = 0
        self._resume_batches = 0  # batches to skip at the start of the current epoch (after a resume)
        self._batches_yielded = 0

    @classmethod
    def for_sets(
        cls, datasets: Mapping[str, Dataset], batch_sizes: Sequence[int], **kwargs
    ) -> tuple[Dataset, "MultiSetBatchSampler"]:
        """``(ConcatDataset of the sets in order, sampler)`` for named sets (e.g. ``build_train_sets``);
        with ``seeded=True`` the dataset is wrapped in :class:`SeededSamples` to match the sampler's keys."""
        concat = ConcatDataset(list(datasets.values()))
        sizes = [len(d) for d in datasets.values()]
        sampler = cls(sizes, batch_sizes, names=tuple(datasets), **kwargs)
        return (SeededSamples(concat) if sampler.seeded else concat), sampler

    @property
    def batch_size(self) -> int:
        return sum(self.batch_sizes)

    @property
    def sub_batch_slices(self) -> dict[str, slice]:
        """``{name: slice}`` of each set's rows in a batch, e.g. ``{"maestro": slice(0, 12), ...}``."""
        bounds = np.cumsum((0,) + self.batch_sizes)
        return {name: slice(int(a), int(b)) for name, a, b in zip(self.names, bounds[:-1], bounds[1:])}

    def __len__(self) -> int:
        shards = [size // self.world_size for size in self.dataset_sizes]
        if self.drop_last:
            return min(s // b for s, b in zip(shards, self.batch_sizes))
        return min(math.ceil(s / b) for s, b in zip(shards, self.batch_sizes))

    def _shard(self, set_index: int) -> np.ndarray:
        """This rank's share of set ``set_index``'s permutation for the current epoch (local indices)."""
        rng = np.random.default_rng([self.seed, self.epoch, set_index])
        order = rng.permutation(self.dataset_sizes[set_index])
        usable = len(order) - len(order) % self.world_size  # equal shares on all ranks
        return order[self.rank:usable:self.world_size]

    def sample_seeds(self, batch_index: int) -> list[int]:
        """The per-sample seeds of batch ``batch_index`` of the current epoch (one per row)."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, batch_index])
        return [int(s) for s in rng.integers(0, _SEED_HIGH, size=self.batch_size)]

    def __iter__(self) -> Iterator[list]:
        shards = [self._shard(i) for i in range(len(self.dataset_sizes))]
        skip, self._resume_batches = self._resume_batches, 0
        self._batches_yielded = skip
        for batch_index in range(skip, len(self)):
            batch: list[int] = []
            for shard, size, offset in zip(shards, self.batch_sizes, self.offsets):
                positions = np.arange(batch_index * size, (batch_index + 1) * size) % len(shard)
                batch.extend(int(offset + i) for i in shard[positions])
            self._batches_yielded = batch_index + 1
            yield list(zip(batch, self.sample_seeds(batch_index))) if self.seeded else batch


class SeededSamples(Dataset):
    """A dataset indexed by ``(index, seed)``: ``dataset[index]`` with torch's CPU RNG seeded by ``seed``.

    The caller's RNG state is restored afterwards, so loading a sample neither depends on nor changes it.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class WeightedEpochBatchSampler(_ResumableEpochs):
    """Batches of an epoch of ``epoch_len`` indices drawn without replacement with probability ∝ ``weights``.

    PretrainedSED's training sampler (``WeightedRandomSampler(weights, num_samples=epoch_len, replacement=False)``
    inside a ``DistributedSamplerWrapper``): every rank draws the same ``epoch_len`` indices from a generator seeded
    by (seed, epoch) and keeps ``indices[rank::world_size]``. ``weights=None`` draws uniformly. ``epoch_len`` larger
    than the number of indices with a positive weight is reduced to that number. Indices come as ``(index, seed)``
    pairs for :class:`SeededSamples`, and the position is resumable (``state_dict``), as in
    :class:`MultiSetBatchSampler`.
    """

    def __init__(self, num_samples: int, batch_size: int, *, epoch_len: int, seed: int, weights=None,
                 rank: int = 0, world_size: int = 1, drop_last: bool = False):
        if batch_size <= 0 or epoch_len <= 0:
            raise ValueError(f"batch_size={batch_size} and epoch_len={epoch_len} must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        if self.weights is not None and (len(self.weights) != num_samples or (self.weights < 0).any()
                                         or not np.isfinite(self.weights).all()):
            raise ValueError(f"sampler weights must be {num_samples} finite values >= 0")
        drawable = num_samples if self.weights is None else int((self.weights > 0).sum())
        if drawable < world_size:
            raise ValueError(f"only {drawable} clips can be drawn; need at least world_size={world_size}")
        self.num_samples = int(num_samples)
        self.epoch_len = min(int(epoch_len), drawable)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        self.epoch = 0
        self._resume_batches = 0
        self._batches_yielded = 0

    def _shard(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        p = None if self.weights is None else self.weights / self.weights.sum()
        drawn = rng.choice(self.num_samples, size=self.epoch_len, replace=False, p=p)
        usable = len(drawn) - len(drawn) % self.world_size
        return drawn[self.rank:usable:self.world_size]

    def __len__(self) -> int:
        shard = self.epoch_len // self.world_size
        return shard // self.batch_size if self.drop_last else math.ceil(shard / self.batch_size)

    def __iter__(self) -> Iterator[list]:
        shard = self._shard()
        skip, self._resume_batches = self._resume_batches, 0
        self._batches_yielded = skip
        for batch_index in range(skip, len(self)):
            indices = shard[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]
            seeds = np.random.default_rng([self.seed, self.epoch, self.rank, batch_index]).integers(
                0, _SEED_HIGH, size=len(indices))
            self._batches_yielded = batch_index + 1
            yield [(int(i), int(s)) for i, s in zip(indices, seeds)]
