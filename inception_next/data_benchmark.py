"""`python -m inception_next benchmark-data`: decode + augment images/s of one loader worker, for the train and the
eval transforms, through our data module beside a bare loop of `PIL.Image.open(...).convert("RGB")` and timm's
`create_transform` built with the same arguments, on the same files. The difference is what our dataset code
(mode handling, unreadable-file skipping) costs on top of the work timm and PIL do anyway.

    python -m inception_next benchmark-data                       # the demo dataset at 64 px
    python -m inception_next benchmark-data --root ~/data/imagenet --img-size 224

Both pipelines run in this one process with one thread, as a DataLoader worker does, alternating in rounds so that
a noisy machine slows both alike; the median round is reported.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

from .data import ClassFolderDataset, DatasetError, ImageFolderDataModule, ResumableSampler


def bare_timm_transform(data, train):
    """The transform built directly from timm, from the data module's settings but not through its code."""
    h = data.hparams
    common = dict(interpolation=h.interpolation, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    if train:
        return create_transform(data.img_size, is_training=True, scale=tuple(h.scale), hflip=h.hflip,
                                color_jitter=h.color_jitter, auto_augment=h.auto_augment, re_prob=h.reprob,
                                re_mode=h.remode, **common)
    return create_transform(data.img_size, is_training=False, crop_pct=data.crop_pct, **common)


def _images_per_second(load_one, count):
    start = time.perf_counter()
    for index in range(count):
        load_one(index)
    return count / (time.perf_counter() - start)


def measure(data, split, images, rounds):
    """Median images/s over `rounds` of (ours, bare) on the first `images` files of `split`, shuffled alike."""
    train = split == "train"
    ours = ClassFolderDataset(data.root / split, data.classes,
                              data.train_transform() if train else data.eval_transform(), skip_unreadable=train)
    order = list(ResumableSampler(len(ours), seed=0))[:images]  # (index, augmentation seed), as training loads them
    paths = [ours.samples[index][0] for index, _ in order]
    bare = bare_timm_transform(data, train)

    def ours_one(i):
        return ours[order[i] if train else order[i][0]]

    def bare_one(i):
        with Image.open(paths[i]) as image:
            return bare(image.convert("RGB"))

    ours_one(0), bare_one(0)  # warm-up: first-call costs (imports, caches) out of the timing
    timings = [(_images_per_second(ours_one, len(order)), _images_per_second(bare_one, len(order)))
               for _ in range(rounds)]
    ours_speed = statistics.median(t[0] for t in timings)
    bare_speed = statistics.median(t[1] for t in timings)
    return dict(transform=split if train else "eval", images=len(order), ours_img_s=round(ours_speed, 1),
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
    torch.set_num_threads(1)  # one DataLoader worker
    data = ImageFolderDataModule(root=args.root, img_size=args.img_size, auto_augment=args.auto_augment)
    try:
        data.prepare_data()
        data.classes  # checks the layout: one clear line on a bad root
    except DatasetError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{data.root}: {args.img_size} px, {args.images} images x {args.rounds} rounds, 1 thread (one worker)")
    rows = [measure(data, split, args.images, args.rounds) for split in ("train", "val")]
    columns = list(rows[0])
    print("  ".join(f"{c:>15}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>15}" for c in columns))
    return rows
