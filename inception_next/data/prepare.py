"""`python -m inception_next prepare SRC DEST [--to folders]`: ImageNet from any layout it ships in (the official
archives, Kaggle's download, Hugging Face parquet, WebDataset shards, class folders) into class folders, or into
parquet or WebDataset shards or LitData chunks (a folder, or object storage). Labels keep their meaning: each image
lands under its wnid (devkit ids mapped).

    python -m inception_next prepare ~/downloads/ilsvrc2012 ~/data/imagenet         # the three official archives
    python -m inception_next prepare ~/hf/imagenet-1k ~/data/imagenet               # read in place too; or convert
    python -m inception_next prepare ~/data/imagenet s3://bucket/imagenet           # LitData chunks, for clusters

Safe to interrupt and rerun: every file appears whole or not at all, and what is there is kept, so a rerun
finishes the job and never writes an image twice. DEST must be empty, absent, or an unfinished prepare of the same
source (on object storage, the same of a prefix).
"""

import argparse
import json
from pathlib import Path

from ..deprecation import add_flag
from ..progress import Progress
from .images import DatasetError
from .object_store import Bucket, is_url
from .readers import READABLE, SOURCES, find_source
from .writers import WRITERS, remove_partial

MARKER = ".prepare.json"


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m inception_next prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="the dataset as downloaded")
    parser.add_argument("dest", help="where to write it: a folder, or s3://bucket/prefix (LitData chunks)")
    parser.add_argument("--to", choices=sorted(WRITERS), default=None,
                        help="the layout to write; default: folders, or litdata to s3://")
    parser.add_argument("--format", choices=list(SOURCES), default=None, help="SRC's layout; default: recognised")
    parser.add_argument("--splits", nargs="+", choices=("train", "val"), default=None,
                        help="default: every split SRC holds")
    add_flag(parser, "--shard_size", type=int, default=1000,
                        help="samples per shard or chunk (parquet, webdataset, litdata)")
    return parser.parse_args(argv)


class Destination:
    """DEST, a folder or an object store's prefix: what it holds, and its marker (what was prepared there)."""

    def __init__(self, dest):
        self.bucket = Bucket(dest, "DEST") if is_url(dest) else None
        self.path = None if self.bucket else Path(dest).expanduser().resolve()
        self.name = self.bucket.url if self.bucket else str(self.path)

    def held(self):
        if self.bucket:
            return sorted({name.split("/")[0] for name in self.bucket.names()})
        return sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []

    def marker(self):
        if self.bucket:
            return json.loads(self.bucket.read(MARKER)) if MARKER in self.held() else None
        return json.loads((self.path / MARKER).read_text()) if (self.path / MARKER).is_file() else None

    def mark(self, record):
        data = json.dumps(record, indent=1)
        if self.bucket:
            self.bucket.write(MARKER, data.encode())
        else:
            (self.path / MARKER).write_text(data)

    def claim(self, identity):
        """Refuse a DEST that holds anything but an earlier prepare of the same source into the same layout."""
        recorded, held = self.marker(), self.held()
        if held and (recorded is None or {k: recorded.get(k) for k in identity} != identity):
            what = f"a prepare of {recorded['source']} ({recorded['to']})" if recorded else ", ".join(held[:4])
            place = "prefix" if self.bucket else "folder"
            raise DatasetError(f"DEST {self.name}: holds {what}; expected an empty or absent {place}, or an "
                               f"unfinished prepare of {identity['source']} to {identity['to']} to finish")
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            remove_partial(self.path)
        if recorded is None:
            self.mark(identity)


def samples(source, root, split, classes):
    """(total or None, iterator of (wnid, file name, a function reading the image)) of a split."""
    if source.NAME not in READABLE:
        return None, ((wnid, name, lambda data=data: data) for wnid, name, data in source.samples(root, split))
    reader = source.open_split(root, split, classes)
    return len(reader), ((classes[reader.label(i)], reader.filename(i), lambda i=i: reader.read(i))
                         for i in range(len(reader)))


def prepare(src, dest, to=None, format=None, splits=None, shard_size=1000):
    src, target = Path(src).expanduser().resolve(), Destination(dest)
    to = to or ("litdata" if target.bucket else "folders")
    if target.bucket and to != "litdata":
        raise DatasetError(f"--to {to}: object storage (DEST {target.name}) takes LitData chunks; expected "
                           "--to litdata")
    source = find_source(src, format, setting="SRC")
    if target.path is not None and (target.path == src or src in target.path.parents):
        raise DatasetError(f"DEST {target.name}: inside SRC {src}; expected another folder")
    if to != "folders" and source.NAME not in READABLE:
        raise DatasetError(f"--to {to}: {source.LAYOUT} are read front to back; prepare them to folders first, "
                           "then from the folders")
    found = source.splits(src)
    splits = splits or found
    missing = [split for split in splits if split not in found]
    if missing:
        raise DatasetError(f"SRC {src}: no {', '.join(missing)} split in {source.LAYOUT}")
    classes = source.classes(src)
    target.claim(dict(source=str(src), format=source.NAME, to=to))
    dest = target.bucket.url if target.bucket else target.path
    counts = {}
    for split in splits:
        total, items = samples(source, src, split, classes)
        writer = WRITERS[to](dest, split, classes, total, shard_size)
        written = 0
        progress = Progress(f"prepare {split}", total, " images")
        for number, (wnid, name, read) in enumerate(items):
            if not writer.done(number):
                written += writer.add(number, wnid, name, read)
            counts[split] = number + 1
            progress.update()
        writer.close()
        print(f"{split}: {counts.get(split, 0)} images ({written} written now) -> {dest}")
    target.mark({**target.marker(), "complete": counts})
    return counts


def main(argv=None):
    args = parse(argv)
    if args.shard_size < 1:
        raise SystemExit(f"error: --shard_size {args.shard_size}: expected a positive number of samples")
    return prepare(args.src, args.dest, args.to, args.format, args.splits, args.shard_size)
