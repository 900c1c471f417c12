"""The training augmentation is timm's in distribution, though it runs in two places (timm's transform per image
in the loader workers under each sample's seed, its crop resized by torch; timm's RandomErasing per batch on the
device), and the evaluation input is timm's evaluation transform's. Each distribution is compared with timm's own,
drawn as timm draws it (one generator per process, seeded once), by a two-sample Kolmogorov-Smirnov test at a 0.1%
false alarm rate."""

import random
from collections import defaultdict

import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.random_erasing import RandomErasing

from inception_next.data import ImageNetDataModule, LabelledImages, ResumableSampler, demo, seeded_randomness
from inception_next.data.images import decode, load_rgb
from inception_next.data.readers import folders
from inception_next.data.transforms import FastResizedCrop

DRAWS = 3000


def ks_statistic(ours, theirs):
    ours, theirs = np.sort(ours), np.sort(theirs)
    grid = np.concatenate([ours, theirs])
    return np.abs(np.searchsorted(ours, grid, side="right") / len(ours)
                  - np.searchsorted(theirs, grid, side="right") / len(theirs)).max()


def assert_same_distribution(ours, theirs, what):
    """Two-sample KS at alpha = 0.001 (the critical value for large samples)."""
    critical = 1.949 * np.sqrt((len(ours) + len(theirs)) / (len(ours) * len(theirs)))
    statistic = ks_statistic(np.asarray(ours, float), np.asarray(theirs, float))
    assert statistic < critical, f"{what}: KS {statistic:.3f} >= {critical:.3f} ({len(ours)} vs {len(theirs)} draws)"


def assert_same_frequencies(ours, theirs, what):
    """Counts of each outcome within 4.5 standard deviations of the difference of two binomial counts."""
    for key in set(ours) | set(theirs):
        a, b = ours.get(key, 0), theirs.get(key, 0)
        assert abs(a - b) <= 4.5 * np.sqrt(a + b + 1), f"{what} {key}: {a} vs {b}"


def recorded(transform):
    """`transform` (timm's training transform) noting each crop's area fraction and aspect ratio, and each
    RandAugment op applied with its arguments."""
    crops, ops = [], defaultdict(list)
    crop, randaugment = transform.transforms[0], transform.transforms[2]
    crop = crop.crop if isinstance(crop, FastResizedCrop) else crop  # ours: timm's, resized by torch
    draw_crop = crop.get_params

    def get_params(image, scale, ratio):
        top, left, height, width = draw_crop(image, scale, ratio)
        crops.append((height * width / (image.size[0] * image.size[1]), width / height))
        return top, left, height, width

    crop.get_params = get_params
    for op in randaugment.ops:
        def noted(image, *args, name=op.name, apply=op.aug_fn, **kwargs):
            ops[name].append(args)
            return apply(image, *args, **kwargs)
        op.aug_fn = noted
    return crops, ops


@pytest.mark.parametrize("auto_augment", ["rand-m9-mstd0.5-inc1", "rand-m5-inc1-mstd101"])  # tiny's, atto's
def test_crops_and_randaugment_are_timms_in_distribution(auto_augment, tiny_dataset):
    data = ImageNetDataModule(root=str(tiny_dataset), img_size=32, auto_augment=auto_augment)
    dataset = LabelledImages(folders.class_folders(tiny_dataset / "train", data.classes), data.train_transform())
    our_crops, our_ops = recorded(dataset.transform)
    sampler, epoch = ResumableSampler(len(dataset), seed=3), 0
    while len(our_crops) < DRAWS:  # the seeds training gives the samples, epoch after epoch
        sampler.set_epoch(epoch)
        for pair in sampler:
            dataset[pair]
        epoch += 1

    reference = create_transform(32, is_training=True, auto_augment=auto_augment, interpolation="random",
                                 color_jitter=0.4, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    their_crops, their_ops = recorded(reference)
    images = [decode(dataset.reader.read(i), "") for i in range(len(dataset.reader))]
    random.seed(0)
    torch.manual_seed(0)
    for i in range(len(our_crops)):
        reference(images[i % len(images)])

    for column, what in enumerate(("crop area fraction", "crop aspect ratio")):
        assert_same_distribution([c[column] for c in our_crops], [c[column] for c in their_crops], what)
    assert_same_frequencies({name: len(a) for name, a in our_ops.items()},
                            {name: len(a) for name, a in their_ops.items()}, "RandAugment op")
    for name in set(our_ops) & set(their_ops):
        if our_ops[name] and our_ops[name][0]:  # the op's magnitude, as its argument (Equalize takes none)
            assert_same_distribution([a[0] for a in our_ops[name]], [a[0] for a in their_ops[name]], name)


@pytest.fixture(scope="module")
def photographs(tmp_path_factory):
    root = demo.write_photographs(tmp_path_factory.mktemp("photos"), 12)
    return [load_rgb(path) for path in sorted(root.rglob("*.JPEG"))]


def test_the_training_input_is_timms_pixels_under_the_same_seed(photographs):
    """Our crop keeps timm's draws, so a seed gives timm's crop; torch's resize moves pixels by two levels at most.
    RandAugment after it draws the same ops, whose thresholds (solarize, posterize) may turn a level's difference
    into more, in a few pixels."""
    data = ImageNetDataModule(img_size=224)
    ours = data.train_transform()
    theirs = create_transform(224, is_training=True, auto_augment=data.hparams.auto_augment, interpolation="random",
                              color_jitter=0.4, use_prefetcher=True)
    for seed, image in enumerate(photographs * 4):
        with seeded_randomness(seed):
            our_crop = np.asarray(ours.transforms[0](image), dtype=int)
        with seeded_randomness(seed):
            their_crop = np.asarray(theirs.transforms[0](image), dtype=int)
        assert our_crop.shape == their_crop.shape == (224, 224, 3)
        assert np.abs(our_crop - their_crop).max() <= 2 and np.abs(our_crop - their_crop).mean() < 0.05
        with seeded_randomness(seed):
            our_input = ours(image).numpy().astype(int)
        with seeded_randomness(seed):
            their_input = theirs(image).numpy().astype(int)
        difference = np.abs(our_input - their_input)
        assert difference.mean() < 0.1 and (difference > 1).mean() < 0.01


def changed(images):
    """Per image: whether any pixel was erased, and the erased fraction of its area."""
    erased = (images != 0).any(dim=1).float().mean(dim=(1, 2))
    return (erased > 0).numpy(), erased[erased > 0].numpy()


def test_random_erasing_on_the_batch_is_timms_per_image_erasing_in_distribution():
    data = ImageNetDataModule(reprob=0.25, remode="pixel")
    seeds = [(7 * 1_000_003 + 2) * 10_000_019 + index for index in range(DRAWS)]
    states = random.getstate(), torch.get_rng_state()
    ours = data.erase(torch.zeros(DRAWS, 3, 24, 32), seeds)
    assert random.getstate() == states[0] and torch.equal(torch.get_rng_state(), states[1])  # Mixup's draws stay
    torch.manual_seed(0)
    random.seed(0)
    erasing = RandomErasing(0.25, mode="pixel", device="cpu")  # as timm's transform applies it, image by image
    theirs = torch.stack([erasing(torch.zeros(3, 24, 32)) for _ in range(DRAWS)])
    (our_hits, our_areas), (their_hits, their_areas) = changed(ours), changed(theirs)
    assert_same_frequencies({"erased": our_hits.sum(), "kept": (~our_hits).sum()},
                            {"erased": their_hits.sum(), "kept": (~their_hits).sum()}, "images")
    assert abs(our_hits.mean() - 0.25) < 4.5 * np.sqrt(0.25 * 0.75 / DRAWS)
    assert_same_distribution(our_areas, their_areas, "erased area fraction")
    again = data.erase(torch.zeros(4, 3, 24, 32), seeds[:4])
    assert torch.equal(again, ours[:4])  # each image's erasing depends on its sample's seed alone


def test_the_evaluation_input_is_timms_evaluation_transforms(photographs):
    data = ImageNetDataModule(root=None, img_size=224)
    timm_eval = create_transform(224, is_training=False, interpolation="bicubic", crop_pct=0.875,
                                 mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    for image in photographs:
        ours = data.normalize(data.eval_transform()(image)[None])[0]
        assert image.size[0] >= 400 and ours.shape == (3, 224, 224)
        assert ((ours - timm_eval(image)).abs() * std).max() < 1 / 255  # in pixel units
