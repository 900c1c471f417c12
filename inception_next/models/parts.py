"""The swappable parts of a MetaNeXt network, named by a built-in name or by import path, so that a researcher's own
token mixer (block, norm, MLP, head) lives in their own file and their experiment stays a YAML file:

    model:
      backbone_args:
        token_mixer: my_mixers.DilatedBand      # my_mixers.py in the working folder or on PYTHONPATH
        mixer_args: {dilation: 2}

or LightningCLI's form, `token_mixer: {class_path: my_mixers.DilatedBand, init_args: {dilation: 2}}` (`mixer_args`
then adds to or overrides `init_args`). From Python, the class itself works too.

The contracts, each checked with one clear error naming the setting and the class (the shape at the first forward):

    token_mixer  cls(dim, **mixer_args): (B, C, H, W) -> (B, C, H, W)
    norm         cls(dim): (B, C, H, W) -> (B, C, H, W); used in the stem, the downsampling and every block
    mlp          cls(dim, hidden_dim): (B, C, H, W) -> (B, C, H, W), hidden_dim = mlp_ratio x dim
    block        cls(dim, token_mixer=, mixer_args=, norm=, mlp_ratio=, layer_scale_init=, drop_path=, mlp=):
                 (B, C, H, W) -> (B, C, H, W); subclass MetaNeXtBlock to keep its layer scale and BatchNorm folding
    head         a `Head` subclass, cls(dim, num_classes, drop_rate=, pool_type=)
"""

import importlib
import inspect

from ..errors import UserError


class ModelConfigError(UserError, ValueError):
    """An architecture setting no network accepts; the message names the setting and what was expected."""


def name_of(spec):
    """How a part is named in messages and configs: its built-in name or import path."""
    if isinstance(spec, dict):
        return name_of(spec.get("class_path"))
    if isinstance(spec, type):
        return f"{spec.__module__}.{spec.__qualname__}"
    return str(spec)


def import_class(setting, path):
    """The class at import path `module.Class`, found as `python -m` finds modules (the working folder, then
    PYTHONPATH and the installed packages)."""
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = f"no module named {error.name!r}" if error.name else str(error)
        raise ModelConfigError(f"{setting} {path}: {missing}; expected a module importable from the working folder "
                               "or PYTHONPATH") from None
    found = getattr(module, attribute, None)
    if not isinstance(found, type):
        raise ModelConfigError(f"{setting} {path}: module {module_name} ({module.__file__}) has no class "
                               f"{attribute!r}")
    return found


def find_class(setting, spec, builtins):
    """(class, init_args) for `spec`: a key of `builtins`, an import path, a class, or {class_path, init_args}."""
    if isinstance(spec, dict):
        if "class_path" not in spec or set(spec) - {"class_path", "init_args"}:
            raise ModelConfigError(f"{setting} {spec}: expected a name, an import path or {{class_path: ..., "
                                   "init_args: {...}}")
        found, _ = find_class(setting, spec["class_path"], builtins)
        return found, dict(spec.get("init_args") or {})
    if isinstance(spec, type):
        return spec, {}
    if isinstance(spec, str) and spec in builtins:
        return builtins[spec], {}
    if not isinstance(spec, str) or "." not in spec:
        raise ModelConfigError(f"{setting} {spec!r}: expected one of {', '.join(sorted(builtins))} or an import path "
                               "such as my_module.MyClass")
    return import_class(setting, spec), {}


def build_part(setting, spec, builtins, contract, *args, same_shape=True, **kwargs):
    """Construct the part `spec` names with `args` and `kwargs` (after its own init_args). One that is not built in
    is checked: its constructor must take these arguments, and (`same_shape`), at its first forward, keep the
    input's shape."""
    cls, init_args = find_class(setting, spec, builtins)
    kwargs = {**init_args, **kwargs}
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as error:
        raise ModelConfigError(f"{setting} {name_of(spec)}: {error}; expected {contract}") from None
    except ValueError:  # no signature to read (a C extension): let the call itself decide
        pass
    part = cls(*args, **kwargs)
    if same_shape and cls not in builtins.values():
        keep_shape(part, setting, name_of(spec))
    return part


def keep_shape(part, setting, name):
    """Raise one clear error when `part` returns another shape than its input's, as the first forward shows."""

    def check(module, inputs, output):
        if getattr(output, "shape", None) != inputs[0].shape:
            got = tuple(output.shape) if hasattr(output, "shape") else type(output).__name__
            raise ModelConfigError(f"{setting} {name}: returned {got} for an input of {tuple(inputs[0].shape)}; "
                                   "expected the input's shape (B, C, H, W)")
        handle.remove()

    handle = part.register_forward_hook(check)
