"""The paper's figures for the timm models it compares against, as data for the benchmark (see ../shared/PAPER.md).
Our own variants carry their figures in their records (model.VARIANTS)."""

# A100 (PyTorch 1.13, TF32, batch 128) training and inference images/s, Table 4, keyed by (timm model, image size).
TIMM_A100 = {
    ("resnet50", 224): (969, 3149),
    ("convnext_atto", 224): (835, 4539),
    ("convnext_tiny", 224): (575, 2413),
    ("convnext_small", 224): (361, 1535),
    ("convnext_base", 224): (267, 1122),
    ("convnext_base", 384): (95, 393),
    ("inception_next_atto", 224): (2661, 9876),
    ("inception_next_tiny", 224): (901, 2900),
    ("inception_next_small", 224): (521, 1750),
    ("inception_next_base", 224): (375, 1244),
    ("inception_next_base", 384): (139, 428),
}


def figure_and_rounding(printed):
    """'28.06' -> (28.06, 0.005): the value and the half-unit of its last printed digit."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return float(printed), 0.5 * 10 ** -decimals

# Table 8: InceptionNeXt-T ablations (ImageNet top-1), keyed by our experiment file (tiny.yaml is the baseline).
TABLE8_TOP1 = {
    "tiny": 82.3, "no_horizontal_band": 81.9, "no_vertical_band": 81.9, "no_square": 82.0, "sequential_bands": 82.1,
    "band_kernel_7": 82.1, "band_kernel_9": 82.1, "band_kernel_13": 82.0, "branch_ratio_1_4": 82.2,
    "branch_ratio_1_16": 81.8, "layernorm": 82.4,
}
