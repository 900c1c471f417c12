import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from inception_next.data import (
    DatasetError,
    ImageNetDataModule,
    LabelledImages,
    UnreadableImageError,
    imagenet_class_names,
    load_rgb,
)
from inception_next.data import demo as demo_data
from inception_next.data.readers import folders
from inception_next.models.factory import preprocessing


def copy_dataset(source, destination):
    shutil.copytree(source, destination)
    return destination


def test_classes_and_names_come_from_the_folders(tiny_dataset):
    data = ImageNetDataModule(root=str(tiny_dataset))
    assert data.classes == ["circle", "square", "triangle"]
    assert data.num_classes == 3
    assert data.class_names == ["circle", "square", "triangle"]


def test_imagenet_folders_get_human_readable_names():
    assert imagenet_class_names(["n01440764", "n01443537"]) == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    assert imagenet_class_names(["n01440764", "cats"]) == ["n01440764", "cats"]


def test_transforms_follow_the_paper():
    data = ImageNetDataModule(img_size=224)
    train = repr(data.train_transform())
    assert "RandomResizedCropAndInterpolation(size=(224, 224), scale=(0.08, 1.0)" in train
    assert "interpolation=bilinear bicubic" in train and "RandomHorizontalFlip(p=0.5)" in train  # random, per image
    assert "RandAugment(n=2" in train and "m=9, mstd=0.5" in train
    assert train.rstrip().endswith("MaybePILToTensor()\n)") and "Normalize" not in train  # uint8 to the device
    assert (data.hparams.reprob, data.hparams.remode) == (0.25, "pixel")  # erased there (test_augmentation)
    evaluation = repr(data.eval_transform())
    assert "Resize(size=256, interpolation=bicubic" in evaluation and "CenterCrop(size=(224, 224))" in evaluation
    at_384 = repr(ImageNetDataModule(**preprocessing("inception_next_base_384")).eval_transform())  # the variant's
    assert "Resize(size=384" in at_384 and "CenterCrop(size=(384, 384))" in at_384  # crop_pct 1.0


def test_randaugment_survives_its_strongest_posterize():
    from timm.data.auto_augment import AugmentOp

    strongest = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)  # keeps 0 bits: an all-black image
    image = strongest(Image.new("RGB", (8, 8), (200, 100, 50)))
    assert image.getpixel((0, 0)) == (0, 0, 0)


def test_loaders_batch_per_device_and_drop_the_last_training_batch(tiny_dataset):
    data = ImageNetDataModule(root=str(tiny_dataset), img_size=32, batch_size=5, num_workers=0)
    data.setup("fit")
    train, val = data.train_dataloader(), data.val_dataloader()
    assert train.drop_last and not val.drop_last
    assert [len(x) for x, _ in train] == [5] * 4  # 24 images: the last 4 are dropped
    assert sum(len(x) for x, _ in val) == 12
    images, labels = next(iter(val))
    assert images.shape == (5, 3, 32, 32) and labels.dtype == torch.int64


def test_demo_generation_is_deterministic(tmp_path):
    a = demo_data.generate(tmp_path / "a", classes=demo_data.CLASSES[:2], train_per_class=2, val_per_class=1)
    b = demo_data.generate(tmp_path / "b", classes=demo_data.CLASSES[:2], train_per_class=2, val_per_class=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*.JPEG"))
    assert len(files) == 6
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_demo_covers_every_class_with_distinct_images(tmp_path):
    root = demo_data.generate(tmp_path / "d", train_per_class=2, val_per_class=1)
    pixels = [np.asarray(Image.open(next((root / "train" / c).iterdir())), dtype=float) for c in demo_data.CLASSES]
    assert len(pixels) == 10 and all(p.std() > 10 for p in pixels)  # structure, not a flat colour


def test_demo_is_generated_once_and_reused(tmp_path, monkeypatch):
    calls = []
    real = demo_data.generate
    monkeypatch.setattr(demo_data, "SPEC", dict(demo_data.SPEC, train_per_class=1, val_per_class=1))
    monkeypatch.setattr(demo_data, "generate", lambda root, **kw: calls.append(root) or real(root, **kw))
    demo_data.ensure(tmp_path / "demo")
    demo_data.ensure(tmp_path / "demo")
    assert len(calls) == 1


def test_incomplete_demo_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_data, "SPEC", dict(demo_data.SPEC, train_per_class=1, val_per_class=1))
    root = tmp_path / "demo"
    (root / "train" / "circle").mkdir(parents=True)  # what a crash of some other writer could leave
    demo_data.ensure(root)
    assert (root / demo_data.COMPLETE_MARKER).is_file()
    assert len(list(root.rglob("*.JPEG"))) == 20


def test_interrupted_generation_leaves_nothing_that_passes_for_a_dataset(tmp_path, monkeypatch):
    drawn = []

    def draw_then_fail(label, rng, size):
        if len(drawn) == 5:
            raise KeyboardInterrupt
        drawn.append(label)
        return Image.new("RGB", (size, size))

    monkeypatch.setattr(demo_data, "draw_example", draw_then_fail)
    with pytest.raises(KeyboardInterrupt):
        demo_data.generate(tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("break_it, message", [
    (lambda root: shutil.rmtree(root), "data.root .*: no such folder; expected ImageNet as one of: .*demo.yaml"),
    (lambda root: shutil.rmtree(root / "val"), "no validation split in class folders"),
    (lambda root: shutil.rmtree(root / "train"), "no training split in class folders"),
    (lambda root: [shutil.rmtree(p) for p in (root / "train").iterdir()],
     r"train: 0 class folder\(s\) \[\]; expected at least 2"),
    (lambda root: [p.unlink() for p in (root / "train" / "square").iterdir()], "without images: square"),
    (lambda root: (root / "val" / "hexagon").mkdir(), "val: classes the model does not know: hexagon"),
])
def test_bad_layouts_get_one_clear_error_before_training(tiny_dataset, tmp_path, break_it, message):
    root = copy_dataset(tiny_dataset, tmp_path / "copy")
    break_it(root)
    data = ImageNetDataModule(root=str(root))
    with pytest.raises(DatasetError, match=message):
        data.num_classes
        data.setup("fit")


def test_too_few_images_for_one_batch_is_named(tiny_dataset):
    data = ImageNetDataModule(root=str(tiny_dataset), batch_size=64, num_workers=0)
    with pytest.raises(DatasetError, match="fewer than one batch of 64"):
        data.setup("fit")


def odd_images(folder):
    """The odd files of real folders, each of which must decode to RGB."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("L", (20, 20), 128).save(folder / "gray.JPEG")
    Image.new("CMYK", (20, 20), (0, 50, 100, 0)).save(folder / "cmyk.JPEG")
    palette = Image.new("P", (20, 20), 3)
    palette.info["transparency"] = 3
    palette.save(folder / "palette.png", transparency=3)
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(folder / "sixteen.png")
    Image.new("RGB", (20, 20), (1, 2, 3)).save(folder / "png_inside.JPEG", format="PNG")
    Image.new("RGBA", (20, 20), (1, 2, 3, 100)).save(folder / "rgba.png")
    return sorted(folder.iterdir())


def test_odd_images_are_converted_to_rgb(tmp_path):
    for path in odd_images(tmp_path / "odd"):
        image = load_rgb(path)
        assert image.mode == "RGB" and image.size == (20, 20), path.name
    sixteen = np.asarray(load_rgb(tmp_path / "odd" / "sixteen.png"))
    assert sixteen.max() == 40000 >> 8  # scaled, not clipped to white


def unreadable_files(folder):
    (folder / "empty.JPEG").write_bytes(b"")
    (folder / "text.JPEG").write_text("not an image")
    good = next(p for p in folder.iterdir() if p.name.endswith("0000.JPEG")).read_bytes()
    (folder / "truncated.JPEG").write_bytes(good[: len(good) // 3])
    return ["empty.JPEG", "text.JPEG", "truncated.JPEG"]


def test_unreadable_training_files_are_skipped_named_once_and_counted(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "copy")
    names = unreadable_files(root / "train" / "circle")
    data = ImageNetDataModule(root=str(root), img_size=32, batch_size=9, num_workers=0)
    data.setup("fit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two epochs: each file is named once, counted each time
            batches = [len(x) for x, _ in data.train_dataloader()]
            assert batches == [9, 9, 9]  # the 27 files all yield an image: full batches for Mixup
    messages = [str(w.message) for w in caught if "skipping" in str(w.message)]
    assert sorted(re.match(r"skipping (\S+): unreadable", m).group(1).split("/")[-1] for m in messages) == names
    assert data.unreadable_train_files == 6


def test_unreadable_files_are_counted_across_loader_workers(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "copy")
    unreadable_files(root / "train" / "square")
    data = ImageNetDataModule(root=str(root), img_size=32, batch_size=9, num_workers=2, persistent_workers=False)
    data.setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sum(len(x) for x, _ in data.train_dataloader()) == 27
    assert data.unreadable_train_files == 3


def test_validation_refuses_unreadable_files_before_training(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "copy")
    (root / "val" / "circle" / "empty.JPEG").write_bytes(b"")
    data = ImageNetDataModule(root=str(root), batch_size=4, num_workers=0)
    with pytest.raises(DatasetError, match=r"1 unreadable file.*biasing the metric.*empty.JPEG"):
        data.setup("fit")


def test_a_validation_file_that_fails_to_decode_is_named(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "copy")
    unreadable_files(root / "train" / "circle")
    dataset = LabelledImages(folders.class_folders(root / "train", ["circle", "square", "triangle"]))
    index = [p.name for p in dataset.reader.files].index("truncated.JPEG")
    with pytest.raises(UnreadableImageError, match="truncated.JPEG"):
        dataset[index]


def test_predict_yields_each_file_path_with_its_tensor(tmp_path):
    odd_images(tmp_path / "inbox" / "nested")
    data = ImageNetDataModule(img_size=32, batch_size=4, num_workers=0, predict_root=str(tmp_path / "inbox"))
    data.setup("predict")
    batches = list(data.predict_dataloader())
    paths = [p for _, batch_paths in batches for p in batch_paths]
    assert len(paths) == 6 and all(p.startswith(str(tmp_path / "inbox" / "nested")) for p in paths)
    assert batches[0][0].shape == (4, 3, 32, 32)


def test_missing_predict_folder_is_named(tmp_path):
    data = ImageNetDataModule(predict_root=str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match="data.predict_root .*absent: no such folder"):
        data.setup("predict")
