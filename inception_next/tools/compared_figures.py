"""The paper's figures for the models it compares against and for its ablations, as data for the benchmark and the
report (see ../shared/PAPER.md). Our own variants carry their figures in their records (models.inception_next's
VARIANTS), timm's InceptionNeXt included: it is the same architecture."""

# A100 (PyTorch 1.13, TF32, batch 128) training and inference images/s, Table 4, keyed by (timm model, image size).
TIMM_A100 = {
    ("resnet50", 224): (969, 3149),
    ("convnext_atto", 224): (835, 4539),
    ("convnext_tiny", 224): (575, 2413),
    ("convnext_small", 224): (361, 1535),
    ("convnext_base", 224): (267, 1122),
    ("convnext_base", 384): (95, 393),
}

# Table 8: InceptionNeXt-T ablations (ImageNet top-1), keyed by our experiment file (tiny.yaml is the baseline).
TABLE8_TOP1 = {
    "tiny": 82.3, "no_horizontal_band": 81.9, "no_vertical_band": 81.9, "no_square": 82.0, "sequential_bands": 82.1,
    "band_kernel_7": 82.1, "band_kernel_9": 82.1, "band_kernel_13": 82.0, "branch_ratio_1_4": 82.2,
    "branch_ratio_1_16": 81.8, "layernorm": 82.4,
}
