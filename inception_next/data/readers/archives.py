"""The official ILSVRC2012 archives from image-net.org, read by `prepare` (tars are read front to back):

    ILSVRC2012_img_train.tar         1000 tars <wnid>.tar, each of <wnid>_<n>.JPEG
    ILSVRC2012_img_val.tar           ILSVRC2012_val_00000001.JPEG ... in one flat folder
    ILSVRC2012_devkit_t12.tar.gz     data/meta.mat (the synsets) and data/ILSVRC2012_validation_ground_truth.txt

The ground truth lists each validation image's ILSVRC2012_ID (1..1000), the devkit's own class order: meta.mat maps
each id to its wnid, and the label is the wnid's index in sorted order, as for every other source.
"""

import io
import re
import tarfile

from timm.data import ImageNetInfo

from ..images import DatasetError

NAME = "archives"
LAYOUT = "the official archives (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz)"
TRAIN, VAL, DEVKIT = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"


def detect(root):
    return any((root / name).is_file() for name in (TRAIN, VAL, DEVKIT))


def splits(root):
    return [split for split, name in (("train", TRAIN), ("val", VAL)) if (root / name).is_file()]


def classes(root):
    return ImageNetInfo().label_names()


def _open(path, mode="r|*"):
    try:
        return tarfile.open(path, mode)
    except (tarfile.TarError, OSError) as error:
        raise DatasetError(f"{path}: not a readable archive ({error}); expected the file image-net.org ships") from None


def devkit_validation_wnids(root):
    """The wnid of each validation image, in file-number order, from the devkit."""
    from scipy.io import loadmat

    path = root / DEVKIT
    if not path.is_file():
        raise DatasetError(f"{root}: no {DEVKIT}; expected the devkit beside {VAL}: its ground truth labels the "
                           "validation images")
    members = {}
    with _open(path, "r:*") as tar:
        for member in tar:
            for name in ("meta.mat", "ILSVRC2012_validation_ground_truth.txt"):
                if member.name.endswith(f"data/{name}"):
                    members[name] = tar.extractfile(member).read()
    if len(members) < 2:
        raise DatasetError(f"{path}: no data/meta.mat or data/ILSVRC2012_validation_ground_truth.txt; expected "
                           "the ILSVRC2012 devkit (t12)")
    synsets = loadmat(io.BytesIO(members["meta.mat"]), squeeze_me=True)["synsets"]
    wnid_of_id = {int(entry["ILSVRC2012_ID"]): str(entry["WNID"]) for entry in synsets if entry["num_children"] == 0}
    return [wnid_of_id[int(line)] for line in members["ILSVRC2012_validation_ground_truth.txt"].decode().split()]


def _checked(path, tar):
    """(member, its bytes) for each file in the archive, one clear line if it ends early."""
    try:
        for member in tar:
            if member.isfile():
                yield member, tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DatasetError(f"{path}: truncated or damaged ({error}); expected the whole archive") from None


def samples(root, split):
    """(wnid, file name, encoded image) for each image of `split`, in archive order."""
    if split == "train":
        path = root / TRAIN
        with _open(path) as outer:
            for inner, data in _checked(path, outer):
                if inner.name.endswith(".tar"):
                    wnid = inner.name.rsplit("/", 1)[-1][:-len(".tar")]
                    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as images:
                        for member, image in _checked(f"{path}:{inner.name}", images):
                            yield wnid, member.name.rsplit("/", 1)[-1], image
    else:
        wnids = devkit_validation_wnids(root)
        path = root / VAL
        with _open(path) as tar:
            for member, image in _checked(path, tar):
                number = re.search(r"(\d+)\.\w+$", member.name)
                if number is None:
                    continue
                if not 1 <= int(number.group(1)) <= len(wnids):
                    raise DatasetError(f"{path}:{member.name}: not in the devkit's ground truth ({len(wnids)} "
                                       "images); expected ILSVRC2012_val_<1..50000>.JPEG")
                yield wnids[int(number.group(1)) - 1], member.name.rsplit("/", 1)[-1], image
