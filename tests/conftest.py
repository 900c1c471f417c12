import os

import pytest
import torch

# Two cores: keep intra-op threads from oversubscribing when pytest runs subprocesses beside us.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
