"""pytest runs the notebooks top to bottom (nbmake). notebooks/runs.ipynb makes its two short runs under
INCEPTION_NEXT_LOGS (by default the checkout's logs/): under the tests, a temporary folder, so that the checkout stays
as it was. Each notebook is a slow test (`pytest -m "not slow"` leaves them out)."""

import atexit
import os
import shutil
import tempfile

if "INCEPTION_NEXT_LOGS" not in os.environ:
    os.environ["INCEPTION_NEXT_LOGS"] = tempfile.mkdtemp(prefix="inception-next-notebook-logs-")
    atexit.register(shutil.rmtree, os.environ["INCEPTION_NEXT_LOGS"], ignore_errors=True)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker("slow")
