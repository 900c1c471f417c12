"""The commands around training: `benchmark` (speed, params, MACs; `suite` on a GPU, `speed` its timing),
`data_benchmark`, `export` (ONNX), `sweep` (experiments x seeds, locally or on SLURM), `report` (the results table),
`recipes` (the recipe table against the official scripts) and `compared_figures` (the paper's figures for the models
it compares against and its ablations)."""
