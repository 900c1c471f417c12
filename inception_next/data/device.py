"""The training batch on the device: the last steps of the training pipeline, done on the whole batch where the model
trains, each image under its sample's seed (`sampler.ResumableSampler.take`).

    loader workers:   read -> decode -> crop, flip -> RandAugment -> | device: normalize -> erase

`data.device_from` names the first step the device does (`STEPS`):
    normalize     the default, as timm's prefetcher in the official runs: the workers stop at uint8 pixels (a quarter
                  of the bytes to pass between processes), the device normalizes and randomly erases.
    randaugment   RandAugment too (`randaugment.BatchRandAugment`: timm's draws, PIL's pixels), for machines with few
                  CPU cores per GPU: it frees the workers of about a fifth of their work.
    decode        everything after reading the file: the workers draw each crop and flip (`transforms.DrawnCrop`) and
                  hand on the JPEG (`EncodedBatch`); the batch is decoded by nvJPEG (through torchcodec) on a GPU, by
                  PIL elsewhere, then cropped and flipped with the workers' resize. Images that are not whole colour
                  or grey JPEGs are decoded, cropped and flipped in the workers.
A loader used by hand gives what the workers give; `DevicePipeline` makes it the model's input.
"""

from dataclasses import dataclass

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.random_erasing import RandomErasing

from .images import DatasetError, UnreadableImageError, decode
from .randaugment import BatchRandAugment
from .seeding import kept_randomness, reseed, stream_seed
from .transforms import CropDraw, resize_box

STEPS = ("decode", "randaugment", "normalize")  # where the device may start, earliest first


@dataclass
class EncodedBatch:
    """A training batch when the device decodes: each sample's payload, drawn crop and name (see
    `transforms.EncodedSample`), and the labels."""
    payloads: list[torch.Tensor]
    crops: list[CropDraw | None]
    names: list[str | None]
    labels: torch.Tensor

    def __len__(self):
        return len(self.labels)


def collate_encoded(samples):
    """The training loader's collate_fn when the device decodes: (EncodedSample, label) pairs -> an EncodedBatch."""
    encoded = [sample for sample, _ in samples]
    return EncodedBatch([s.payload for s in encoded], [s.crop for s in encoded], [s.name for s in encoded],
                        torch.tensor([label for _, label in samples]))


def decode_jpegs(payloads, names, device):
    """JPEGs' bytes (uint8 tensors on the CPU) and names -> (3, H, W) uint8 RGB images on `device`: on a GPU all in
    one call to nvJPEG (through torchcodec), elsewhere one by one as the workers decode (`images.decode`)."""
    if torch.device(device).type != "cuda":
        return [torch.from_numpy(np.array(decode(payload.numpy().tobytes(), name))).permute(2, 0, 1)
                for payload, name in zip(payloads, names)]
    from torchcodec.decoders import decode_jpeg

    try:
        return decode_jpeg(payloads, mode="RGB", device=device)
    except RuntimeError:
        for payload, name in zip(payloads, names):  # name the one nvJPEG refuses
            try:
                decode_jpeg(payload, mode="RGB", device=device)
            except RuntimeError as error:
                raise UnreadableImageError(f"{name}: unreadable by nvJPEG ({error}); expected a whole JPEG, or "
                                           "data.device_from randaugment, which skips unreadable images") from None
        raise


def crops_on_device(batch, size, device):
    """An EncodedBatch as the workers' path gives it, on `device`: the JPEGs decoded there, each box resized by torch
    (as `transforms.FastResizedCrop`) and flipped where drawn. (n, 3, *size) uint8."""
    encoded = [i for i, crop in enumerate(batch.crops) if crop is not None]
    decoded = dict(zip(encoded, decode_jpegs([batch.payloads[i] for i in encoded],
                                             [batch.names[i] for i in encoded], device)))
    images = []
    for i, crop in enumerate(batch.crops):
        if crop is None:  # decoded, cropped and flipped in the worker
            images.append(batch.payloads[i].to(device))
            continue
        box = decoded[i].permute(1, 2, 0)[crop.top:crop.top + crop.height, crop.left:crop.left + crop.width]
        image = resize_box(box, size, crop.interpolation)
        images.append(image.flip(-1) if crop.flipped else image)
    return torch.stack(images)


class DevicePipeline:
    """The device's steps of the training pipeline, from `start` (one of STEPS) on: decode, crop and flip (an
    EncodedBatch, `decode`), then RandAugment (timm's `randaugment`), normalize and erase (timm's RandomErasing with
    `reprob` and `remode`) in `__call__`. Evaluation batches are only normalized."""

    def __init__(self, start="normalize", img_size=224, reprob=0.0, remode="pixel", randaugment=None):
        if start not in STEPS:
            raise DatasetError(f"data.device_from {start!r}: expected one of {', '.join(STEPS)}")
        self.start, self.img_size, self.reprob, self.remode = start, img_size, reprob, remode
        self.randaugment = BatchRandAugment(randaugment) if start != "normalize" else None
        self._mean_std = {}  # normalize's, per device

    def check(self, device):
        """At setup, on the training device: what it cannot do, or does slowly."""
        if self.start == "normalize":
            return
        if device.type != "cuda":
            rank_zero_warn(f"data.device_from {self.start}, training on the CPU: the main process then does what the "
                           "loader workers would share (RandAugment, at 224 px about 5 times slower an image than "
                           "timm's PIL ops; decoding with PIL); it is meant for GPUs (data.device_from normalize here)")
        elif self.start == "decode":
            try:
                import torchcodec.decoders  # noqa: F401
            except ImportError:
                raise DatasetError("data.device_from decode decodes JPEGs on the GPU with nvJPEG through torchcodec; "
                                   "expected it installed: pip install 'inception-next[nvjpeg]'") from None

    def decode(self, batch, device):
        """An EncodedBatch -> [uint8 images on `device`, labels]."""
        return [crops_on_device(batch, (self.img_size, self.img_size), device), batch.labels]

    def normalize(self, images):
        """uint8 images as the loaders give them -> the model's input (ImageNet's mean and std)."""
        if images.device not in self._mean_std:  # once per device: a copy to the GPU each step would wait for it
            self._mean_std[images.device] = [torch.tensor([255 * v for v in values], device=images.device).view(
                1, 3, 1, 1) for values in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
        mean, std = self._mean_std[images.device]
        return (images.float() - mean) / std

    def erase(self, images, seeds):
        """timm's RandomErasing on normalized training images, each under its sample's seed."""
        erasing = RandomErasing(self.reprob, mode=self.remode, device=images.device)
        with kept_randomness(images.device):
            for image, seed in zip(images, seeds):
                reseed(stream_seed(seed, "erasing"), images.device)
                erasing(image)
        return images

    def __call__(self, images, seeds=None):
        """uint8 images -> the model's input; a training batch (`seeds`: its samples' augmentation seeds) is
        RandAugmented (from `randaugment` on) and erased too."""
        if seeds is not None and self.randaugment is not None:
            images = self.randaugment(images, seeds)
        images = self.normalize(images)
        if seeds is not None and self.reprob > 0:
            images = self.erase(images, seeds)
        return images
