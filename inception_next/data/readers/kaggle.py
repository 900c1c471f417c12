"""Kaggle's ImageNet (imagenet-object-localization-challenge), as its download unpacks:

    root/ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG
    root/ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<8 digits>.JPEG      (flat)
    root/LOC_val_solution.csv       ImageId,PredictionString: "wnid x1 y1 x2 y2 ..." (the first token is the class)
    root/LOC_synset_mapping.txt     "<wnid> <names>" per line
"""

import csv

from ..images import DatasetError
from .base import label_outside
from .folders import FileReader, class_folders, list_classes, list_images

NAME = "kaggle"
LAYOUT = "Kaggle's download (root/ILSVRC/Data/CLS-LOC/, root/LOC_val_solution.csv, root/LOC_synset_mapping.txt)"
IMAGES = ("ILSVRC", "Data", "CLS-LOC")


def detect(root):
    return root.joinpath(*IMAGES).is_dir()


def splits(root):
    return [split for split in ("train", "val") if root.joinpath(*IMAGES, split).is_dir()]


def classes(root):
    mapping = root / "LOC_synset_mapping.txt"
    if mapping.is_file():
        return sorted(line.split()[0] for line in mapping.read_text().splitlines() if line.strip())
    return list_classes(root.joinpath(*IMAGES, "train"))


def val_labels(root):
    """{ImageId: wnid} from LOC_val_solution.csv."""
    solution = root / "LOC_val_solution.csv"
    if not solution.is_file():
        raise DatasetError(f"{solution}: no such file; expected Kaggle's validation labels beside ILSVRC/")
    with open(solution, newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows or not {"ImageId", "PredictionString"} <= set(rows[0]):
        raise DatasetError(f"{solution}: expected the columns ImageId,PredictionString")
    return {row["ImageId"]: row["PredictionString"].split()[0] for row in rows}


def open_split(root, split, classes):
    folder = root.joinpath(*IMAGES, split)
    if split == "train":
        return class_folders(folder, classes)
    wnids = val_labels(root)
    index = {name: label for label, name in enumerate(classes)}
    files = list_images(folder)
    missing = [path.name for path in files if path.stem not in wnids]
    if missing:
        raise DatasetError(f"{root / 'LOC_val_solution.csv'}: no label for {len(missing)} image(s) of {folder} "
                           f"({', '.join(missing[:3])}); expected a row for each")
    unknown = sorted({wnids[path.stem] for path in files} - set(index))
    if unknown:
        raise label_outside(root / "LOC_val_solution.csv", unknown[0], classes)
    return FileReader(folder, files, [index[wnids[path.stem]] for path in files])
