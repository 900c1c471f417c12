"""Our models beside timm's, holding the same random weights."""

import torch

HIERARCHICAL = ["inception_next_atto", "inception_next_tiny", "inception_next_small", "inception_next_base"]


def randomise_(model):
    """Random weights, BatchNorm statistics and layer scales: at init, layer scale 1e-6 would hide the token mixer."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            else:
                tensor.copy_(torch.randn_like(tensor) * 0.1)
    return model
