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
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data import auto_augment as ops
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import InterpolationMode

from inception_next.data import ImageNetDataModule, LabelledImages, ResumableSampler, demo, seeded_randomness
from inception_next.data.images import decode, load_rgb
from inception_next.data.randaugment import GEOMETRIC, POINTWISE, moving_axes, warp
from inception_next.data.readers import folders
from inception_next.data.transforms import TORCH_RESIZES, FastResizedCrop, resize_in_float

DRAWS = 3000
PIL_RESAMPLE = {InterpolationMode.BILINEAR: Image.BILINEAR, InterpolationMode.BICUBIC: Image.BICUBIC}


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
    ours = data.device_work.erase(torch.zeros(DRAWS, 3, 24, 32), seeds)
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
    again = data.device_work.erase(torch.zeros(4, 3, 24, 32), seeds[:4])
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


# -- RandAugment on the device (data.device_from: randaugment) -------------------------------------------------------
def device_op(timm_op, images, levels, resample, fill=(124, 116, 104)):
    """One of timm's ops on a batch, through the device version, each image with the same `levels`."""
    if timm_op in GEOMETRIC:
        matrices = [GEOMETRIC[timm_op](levels[0], *images.shape[:-3:-1])] * len(images)
        return warp(images, torch.tensor(matrices, dtype=torch.float64), resample,
                    torch.tensor(fill, dtype=torch.uint8).view(1, 3, 1, 1), moving_axes(matrices))
    return POINTWISE[timm_op](images, torch.tensor([levels or (0,)] * len(images), dtype=torch.float64))


def as_batch(images):
    return torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images])


@pytest.fixture(scope="module")
def training_crops(photographs):
    crop = ImageNetDataModule(img_size=224).train_transform().transforms[0]
    random.seed(0)
    return [crop(image) for image in photographs[:8]]


OP_LEVELS = [(ops.auto_contrast, ()), (ops.equalize, ()), (ops.invert, ()), (ops.posterize, (0,)),
             (ops.posterize, (3,)), (ops.posterize, (8,)), (ops.solarize, (0,)), (ops.solarize, (137,)),
             (ops.solarize, (256,)), (ops.solarize_add, (0,)), (ops.solarize_add, (110,)), (ops.color, (0.1,)),
             (ops.color, (1.9,)), (ops.contrast, (0.3,)), (ops.contrast, (1.7,)), (ops.brightness, (0.2,)),
             (ops.brightness, (1.8,)), (ops.sharpness, (0.1,)), (ops.sharpness, (1.9,)), (ops.rotate, (0.0,)),
             (ops.rotate, (-29.3,)), (ops.rotate, (11.0,)), (ops.shear_x, (0.3,)), (ops.shear_y, (-0.21,)),
             (ops.translate_x_rel, (0.45,)), (ops.translate_y_rel, (-0.33,))]


@pytest.mark.parametrize("timm_op, levels", OP_LEVELS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_randaugment_op_on_the_device_gives_timms_pixels(timm_op, levels, training_crops):
    """PIL's own arithmetic (its lookup tables, blend, filters and affine sampling), so the same pixels: at most one
    level apart anywhere, which leaves room for another Pillow's float rounding, and identical almost everywhere."""
    resamples = (Image.BILINEAR, Image.BICUBIC) if timm_op in GEOMETRIC else (None,)
    for resample in resamples:
        kwargs = dict(resample=resample, fillcolor=(124, 116, 104)) if resample else {}
        theirs = as_batch([timm_op(image, *levels, **kwargs) for image in training_crops]).int()
        ours = device_op(timm_op, as_batch(training_crops), levels, resample).int()
        assert (ours - theirs).abs().max() <= 1 and (ours != theirs).float().mean() < 1e-3, (timm_op, resample)


def test_randaugment_on_the_batch_is_timms_ops_drawn_by_timm(training_crops):
    """Each image gets the ops its seed draws, in order: replayed with timm's PIL ops, the same pixels."""
    data = ImageNetDataModule(img_size=224, device_from="randaugment")
    assert "RandAugment" not in repr(data.train_transform())  # the workers leave it to the device
    randaugment = data.device_work.randaugment
    seeds = [(5 * 1_000_003 + 1) * 10_000_019 + index for index in range(len(training_crops) * 3)]
    images = training_crops * 3
    states = random.getstate(), np.random.get_state()[1].copy()
    ours = randaugment(as_batch(images), seeds).int()
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    replayed = []
    for image, seed in zip(images, seeds):
        for op in randaugment.draw(seed):
            kwargs = dict(resample=op.resample, fillcolor=op.fill) if op.resample else {}
            image = op.timm_op(image, *op.levels, **kwargs)
        replayed.append(image)
    theirs = as_batch(replayed).int()
    assert (ours - theirs).abs().max() <= 1 and (ours != theirs).float().mean() < 1e-3
    assert (ours != as_batch(images).int()).any(dim=(1, 2, 3)).float().mean() > 0.5  # most images were changed


@pytest.mark.parametrize("auto_augment", ["rand-m9-mstd0.5-inc1", "rand-m5-inc1-mstd101"])  # tiny's, atto's
def test_randaugment_draws_on_the_device_are_timms_in_distribution(auto_augment, tiny_dataset):
    data = ImageNetDataModule(img_size=32, auto_augment=auto_augment, device_from="randaugment")
    randaugment = data.device_work.randaugment
    our_ops, interpolations = defaultdict(list), defaultdict(int)
    for seed in range(DRAWS // 2):  # two layers: about DRAWS ops
        for op in randaugment.draw(seed):
            our_ops[op.name].append(op.levels)
            if op.resample is not None:
                interpolations[op.resample] += 1

    reference = create_transform(32, is_training=True, auto_augment=auto_augment, interpolation="random",
                                 color_jitter=0.4, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    _, their_ops = recorded(reference)
    image = Image.new("RGB", (32, 32), (90, 120, 150))
    random.seed(0)
    torch.manual_seed(0)
    for _ in range(DRAWS // 2):
        reference(image)

    assert_same_frequencies({name: len(a) for name, a in our_ops.items()},
                            {name: len(a) for name, a in their_ops.items()}, "RandAugment op")
    for name in set(our_ops) & set(their_ops):
        if our_ops[name] and our_ops[name][0]:
            assert_same_distribution([a[0] for a in our_ops[name]], [a[0] for a in their_ops[name]], name)
    assert_same_frequencies({"bilinear": interpolations[Image.BILINEAR]},
                            {"bilinear": sum(interpolations.values()) / 2}, "affine ops' interpolation")


# -- Decoding on the device (data.device_from: decode) ----------------------------------------------------------------
def test_decoding_on_the_device_gives_the_batches_of_decoding_in_the_workers(tmp_path):
    """The workers draw each crop and flip under the sample's seed and pass the JPEG on; decoded (PIL, on the CPU),
    cropped and resized on the device, the batches are the workers' path's, pixel for pixel. Images nvJPEG does not
    take (CMYK, a PNG named .JPEG) are cropped in the workers; a cut JPEG is skipped in both."""
    root = demo.write_photographs(tmp_path / "photos", 14)
    odd = root / "train" / "class0"
    Image.open(odd / "00000.JPEG").convert("L").save(odd / "grey.JPEG")
    Image.open(odd / "00002.JPEG").convert("CMYK").save(odd / "cmyk.JPEG")
    Image.open(odd / "00004.JPEG").save(odd / "png_inside.JPEG", format="PNG")
    (odd / "cut.JPEG").write_bytes((odd / "00006.JPEG").read_bytes()[:20000])
    settings = dict(root=str(root), img_size=64, batch_size=6, num_workers=2, seed=3)
    workers, device = (ImageNetDataModule(device_from=start, **settings) for start in ("randaugment", "decode"))
    batches = []
    for data in (workers, device):
        data.setup("fit")
        batches.append(list(data.train_dataloader()))
        assert data.unreadable_train_files == 1  # the cut JPEG, named in a warning by the worker that met it
    sent = []  # (name, payload length): what the workers passed on
    for (images, labels), encoded in zip(*batches):
        sent += [(name, payload.numel()) for payload, name in zip(encoded.payloads, encoded.names)]
        decoded, decoded_labels = device.device_work.decode(encoded, torch.device("cpu"))
        assert torch.equal(decoded, images) and torch.equal(decoded_labels, labels)
    assert len(sent) == 18 and [length for name, length in sent if name is None] == [3 * 64 * 64] * 2
    encoded = {name.rsplit("/", 1)[-1]: length for name, length in sent if name is not None}
    assert encoded["grey.JPEG"] == len((odd / "grey.JPEG").read_bytes())
    assert not {"cmyk.JPEG", "png_inside.JPEG", "cut.JPEG"} & set(encoded)


def test_the_gpus_float_resize_gives_pils_pixels_within_a_level(photographs):
    """CUDA's antialiased resize takes floats only: the device path's crops there are resized in float32, a pass
    per axis, each rounded half up to 8 bits as PIL's fixed point rounds: within one level of PIL's resize (timm's
    crop), where the CPU's uint8 kernel, which the workers use, is within two."""
    random.seed(0)
    for image in photographs[:2]:
        pixels = torch.from_numpy(np.array(image))
        for interpolation in TORCH_RESIZES:
            for size in ((224, 224), (96, 96), (400, 400)):  # down and up
                top, left = random.randrange(50), random.randrange(50)
                box = pixels[top:top + 300, left:left + 260]
                in_float = resize_in_float(box.permute(2, 0, 1)[None], size, interpolation)[0].int()
                pil = Image.fromarray(box.numpy()).resize(size[::-1], PIL_RESAMPLE[interpolation])
                difference = (in_float - torch.from_numpy(np.array(pil)).permute(2, 0, 1).int()).abs()
                assert difference.max() <= 1 and difference.float().mean() < 0.05, (interpolation, size)
