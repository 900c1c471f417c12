"""Build registered variants by name and load checkpoints into them."""

import inspect
import warnings
from pathlib import Path

import torch
from torch import nn

from .model import VARIANTS, ModelConfigError


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (missing, damaged, or not fitting the model asked for); the message names
    the file and what does not fit."""




def list_models():
    return sorted(VARIANTS)


def get_variant(name):
    """The registered Variant record of `name`: network, arguments, input size and crop, the paper's figures."""
    if name not in VARIANTS:
        raise ModelConfigError(f"model {name!r} is not registered; expected one of: {', '.join(list_models())}")
    return VARIANTS[name]


class FeatureExtractor(nn.Module):
    """A backbone's multi-scale features for detection and segmentation, as timm's `features_only` models: called on
    images, it returns the chosen levels' outputs (NCHW, strides 4 to 32 for the hierarchical models); the levels
    after the last one chosen, and the head, are dropped. `feature_info` describes the outputs (channels()
    and reduction() give their widths and strides)."""

    def __init__(self, model, out_indices=(0, 1, 2, 3)):
        super().__init__()
        self.out_indices = model.prune_intermediate_layers(list(out_indices), prune_head=True)
        self.model = model
        self.feature_info = [model.feature_info[i] for i in self.out_indices]

    def channels(self):
        return [info["num_chs"] for info in self.feature_info]

    def reduction(self):
        return [info["reduction"] for info in self.feature_info]

    def forward(self, x):
        return self.model.forward_intermediates(x, indices=self.out_indices, intermediates_only=True)


def create_model(name, pretrained=None, features_only=False, out_indices=(0, 1, 2, 3), **overrides):
    """Build the variant `name`; any constructor argument can be overridden (num_classes, drop_path_rate, norm, ...).

    A dict-valued override such as `mixer_args` updates the variant's dict rather than replacing it, so
    `mixer_args={"band_kernel_size": 7}` keeps the rest of the variant's token mixer. `pretrained` is the path of a
    checkpoint to load (see `load_pretrained`). With `features_only`, a FeatureExtractor of the `out_indices`
    levels, as timm's `features_only` models.
    """
    variant = get_variant(name)
    args = dict(variant.args)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(args.get(key), dict):
            value = {**args[key], **value}
        args[key] = value
    try:  # a setting the network does not take is the user's mistake; an error inside it is a bug, left to show
        inspect.signature(variant.network).bind(**args)
    except TypeError as error:
        raise ModelConfigError(f"model {name!r}: {error}") from None
    model = variant.network(**args)
    model.pretrained_cfg = variant.pretrained_cfg(name, model)
    if pretrained:
        load_pretrained(model, pretrained)
    return FeatureExtractor(model, out_indices) if features_only else model


def read_state_dict(path):
    """The state dict in a released checkpoint (bare, or under 'model' / 'state_dict') or in one of our Lightning
    checkpoints (the backbone's weights, under 'backbone.')."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: torch raises many kinds of error here
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch checkpoint ({error})") from None
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(f"checkpoint {path}: expected a state dict of tensors, bare or under 'model' / 'state_dict'")
    if any(k.startswith("backbone.") for k in checkpoint):  # ours: the raw backbone, beside its EMA copy
        checkpoint = {k[len("backbone."):]: v for k, v in checkpoint.items() if k.startswith("backbone.")}
    return checkpoint


def load_pretrained(model, path):
    """Load a checkpoint strictly. A classifier of another number of classes is left at its fresh initialisation
    (with a warning); any other missing, unexpected or mis-shaped key is a CheckpointError naming them all."""
    state = read_state_dict(path)
    own = model.state_dict()
    classifier = {name for name, p in model.named_parameters() if any(p is q for q in model.get_classifier().parameters())}
    mismatched = sorted(k for k in state.keys() & own.keys() if state[k].shape != own[k].shape)
    # Only the number of classes may differ: the classifier's input width must still fit the backbone.
    reinit = [k for k in mismatched if k in classifier and state[k].shape[1:] == own[k].shape[1:]]
    if reinit:
        warnings.warn(f"checkpoint {path}: classifier has {state[reinit[0]].shape[0]} classes, the model "
                      f"{own[reinit[0]].shape[0]}; keeping the backbone and re-initialising {', '.join(reinit)}")
        state = {k: v for k, v in state.items() if k not in reinit}
    problems = []
    missing = sorted(own.keys() - state.keys() - set(reinit))
    unexpected = sorted(state.keys() - own.keys())
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched if k not in reinit]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            problems.append(f"{label}: {', '.join(keys)}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=not reinit)
    return model
