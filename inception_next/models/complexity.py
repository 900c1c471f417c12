"""Parameter and MAC counts, measured the same way everywhere (tests, benchmark, report, notebooks, the training log):
`complexity` of a variant, or `count_params` / `count_macs` of a model at hand."""

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from .factory import create_model, get_variant


def count_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model, img_size=224, in_chans=3):
    """Multiply-accumulates of one forward pass on one image. torch's flop counter counts 2 FLOPs per MAC in
    convolutions, matmuls and attention; norms and activations are not counted, as in the paper's tables.

    Always counted on the meta device (a copy of the model, if it is elsewhere), which computes nothing: on the CPU
    torch's counter misses the attention kernel, so the same model would count differently by where it lives."""
    if next(model.parameters()).device.type != "meta":
        model = copy.deepcopy(model).to("meta")
    x = torch.zeros(1, in_chans, img_size, img_size, device="meta")
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def complexity(backbone, img_size=None, **overrides):
    """(parameters, MACs of one image at `img_size`, default the variant's) of `backbone` (a registered name or a
    declaration) built with `overrides`, on the meta device: nothing is allocated or computed."""
    with torch.device("meta"):
        model = create_model(backbone, **overrides)
    return count_params(model), count_macs(model, img_size or get_variant(backbone).input_size)
