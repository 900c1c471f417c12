import os

import pytest
import torch

# Two cores: keep intra-op threads from oversubscribing when pytest runs subprocesses beside us; with test workers
# (pytest-xdist, as pyproject.toml sets), one thread each, in this process and in the commands the tests start.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Three classes of the demo's shapes, 8 train and 4 val images each, 40 px: a real class-folder dataset."""
    from inception_next.data import demo as demo_data

    root = tmp_path_factory.mktemp("data") / "tiny"
    return demo_data.generate(root, classes=demo_data.CLASSES[:3], train_per_class=8, val_per_class=4, image_size=40)


@pytest.fixture
def forget_declared_variants():
    """Variants a test declares (a YAML's `model.backbone: {name, base, ...}`) are forgotten after it."""
    from inception_next.models.inception_next import VARIANTS

    registered = set(VARIANTS)
    yield
    for name in set(VARIANTS) - registered:
        del VARIANTS[name]
