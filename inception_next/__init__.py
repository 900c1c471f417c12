"""InceptionNeXt: a PyTorch Lightning research template for "InceptionNeXt: When Inception Meets ConvNeXt".

    models/     the paper's networks (pure torch), their variants, the factory, MACs and parameters
    data/       ImageNet in the layouts its sources ship, as a LightningDataModule
    training/   the LightningModule, callbacks, checkpoints, preemption, run folders and the CLI
    tools/      benchmarks, the GPU suite, export, sweeps, reports and the recipe table
"""

from . import models
from .models import *  # noqa: F403  the public names are the models' (models.__all__)

__all__ = models.__all__
