"""Where our transforms differ from timm's: in speed only. timm's random resized crop spent a quarter of a loader
worker's time in PIL's resize; torch's antialiased uint8 kernel gives the same pixels (at most two levels apart,
0.005 on average) in a third of the time, and the crop keeps timm's draws (its box, then its interpolation), so a
seed gives the same crop."""

import random

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from timm.data import RandomResizedCropAndInterpolation
from torch.nn.functional import interpolate
from torchvision.transforms import Compose, InterpolationMode

TORCH_RESIZES = (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)  # antialiased as PIL's, in torch


class FastResizedCrop:
    """timm's RandomResizedCropAndInterpolation (`crop`) of an RGB PIL image, resized by torch; timm's other
    interpolations (nearest, lanczos, ...) and other image modes go through timm's PIL path. Gives a PIL image, for
    timm's RandAugment."""

    def __init__(self, crop):
        self.crop = crop

    def __call__(self, image):
        crop = self.crop
        top, left, height, width = crop.get_params(image, crop.scale, crop.ratio)
        interpolation = random.choice(crop.interpolation) if isinstance(crop.interpolation, (tuple, list)) \
            else crop.interpolation
        if image.mode != "RGB" or interpolation not in TORCH_RESIZES:
            return F.resized_crop(image, top, left, height, width, list(crop.size), interpolation)
        # The box cut by PIL (copying the box alone), its rows viewed as an NCHW tensor in channels-last order:
        # torch's fast uint8 kernel reads and writes that order, and PIL takes its output rows without a copy.
        box = np.array(image.crop((left, top, left + width, top + height)))
        pixels = interpolate(torch.from_numpy(box)[None].permute(0, 3, 1, 2), size=tuple(crop.size),
                             mode=interpolation.value, antialias=True)
        return Image.fromarray(pixels[0].permute(1, 2, 0).numpy())

    def __repr__(self):
        return f"{type(self).__name__}({self.crop!r})"


def with_fast_crop(transform):
    """timm's composed training transform, its random resized crop resized by torch (see FastResizedCrop)."""
    return Compose([FastResizedCrop(t) if isinstance(t, RandomResizedCropAndInterpolation) else t
                    for t in transform.transforms])
