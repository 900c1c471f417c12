"""Writing a dataset in a layout the readers read: class folders, Hugging Face parquet, WebDataset shards. Used by
`prepare`; every file appears whole or not at all (written beside its place, then renamed), and a file already there
is kept, so an interrupted run resumes where it stopped and never writes a sample twice."""

import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PARTIAL = ".partial"
ROW_GROUP = 100  # rows per parquet row group, as Hugging Face writes image datasets
SPLIT_NAMES = {"folders": {"train": "train", "val": "val"},
               "parquet": {"train": "train", "val": "validation"},
               "webdataset": {"train": "train", "val": "validation"}}


def write_whole(path, write):
    """Call `write(file)` on a file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}{PARTIAL}")
    try:
        with open(partial, "wb") as file:
            write(file)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def remove_partial(dest):
    for leftover in Path(dest).rglob(f".*{PARTIAL}"):
        leftover.unlink()


class FolderWriter:
    """DEST/<split>/<wnid>/<file name>: torchvision's ImageFolder layout. A name that repeats within a class (shards
    whose samples lost their names) gets the sample's number."""

    def __init__(self, dest, split, classes, total=None, shard_size=None):
        self.folder = Path(dest) / SPLIT_NAMES["folders"][split]
        self.names = set()

    def done(self, number):  # folders are checked file by file in `add`
        return False

    def add(self, number, wnid, filename, read):
        path = self.folder / wnid / filename
        if path in self.names:
            path = path.with_name(f"{path.stem}_{number}{path.suffix}")
        self.names.add(path)
        if path.exists():
            return False
        data = read()
        write_whole(path, lambda file: file.write(data))
        return True

    def close(self):
        pass


class ShardWriter:
    """Consecutive samples in shards of `shard_size`: shard k holds samples k x shard_size onwards, so a shard
    already written (whole, by its rename) is skipped without reading its samples again."""

    def __init__(self, dest, split, classes, total, shard_size):
        self.dest, self.split, self.classes, self.total, self.shard_size = Path(dest), split, classes, total, shard_size
        self.labels = {name: label for label, name in enumerate(classes)}
        self.count = -(-total // shard_size)
        self.pending = []

    def done(self, number):
        return self.path(number // self.shard_size).exists()

    def add(self, number, wnid, filename, read):
        self.pending.append((filename, self.labels[wnid], read()))
        if len(self.pending) == self.shard_size or number == self.total - 1:
            write_whole(self.path(number // self.shard_size), self.write)
            self.pending = []
        return True

    def close(self):
        pass


class ParquetWriter(ShardWriter):
    """Hugging Face's layout: data/<split>-<k>-of-<n>.parquet, columns image {bytes, path} and label, the class names
    in the schema's metadata."""

    def path(self, shard):
        return self.dest / "data" / f"{SPLIT_NAMES['parquet'][self.split]}-{shard:05d}-of-{self.count:05d}.parquet"

    def write(self, file):
        features = {"image": {"_type": "Image"}, "label": {"names": list(self.classes), "_type": "ClassLabel"}}
        schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                            ("label", pa.int64())],
                           metadata={"huggingface": json.dumps({"info": {"features": features}})})
        table = pa.table({"image": [{"bytes": data, "path": name} for name, _, data in self.pending],
                          "label": [label for _, label, _ in self.pending]}, schema=schema)
        pq.write_table(table, file, row_group_size=ROW_GROUP)


class WebDatasetWriter(ShardWriter):
    """timm's imagenet-1k-wds layout: imagenet1k-<split>-<k>.tar of <key>.jpg + <key>.cls, and _info.json."""

    def path(self, shard):
        return self.dest / f"imagenet1k-{SPLIT_NAMES['webdataset'][self.split]}-{shard:04d}.tar"

    def write(self, file):
        with tarfile.open(fileobj=file, mode="w") as tar:
            for name, label, data in self.pending:
                key = Path(name).stem
                for member, content in ((f"{key}.jpg", data), (f"{key}.cls", str(label).encode())):
                    info = tarfile.TarInfo(member)
                    info.size, info.mode = len(content), 0o644
                    tar.addfile(info, io.BytesIO(content))

    def close(self):
        """Record the split's shards in _info.json (timm's format), beside any other split's."""
        info_path = self.dest / "_info.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {"name": "imagenet-1k", "splits": {}}
        info["classes"] = list(self.classes)  # what the labels index (timm's readers take the integers as they are)
        lengths = [min(self.shard_size, self.total - k * self.shard_size) for k in range(self.count)]
        name = SPLIT_NAMES["webdataset"][self.split]
        info["splits"][name] = dict(name=name, num_samples=self.total, shard_lengths=lengths,
                                    filenames=[self.path(k).name for k in range(self.count)])
        write_whole(info_path, lambda file: file.write(json.dumps(info, indent=1).encode()))


WRITERS = {"folders": FolderWriter, "parquet": ParquetWriter, "webdataset": WebDatasetWriter}
