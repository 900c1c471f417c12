"""Build variants by name (or declared in place) and load checkpoints into them. Registering a variant is an explicit
call: `declare_variant`, `inception_next.register` (the model file's), `register_with_timm`."""

import inspect
import sys
import warnings
from pathlib import Path

import torch
from timm.models import build_model_with_cfg, is_model, register_model

from ..errors import UserError
from .inception_next import VARIANTS, MetaNeXt, ModelConfigError, Variant, register


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded (missing, damaged, or not fitting the model asked for); the message names
    the file and what does not fit."""


def list_models():
    return sorted(VARIANTS)


def get_variant(backbone):
    """The Variant record of `model.backbone`: a registered name (network, arguments, preprocessing, the paper's
    figures), or a variant declared in place (see `declared_variant`), which this does not register."""
    if isinstance(backbone, dict):
        return declared_variant(backbone)
    if backbone not in VARIANTS:
        raise ModelConfigError(f"model {backbone!r} is not registered; expected one of: {', '.join(list_models())}")
    return VARIANTS[backbone]


def backbone_name(backbone):
    """The name of `model.backbone`: a registered name, or a declared variant's `name`."""
    if isinstance(backbone, dict):
        declared_variant(backbone)
        return backbone["name"]
    return backbone


def preprocessing(backbone=None):
    """How `backbone`'s images are prepared, as the data module's settings (img_size, crop_pct, interpolation);
    without one, what a variant has unless it says otherwise."""
    if backbone is None:
        return Variant(MetaNeXt, {}).preprocessing()
    return get_variant(backbone).preprocessing()


def with_overrides(variant, overrides):
    """A variant's arguments with `overrides`; a dict-valued one (`mixer_args`) updates the variant's dict, unless
    the overrides change the token mixer too: the variant's mixer_args were its own mixer's."""
    args = dict(variant.args)
    mixer = args.get("token_mixer", inspect.signature(variant.network).parameters["token_mixer"].default)
    if overrides.get("token_mixer", mixer) != mixer:
        args.pop("mixer_args", None)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(args.get(key), dict):
            value = {**args[key], **value}
        args[key] = value
    return args


def declared_variant(declaration):
    """The Variant a declaration describes, as an experiment YAML can write one: `name`, the registered variant it
    starts from (`base`), and the base's arguments to change (`input_size`, `crop_pct` and `interpolation` too). Its
    name must not be another registered variant's."""
    if not isinstance(declaration, dict) or not {"name", "base"} <= set(declaration):
        raise ModelConfigError(f"model.backbone {declaration}: expected a registered name, or a new variant as "
                               "{name: ..., base: <a registered variant>, <its arguments to change>}")
    changes = dict(declaration)
    name, base = changes.pop("name"), get_variant(changes.pop("base"))
    fields = {field: changes.pop(field) for field in ("input_size", "crop_pct", "interpolation") if field in changes}
    variant = Variant(base.network, with_overrides(base, changes), **{
        "input_size": base.input_size, "crop_pct": base.crop_pct, "interpolation": base.interpolation, **fields})
    if name in VARIANTS and VARIANTS[name] != variant:
        raise ModelConfigError(f"model.backbone name {name!r}: already registered as another variant; expected "
                               "a new name")
    _check_arguments(name, variant.network, variant.args)
    return variant


def declare_variant(declaration):
    """Register the variant a declaration describes (see `declared_variant`), so that create_model, the CLI, timm
    (`register_with_timm`) and the benchmark know it by name. Declaring the same variant again does nothing. Returns
    the name."""
    variant, name = declared_variant(declaration), declaration["name"]
    if name not in VARIANTS:
        register(name, variant)
    return name


def _check_arguments(name, network, args):
    """A setting the network does not take is the user's mistake; an error inside it is a bug, left to show."""
    try:
        inspect.signature(network).bind(**args)
    except TypeError as error:
        raise ModelConfigError(f"model {name!r}: {error}") from None


def wrap_features(model, out_indices=(0, 1, 2, 3), feature_cls=None):
    """`model`'s multi-scale features for detection and segmentation, wrapped by timm itself (build_model_with_cfg's
    `features_only` handling): timm's FeatureListNet by default, FeatureGetterNet (`forward_intermediates`) for
    feature_cls='getter', FeatureDictNet for 'dict'. Called on images, it returns the `out_indices` levels' outputs
    (NCHW, strides 4 to 32 for the hierarchical models); its `feature_info` is timm's FeatureInfo (`channels()`,
    `reduction()`)."""
    return build_model_with_cfg(lambda **_: model, model.pretrained_cfg["architecture"], pretrained=False,
                                pretrained_cfg=model.pretrained_cfg, features_only=True, out_indices=out_indices,
                                feature_cfg=dict(flatten_sequential=True),
                                **({"feature_cls": feature_cls} if feature_cls else {}))


def create_model(backbone, pretrained=None, features_only=False, out_indices=(0, 1, 2, 3), feature_cls=None,
                 **overrides):
    """Build the variant `backbone` (a registered name, or a declaration, see `declared_variant`); any constructor
    argument can be overridden (num_classes, drop_path_rate, norm, global_pool, in_chans, ...).

    A dict-valued override such as `mixer_args` updates the variant's dict rather than replacing it, so
    `mixer_args={"band_kernel_size": 7}` keeps the rest of the variant's token mixer (another `token_mixer` starts
    from its own defaults instead). `pretrained` is the path of a checkpoint to load (see `load_pretrained`). With
    `features_only`, the `out_indices` levels' features, as timm's `features_only` models (see `wrap_features`).
    """
    variant, name = get_variant(backbone), backbone_name(backbone)
    args = with_overrides(variant, overrides)
    _check_arguments(name, variant.network, args)
    model = variant.network(**args)
    model.pretrained_cfg = model.default_cfg = variant.pretrained_cfg(name, model)
    if pretrained:
        load_pretrained(model, pretrained)
    return wrap_features(model, out_indices, feature_cls) if features_only else model


def classifier_name(backbone):
    """The name of the classifier layer of `backbone`'s models (its weights are `<name>.weight`)."""
    with torch.device("meta"):
        return create_model(backbone).pretrained_cfg["classifier"]


TIMM_PREFIX = "lit_"  # timm has inception_next_atto/tiny/small/base of its own


def register_with_timm(prefix=TIMM_PREFIX):
    """Register every variant in timm's model registry as `<prefix><name>` (`lit_inception_next_tiny`,
    `lit_convnext_tiny_k3_par1_8`, ...), so that `timm.create_model`, timm's train.py, validate.py and benchmark.py,
    and timm's own model tests build them by name. They are registered as models of the `inception_next` package,
    as timm groups its own by module: `timm.list_models(module="inception_next")` lists them beside timm's.

    Weights come from a local file, never a hub: `timm.create_model(name, pretrained=True,
    pretrained_cfg_overlay=dict(file="inceptionnext_tiny.pth"))`. Registering twice does nothing. Returns the names.
    """
    package = sys.modules[__package__.partition(".")[0]]  # inception_next, as timm names a module's models
    package.default_cfgs = getattr(package, "default_cfgs", {})  # where timm's register_model reads each model's cfg
    names = []
    for name in list_models():
        timm_name = prefix + name
        names.append(timm_name)
        if is_model(timm_name):
            continue
        with torch.device("meta"):
            package.default_cfgs[timm_name] = create_model(name).pretrained_cfg
        entrypoint = _timm_entrypoint(name, timm_name)
        entrypoint.__module__ = package.__name__
        setattr(package, timm_name, entrypoint)
        register_model(entrypoint)
    return names


def _timm_entrypoint(name, timm_name):
    def entrypoint(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **kwargs):
        weights = (pretrained_cfg_overlay or {}).get("file")
        if pretrained and not weights:
            raise ModelConfigError(f"{timm_name}: pretrained=True needs a local file, as pretrained_cfg_overlay="
                                   "dict(file=...); nothing is downloaded")
        return create_model(name, pretrained=weights if pretrained else None, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = timm_name
    entrypoint.__doc__ = f"{name} for timm.create_model (see inception_next.create_model)."
    return entrypoint


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
        raise CheckpointError(f"checkpoint {path}: expected a state dict of tensors, bare or under 'model' / "
                              "'state_dict'")
    if any(k.startswith("backbone.") for k in checkpoint):  # ours: the raw backbone, beside its EMA copy
        checkpoint = {k[len("backbone."):]: v for k, v in checkpoint.items() if k.startswith("backbone.")}
    return checkpoint


def load_pretrained(model, path):
    """Load a checkpoint strictly. A classifier of another number of classes is left at its fresh initialisation
    (with a warning); any other missing, unexpected or mis-shaped key is a CheckpointError naming them all."""
    state = read_state_dict(path)
    own = model.state_dict()
    classifier = {name for name, p in model.named_parameters()
                  if any(p is q for q in model.get_classifier().parameters())}
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
