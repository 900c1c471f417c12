"""The paper's reported figures, as data for tests, the benchmark and the notebooks (see ../shared/PAPER.md)."""

# Params (millions) and MACs (G) at the variant's input size, as printed (the digits tell the paper's rounding:
# "22" for ConvNeXt-S (iso.) stands for 22.3M). None where the paper gives no figure.
PARAMS_MACS = {
    "inception_next_atto": ("4.16", "0.50"),
    "inception_next_tiny": ("28.06", "4.19"),
    "inception_next_small": ("49.37", "8.36"),
    "inception_next_base": ("86.67", "14.84"),
    "inception_next_base_384": ("86.67", "43.6"),
    "inception_next_small_iso": ("22", "4.2"),
    "convnext_small_iso": ("22", "4.3"),
    "metanext_attn_small_iso": ("22", "4.6"),
    "convnext_tiny_k7": ("28.6", "4.5"),
    "convnext_tiny_k5": ("28.4", None),
    "convnext_tiny_k3": ("28.3", None),
    "convnext_tiny_k3_par1_2": ("28.3", None),
    "convnext_tiny_k3_par3_8": ("28.3", None),
    "convnext_tiny_k3_par1_4": ("28.3", None),
    "convnext_tiny_k3_par1_8": ("28.3", None),
    "convnext_tiny_k3_par1_16": ("28.3", None),
}

# A100 (PyTorch 1.13, TF32, batch 128) training and inference images/s, Tables 1 and 4, keyed by (model, image
# size). Our registered names and timm's reference names both appear; timm's ConvNeXt-T equals our convnext_tiny_k7.
A100_THROUGHPUT = {
    ("resnet50", 224): (969, 3149),
    ("convnext_atto", 224): (835, 4539),
    ("inception_next_atto", 224): (2661, 9876),
    ("convnext_tiny", 224): (575, 2413),
    ("inception_next_tiny", 224): (901, 2900),
    ("convnext_small", 224): (361, 1535),
    ("inception_next_small", 224): (521, 1750),
    ("convnext_base", 224): (267, 1122),
    ("inception_next_base", 224): (375, 1244),
    ("convnext_base", 384): (95, 393),
    ("inception_next_base", 384): (139, 428),
    ("inception_next_base_384", 384): (139, 428),
    ("convnext_tiny_k7", 224): (575, 2413),
    ("convnext_tiny_k5", 224): (675, 2704),
    ("convnext_tiny_k3", 224): (798, 2802),
    ("convnext_tiny_k3_par1_2", 224): (818, 2740),
    ("convnext_tiny_k3_par3_8", 224): (847, 2762),
    ("convnext_tiny_k3_par1_4", 224): (871, 2808),
    ("convnext_tiny_k3_par1_8", 224): (901, 2833),
    ("convnext_tiny_k3_par1_16", 224): (916, 2846),
}

# Top-1 of the released weights under timm's evaluation.
RELEASED_TOP1 = {"inception_next_atto": 75.3, "inception_next_tiny": 82.5, "inception_next_small": 83.6,
                 "inception_next_base": 84.1, "inception_next_base_384": 85.2}


def figure_and_rounding(printed):
    """'28.06' -> (28.06, 0.005): the value and the half-unit of its last printed digit."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return float(printed), 0.5 * 10 ** -decimals
