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

__all__ = ["SOURCES", "READABLE", "Reader", "find_source", "readable_source", "open_split"]


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


def readable_source(root, format=None):
    """The source at `root` (see `find_source`), one the data module reads in place."""
    source = find_source(root, format)
    if source.NAME not in READABLE:
        raise DatasetError(f"data.root {root}: {source.LAYOUT}, which are read once into class folders: "
                           f"python -m inception_next prepare {root} /path/to/imagenet")
    return source


def open_split(source, root, split, classes, shuffle_window):
    """The reader of `split` ("train" or "val") of `source` at `root`, its labels indexing `classes`. A reader in
    blocks keeps the blocks of two shuffle windows at hand (the current one and the next, see ResumableSampler)."""
    split_name = {"train": "training", "val": "validation"}[split]
    if split not in source.splits(root):
        raise DatasetError(f"data.root {root}: no {split_name} split in {source.LAYOUT}")
    reader = source.open_split(root, split, classes)
    if not len(reader):
        raise DatasetError(f"{reader.source}: no images in the {split_name} split")
    if reader.blocks is not None:
        reader.cache_blocks = 2 * (shuffle_window // min(reader.blocks) + 1)
    return reader
