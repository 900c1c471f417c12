"""timm's `imagenet-1k-wds` (or any WebDataset of images with `.cls` labels), read in place:

    root/imagenet1k-train-0000.tar ...   root/imagenet1k-validation-0000.tar ...   root/_info.json

A sample is the tar members sharing a key: `<key>.jpg` and `<key>.cls` (the label as text, an index in sorted-wnid
order), sometimes `<key>.json`. `_info.json` (or `_info.yaml`) lists each split's shards and their sample counts;
without it the shards are found by name; its `classes`, when there (`prepare` writes it), names what the labels
index. Tar members are stored whole, so each shard's member offsets are read once
(headers only) and any sample is one read: the sampler shuffles globally, as over class folders.
Otherwise the labels index ImageNet-1K's wnids, unless data.classes names your own classes.
"""

import hashlib
import json
import os
import tarfile
from pathlib import Path

import yaml
from timm.data import ImageNetInfo

from ..images import IMAGE_EXTENSIONS, DatasetError
from .base import Reader, Relabel, cache_folder, read_error

NAME = "webdataset"
LAYOUT = "WebDataset shards (root/*-train-*.tar, root/*-validation-*.tar, root/_info.json)"
SPLITS = {"train": ("train",), "val": ("validation", "val")}


def info(root):
    for name in ("_info.json", "_info.yaml"):
        path = root / name
        if path.is_file():
            try:
                return (json.loads if name.endswith(".json") else yaml.safe_load)(path.read_text()) or {}
            except (ValueError, yaml.YAMLError) as error:
                raise DatasetError(f"{path}: unreadable ({str(error).splitlines()[0]}); expected WebDataset split "
                                   "info: splits.<name>.filenames and shard_lengths") from None
    return {}


def split_shards(root, split):
    """[(shard path, expected sample count or None)]."""
    described = info(root).get("splits", {})
    for name in SPLITS[split]:
        if name in described:
            entry = described[name]
            lengths = entry.get("shard_lengths") or [None] * len(entry["filenames"])
            return [(root / file, count) for file, count in zip(entry["filenames"], lengths)]
        shards = sorted(root.glob(f"*-{name}-*.tar"))
        if shards:
            return [(shard, None) for shard in shards]
    return []


def detect(root):
    return bool(info(root)) or any(root.glob("*.tar")) and any(split_shards(root, split) for split in SPLITS)


def splits(root):
    return [split for split in SPLITS if split_shards(root, split)]


def label_names(root):
    """What the labels index: the `classes` _info.json names (as `prepare` writes), or ImageNet-1K's wnids."""
    return info(root).get("classes") or ImageNetInfo().label_names()


def classes(root):
    return label_names(root)


def split_key(name):
    """WebDataset's convention: a member's key is its path up to the first dot of its file name."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return f"{folder}/{stem}" if folder else stem, extension


def read_headers(path):
    """{key: {"image": (offset, size, extension), "label": text}} of one shard, from its headers and `.cls`
    members; kept in the cache folder, keyed by the shard's path, size and time, so that a command starts without
    reading every header again (74 ms a shard of 1251 ImageNet samples: 75 s for the training split)."""
    stat = os.stat(path)
    identity = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cached = cache_folder() / "shard-index" / f"{hashlib.sha1(identity.encode()).hexdigest()}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    samples = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, extension = split_key(member.name)
                sample = samples.setdefault(key, {})
                if f".{extension.lower()}" in IMAGE_EXTENSIONS:
                    sample["image"] = (member.offset_data, member.size, extension)
                elif extension == "cls":
                    sample["label"] = tar.extractfile(member).read().decode().strip()
        if stat.st_size < max((s["image"][0] + s["image"][1] for s in samples.values() if "image" in s), default=0):
            raise tarfile.ReadError("unexpected end of data")
    except (tarfile.TarError, OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: truncated or not a tar ({error}); expected a whole WebDataset shard") from None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        partial.write_text(json.dumps(samples))
        partial.replace(cached)
    except OSError:  # a read-only home: the shards are read as they are, only more slowly the next time
        pass
    return samples


def index_shard(path, expected, relabel):
    """[(key, image member offset, size, extension, label)] of one shard; labels index ImageNet-1K's wnids, or your
    own classes (see `Relabel`)."""
    samples = read_headers(path)
    index = []
    for key, sample in samples.items():
        if "image" not in sample or "label" not in sample:
            raise DatasetError(f"{path}: sample {key} has no {'image' if 'image' not in sample else '.cls label'}; "
                               "expected <key>.jpg and <key>.cls for each sample")
        label = int(sample["label"]) if sample["label"].lstrip("-").isdigit() else sample["label"]
        index.append((key, *sample["image"], relabel(label, f"{path}:{key}")))
    if expected is not None and len(index) != expected:
        raise DatasetError(f"{path}: {len(index)} samples, but _info.json says {expected}; expected the whole shard "
                           "(a truncated download?)")
    return index


class WebDatasetReader(Reader):
    def __init__(self, shards, classes, names):
        self.source = str(Path(shards[0][0]).parent)
        self.shards, self.samples = [], []
        relabel = Relabel(names, classes)
        for number, (path, expected) in enumerate(shards):
            if not Path(path).is_file():
                raise DatasetError(f"{path}: no such shard; expected it, as _info.json lists it")
            self.shards.append(str(path))
            self.samples += [(number, *entry) for entry in index_shard(path, expected, relabel)]
        self._files = {}

    def __getstate__(self):  # each loader worker opens its own files
        return {**self.__dict__, "_files": {}}

    def __len__(self):
        return len(self.samples)

    def label(self, index):
        return self.samples[index][5]

    def read(self, index):
        number, _, offset, size = self.samples[index][:4]
        try:
            if number not in self._files:
                self._files[number] = os.open(self.shards[number], os.O_RDONLY)
            data = os.pread(self._files[number], size, offset)
        except OSError as error:
            raise read_error(self.describe(index), error) from None
        if len(data) != size:
            raise read_error(self.describe(index), f"{len(data)} of {size} bytes: the shard is truncated")
        return data

    def describe(self, index):
        number, key = self.samples[index][:2]
        return f"{self.shards[number]}:{key}"

    def filename(self, index):
        key, extension = self.samples[index][1], self.samples[index][4]
        return Path(key).name + (".JPEG" if extension.lower() in ("jpg", "jpeg") else f".{extension}")


def open_split(root, split, classes):
    return WebDatasetReader(split_shards(root, split), classes, label_names(root))
