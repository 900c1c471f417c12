"""Writing a dataset in a layout the readers read: class folders, Hugging Face parquet, WebDataset shards, LitData
chunks (to a folder or object storage). Used by `prepare`; every file appears whole or not at all (written beside its
place, then renamed), and a file already there is kept, so an interrupted run resumes where it stopped and never
writes a sample twice."""

import io
import json
import os
import shutil
import tarfile
import tempfile
import weakref
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .object_store import Bucket, is_url, require_litdata

PARTIAL = ".partial"
ROW_GROUP = 100  # rows per parquet row group, as Hugging Face writes image datasets
SPLIT_NAMES = {"folders": {"train": "train", "val": "val"}, "litdata": {"train": "train", "val": "val"},
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



class LitDataWriter:
    """LitData chunks of `shard_size` samples under DEST/<split>/ (DEST a folder or s3://bucket/prefix), the class
    names in DEST/classes.json: LitData's own writer fills a staging folder, each finished chunk is moved (or
    uploaded) into place, and the split's index.json comes last, so that a split is whole exactly when its index is
    there. A rerun skips a whole split and writes an unfinished one again (its chunks replaced, never added to)."""

    def __init__(self, dest, split, classes, total=None, shard_size=1000):
        require_litdata(f"DEST {dest}")
        from litdata.streaming.writer import BinaryWriter

        self.bucket = Bucket(dest, "DEST") if is_url(dest) else None
        self.dest, self.split = dest, split
        self.labels = {name: label for label, name in enumerate(classes)}
        self.complete = self._exists(f"{split}/index.json")
        self.writer = None
        if self.complete:
            return
        self._put("classes.json", json.dumps(list(classes)).encode())
        self.staging = Path(tempfile.mkdtemp(prefix=f"inception-next-litdata-{split}-"))  # a chunk at a time
        weakref.finalize(self, shutil.rmtree, self.staging, True)  # interrupted or not
        self.writer = BinaryWriter(str(self.staging), chunk_size=shard_size)

    def _exists(self, name):
        return self.bucket.exists(name) if self.bucket else (Path(self.dest) / name).is_file()

    def _put(self, name, data):
        if self.bucket:
            self.bucket.write(name, data)
        else:
            write_whole(Path(self.dest) / name, lambda file: file.write(data))

    def _ship(self, path):
        name = f"{self.split}/{Path(path).name}"
        if self.bucket:
            self.bucket.upload(path, name)
        else:
            write_whole(Path(self.dest) / name, lambda file: file.write(Path(path).read_bytes()))
        Path(path).unlink()

    def done(self, number):
        return self.complete

    def add(self, number, wnid, filename, read):
        finished = self.writer.add_item(number, {"image": read(), "label": self.labels[wnid], "name": filename})
        if finished:
            self._ship(finished)
        return True

    def close(self):
        if self.writer is None:
            return
        for path in self.writer.done():
            self._ship(path)
        self.writer.merge()
        self._ship(self.staging / "index.json")

WRITERS = {"folders": FolderWriter, "parquet": ParquetWriter, "webdataset": WebDatasetWriter,
           "litdata": LitDataWriter}
