"""Hugging Face's `imagenet-1k` (or any image dataset Hugging Face stores as parquet), read in place:

    root/data/train-00000-of-00257.parquet ...   root/data/validation-00000-of-00014.parquet ...

Columns `image` (a struct of the encoded `bytes` and the original `path`) and `label` (an index in sorted-wnid
order). The classes: the label's names in Hugging Face's schema metadata when they are not ImageNet-1K's 1000
(your own dataset), ImageNet-1K's wnids otherwise.

A row group is the least parquet reads: the sampler shuffles row groups, then samples within windows of them
(`Reader.blocks`), and each process keeps the row groups of the current window.
"""

import bisect
import json
from collections import OrderedDict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from timm.data import ImageNetInfo

from ..images import DatasetError
from .base import Reader, Relabel, read_error

NAME = "parquet"
LAYOUT = "Hugging Face parquet (root/data/train-*.parquet, root/data/validation-*.parquet)"
SPLITS = {"train": ("train",), "val": ("validation", "val")}


def _folder(root):
    return root / "data" if (root / "data").is_dir() else root


def split_files(root, split):
    folder = _folder(root)
    for prefix in SPLITS[split]:
        files = sorted(folder.glob(f"{prefix}-*.parquet"))
        if files:
            return files
    return []


def detect(root):
    return any(_folder(root).glob("*.parquet"))


def splits(root):
    return [split for split in SPLITS if split_files(root, split)]


def _open(path):
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"{path}: not a readable parquet file ({str(error).splitlines()[0]}); expected a whole "
                           "shard (a truncated download?)") from None


def label_names(path):
    """The label's class names from Hugging Face's schema metadata, if it has them."""
    metadata = _open(path).schema_arrow.metadata or {}
    features = json.loads(metadata.get(b"huggingface", b"{}")).get("info", {}).get("features", {})
    return features.get("label", {}).get("names")


def classes(root):
    files = split_files(root, "train") or split_files(root, "val")
    return source_classes(files[0]) if files else ImageNetInfo().label_names()


def source_classes(path):
    """What the shard's labels index: its ClassLabel names, unless they are ImageNet-1K's 1000 (descriptions, in
    sorted-wnid order), whose wnids are the class names everywhere else."""
    names = label_names(path)
    return list(names) if names and len(names) != 1000 else ImageNetInfo().label_names()


class ParquetReader(Reader):
    def __init__(self, files, classes, cache_blocks=4):
        self.files, self.source, self.cache_blocks = list(files), str(Path(files[0]).parent), cache_blocks
        self.labels, self.blocks, self.block_file, self.file_starts = [], [], [], []
        for number, path in enumerate(self.files):
            shard = _open(path)
            columns = shard.schema_arrow.names
            image = shard.schema_arrow.field("image").type if "image" in columns else None
            if "label" not in columns or not (pa.types.is_struct(image) and image.get_field_index("bytes") >= 0):
                raise DatasetError(f"{path}: columns {', '.join(columns)}; expected `image` (a struct with the "
                                   "image's `bytes`) and `label`, as Hugging Face's imagenet-1k")
            relabel = Relabel(source_classes(path), classes)
            labels = [relabel(label, path) for label in shard.read(columns=["label"]).column("label").to_pylist()]
            self.file_starts.append(len(self.labels))
            self.labels += labels
            for group in range(shard.num_row_groups):
                self.blocks.append(shard.metadata.row_group(group).num_rows)
                self.block_file.append((number, group))
        self.block_starts = [0]
        for rows in self.blocks:
            self.block_starts.append(self.block_starts[-1] + rows)
        self._shards, self._groups = {}, OrderedDict()

    def __getstate__(self):  # each loader worker opens its own files and keeps its own row groups
        return {**self.__dict__, "_shards": {}, "_groups": OrderedDict()}

    def __len__(self):
        return len(self.labels)

    def label(self, index):
        return self.labels[index]

    def _locate(self, index):
        block = bisect.bisect_right(self.block_starts, index) - 1
        return block, index - self.block_starts[block]

    def _images(self, block):
        """The `image` column of a row group, kept for the window's other samples."""
        if block in self._groups:
            self._groups.move_to_end(block)
            return self._groups[block]
        number, group = self.block_file[block]
        if number not in self._shards:
            self._shards[number] = pq.ParquetFile(self.files[number])
        images = self._shards[number].read_row_group(group, columns=["image"]).column("image").combine_chunks()
        self._groups[block] = images
        while len(self._groups) > self.cache_blocks:
            self._groups.popitem(last=False)
        return images

    def read(self, index):
        block, row = self._locate(index)
        try:
            data = self._images(block).field("bytes")[row].as_py()
        except (pa.ArrowException, OSError) as error:
            raise read_error(self.describe(index), error) from None
        if not data:
            raise read_error(self.describe(index), "no image bytes")
        return data

    def describe(self, index):
        number = bisect.bisect_right(self.file_starts, index) - 1
        return f"{self.files[number]} row {index - self.file_starts[number]}"

    def filename(self, index):
        block, row = self._locate(index)
        images = self._images(block)
        path = images.field("path")[row].as_py() if images.type.get_field_index("path") >= 0 else None
        return Path(path).name if path else f"{index:08d}.JPEG"


def open_split(root, split, classes):
    return ParquetReader(split_files(root, split), classes)
