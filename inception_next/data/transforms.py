"""timm's transforms, as the loader workers apply them, and where ours differ: in speed only. timm's random resized
crop spent a quarter of a loader worker's time in PIL's resize; torch's antialiased uint8 kernel gives the same pixels
(at most two levels apart, 0.005 on average) in a third of the time, and the crop keeps timm's draws (its box, then its
interpolation), so a seed gives the same crop.

The workers stop where the device takes over (`device`, `data.device_from`): before RandAugment, or, when the device
decodes, after drawing each image's crop and flip (`DrawnCrop`), handing on the JPEG as it is (`EncodedSample`)."""

import random
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from timm.data import RandomResizedCropAndInterpolation, create_transform
from timm.data.auto_augment import RandAugment
from torch.nn.functional import interpolate
from torchvision.transforms import Compose, InterpolationMode, RandomHorizontalFlip

from .images import Encoded

TORCH_RESIZES = (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)  # antialiased as PIL's, in torch
DEVICE_CROP_INTERPOLATIONS = ("random", *(mode.value for mode in TORCH_RESIZES))  # "random": one of them


def resize_box(box, size, interpolation):
    """An (h, w, 3) uint8 box resized to `size` by torch's antialiased kernel, as a (3, *size) uint8 image: on the
    CPU its uint8 kernel, read in channels-last order; elsewhere (CUDA's kernel takes floats only) in float32."""
    pixels = box.contiguous()[None].permute(0, 3, 1, 2)
    if not pixels.is_cpu:
        return resize_in_float(pixels, size, interpolation)[0]
    return interpolate(pixels, size=size, mode=interpolation.value, antialias=True)[0]


def resize_in_float(pixels, size, interpolation):
    """(n, 3, h, w) uint8 pixels resized in float32 as PIL's uint8 kernel resizes: rows first, then columns, each
    pass rounded half up to 8 bits (in one float pass, bicubic's overshoot came out up to 5 levels off)."""
    rows = interpolate(pixels.float(), size=(pixels.shape[2], size[1]), mode=interpolation.value, antialias=True)
    rows = (rows + 0.5).floor().clamp(0, 255)
    resized = interpolate(rows, size=size, mode=interpolation.value, antialias=True)
    return (resized + 0.5).floor().clamp(0, 255).to(torch.uint8)


class FastResizedCrop:
    """timm's RandomResizedCropAndInterpolation (`crop`) of an RGB PIL image, resized by torch; timm's other
    interpolations (nearest, lanczos, ...) and other image modes go through timm's PIL path. Gives a PIL image, for
    timm's RandAugment."""

    def __init__(self, crop):
        self.crop = crop

    def draw(self, image):
        """timm's draws for `image` (a PIL image, decoded or only opened): the box (top, left, height, width), then
        the interpolation."""
        crop = self.crop
        box = crop.get_params(image, crop.scale, crop.ratio)
        interpolation = random.choice(crop.interpolation) if isinstance(crop.interpolation, (tuple, list)) \
            else crop.interpolation
        return box, interpolation

    def resize(self, image, box, interpolation):
        top, left, height, width = box
        size = tuple(self.crop.size)
        if image.mode != "RGB" or interpolation not in TORCH_RESIZES:
            return F.resized_crop(image, top, left, height, width, list(size), interpolation)
        # PIL copies the box alone, which torch reads in its rows' order; PIL takes the result's rows without a copy
        pixels = torch.from_numpy(np.array(image.crop((left, top, left + width, top + height))))
        return Image.fromarray(resize_box(pixels, size, interpolation).permute(1, 2, 0).numpy())

    def __call__(self, image):
        return self.resize(image, *self.draw(image))

    def __repr__(self):
        return f"{type(self).__name__}({self.crop!r})"


def with_fast_crop(transform):
    """timm's composed training transform, its random resized crop resized by torch (see FastResizedCrop)."""
    return Compose([FastResizedCrop(t) if isinstance(t, RandomResizedCropAndInterpolation) else t
                    for t in transform.transforms])


@dataclass(frozen=True)
class CropDraw:
    """The crop and flip a worker drew for an image the device decodes: timm's box, its interpolation, the flip."""
    top: int
    left: int
    height: int
    width: int
    interpolation: InterpolationMode
    flipped: bool


@dataclass
class EncodedSample:
    """A training image on its way to the device: its JPEG's bytes and the drawn `crop`; or, for an image the worker
    decoded itself (not a whole colour or grey JPEG, see `images.peek`), its pixels already cropped and flipped, as
    the workers' path gives them (`crop` None). `name` is the image's, for an error."""
    payload: torch.Tensor
    crop: CropDraw | None
    name: str | None


class DrawnCrop:
    """In a loader worker, when the device decodes: the draws of the crop (a FastResizedCrop) and of the flip (a
    RandomHorizontalFlip, or None), in their order, from the generators they use, as an `EncodedSample`. An image
    that the worker decoded (`images.peek`) is cropped and flipped here, as the workers' path does."""

    def __init__(self, crop, flip):
        self.crop, self.flip = crop, flip

    def __call__(self, image):
        box, interpolation = self.crop.draw(image.header if isinstance(image, Encoded) else image)
        flipped = self.flip is not None and bool(torch.rand(1) < self.flip.p)
        if isinstance(image, Encoded):
            payload = torch.frombuffer(bytearray(image.data), dtype=torch.uint8)
            return EncodedSample(payload, CropDraw(*box, interpolation, flipped), image.name)
        pixels = self.crop.resize(image, box, interpolation)
        return EncodedSample(F.pil_to_tensor(F.hflip(pixels) if flipped else pixels), None, None)

    def __repr__(self):
        return f"{type(self).__name__}({self.crop!r}, {self.flip!r})"


def timm_training_transform(img_size, scale, hflip, color_jitter, auto_augment, interpolation):
    """timm's training transform up to uint8 pixels, as with timm's prefetcher: crop, flip, RandAugment."""
    return create_transform(img_size, is_training=True, scale=tuple(scale), hflip=hflip, color_jitter=color_jitter,
                            auto_augment=auto_augment, interpolation=interpolation, use_prefetcher=True)


def randaugment_of(transform):
    """The RandAugment step of timm's composed training transform."""
    randaugment, = [t for t in transform.transforms if isinstance(t, RandAugment)]
    return randaugment


def workers_transform(transform, device_from):
    """The part of timm's training transform the loader workers apply when the device starts at `device_from` (see
    `device`): all of it, without RandAugment, or only its draws (`DrawnCrop`); the crop resized by torch."""
    transform = with_fast_crop(transform)
    if device_from == "normalize":
        return transform
    transform = Compose([t for t in transform.transforms if not isinstance(t, RandAugment)])
    if device_from == "randaugment":
        return transform
    crop, = [t for t in transform.transforms if isinstance(t, FastResizedCrop)]
    flips = [t for t in transform.transforms if isinstance(t, RandomHorizontalFlip)]
    return DrawnCrop(crop, flips[0] if flips else None)


def evaluation_transform(img_size, crop_pct, interpolation):
    """timm's evaluation transform up to uint8 pixels: resize to img_size / crop_pct, centre crop."""
    return create_transform(img_size, is_training=False, interpolation=interpolation, crop_pct=crop_pct,
                            use_prefetcher=True)
