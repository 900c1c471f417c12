"""Class folders, torchvision's ImageFolder layout (what `prepare` writes):

    root/train/<wnid>/*.JPEG     root/val/<wnid>/*.JPEG

Either split may be absent when no command reads it: a download of the validation set alone evaluates weights.
"""

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..images import IMAGE_EXTENSIONS, DatasetError, is_image_file
from .base import Reader, read_error

NAME = "folders"
LAYOUT = "class folders (root/train/<class>/*.JPEG, root/val/<class>/*.JPEG)"
SPLITS = {"train": "train", "val": "val"}


def list_classes(split_dir):
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))


def list_images(folder):
    return sorted(Path(folder, name) for name in os.listdir(folder) if is_image_file(Path(name)))


class FileReader(Reader):
    """Image files with their labels."""

    def __init__(self, source, files, labels):
        self.source, self.files, self.labels = str(source), files, labels

    def __len__(self):
        return len(self.files)

    def label(self, index):
        return self.labels[index]

    def read(self, index):
        try:
            return self.files[index].read_bytes()
        except OSError as error:
            raise read_error(self.files[index], error) from None

    def describe(self, index):
        return str(self.files[index])

    def filename(self, index):
        return self.files[index].name

    def check_readable(self):
        """Open (header only, no decode) every file, so empty and non-image files are named before training."""
        bad = []
        for path in self.files:
            try:
                with Image.open(path):
                    pass
            except (OSError, UnidentifiedImageError, ValueError):
                bad.append(str(path))
        if bad:
            raise DatasetError(f"{self.source}: {len(bad)} unreadable file(s), which validation cannot skip "
                               f"without biasing the metric: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; "
                               "expected them repaired or removed")


def detect(root):
    return any((root / folder).is_dir() for folder in SPLITS.values())


def splits(root):
    return [split for split, folder in SPLITS.items() if (root / folder).is_dir()]


def classes(root):
    split_dir = root / "train" if (root / "train").is_dir() else root / "val"
    found = list_classes(split_dir)
    if len(found) < 2:
        raise DatasetError(f"{split_dir}: {len(found)} class folder(s) {found}; expected at least 2, "
                           f"as {split_dir}/<class>/<images>")
    return found


def class_folders(split_dir, classes):
    """A split of class folders, each a class of `classes` holding at least one image."""
    found = list_classes(split_dir)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DatasetError(f"{split_dir}: classes the model does not know: {', '.join(unknown[:5])}"
                           f"{' ...' if len(unknown) > 5 else ''}; expected some of its {len(classes)} "
                           f"classes ({', '.join(classes[:3])}, ...)")
    if not found:
        raise DatasetError(f"{split_dir}: no class folders; expected {split_dir}/<class>/<images>")
    files, labels = [], []
    empty = []
    for label, name in enumerate(classes):
        if name in found:
            images = list_images(split_dir / name)
            empty += [] if images else [name]
            files += images
            labels += [label] * len(images)
    if empty:
        raise DatasetError(f"{split_dir}: class folders without images: {', '.join(empty[:10])}"
                           f"{' ...' if len(empty) > 10 else ''}; expected image files "
                           f"({', '.join(IMAGE_EXTENSIONS)}) in each")
    return FileReader(split_dir, files, labels)


def open_split(root, split, classes):
    return class_folders(root / SPLITS[split], classes)
