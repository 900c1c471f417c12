"""ImageNet-1K where users keep it. One module per concern:

    images        decoding bytes to RGB, and the data errors
    readers/      one module per source layout: class folders, Kaggle, Hugging Face parquet, WebDataset, LitData
                  chunks, the archives
    object_store  s3://bucket/prefix, through boto3
    transforms    timm's training crop, resized by torch
    datasets      the one path from a reader's bytes to a tensor (decode, timm transform, per-sample seed)
    sampler       the resumable, rank-sharded, seeded order
    module        the LightningDataModule
    prepare       `python -m inception_next prepare`: any layout to class folders, shards or LitData chunks
    writers       the layouts prepare writes
    demo          the generated demo dataset
"""

from .datasets import LabelledImages, UnlabelledImages
from .images import IMAGE_EXTENSIONS, DatasetError, UnreadableImageError, decode, is_image_file, load_rgb
from .module import ImageNetDataModule, imagenet_class_names
from .readers import SOURCES, find_source
from .sampler import ResumableSampler, seeded_randomness

__all__ = ["ImageNetDataModule", "LabelledImages", "UnlabelledImages", "ResumableSampler", "seeded_randomness",
           "DatasetError", "UnreadableImageError", "decode", "load_rgb", "is_image_file", "IMAGE_EXTENSIONS",
           "imagenet_class_names", "SOURCES", "find_source"]
