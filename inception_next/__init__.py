"""InceptionNeXt: a PyTorch Lightning research template for "InceptionNeXt: When Inception Meets ConvNeXt".

    models/     the paper's networks (pure torch), their variants, the factory, MACs and parameters
    data/       ImageNet in the layouts its sources ship, as a LightningDataModule
    training/   the LightningModule, callbacks, checkpoints, preemption, run folders and the CLI
    tools/      benchmarks, the GPU suite, export, sweeps, reports and the recipe table
"""

from .models import (
    CheckpointError,
    InceptionDWConv2d,
    IsotropicMetaNeXt,
    MetaNeXt,
    MetaNeXtBlock,
    PartialDWConv2d,
    SpatialSelfAttention,
    create_model,
    list_models,
    load_pretrained,
    register_with_timm,
)

__all__ = ["create_model", "list_models", "load_pretrained", "register_with_timm", "CheckpointError", "MetaNeXt",
           "IsotropicMetaNeXt", "MetaNeXtBlock", "InceptionDWConv2d", "PartialDWConv2d", "SpatialSelfAttention"]
