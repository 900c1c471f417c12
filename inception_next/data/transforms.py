"""Where our transforms differ from timm's: in speed only. timm's random resized crop spent a quarter of a loader
worker's time in PIL's resize; torch's antialiased uint8 kernel gives the same pixels (at most two levels apart,
0.005 on average) in a third of the time, and the crop keeps timm's draws (its box, then its interpolation), so a
seed gives the same crop.

With `data.decode_on: device` the workers only draw (`DrawnCrop`): the JPEG goes to the training device as it is,
and `crops_on_device` decodes, crops and flips the batch there with the same resize."""

import random

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from timm.data import RandomResizedCropAndInterpolation
from torch.nn.functional import interpolate
from torchvision.transforms import Compose, InterpolationMode

from .images import Encoded, decode_jpegs

TORCH_RESIZES = (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)  # antialiased as PIL's, in torch
CROPPED = -1  # a DrawnCrop sample's interpolation when the worker decoded, cropped and flipped it already


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


class DrawnCrop:
    """In a loader worker, for `data.decode_on: device`: the draws of the crop (a FastResizedCrop) and of the flip (a
    RandomHorizontalFlip, or None), in their order, from the generators they use, for an `Encoded` JPEG, which is
    passed on as it is: (its bytes as a uint8 tensor, the draws (top, left, height, width, interpolation, flipped),
    its name). An image that the worker decoded (`images.peek`) is cropped and flipped here, as the workers' path
    does, and passed on as pixels, its interpolation CROPPED."""

    def __init__(self, crop, flip):
        self.crop, self.flip = crop, flip

    def __call__(self, image):
        box, interpolation = self.crop.draw(image.header if isinstance(image, Encoded) else image)
        flipped = self.flip is not None and bool(torch.rand(1) < self.flip.p)
        if isinstance(image, Encoded):
            payload = torch.frombuffer(bytearray(image.data), dtype=torch.uint8)
            return payload, torch.tensor([*box, TORCH_RESIZES.index(interpolation), flipped]), image.name
        pixels = self.crop.resize(image, box, interpolation)
        pixels = F.pil_to_tensor(F.hflip(pixels) if flipped else pixels)
        return pixels.flatten(), torch.tensor([0, 0, *pixels.shape[1:], CROPPED, False]), None

    def __repr__(self):
        return f"{type(self).__name__}({self.crop!r}, {self.flip!r})"


def crops_on_device(payloads, draws, names, size, device):
    """A batch of DrawnCrop's samples as the workers' path gives it, on `device`: the JPEGs decoded there
    (`images.decode_jpegs`), each box resized by torch (as FastResizedCrop) and flipped where drawn. (n, 3, *size)
    uint8."""
    draws = draws.tolist()
    encoded = [i for i, drawn in enumerate(draws) if drawn[4] != CROPPED]
    decoded = dict(zip(encoded, decode_jpegs([payloads[i] for i in encoded], [names[i] for i in encoded], device)))
    images = []
    for i, (top, left, height, width, interpolation, flipped) in enumerate(draws):
        if interpolation == CROPPED:
            images.append(payloads[i].view(3, *size).to(device))
            continue
        box = decoded[i].permute(1, 2, 0)[top:top + height, left:left + width]
        image = resize_box(box, size, TORCH_RESIZES[interpolation])
        images.append(image.flip(-1) if flipped else image)
    return torch.stack(images)
