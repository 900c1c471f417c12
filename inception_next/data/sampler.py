"""The order of samples: reproducible from (seed, epoch), sharded across ranks, resumable mid-epoch, with each
sample's augmentation seeded by (seed, epoch, index)."""

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from ..deprecation import moved_names

__getattr__ = moved_names(__name__, {name: "inception_next.data.seeding" for name in (
    "reseed", "kept_randomness", "seeded_randomness", "stream_seed")})


class ResumableSampler(DistributedSampler):
    """Each epoch's order is a permutation drawn from (seed, epoch), split across ranks (rank r takes every
    world_size-th index, or a contiguous share with `blocks`), so any rank can recompute it. `resume(epoch, start)`
    makes that epoch begin at its `start`-th index, skipping what was trained before an interruption. Yields
    (index, augmentation seed) pairs (the seed None in evaluation, whose transform draws nothing at random).

    With `blocks` (a source's cheap-to-read-together index ranges, such as parquet row groups), each epoch
    shuffles the blocks; each rank takes a contiguous share of that sequence, and splits it into one contiguous
    piece per loader worker (`streams`); each piece is shuffled within windows of consecutive blocks of at least
    `window` samples (a shuffle buffer, as WebDataset's), and the rank's batches take turns between the pieces:
    batch j comes from piece j % streams. A DataLoader deals batches to its workers in turn, so each worker reads
    the blocks of one piece, once, whichever batch training resumed at. The order then depends on the worker
    count: a run resumed with another one finishes the interrupted epoch in the order it began
    (`resume(..., streams)`), and lays out the next ones for its own workers.

    The order is drawn when iteration starts. A DataLoader with workers starts it as soon as its iterator is made
    (the workers prefetch), which Lightning does before it calls `set_epoch` on resuming, so the data module sets
    the epoch itself when it builds the sampler.

    Training shuffles and drops the tail that does not fill a whole optimizer step (`step_samples` per rank: batch x
    gradient accumulation), as the official train.py trains len(dataset) // global batch steps an epoch. Evaluation
    keeps every index, in order (in pieces per worker with `blocks`); ranks may get one index more or less: each is
    evaluated exactly once, no padding duplicates to bias the metric.

    A DistributedSampler, so that a Trainer leaves it alone (it wraps any other sampler in one of its own under DDP,
    which would shard the data a second time). Its __init__ is not called: it would ask torch.distributed for the
    rank, which is given here."""

    def __init__(self, size, seed=0, shuffle=True, rank=0, world_size=1, step_samples=1, blocks=None, window=1,
                 batch_size=1, streams=1):
        self.size, self.seed, self.shuffle, self.rank, self.world_size = size, seed, shuffle, rank, world_size
        self.step_samples, self.blocks, self.window = step_samples, blocks, window
        self.batch_size, self.streams = batch_size, streams
        self.epoch, self._resume_at = 0, None
        self.started, self.consumed = (0, 0), 0  # the running iteration's (epoch, start), and samples trained since
        self.epoch_streams = streams  # the pieces the running iteration's order was laid out in
        self._pairs = []  # the running iteration's (index, seed) pairs

    def set_epoch(self, epoch):  # called by Lightning before each epoch
        self.epoch = epoch

    def resume(self, epoch, start, streams=None):
        """Begin `epoch` at its `start`-th index, its order laid out in `streams` pieces (default: this sampler's).
        `position()` points there at once, for a checkpoint saved before the iteration starts."""
        self._resume_at = (epoch, start, streams or self.streams)
        self.started, self.consumed, self.epoch_streams = (epoch, start), 0, self._resume_at[2]

    def __len__(self):
        if self.shuffle:
            return self.size // self.world_size // self.step_samples * self.step_samples
        return len(range(self.rank, self.size, self.world_size))

    def _order(self, streams):
        """This rank's indices for the epoch."""
        if self.blocks is None:
            if not self.shuffle:
                return list(range(self.rank, self.size, self.world_size))
            permutation = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
            return permutation[self.rank:len(self) * self.world_size:self.world_size].tolist()
        starts = np.cumsum([0, *self.blocks])
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            blocks = torch.randperm(len(self.blocks), generator=generator).numpy()
            first = self.rank * len(self)
        else:  # every index once: rank r takes the r-th of world_size contiguous ranges, as many as the strided split
            generator, blocks = None, np.arange(len(self.blocks))
            first = self.rank * (self.size // self.world_size) + min(self.rank, self.size % self.world_size)
        sequence = np.concatenate([np.arange(starts[b], starts[b + 1]) for b in blocks])[first:first + len(self)]
        block_of = np.repeat(blocks, np.asarray(self.blocks)[blocks])[first:first + len(self)]
        cuts = np.cumsum(self._piece_sizes(len(sequence), streams))[:-1]
        pieces = [self._shuffled_in_windows(indices, piece_blocks, generator) if self.shuffle else indices
                  for indices, piece_blocks in zip(np.split(sequence, cuts), np.split(block_of, cuts))]
        batch = self.batch_size
        return [int(index) for j in range(-(-len(sequence) // batch))
                for index in pieces[j % streams][j // streams * batch:(j // streams + 1) * batch]]

    def _piece_sizes(self, samples, streams):
        """How many samples the batches j with j % streams == k hold, for each k (the last batch may be short)."""
        batches = -(-samples // self.batch_size)
        sizes = [len(range(k, batches, streams)) * self.batch_size for k in range(streams)]
        if batches:
            sizes[(batches - 1) % streams] -= batches * self.batch_size - samples
        return sizes

    def _shuffled_in_windows(self, indices, block_of, generator):
        """`indices` (runs of samples of one block each) shuffled within windows: consecutive runs together holding
        at least `window` samples (the last window may hold fewer)."""
        cuts, window_start = [], 0
        for run_start in (np.flatnonzero(np.diff(block_of)) + 1).tolist():
            if run_start - window_start >= self.window:
                cuts.append(run_start)
                window_start = run_start
        return np.concatenate([window[torch.randperm(len(window), generator=generator).numpy()]
                               for window in np.split(indices, cuts)]) if len(indices) else indices

    def __iter__(self):
        start, streams = 0, self.streams
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            _, start, streams = self._resume_at
            self._resume_at = None
        order = self._order(streams)
        self.started, self.consumed, self.epoch_streams = (self.epoch, start), 0, streams
        if not self.shuffle:  # evaluation's transform draws nothing at random: no generators to seed
            self._pairs = [(index, None) for index in order[start:]]
        else:
            epoch_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019
            self._pairs = [(index, epoch_seed + index) for index in order[start:]]
        return iter(self._pairs)

    def seeds(self, count):
        """The augmentation seeds of the next `count` samples to train (from `consumed` on): for augmentation
        applied to the batch in the main process rather than to each sample in a loader worker."""
        return [seed for _, seed in self._pairs[self.consumed:self.consumed + count]]

    def take(self, count):
        """`count` samples are about to be trained: their augmentation seeds (see `seeds`), counted as consumed."""
        seeds = self.seeds(count)
        self.consumed += count
        return seeds

    def position(self, epoch_samples=None):
        """Where the next sample to train comes from, (epoch, index into this rank's order), counting the samples
        trained (`consumed`, which the data module advances); an epoch's end (after `epoch_samples`, when the
        Trainer trains fewer than all, as with limit_train_batches) points to the next one's start."""
        epoch, start = self.started
        done = start + self.consumed
        return (epoch + 1, 0) if done >= min(len(self), epoch_samples or len(self)) else (epoch, done)

    def state(self, epoch_samples=None):
        """Where training stands, for a checkpoint: the next sample's epoch and index (see `position`) at an
        optimizer step's boundary (a save in the middle of gradient accumulation has not saved the accumulated
        gradient: those batches are trained again), and for a source read in blocks mid-epoch, the layout the epoch
        was begun in, to finish it in."""
        epoch, samples = self.position(epoch_samples)
        samples -= samples % self.step_samples
        return dict(epoch=epoch, samples=samples, streams=self.epoch_streams if samples else None)

    def start(self, epoch, state=None):
        """Begin at `state` (a checkpoint's, see `state`) or else at `epoch`'s start. (With loader workers the
        iteration begins before Lightning sets the epoch: it is set here.)"""
        if state is not None:
            self.set_epoch(state["epoch"])
            self.resume(state["epoch"], state["samples"], state.get("streams"))
        else:
            self.set_epoch(epoch)
            self.started = (epoch, 0)
