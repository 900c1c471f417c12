"""Parameter and MAC counts, measured the same way everywhere (tests, benchmark, notebooks, the training log)."""

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode


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
