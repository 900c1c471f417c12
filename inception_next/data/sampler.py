"""The order of samples: reproducible from (seed, epoch), sharded across ranks, resumable mid-epoch, with each
sample's augmentation seeded by (seed, epoch, index)."""

import random
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import DistributedSampler, get_worker_info


@contextmanager
def seeded_randomness(seed):
    """Seed Python's, NumPy's and torch's generators with `seed`, so that a sample's augmentation depends on
    (seed, epoch, index) alone: not on the worker that loads it, on how many workers there are, or on where training
    resumed. A loader worker's generators serve nothing else, so there they are only reseeded (cheap); in the main
    process (num_workers=0) their states are put back afterwards, leaving Mixup's and drop path's draws untouched."""
    saved = None
    if get_worker_info() is None:
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed % 2**63)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class ResumableSampler(DistributedSampler):
    """Each epoch's order is a permutation drawn from (seed, epoch), split across ranks (rank r takes every
    world_size-th index), so any rank can recompute it. `resume(epoch, start)` makes that epoch begin at its
    `start`-th index, skipping what was trained before an interruption. Yields (index, augmentation seed) pairs
    (the seed None in evaluation, whose transform draws nothing at random).

    With `blocks` (a source's cheap-to-read-together index ranges, such as parquet row groups), the permutation
    shuffles the blocks, then the samples within each window of consecutive blocks of at least `window` samples: a
    shuffle buffer, as WebDataset's, that reads each block once.

    The order is drawn when iteration starts. A DataLoader with workers starts it as soon as its iterator is made
    (the workers prefetch), which Lightning does before it calls `set_epoch` on resuming, so the data module sets
    the epoch itself when it builds the sampler.

    Training shuffles and drops the tail that does not fill a whole optimizer step (`step_samples` per rank: batch x
    gradient accumulation), as the official train.py trains len(dataset) // global batch steps an epoch. Evaluation
    keeps every index in order (ranks may get one index more or less: each is evaluated exactly once, no padding
    duplicates to bias the metric).

    A DistributedSampler, so that a Trainer leaves it alone (it wraps any other sampler in one of its own under DDP,
    which would shard the data a second time). Its __init__ is not called: it would ask torch.distributed for the
    rank, which is given here."""

    def __init__(self, size, seed=0, shuffle=True, rank=0, world_size=1, step_samples=1, blocks=None, window=1):
        self.size, self.seed, self.shuffle, self.rank, self.world_size = size, seed, shuffle, rank, world_size
        self.step_samples, self.blocks, self.window = step_samples, blocks, window
        self.epoch, self._resume_at = 0, None
        self.started, self.consumed = (0, 0), 0  # the running iteration's (epoch, start), and samples trained since

    def set_epoch(self, epoch):  # called by Lightning before each epoch
        self.epoch = epoch

    def resume(self, epoch, start):
        self._resume_at = (epoch, start)

    def __len__(self):
        if self.shuffle:
            return self.size // self.world_size // self.step_samples * self.step_samples
        return len(range(self.rank, self.size, self.world_size))

    def _permutation(self, generator):
        if self.blocks is None:
            return torch.randperm(self.size, generator=generator)
        starts = np.cumsum([0, *self.blocks])
        windows, window = [], []
        for block in torch.randperm(len(self.blocks), generator=generator).tolist():
            window.append(torch.arange(starts[block], starts[block + 1]))
            if sum(map(len, window)) >= self.window:
                windows.append(torch.cat(window))
                window = []
        windows += [torch.cat(window)] if window else []
        return torch.cat([indices[torch.randperm(len(indices), generator=generator)] for indices in windows])

    def __iter__(self):
        if self.shuffle:
            order = self._permutation(torch.Generator().manual_seed(self.seed + self.epoch))
            order = order[self.rank:len(self) * self.world_size:self.world_size].tolist()
        else:
            order = list(range(self.rank, self.size, self.world_size))
        start = 0
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            start = self._resume_at[1]
            self._resume_at = None
        self.started, self.consumed = (self.epoch, start), 0
        if not self.shuffle:  # evaluation's transform draws nothing at random: no generators to seed
            return iter([(index, None) for index in order[start:]])
        epoch_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        return iter([(index, epoch_seed + index) for index in order[start:]])

    def position(self, epoch_samples=None):
        """Where the next sample to train comes from, (epoch, index into this rank's order), counting the samples
        trained (`consumed`, which the data module advances); an epoch's end (after `epoch_samples`, when the
        Trainer trains fewer than all, as with limit_train_batches) points to the next one's start."""
        epoch, start = self.started
        done = start + self.consumed
        return (epoch + 1, 0) if done >= min(len(self), epoch_samples or len(self)) else (epoch, done)
