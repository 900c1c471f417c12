"""A small, learnable image dataset the package generates, so the demo runs where ImageNet is absent.

Ten classes of shapes and textures, each drawn at a random position, size, colour and background with noise, so
that a convnet must learn shape and texture rather than colour. It is written as JPEG files in ImageNet's layout
(`train/<class>/*.JPEG`, `val/<class>/*.JPEG`), so the demo trains through the very same loading code as ImageNet.
Generation is deterministic for a seed, happens once into a cache folder, and is atomic: it is built in a temporary
folder and renamed into place, so an interrupted generation never leaves a half dataset that passes for a whole one.
"""

import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .readers.base import cache_folder

CLASSES = ("circle", "square", "triangle", "cross", "ring", "horizontal_stripes", "vertical_stripes",
           "checkerboard", "diagonal_stripes", "dots")
SPEC = dict(version=3, classes=CLASSES, train_per_class=260, val_per_class=50, image_size=72, seed=0)
COMPLETE_MARKER = "dataset.json"


def default_root():
    return cache_folder() / f"demo-v{SPEC['version']}"


def _colour(rng):
    return tuple(rng.randrange(256) for _ in range(3))


def _distinct_colours(rng):
    """A foreground and a background far enough apart to see the pattern in."""
    while True:
        fg, bg = _colour(rng), _colour(rng)
        if sum(abs(a - b) for a, b in zip(fg, bg)) > 200:
            return fg, bg


def _stripes(draw, size, period, fg, direction):
    for offset in range(-size, 2 * size, period):
        if direction == "horizontal":
            draw.rectangle([0, offset, size, offset + period // 2 - 1], fill=fg)
        elif direction == "vertical":
            draw.rectangle([offset, 0, offset + period // 2 - 1, size], fill=fg)
        else:
            draw.polygon([(offset, 0), (offset + period // 2, 0), (offset + period // 2 + size, size),
                          (offset + size, size)], fill=fg)


def draw_example(label, rng, size):
    """One image of class `label` (an index into CLASSES)."""
    fg, bg = _distinct_colours(rng)
    image = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(image)
    name = CLASSES[label]
    r = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    box = [cx - r, cy - r, cx + r, cy + r]
    period = rng.randrange(12, 22)  # coarse enough to survive a stride-4 stem at 64 px: finer textures alias
    if name == "circle":
        draw.ellipse(box, fill=fg)
    elif name == "square":
        draw.rectangle(box, fill=fg)
    elif name == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif name == "cross":
        w = r / 3
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fg)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fg)
    elif name == "ring":
        draw.ellipse(box, outline=fg, width=max(2, int(r / 3)))
    elif name in ("horizontal_stripes", "vertical_stripes", "diagonal_stripes"):
        _stripes(draw, size, period, fg, name.split("_")[0])
    elif name == "checkerboard":
        cell = period // 2 + 2
        for i in range(0, size, cell):
            for j in range(0, size, cell):
                if (i // cell + j // cell) % 2:
                    draw.rectangle([i, j, i + cell - 1, j + cell - 1], fill=fg)
    elif name == "dots":
        spacing, dot = period, period / 4
        for i in range(spacing // 2, size, spacing):
            for j in range(spacing // 2, size, spacing):
                draw.ellipse([i - dot, j - dot, i + dot, j + dot], fill=fg)
    image = image.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR, fillcolor=bg)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    noise = np.random.default_rng(rng.randrange(2 ** 32)).normal(0, rng.uniform(3, 12), (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def generate(root, classes=CLASSES, train_per_class=260, val_per_class=50, image_size=72, seed=0):
    """Write the dataset into `root` (which must not exist yet) through a temporary folder beside it."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        rng = random.Random(seed)
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for label, name in enumerate(classes):
                folder = staging / split / name
                folder.mkdir(parents=True)
                for i in range(count):
                    draw_example(CLASSES.index(name), rng, image_size).save(folder / f"{name}_{i:04d}.JPEG",
                                                                            quality=90)
        spec = dict(SPEC, classes=list(classes), train_per_class=train_per_class, val_per_class=val_per_class,
                    image_size=image_size, seed=seed)
        (staging / COMPLETE_MARKER).write_text(json.dumps(spec, indent=1))
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def ensure(root=None):
    """The demo dataset at `root` (default: the cache folder), generated unless a complete copy is already there."""
    root = Path(root) if root else default_root()
    marker = root / COMPLETE_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("version") == SPEC["version"]:
        return root
    if root.exists():  # left by an interrupted or older generation
        shutil.rmtree(root)
    spec = {k: v for k, v in SPEC.items() if k != "version"}
    return generate(root, **spec)


def photograph(rng, width=500, height=375):
    """An image with the statistics that make ImageNet JPEGs cost what they cost to decode (about 110 KB at quality
    90, 500 x 375 like ImageNet's typical photo): smooth colour fields, blurred shapes, texture and grain. For
    timing the data pipeline, not for learning."""
    noise = np.random.default_rng(rng.randrange(2 ** 32))
    fields = noise.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(fields).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(8, 20)):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, 120)
        if rng.random() < 0.5:
            draw.ellipse([x - r, y - r * rng.uniform(0.3, 1), x + r, y + r], fill=_colour(rng))
        else:
            draw.polygon([(x + rng.uniform(-r, r), y + rng.uniform(-r, r)) for _ in range(rng.randrange(3, 7))],
                         fill=_colour(rng))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    texture = noise.integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((width, height), Image.BILINEAR), dtype=np.float32)
    pixels = 0.6 * np.asarray(image, dtype=np.float32) + 0.4 * texture + noise.normal(0, 15, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_photographs(root, count, seed=0):
    """A class-folder dataset (2 classes, train/ and val/) of `count` photograph-like JPEGs a split, for timing."""
    rng = random.Random(seed)
    for split in ("train", "val"):
        for i in range(count):
            folder = Path(root) / split / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            photograph(rng).save(folder / f"{i:05d}.JPEG", quality=90)
    return Path(root)
