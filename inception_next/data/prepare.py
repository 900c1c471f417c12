"""`python -m inception_next prepare SRC DEST [--to folders]`: ImageNet from any layout it ships in (the official
archives, Kaggle's download, Hugging Face parquet, WebDataset shards, class folders) into class folders, or into
parquet or WebDataset shards. Labels keep their meaning: each image lands under its wnid (devkit ids mapped).

    python -m inception_next prepare ~/downloads/ilsvrc2012 ~/data/imagenet         # the three official archives
    python -m inception_next prepare ~/hf/imagenet-1k ~/data/imagenet               # read in place too; or convert

Safe to interrupt and rerun: every file appears whole or not at all, and what is there is kept, so a rerun
finishes the job and never writes an image twice. DEST must be empty, absent, or an unfinished prepare of the same
source.
"""

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from .images import DatasetError
from .readers import READABLE, SOURCES, find_source
from .writers import WRITERS, remove_partial

MARKER = ".prepare.json"


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m inception_next prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="the dataset as downloaded")
    parser.add_argument("dest", type=Path, help="where to write it")
    parser.add_argument("--to", choices=sorted(WRITERS), default="folders", help="the layout to write")
    parser.add_argument("--format", choices=list(SOURCES), default=None, help="SRC's layout; default: recognised")
    parser.add_argument("--splits", nargs="+", choices=("train", "val"), default=None,
                        help="default: every split SRC holds")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (parquet, webdataset)")
    return parser.parse_args(argv)


def claim(dest, identity):
    """Refuse a DEST that holds anything but an earlier prepare of the same source into the same layout."""
    marker = dest / MARKER
    if dest.is_dir() and any(dest.iterdir()):
        recorded = json.loads(marker.read_text()) if marker.is_file() else None
        if recorded is None or {k: recorded.get(k) for k in identity} != identity:
            what = (f"a prepare of {recorded['source']} ({recorded['to']})" if recorded else
                    f"{', '.join(sorted(p.name for p in dest.iterdir())[:4])}")
            raise DatasetError(f"DEST {dest}: holds {what}; expected an empty or absent folder, or an unfinished "
                               f"prepare of {identity['source']} to {identity['to']} to finish")
    dest.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        marker.write_text(json.dumps(identity, indent=1))
    remove_partial(dest)


def samples(source, root, split, classes):
    """(total or None, iterator of (wnid, file name, a function reading the image)) of a split."""
    if source.NAME not in READABLE:
        return None, ((wnid, name, lambda data=data: data) for wnid, name, data in source.samples(root, split))
    reader = source.open_split(root, split, classes)
    return len(reader), ((classes[reader.label(i)], reader.filename(i), lambda i=i: reader.read(i))
                         for i in range(len(reader)))


def prepare(src, dest, to="folders", format=None, splits=None, shard_size=1000):
    src, dest = src.expanduser().resolve(), dest.expanduser().resolve()
    source = find_source(src, format, setting="SRC")
    if dest == src or src in dest.parents:
        raise DatasetError(f"DEST {dest}: inside SRC {src}; expected another folder")
    if to != "folders" and source.NAME not in READABLE:
        raise DatasetError(f"--to {to}: {source.LAYOUT} are read front to back; prepare them to folders first, "
                           "then from the folders")
    found = source.splits(src)
    splits = splits or found
    missing = [split for split in splits if split not in found]
    if missing:
        raise DatasetError(f"SRC {src}: no {', '.join(missing)} split in {source.LAYOUT}")
    classes = source.classes(src)
    claim(dest, dict(source=str(src), format=source.NAME, to=to))
    counts = {}
    for split in splits:
        total, items = samples(source, src, split, classes)
        writer = WRITERS[to](dest, split, classes, total, shard_size)
        written = 0
        with tqdm(items, total=total, desc=split, unit="img", file=sys.stderr, dynamic_ncols=True) as progress:
            for number, (wnid, name, read) in enumerate(progress):
                if not writer.done(number):
                    written += writer.add(number, wnid, name, read)
                counts[split] = number + 1
        writer.close()
        print(f"{split}: {counts.get(split, 0)} images ({written} written now) -> {dest}")
    marker = dest / MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "complete": counts}, indent=1))
    return counts


def main(argv=None):
    args = parse(argv)
    if args.shard_size < 1:
        raise SystemExit(f"error: --shard-size {args.shard_size}: expected a positive number of samples")
    return prepare(args.src, args.dest, args.to, args.format, args.splits, args.shard_size)
