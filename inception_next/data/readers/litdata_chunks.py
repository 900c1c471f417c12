"""LitData's optimized chunks (the format of `litdata.optimize`; `prepare --to litdata` writes them), in a local
folder or in object storage (`s3://bucket/prefix`):

    root/classes.json                               the class names, in label order
    root/train/index.json  root/train/chunk-0-0.bin ...
    root/val/index.json    root/val/chunk-0-0.bin ...

Each sample is {"image": the encoded image as it was, "label": its index in classes.json, "name": its file name}.
Samples are read by index with LitData's own reader. From object storage, the chunk holding a sample is downloaded
once into a local mirror of the split (under ~/.cache/inception_next/litdata, shared by the loader workers and the
ranks of a node) and read there; the sampler shuffles within windows of chunks (`Reader.blocks`), so that a worker
needs few chunks at a time. Ranks and workers are sharded by the data module's sampler, as for every layout, which
is what makes a resume exact whatever the worker count (LitData's own StreamingDataLoader would be a second owner
of the order, which Lightning's Trainer does not restore).
"""

import bisect
import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

from ..images import DatasetError
from ..object_store import Bucket, is_url, join, require_litdata
from .base import Reader, Relabel, cache_folder, read_error

NAME = "litdata"
LAYOUT = ("LitData chunks (root/classes.json, root/train/ and root/val/ each with index.json and chunk-*.bin; a "
          "folder or s3://bucket/prefix)")
SPLITS = ("train", "val")
CLASSES = "classes.json"
INDEX = "index.json"


def detect(root):
    return is_url(root) or ((Path(root) / CLASSES).is_file()
                            and any((Path(root) / split / INDEX).is_file() for split in SPLITS))


def _read(root, name):
    return Bucket(root).read(name) if is_url(root) else (Path(root) / name).read_bytes()


def splits(root):
    if is_url(root):
        bucket = Bucket(root)
        return [split for split in SPLITS if bucket.exists(f"{split}/{INDEX}")]
    return [split for split in SPLITS if (Path(root) / split / INDEX).is_file()]


def classes(root):
    """The class names the chunks' labels index (classes.json)."""
    try:
        return list(json.loads(_read(root, CLASSES)))
    except FileNotFoundError:
        raise DatasetError(f"data.root {root}: no {CLASSES}; expected LitData chunks written by `python -m "
                           "inception_next prepare SRC DEST --to litdata`") from None


class LitDataReader(Reader):
    def __init__(self, root, split, run_classes, cache_blocks=4):
        require_litdata(f"data.root {root}")
        self.source = join(root, split) if is_url(root) else str(Path(root) / split)
        self.bucket, self.split = (Bucket(root), split) if is_url(root) else (None, split)
        self.index = _read(root, f"{split}/{INDEX}")
        self.local = None if self.bucket else Path(root) / split
        chunks = json.loads(self.index)["chunks"]
        self.chunks = [chunk["filename"] for chunk in chunks]
        self.blocks = [chunk["chunk_size"] for chunk in chunks]
        self.starts = [0]
        for size in self.blocks:
            self.starts.append(self.starts[-1] + size)
        self.relabel = Relabel(classes(root), run_classes)
        self.cache_blocks = cache_blocks
        self._readers, self._folder, self._last = OrderedDict(), None, None

    def __getstate__(self):  # each loader worker opens LitData's readers itself
        return {**self.__dict__, "_readers": OrderedDict(), "_folder": None, "_last": None}

    def __len__(self):
        return self.starts[-1]

    @property
    def folder(self):
        """Where LitData reads the split: the folder itself, or this node's mirror of the store's split (one per
        version of it: a rewritten index is another dataset), under the cache folder of the process asking."""
        if self.local is not None:
            return self.local
        mirror = cache_folder() / "litdata" / hashlib.sha1(self.source.encode() + self.index).hexdigest()[:16]
        if not (mirror / INDEX).is_file():  # whole or absent: loader workers start together
            mirror.mkdir(parents=True, exist_ok=True)
            partial = mirror / f".{INDEX}.{os.getpid()}.partial"
            partial.write_bytes(self.index)
            os.replace(partial, mirror / INDEX)
        return mirror

    def _locate(self, index):
        chunk = bisect.bisect_right(self.starts, index) - 1
        return chunk, index - self.starts[chunk]

    def _item(self, index):
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        chunk, _ = self._locate(index)
        try:
            item = self._reader(chunk)[index]
        except Exception as error:  # a damaged chunk fails in LitData's own way
            raise read_error(self.describe(index), error) from None
        self._last = (index, item)
        return item

    def _reader(self, chunk):
        """A LitData reader for the chunk, kept for the window's other samples: LitData keeps one chunk's rows
        decoded, so one reader a chunk (about 1 ms saved on every sample the shuffle takes from another chunk)."""
        if chunk in self._readers:
            self._readers.move_to_end(chunk)
            return self._readers[chunk]
        from litdata import StreamingDataset

        if self._folder is None:
            self._folder = self.folder
        local = self._folder / self.chunks[chunk]
        if self.bucket is not None and not local.is_file():
            self.bucket.download(f"{self.split}/{self.chunks[chunk]}", local)
        self._readers[chunk] = StreamingDataset(str(self._folder))
        while len(self._readers) > self.cache_blocks:
            self._readers.popitem(last=False)
        return self._readers[chunk]

    def label(self, index):
        return self.relabel(self._item(index)["label"], self.describe(index))

    def read(self, index):
        data = self._item(index)["image"]
        if not data:
            raise read_error(self.describe(index), "no image bytes")
        return data

    def describe(self, index):
        chunk, item = self._locate(index)
        return f"{join(self.source, self.chunks[chunk])} item {item}"

    def filename(self, index):
        return self._item(index)["name"]


def open_split(root, split, classes):
    return LitDataReader(root, split, classes)
