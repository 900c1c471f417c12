"""The same generated images in every layout ImageNet ships in, written here the way each source writes them (with
tarfile, scipy and pyarrow directly, not through the package's writers), so that the readers are tested against the
layouts and not against themselves. See ../shared/IMAGENET.md for the facts each layout follows."""

import csv
import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.io import savemat
from timm.data import ImageNetInfo

from inception_next.data import demo

ALL_WNIDS = ImageNetInfo().label_names()
DESCRIPTIONS = [ImageNetInfo().label_name_to_description(wnid) for wnid in ALL_WNIDS]
WNIDS = [ALL_WNIDS[i] for i in (0, 500, 999)]  # three classes, in sorted order; labels 0, 1, 2
TRAIN_PER_CLASS, VAL_PER_CLASS = 8, 4
LAYOUTS = ("folders", "archives", "kaggle", "parquet", "webdataset")


def encoded(image, format="JPEG"):
    buffer = io.BytesIO()
    image.save(buffer, format=format, quality=90)
    return buffer.getvalue()


def samples(seed=0):
    """{split: [(wnid, file name, encoded image)]}. Train files are <wnid>_<n>.JPEG, one of them a PNG and one a
    CMYK JPEG, as ImageNet ships; validation files are ILSVRC2012_val_<8 digits>.JPEG, numbered in shuffled order."""
    rng = random.Random(seed)
    train, val = [], []
    for label, wnid in enumerate(WNIDS):
        for n in range(TRAIN_PER_CLASS):
            image = demo.draw_example(label, rng, 40)
            data = encoded(image, "PNG") if (label, n) == (0, 1) else encoded(
                image.convert("CMYK") if (label, n) == (1, 2) else image)
            train.append((wnid, f"{wnid}_{1000 + n}.JPEG", data))
        val += [(wnid, encoded(demo.draw_example(label, rng, 40))) for _ in range(VAL_PER_CLASS)]
    rng.shuffle(val)
    return {"train": train, "val": [(wnid, f"ILSVRC2012_val_{k:08d}.JPEG", data)
                                    for k, (wnid, data) in enumerate(val, start=1)]}


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_folders(root, data):
    for split, items in data.items():
        for wnid, name, image in items:
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
            (root / split / wnid / name).write_bytes(image)
    return root


def devkit_ids(seed=1):
    """The devkit's ILSVRC2012_ID of each of the 1000 wnids: another order than the sorted one (id 1 is not
    n01440764), as in the real meta.mat."""
    ids = list(range(1, 1001))
    random.Random(seed).shuffle(ids)
    return dict(zip(ALL_WNIDS, ids))


def write_archives(root, data, devkit=True):
    """ILSVRC2012_img_train.tar (a tar per class), ILSVRC2012_img_val.tar (flat) and the devkit."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as outer:
        for wnid in WNIDS:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for _, name, image in (item for item in data["train"] if item[0] == wnid):
                    add(tar, name, image)
            add(outer, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as tar:
        for _, name, image in data["val"]:
            add(tar, name, image)
    if devkit:
        write_devkit(root, data)
    return root


def write_devkit(root, data):
    ids = devkit_ids()
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    info = ImageNetInfo()
    leaves = [(ids[w], w, info.label_name_to_description(w), "a leaf", 0, np.zeros(0), 0, 1300) for w in ALL_WNIDS]
    parents = [(1001, "n00001740", "entity", "a parent", 2, np.array([1, 2]), 18, 0),
               (1002, "n00002137", "abstraction", "a parent", 1, np.array([3]), 17, 0)]
    synsets = np.empty(len(leaves) + len(parents), dtype=[(field, object) for field in fields])
    for i, entry in enumerate(parents + leaves):
        synsets[i] = entry
    meta = io.BytesIO()
    savemat(meta, {"synsets": synsets})
    truth = "".join(f"{ids[wnid]}\n" for wnid, _, _ in data["val"]).encode()
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        add(tar, "ILSVRC2012_devkit_t12/COPYING", b"devkit")
        add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue())
        add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)


def write_kaggle(root, data):
    images = root / "ILSVRC" / "Data" / "CLS-LOC"
    for wnid, name, image in data["train"]:
        (images / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (images / "train" / wnid / name).write_bytes(image)
    (images / "val").mkdir(parents=True)
    (images / "test").mkdir()
    with open(root / "LOC_val_solution.csv", "w", newline="") as file:
        rows = csv.writer(file)
        rows.writerow(["ImageId", "PredictionString"])
        for wnid, name, image in data["val"]:
            (images / "val" / name).write_bytes(image)
            rows.writerow([Path(name).stem, f"{wnid} 10 12 30 35 {wnid} 2 4 20 22 "])  # two boxes, trailing space
    info = ImageNetInfo()
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {info.label_name_to_description(w)}\n"
                                                         for w in ALL_WNIDS))
    return root


def hf_schema(names):
    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    return pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64())],
                     metadata={"huggingface": json.dumps({"info": {"features": features}})})


def write_parquet(root, data, shards=None, row_group_size=5, seed=2):
    """data/train-0000k-of-0000n.parquet, data/validation-...: samples shuffled, as Hugging Face's are, labelled
    as imagenet-1k: indices into its 1000 ClassLabel names, ImageNet's descriptions in sorted-wnid order."""
    shards = shards or {"train": 2, "val": 1}
    (root / "data").mkdir(parents=True)
    for split, name in (("train", "train"), ("val", "validation")):
        items = list(data[split])
        random.Random(seed).shuffle(items)
        count = shards[split]
        for k in range(count):
            part = items[k::count]
            table = pa.table({"image": [{"bytes": image, "path": file} for _, file, image in part],
                              "label": [ALL_WNIDS.index(wnid) for wnid, _, _ in part]}, schema=hf_schema(DESCRIPTIONS))
            pq.write_table(table, root / "data" / f"{name}-{k:05d}-of-{count:05d}.parquet",
                           row_group_size=row_group_size)
    return root


def write_webdataset(root, data, shards=None, seed=3):
    """imagenet1k-train-000k.tar, imagenet1k-validation-000k.tar of <key>.jpg, <key>.cls (and some <key>.json),
    with timm's _info.json."""
    shards = shards or {"train": 2, "val": 1}
    root.mkdir(parents=True)
    info = {"name": "imagenet-1k", "splits": {}}
    for split, name in (("train", "train"), ("val", "validation")):
        items = list(data[split])
        random.Random(seed).shuffle(items)
        count, files, lengths = shards[split], [], []
        for k in range(count):
            part = items[k::count]
            files.append(f"imagenet1k-{name}-{k:04d}.tar")
            lengths.append(len(part))
            with tarfile.open(root / files[-1], "w") as tar:
                for i, (wnid, file, image) in enumerate(part):
                    key = Path(file).stem
                    add(tar, f"{key}.jpg", image)
                    add(tar, f"{key}.cls", str(ALL_WNIDS.index(wnid)).encode())  # ImageNet-1K's label
                    if i % 2:
                        add(tar, f"{key}.json", json.dumps({"filename": file}).encode())
        info["splits"][name] = {"name": name, "num_samples": sum(lengths), "filenames": files,
                                "shard_lengths": lengths}
    (root / "_info.json").write_text(json.dumps(info))
    return root


WRITERS = {"folders": write_folders, "archives": write_archives, "kaggle": write_kaggle, "parquet": write_parquet,
           "webdataset": write_webdataset}


def write_all(folder, seed=0):
    data = samples(seed)
    return {layout: WRITERS[layout](Path(folder) / layout, data) for layout in LAYOUTS}
