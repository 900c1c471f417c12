"""Training with Lightning: `module` (the LightningModule) and its `optimization`, `callbacks` and `loggers`,
`checkpoints` (atomic saves, checked loads), `runs` (the run folder: its layout and every file name in it),
`preemption` (cluster signals), `config` (the experiment YAMLs' `extends` chains) and `cli` (LightningCLI: parsing
and wiring). Nothing is imported here: a command imports what it runs."""
