"""InceptionNeXt: a PyTorch Lightning research template for "InceptionNeXt: When Inception Meets ConvNeXt".

    models/     the paper's networks (pure torch), their variants, the factory, MACs and parameters
    data/       ImageNet in the layouts its sources ship, as a LightningDataModule; the batch on the device
    training/   the LightningModule and its optimisation, callbacks, loggers, checkpoints, run folders, the CLI
    tools/      benchmarks, the GPU suite, export, sweeps, reports and the recipe table
    commands    the front door: `python -m inception_next <command>`
"""

from . import models
from .deprecation import keep_old_module_paths
from .models import *  # noqa: F403  the public names are the models' (models.__all__)

__all__ = models.__all__

# The modules of the first layout, before the layers had folders: importable for a while, with a warning.
keep_old_module_paths({f"inception_next.{old}": f"inception_next.{new}" for old, new in {
    "model": "models.inception_next", "factory": "models.factory", "complexity": "models.complexity",
    "demo_data": "data.demo", "module": "training.module", "callbacks": "training.callbacks",
    "checkpoints": "training.checkpoints", "preemption": "training.preemption", "runs": "training.runs",
    "cli": "training.cli", "benchmark": "tools.benchmark", "data_benchmark": "tools.data_benchmark",
    "export": "tools.export", "recipes": "tools.recipes", "report": "tools.report", "speed": "tools.speed",
    "suite": "tools.suite", "sweep": "tools.sweep", "paper": "tools.compared_figures"}.items()})
