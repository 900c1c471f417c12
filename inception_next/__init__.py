"""InceptionNeXt: a PyTorch Lightning research template for "InceptionNeXt: When Inception Meets ConvNeXt"."""

from .factory import CheckpointError, create_model, list_models, load_pretrained, register_with_timm
from .model import (
    IsotropicMetaNeXt,
    InceptionDWConv2d,
    MetaNeXt,
    MetaNeXtBlock,
    PartialDWConv2d,
    SpatialSelfAttention,
)

__all__ = ["create_model", "list_models", "load_pretrained", "register_with_timm", "CheckpointError", "MetaNeXt",
           "IsotropicMetaNeXt",
           "MetaNeXtBlock", "InceptionDWConv2d", "PartialDWConv2d", "SpatialSelfAttention"]
