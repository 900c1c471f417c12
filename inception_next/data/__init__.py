"""ImageNet-1K where users keep it. One module per concern, in the order a training image meets them:

    readers/      one module per source layout: class folders, Kaggle, Hugging Face parquet, WebDataset, LitData
                  chunks, the archives (object_store: s3://bucket/prefix, through boto3)
    images        decoding bytes to RGB (or leaving a JPEG to the device), and the data errors
    transforms    timm's transforms in the loader workers, the training crop resized by torch
    datasets      the one path from a reader's bytes to a sample (decode, transform, under the sample's seed)
    sampler       the resumable, rank-sharded, seeded order; seeding: each sample's own random draws
    module        the LightningDataModule: settings, readers, sampler, loaders
    device        the batch on the training device: decode, crop and flip, RandAugment (randaugment), normalize, erase
    prepare       `python -m inception_next prepare`: any layout to class folders, shards or LitData chunks (writers)
    demo          the generated demo dataset
"""

from ..deprecation import warn_renamed
from .datasets import LabelledImages, UnlabelledImages
from .images import IMAGE_EXTENSIONS, DatasetError, UnreadableImageError, decode, is_image_file, load_rgb
from .module import ImageNetDataModule, imagenet_class_names
from .readers import SOURCES, find_source
from .sampler import ResumableSampler
from .seeding import seeded_randomness

__all__ = ["ImageNetDataModule", "LabelledImages", "UnlabelledImages", "ResumableSampler", "seeded_randomness",
           "DatasetError", "UnreadableImageError", "decode", "load_rgb", "is_image_file", "IMAGE_EXTENSIONS",
           "imagenet_class_names", "SOURCES", "find_source"]


def __getattr__(name):
    if name == "ImageFolderDataModule":  # its first name, when it read class folders only
        warn_renamed("inception_next.data.ImageFolderDataModule", "inception_next.data.ImageNetDataModule")
        return ImageNetDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
