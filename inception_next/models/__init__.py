"""The models, pure torch: `inception_next` is the paper's model file (token mixers, the MetaNeXt block, the
networks, the table of variants); `parts` finds a researcher's own parts by import path; `factory` builds them by
name (and for timm); `complexity` counts MACs and parameters."""

from .factory import (
    CheckpointError,
    create_model,
    list_models,
    load_pretrained,
    register_with_timm,
)
from .inception_next import (
    ConvMlp,
    Head,
    InceptionDWConv2d,
    IsotropicMetaNeXt,
    MetaNeXt,
    MetaNeXtBlock,
    PartialDWConv2d,
    SpatialSelfAttention,
)

__all__ = ["create_model", "list_models", "load_pretrained", "register_with_timm", "CheckpointError", "MetaNeXt",
           "IsotropicMetaNeXt", "MetaNeXtBlock", "InceptionDWConv2d", "PartialDWConv2d", "SpatialSelfAttention",
           "ConvMlp", "Head"]
