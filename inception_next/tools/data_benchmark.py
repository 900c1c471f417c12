"""`python -m inception_next benchmark-data`: read + decode + augment images/s of one loader worker, for the train
and the eval transforms, through our dataset (any layout) beside bare timm: `PIL.Image.open(...).convert("RGB")` and
timm's `create_transform` built with the same arguments, on the same images already in memory. Our workers stop at
uint8 pixels and leave normalization and random erasing to the device, per batch (as timm's prefetcher does in the
official runs), and resize the crop with torch; bare timm does it all in the worker, as timm's loader without its
prefetcher. `speedup` is ours over bare: what that saves, less what reading the layout and our dataset code (mode
handling, unreadable-sample skipping, per-sample augmentation seeds) cost. The "train, RA on device" rows are the
workers' share with `data.device_from: randaugment`, which leaves RandAugment to the training device too; the "train,
decoded on device" rows with `data.device_from: decode`, which leaves it decoding, cropping and flipping too.

    python -m inception_next benchmark-data                       # the demo dataset at 64 px
    python -m inception_next benchmark-data --root ~/data/imagenet --img_size 224
    python -m inception_next benchmark-data --layouts --img_size 224   # photo-sized JPEGs in every layout
    python -m inception_next benchmark-data --root s3://bucket/imagenet   # LitData chunks from object storage

At 224 px it also prints how many such workers one A100 needs to train each of the paper's models at the paper's
speed (Table 4), with RandAugment in the workers, on the device, and with decoding on the device too.

The measured worker gets what worker 1 of `--loader_workers` gets in training and evaluation: every that-many-th
batch of the epoch's order, so a layout read in blocks (parquet row groups) pays for them as it would. Each pipeline
runs in one DataLoader worker process (one thread); rounds alternate between pipelines so that a noisy machine slows
all alike, and the median round is reported. From object storage, every round of ours starts with an empty chunk
cache, as a first epoch does: it measures downloading the chunks too.
"""

import argparse
import io
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import DataLoader, Dataset

from ..data import (
    DatasetError,
    ImageNetDataModule,
    LabelledImages,
    ResumableSampler,
    demo,
)
from ..data.module import collate
from ..data.object_store import is_url
from ..data.prepare import prepare
from ..deprecation import add_flag
from ..progress import Progress
from .speed import paper_a100

LAYOUTS = ("folders", "parquet", "webdataset", "litdata")
PAPER_MODELS = ("inception_next_atto", "inception_next_tiny", "inception_next_small", "inception_next_base")
PAPER_SIZE = 224


def bare_timm_transform(data, train):
    """The transform built directly from timm, from the data module's settings but not through its code."""
    h = data.hparams
    common = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    if train:
        return create_transform(data.img_size, is_training=True, scale=tuple(h.scale), hflip=h.hflip,
                                color_jitter=h.color_jitter, auto_augment=h.auto_augment, re_prob=h.reprob,
                                re_mode=h.remode, interpolation=h.train_interpolation, **common)
    return create_transform(data.img_size, is_training=False, crop_pct=data.crop_pct, interpolation=h.interpolation,
                            **common)


class BareImages(Dataset):
    """The reference: open, convert, transform encoded images held in memory; nothing else."""

    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        with Image.open(io.BytesIO(self.images[index])) as image:
            return self.transform(image.convert("RGB"))


def _images_per_second(dataset, indices, batch_size, collate=None):
    """Through one worker process, in batches; the worker's start-up and first batch are left out of the timing."""
    batch_size = max(1, min(batch_size, len(indices) // 2))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=1, prefetch_factor=4,
                        collate_fn=collate)
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    count = sum(len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch) for batch in batches)
    return count / (time.perf_counter() - start)


def _images_per_second_cold(dataset, indices, batch_size, remote, collate=None):
    """As _images_per_second; from object storage, with a chunk cache of its own that starts empty."""
    if not remote:
        return _images_per_second(dataset, indices, batch_size, collate)
    previous = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory(prefix="benchmark-data-cache-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache  # read by the worker process the loader starts
        try:
            return _images_per_second(dataset, indices, batch_size, collate)
        finally:
            if previous is None:
                os.environ.pop("XDG_CACHE_HOME")
            else:
                os.environ["XDG_CACHE_HOME"] = previous


def worker_share(sampler, batch_size, workers, images):
    """The (index, seed) pairs worker 1 of `workers` loads: batches 0, workers, 2 x workers, ... of the order
    (`sampler` laid out for `workers` loader workers)."""
    order = list(sampler)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)][::workers]
    return [pair for batch in batches for pair in batch][:images + batch_size]


def measure(data, split, images, rounds, batch_size=32, workers=8, others=()):
    """Median images/s over `rounds` of (ours, bare) on about `images` samples of `split`, in training's order;
    `others`: more data modules (other layouts of the same images, other settings) measured in the same rounds."""
    train = split == "train"
    rows = []
    for module in (data, *others):
        ours = module.training_set() if train else LabelledImages(module.reader(split), module.eval_transform())
        order = ResumableSampler(len(ours), seed=0, shuffle=train, blocks=ours.reader.blocks,
                                 window=module.hparams.shuffle_window, batch_size=batch_size, streams=workers)
        share = worker_share(order, batch_size, workers, images)
        prefetch = module.reader(split)  # another reader: ours opens its own in its worker
        bare = BareImages([prefetch.read(index) for index, _ in share], bare_timm_transform(module, train))
        rows.append((module, ours, share, bare))
    progress = Progress(f"benchmark-data, {split}", rounds * len(rows), " measurements (ours beside bare timm)")
    timings = []
    for _ in range(rounds):
        timings.append([])
        for module, ours, share, bare in rows:
            timings[-1].append((_images_per_second_cold(ours, share, batch_size, remote=is_url(module.root),
                                                        collate=collate(module.hparams, train)),
                                _images_per_second(bare, list(range(len(share))), batch_size)))
            progress.update(note=f"{transform_name(module, train)}, {'demo' if module.demo else module.source.NAME}")
    results = []
    for column, (module, *_) in enumerate(rows):
        ours_speed = statistics.median(t[column][0] for t in timings)
        bare_speed = statistics.median(t[column][1] for t in timings)
        results.append(dict(layout=module.source.NAME if not module.demo else "folders",
                            transform=transform_name(module, train),
                            images=len(rows[column][2]),
                            ours_img_s=round(ours_speed, 1),
                            bare_timm_img_s=round(bare_speed, 1),
                            speedup=round(ours_speed / bare_speed, 2)))
    return results


def transform_name(module, train):
    if not train:
        return "eval"
    return {"normalize": "train", "randaugment": "train, RA on device",
            "decode": "train, decoded on device"}[module.hparams.device_from]


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m inception_next benchmark-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="a dataset in any layout; default: the generated demo dataset")
    parser.add_argument("--layouts", action="store_true",
                        help="write photo-sized JPEGs (about 110 KB, 500 x 375) in each layout and compare them")
    add_flag(parser, "--img_size", type=int, default=64)
    add_flag(parser, "--auto_augment", default="rand-m9-mstd0.5-inc1", help="the paper's RandAugment")
    parser.add_argument("--images", type=int, default=500, help="images per round")
    parser.add_argument("--rounds", type=int, default=5)
    add_flag(parser, "--batch_size", type=int, default=32)
    add_flag(parser, "--loader_workers", type=int, default=8, help="the training loader's workers, which share "
                        "an epoch's batches (the measured one takes every that-many-th)")
    return parser.parse_args(argv)


def layouts_of_photographs(count, folder):
    """`count` photograph-like JPEGs a split in class folders, and the same files as parquet, WebDataset and LitData
    chunks."""
    folders = demo.write_photographs(folder / "folders", count)
    for layout in LAYOUTS[1:]:
        prepare(folders, folder / layout, to=layout, shard_size=max(1, count // 4))
    return {layout: folder / layout for layout in LAYOUTS}


def main(argv=None):
    args = parse(argv)
    if args.root is not None and not is_url(args.root) and not Path(args.root).expanduser().exists():
        raise SystemExit(f"error: --root {args.root}: no such folder; expected a dataset in any layout the data "
                         "module reads")
    settings = dict(img_size=args.img_size, auto_augment=args.auto_augment, batch_size=args.batch_size, seed=0)
    with tempfile.TemporaryDirectory(prefix="benchmark-data-") as scratch:
        try:
            if args.layouts:
                count = args.images * args.loader_workers + args.batch_size * args.loader_workers
                roots = layouts_of_photographs(count, Path(scratch))
                modules = [ImageNetDataModule(root=str(root), **settings) for root in roots.values()]
            else:
                modules = [ImageNetDataModule(root=args.root, **settings)]
            for module in modules:
                module.prepare_data()
                module.classes  # checks the layout: one clear line on a bad root
        except DatasetError as error:
            raise SystemExit(f"error: {error}") from None
        print(f"{', '.join(str(m.root) for m in modules)}: {args.img_size} px, about {args.images} images x "
              f"{args.rounds} rounds, one worker process each (worker 1 of {args.loader_workers}), "
              f"torch {torch.__version__}")
        device_twins = [ImageNetDataModule(root=str(m.root) if not m.demo else None, device_from=start, **settings)
                        for start in ("randaugment", "decode") for m in modules]
        rows = [row for split, others in (("train", modules[1:] + device_twins), ("val", modules[1:]))
                for row in measure(modules[0], split, args.images, args.rounds, args.batch_size,
                                   args.loader_workers, others=others)]
    columns = list(rows[0])
    print("  ".join(f"{c:>15}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>15}" for c in columns))
    if args.img_size == PAPER_SIZE:
        print(f"\nLoader workers one A100 needs at the paper's training speed (TF32, batch 128; {rows[0]['layout']}):")
        for need in workers_per_a100(rows):
            print(f"  {need['model']:>22}: {need['train_img_s']:>5} img/s, {need['workers']:>2} workers, "
                  f"{need['workers_ra_on_device']:>2} with RandAugment on the device, "
                  f"{need['workers_decoding_on_device']:>2} decoding on the device too")
    return rows


def workers_per_a100(rows):
    """Per paper model: its A100 training images/s (Table 4) over one worker's (the first layout's rows), with
    RandAugment in the workers, on the device, and with decoding on the device too."""
    layout = rows[0]["layout"]
    speed = {row["transform"]: row["ours_img_s"] for row in rows if row["layout"] == layout}
    needs = []
    for model in PAPER_MODELS:
        train, _ = paper_a100(model, PAPER_SIZE)
        needs.append(dict(model=model, train_img_s=train, workers=math.ceil(train / speed["train"]),
                          workers_ra_on_device=math.ceil(train / speed["train, RA on device"]),
                          workers_decoding_on_device=math.ceil(train / speed["train, decoded on device"])))
    return needs
