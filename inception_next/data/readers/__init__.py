"""The sources ImageNet ships in, and LitData's chunks (which `prepare` writes, for object storage), one module each.
A source module gives `NAME`, `LAYOUT` (how it looks, for messages), `detect(root)`, `splits(root)`, `classes(root)`
(in label order) and either `open_split(root, split, classes)` (a random-access `Reader`, read in place by the data
module) or, for the archives, `samples(root, split)` (read front to back by `prepare`)."""

from pathlib import Path

from ..images import DatasetError
from ..object_store import is_url
from . import archives, folders, kaggle, litdata_chunks, parquet, webdataset
from .base import Reader

# In detection order: the most specific layout first (Kaggle's download holds class folders deeper down).
SOURCES = {source.NAME: source for source in (litdata_chunks, kaggle, webdataset, parquet, archives, folders)}
READABLE = tuple(name for name, source in SOURCES.items() if hasattr(source, "open_split"))

__all__ = ["SOURCES", "READABLE", "Reader", "find_source"]


def find_source(root, format=None, setting="data.root"):
    """The module of the source at `root`: `format`'s, or the one recognised from what is there."""
    expected = "; ".join(source.LAYOUT for source in SOURCES.values())
    if format is not None:
        if format not in SOURCES:
            raise DatasetError(f"data.format {format!r}: expected one of {', '.join(SOURCES)}")
        return SOURCES[format]
    if is_url(root):  # object storage holds LitData chunks
        return litdata_chunks
    root = Path(root)
    if not root.is_dir():
        hint = (": set --data.root /path/to/imagenet, or run experiments/demo.yaml, which needs no dataset"
                if setting == "data.root" else "")
        raise DatasetError(f"{setting} {root}: no such folder; expected ImageNet as one of: {expected}{hint}")
    for source in SOURCES.values():
        if source.detect(root):
            return source
    found = sorted(entry.name for entry in root.iterdir())
    raise DatasetError(f"{setting} {root}: holds {', '.join(found[:6]) or 'nothing'}{' ...' if len(found) > 6 else ''}"
                       f"; expected one of: {expected}")
