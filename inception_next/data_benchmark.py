"""`python -m inception_next benchmark-data`: decode + augment images/s of one loader worker, for the train and the
eval transforms, through our dataset beside a bare `PIL.Image.open(...).convert("RGB")` + timm `create_transform`
built with the same arguments, on the same files. The difference is what our dataset code (mode handling,
unreadable-file skipping, per-sample augmentation seeds) costs on top of the work PIL and timm do anyway.

    python -m inception_next benchmark-data                       # the demo dataset at 64 px
    python -m inception_next benchmark-data --root ~/data/imagenet --img-size 224

Each pipeline runs in one DataLoader worker process (one thread), as in training; rounds alternate between the two
so that a noisy machine slows both alike, and the median round is reported.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import DataLoader, Dataset

from .data import ClassFolderDataset, DatasetError, ImageFolderDataModule, ResumableSampler


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


class BareFiles(Dataset):
    """The reference: open, convert, transform; nothing else."""

    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def _images_per_second(dataset, indices):
    """Through one worker process, one sample at a time; the worker's start-up is left out of the timing."""
    loader = DataLoader(dataset, batch_size=None, sampler=indices, num_workers=1, prefetch_factor=4)
    items = iter(loader)
    next(items)
    start = time.perf_counter()
    count = sum(1 for _ in items)
    return count / (time.perf_counter() - start)


def measure(data, split, images, rounds):
    """Median images/s over `rounds` of (ours, bare) on `images` files of `split`, in training's order."""
    train = split == "train"
    ours = ClassFolderDataset(data.root / split, data.classes,
                              data.train_transform() if train else data.eval_transform(), skip_unreadable=train)
    order = list(ResumableSampler(len(ours), seed=0, shuffle=train))[:images + 1]  # (index, augmentation seed)
    bare = BareFiles([ours.samples[index][0] for index, _ in order], bare_timm_transform(data, train))
    timings = [(_images_per_second(ours, order), _images_per_second(bare, list(range(len(order)))))
               for _ in range(rounds)]
    ours_speed = statistics.median(t[0] for t in timings)
    bare_speed = statistics.median(t[1] for t in timings)
    return dict(transform=split if train else "eval", images=images, ours_img_s=round(ours_speed, 1),
                bare_timm_img_s=round(bare_speed, 1), overhead_pct=round(100 * (bare_speed / ours_speed - 1), 1))


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m inception_next benchmark-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="class-folder dataset; default: the generated demo dataset")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--auto-augment", default="rand-m9-mstd0.5-inc1", help="the paper's RandAugment")
    parser.add_argument("--images", type=int, default=500, help="files per round")
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.root is not None and not Path(args.root).expanduser().is_dir():
        raise SystemExit(f"error: --root {args.root}: no such folder; expected a class-folder dataset "
                         "(root/train/<class>/*)")
    data = ImageFolderDataModule(root=args.root, img_size=args.img_size, auto_augment=args.auto_augment)
    try:
        data.prepare_data()
        data.classes  # checks the layout: one clear line on a bad root
    except DatasetError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{data.root}: {args.img_size} px, {args.images} images x {args.rounds} rounds, one worker process each, "
          f"torch {torch.__version__}")
    rows = [measure(data, split, args.images, args.rounds) for split in ("train", "val")]
    columns = list(rows[0])
    print("  ".join(f"{c:>15}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>15}" for c in columns))
    return rows
