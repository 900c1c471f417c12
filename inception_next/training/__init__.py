"""Training with Lightning: `module` (the LightningModule), `callbacks`, `checkpoints` (atomic saves, which one to
resume), `preemption` (cluster signals), `runs` (what a fit leaves in its run folder) and `cli` (LightningCLI and the
experiment YAMLs). Nothing is imported here, so that the data module can ask `preemption` without the rest."""
