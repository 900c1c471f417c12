"""Seeds: each sample's augmentation draws from generators seeded by (seed, epoch, index) alone, never from where the
sample is loaded (which worker, how many, where training resumed), and leaves the main process's own generators (Mixup,
drop path) as they were."""

import hashlib
import random
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import get_worker_info


def _is_cuda(device):
    return device is not None and torch.device(device).type == "cuda"


def reseed(seed, device=None):
    """Seed Python's, NumPy's and torch's generators (and a CUDA `device`'s) with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed % 2**63)
    if _is_cuda(device):
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed % 2**63)


@contextmanager
def kept_randomness(device=None):
    """Within: reseed at will. In the main process the generators' states are put back afterwards, leaving Mixup's
    and drop path's draws untouched; a loader worker's generators serve nothing else, so there nothing is kept."""
    saved = None
    if get_worker_info() is None:
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
                 torch.cuda.get_rng_state(device) if _is_cuda(device) else None)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])
            if saved[3] is not None:
                torch.cuda.set_rng_state(saved[3], device)


@contextmanager
def seeded_randomness(seed, device=None):
    """Within: the generators seeded with `seed`, so that a sample's augmentation depends on (seed, epoch, index)
    alone: not on the worker that loads it, on how many workers there are, or on where training resumed."""
    with kept_randomness(device):
        reseed(seed, device)
        yield


def stream_seed(seed, stream):
    """A seed for another stream of draws of the same sample (`stream`: its name), unrelated to `seed`'s own."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{stream}".encode(), digest_size=8).digest(), "little")
