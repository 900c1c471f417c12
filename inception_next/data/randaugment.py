"""timm's RandAugment on a batch of uint8 images, on the device (`data.device_from: randaugment`), for machines short of
CPU cores: the loader workers then stop after the crop and flip.

Each image's ops, magnitudes and interpolations are drawn by timm's own RandAugment objects under the image's seed
(timm's ops are swapped for notes of what they were asked to do), so the draws are timm's. The batch then goes
through each op once per layer, on the images that drew it. The ops compute what PIL computes for timm's PIL ops:
lookup tables for the point ops, PIL's blend (float32, truncated) for the enhancers, PIL's affine sampling (pixel
centres, clamped taps, its bilinear and its a = -1 bicubic, truncated, timm's fill colour outside).
"""

import copy
import math
import random
from typing import Callable, NamedTuple

import torch
from PIL import Image
from timm.data import auto_augment as timm_ops

from .images import DatasetError
from .seeding import kept_randomness, reseed, stream_seed


# -- point ops ----------------------------------------------------------------------------------------------------
def look_up(images, tables):
    """images (n, 3, H, W) uint8 through per-image, per-channel tables (n, 3, 256)."""
    n, c, h, w = images.shape
    indices = images.reshape(n, c, h * w).long()
    return tables.clamp(0, 255).to(torch.uint8).gather(2, indices).reshape(n, c, h, w)


def invert(images, levels):
    return 255 - images


def posterize(images, levels):
    bits = levels[:, 0].long().clamp(max=8)  # timm leaves an image with 8 bits to keep as it is
    masks = (0xFF << (8 - bits)) & 0xFF
    return images & masks.to(torch.uint8).view(-1, 1, 1, 1)


def solarize(images, levels):
    thresholds = levels[:, 0].view(-1, 1, 1, 1)
    return torch.where(images < thresholds, images, 255 - images)


def solarize_add(images, levels, threshold=128):
    added = (images.short() + levels[:, 0].short().view(-1, 1, 1, 1)).clamp(max=255).to(torch.uint8)
    return torch.where(images < threshold, added, images)


def auto_contrast(images, levels):
    """PIL's ImageOps.autocontrast: each channel's range stretched to 0-255, truncated."""
    low = images.amin(dim=(2, 3)).double()[..., None]
    high = images.amax(dim=(2, 3)).double()[..., None]
    span = (high - low).clamp(min=1)
    scale = torch.full_like(span, 255.0) / span  # a true division: torch's 255.0 / span multiplies by 1 / span
    values = torch.arange(256, device=images.device, dtype=torch.float64)
    stretched = (values * scale - low * scale).trunc()
    return look_up(images, torch.where(high > low, stretched, values).long())


def equalize(images, levels):
    """PIL's ImageOps.equalize: each channel's histogram spread over 0-255 in steps of (pixels - the top
    level's count) // 255."""
    n, c, h, w = images.shape
    flat = images.reshape(n * c, h * w).long()
    counts = torch.zeros(n * c, 256, dtype=torch.long, device=images.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    top_count = counts.gather(1, flat.amax(dim=1, keepdim=True))
    step = (h * w - top_count) // 255
    below = counts.cumsum(dim=1) - counts
    tables = (step // 2 + below) // step.clamp(min=1)
    plain = ((counts > 0).sum(dim=1, keepdim=True) <= 1) | (step == 0)
    identity = torch.arange(256, device=images.device).expand(n * c, 256)
    return look_up(images, torch.where(plain, identity, tables).view(n, c, 256))


# -- PIL's enhancers: a blend of the image with a degenerate version of it ----------------------------------------
def blend(degenerate, images, factors):
    """PIL's Image.blend(degenerate, images, factor): degenerate + factor x (images - degenerate), in float32,
    clipped, truncated."""
    factors = factors.float().view(-1, 1, 1, 1)
    mixed = degenerate.float() + factors * (images.int() - degenerate.int()).float()
    return mixed.clamp(0, 255).trunc().to(torch.uint8)


def grey(images):
    """PIL's RGB -> L conversion (ITU-R 601-2 luma in 16-bit fixed point), (n, 1, H, W)."""
    r, g, b = images.int().unbind(dim=1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)[:, None]


def brightness(images, levels):
    return blend(torch.zeros_like(images), images, levels[:, 0])


def color(images, levels):
    return blend(grey(images).expand_as(images), images, levels[:, 0])


def contrast(images, levels):
    luma = grey(images)
    means = (luma.sum(dim=(1, 2, 3)).double() / luma[0].numel() + 0.5).floor()
    return blend(means.view(-1, 1, 1, 1).expand_as(images), images, levels[:, 0])


def sharpness(images, levels):
    """Blended with PIL's SMOOTH filter (3 x 3, 5 in the middle, 1 around, / 13, rounded), which leaves the border
    pixels as they are."""
    kernel = torch.ones(3, 3, device=images.device)
    kernel[1, 1] = 5
    kernel = (kernel / 13).repeat(3, 1, 1, 1)
    smooth = images.clone()
    inner = torch.nn.functional.conv2d(images.float(), kernel, groups=3) + 0.5
    smooth[..., 1:-1, 1:-1] = inner.clamp(0, 255).trunc().to(torch.uint8)
    return blend(smooth, images, levels[:, 0])


# -- affine ops: PIL's Image.transform(AFFINE) ----------------------------------------------------------------------
def cubic(v1, v2, v3, v4, d):
    """PIL's bicubic interpolation between v2 and v3 (a = -1), at fraction d."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


INTERPOLATIONS = {  # PIL's resample -> the taps' offsets from the pixel left of (or above) the point, and their blend
    Image.BILINEAR: ((0, 1), lambda taps, d: taps[0] + (taps[1] - taps[0]) * d),
    Image.BICUBIC: ((-1, 0, 1, 2), lambda taps, d: cubic(*taps, d)),
}


def moving_axes(matrices):
    """For affine `matrices` (host tuples): whether the points sampled can fall between pixels along x, and along y.
    A shear or translation along x keeps each pixel's row (d, e, f = 0, 1, 0), one along y its column."""
    return any(tuple(m[:3]) != (1, 0, 0) for m in matrices), any(tuple(m[3:]) != (0, 1, 0) for m in matrices)


def warp(images, matrices, resample, fill, moves=(True, True)):
    """Each output pixel (x, y) takes the input at (a, b, c, d, e, f) (`matrices`, one per image) applied to its
    centre, as PIL's affine transform: interpolated from clamped neighbours, or `fill` (a (1, 3, 1, 1) uint8 colour)
    where that point lies outside the image. Along an axis that `moves` (`moving_axes`) says is kept, the point
    lies on pixel centres: a blend at fraction 0 is its own pixel, exactly, so only that tap is read."""
    if resample not in INTERPOLATIONS:
        raise ValueError(f"resample {resample}: expected PIL's bilinear or bicubic")
    offsets, blend_taps = INTERPOLATIONS[resample]
    moves_x, moves_y = moves
    n, channels, h, w = images.shape
    device = images.device
    a, b, c, d, e, f = (m.view(n, 1, 1) for m in matrices.unbind(dim=1))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float64) + 0.5,
                            torch.arange(w, device=device, dtype=torch.float64) + 0.5, indexing="ij")
    x_in, y_in = a * xs + b * ys + c, d * xs + e * ys + f
    outside = (x_in < 0) | (x_in >= w) | (y_in < 0) | (y_in >= h)
    x_in, y_in = x_in - 0.5, y_in - 0.5
    left, top = x_in.floor(), y_in.floor()
    dx, dy = (x_in - left)[:, None], (y_in - top)[:, None]
    left, top = left.long(), top.long()
    pixels = images.reshape(n, channels, h * w).double()

    def tap(column, row):
        index = row.clamp(0, h - 1) * w + column.clamp(0, w - 1)
        return pixels.gather(2, index.view(n, 1, h * w).expand(n, channels, h * w)).view(n, channels, h, w)

    def along_row(k):  # row top + k, interpolated at dx
        return blend_taps([tap(left + j, top + k) for j in offsets], dx) if moves_x else tap(left, top + k)

    values = blend_taps([along_row(k) for k in offsets], dy) if moves_y else along_row(0)
    return torch.where(outside[:, None], fill, values.clamp(0, 255).trunc().to(torch.uint8))


def rotation(degrees, w, h):
    """PIL's Image.rotate about the centre, as an affine matrix."""
    angle = -math.radians(degrees % 360.0)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
    cx, cy = w / 2, h / 2
    return a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy


GEOMETRIC = {  # timm's op -> its affine matrix from (level, width, height), as timm's op computes it
    timm_ops.rotate: rotation,
    timm_ops.shear_x: lambda factor, w, h: (1, factor, 0, 0, 1, 0),
    timm_ops.shear_y: lambda factor, w, h: (1, 0, 0, factor, 1, 0),
    timm_ops.translate_x_rel: lambda pct, w, h: (1, 0, pct * w, 0, 1, 0),
    timm_ops.translate_y_rel: lambda pct, w, h: (1, 0, 0, 0, 1, pct * h),
    timm_ops.translate_x_abs: lambda pixels, w, h: (1, 0, pixels, 0, 1, 0),
    timm_ops.translate_y_abs: lambda pixels, w, h: (1, 0, 0, 0, 1, pixels),
}
POINTWISE = {
    timm_ops.auto_contrast: auto_contrast, timm_ops.equalize: equalize, timm_ops.invert: invert,
    timm_ops.posterize: posterize, timm_ops.solarize: solarize, timm_ops.solarize_add: solarize_add,
    timm_ops.color: color, timm_ops.contrast: contrast, timm_ops.brightness: brightness,
    timm_ops.sharpness: sharpness,
}


class Drawn(NamedTuple):
    """One op an image drew: timm's op (`timm_op`, its `name` in the policy) with its arguments (`levels`), and for
    an affine op the interpolation (PIL's) and the fill colour."""
    name: str
    timm_op: Callable
    levels: tuple
    resample: int | None
    fill: tuple | None


class BatchRandAugment:
    """timm's `randaugment` (a timm RandAugment) for batches: called with (images, seeds), each image augmented
    under its seed."""

    def __init__(self, randaugment):
        self.randaugment = copy.deepcopy(randaugment)  # its ops become notes; the caller's stay timm's
        for op in self.randaugment.ops:
            if op.aug_fn not in GEOMETRIC and op.aug_fn not in POINTWISE:
                raise DatasetError(f"data.auto_augment: RandAugment's {op.name} has no device version; expected "
                                   "ops of timm's rand-... policies (data.device_from normalize runs any)")
            resample = op.kwargs.get("resample")
            if op.aug_fn in GEOMETRIC and not set(resample if isinstance(resample, (list, tuple)) else [resample]) \
                    <= {Image.BILINEAR, Image.BICUBIC}:
                raise DatasetError("data.train_interpolation: RandAugment's affine ops interpolate bilinear or "
                                   "bicubic on the device; expected random, bilinear or bicubic, or data.device_from "
                                   "normalize")
            op.aug_fn = self._noting(op.name, op.aug_fn)
        self._notes = None
        self._fills = {}  # timm's fill colour, per device

    def _noting(self, name, timm_op):
        geometric = timm_op in GEOMETRIC

        def note(image, *levels, **kwargs):
            resample = kwargs.get("resample")
            if geometric and isinstance(resample, (list, tuple)):
                resample = random.choice(resample)  # as timm's op draws it
            self._notes.append(Drawn(name, timm_op, levels, resample if geometric else None,
                                     tuple(kwargs["fillcolor"]) if geometric else None))
            return image
        return note

    def draw(self, seed):
        """The ops the image of `seed` gets, in order (`Drawn`); draws from the global generators."""
        self._notes = []
        reseed(stream_seed(seed, "randaugment"))
        self.randaugment(None)
        return self._notes

    def __call__(self, images, seeds):
        """`images` (n, 3, H, W) uint8, augmented in place, image i under `seeds[i]`."""
        height, width = images.shape[-2:]
        with kept_randomness():
            drawn = [self.draw(seed) for seed in seeds]
        groups, order, parameters = [], [], []  # each group's images and parameters, one after another
        for layer in range(max(map(len, drawn), default=0)):
            members = {}
            for index, ops in enumerate(drawn):
                if layer < len(ops):
                    op = ops[layer]
                    members.setdefault((op.timm_op, op.resample, op.fill), []).append((index, op.levels))
            for (timm_op, resample, fill), chosen in members.items():
                start = len(order)
                for index, levels in chosen:
                    order.append(index)
                    parameters.append(GEOMETRIC[timm_op](levels[0], width, height) if timm_op in GEOMETRIC
                                      else tuple(levels) + (0,) * (6 - len(levels)))
                moves = moving_axes(parameters[start:]) if timm_op in GEOMETRIC else None
                groups.append((timm_op, resample, fill, moves, start, len(order)))
        if not groups:
            return images
        # one copy to the device for the whole batch, which does not wait for the work queued before it
        order = torch.tensor(order).to(images.device, non_blocking=True)
        parameters = torch.tensor(parameters, dtype=torch.float64).to(images.device, non_blocking=True)
        for timm_op, resample, fill, moves, start, end in groups:
            index, chosen = order[start:end], parameters[start:end]
            if timm_op in GEOMETRIC:
                images[index] = warp(images[index], chosen, resample, self._fill(fill, images.device), moves)
            else:
                images[index] = POINTWISE[timm_op](images[index], chosen)
        return images

    def _fill(self, colour, device):
        if (colour, device) not in self._fills:
            self._fills[colour, device] = torch.tensor(colour, dtype=torch.uint8).view(1, -1, 1, 1).to(device)
        return self._fills[colour, device]
