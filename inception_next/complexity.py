"""Parameter and MAC counts, measured the same way everywhere (tests, benchmark, notebooks)."""

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model, img_size=224, in_chans=3):
    """Multiply-accumulates of one forward pass on one image. torch's flop counter counts 2 FLOPs per MAC in
    convolutions, matmuls and attention; norms and activations are not counted, as in the paper's tables.
    A model on the meta device is counted without computing anything."""
    device = next(model.parameters()).device
    x = torch.zeros(1, in_chans, img_size, img_size, device=device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2
