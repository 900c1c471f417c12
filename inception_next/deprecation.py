"""Old spellings that still work for a while: a renamed setting, flag or name, and modules and names that moved. Each
use says what to write instead, in one line (a FutureWarning, which Python shows by default)."""

import argparse
import importlib
import importlib.abc
import importlib.util
import sys
import warnings


class RenamedWarning(FutureWarning):
    """An old spelling was used; the message says the new one."""


def warn_renamed(old, new, stacklevel=3):
    warnings.warn(f"deprecated: {old}; use {new} instead", RenamedWarning, stacklevel=stacklevel)


def show_renames_in_one_line():
    """Print RenamedWarning as `warning: <message>`, without the file and source line warnings adds."""
    shown = warnings.formatwarning
    if getattr(shown, "renames_in_one_line", False):
        return

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, RenamedWarning):
            return f"warning: {message}\n"
        return shown(message, category, filename, lineno, line)

    formatwarning.renames_in_one_line = True
    warnings.formatwarning = formatwarning


def moved_names(module, moved):
    """A module's `__getattr__` for names that moved elsewhere ({name: new module}): the old import keeps working,
    with a warning naming the new place."""
    def __getattr__(name):
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_renamed(f"{module}.{name}", f"{moved[name]}.{name}")
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import inception_next.cli` (a module of an earlier layout, {old name: new name}) gives a module holding the new
    module's names, with a warning."""

    def __init__(self, moved):
        self.moved = moved

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in self.moved else None

    def create_module(self, spec):
        return None  # a module of its own: the new module's identity stays as it is

    def exec_module(self, module):
        new = importlib.import_module(self.moved[module.__name__])
        warn_renamed(f"module {module.__name__}", new.__name__, stacklevel=2)
        module.__dict__.update({name: value for name, value in vars(new).items() if not name.startswith("__")})
        module.__getattr__ = lambda name: getattr(new, name)


def keep_old_module_paths(moved):
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules(moved))


class OldSpelling(argparse.Action):
    """A flag's old spelling: sets what the new one sets, with a warning naming the new one."""

    def __init__(self, option_strings, dest, new=None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        warn_renamed(option_string, self.new, stacklevel=2)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_flag(parser, flag, **kwargs):
    """`parser.add_argument(flag, ...)` for a flag spelled as Lightning's are (`--img_size`), which also takes the
    dashed spelling the commands used before (`--img-size`), with a warning; only the new one is in --help."""
    action = parser.add_argument(flag, **kwargs)
    if "_" in flag:
        switch = kwargs.get("action") == "store_true"
        parser.add_argument(flag.replace("_", "-"), dest=action.dest, action=OldSpelling, new=flag,
                            nargs=0 if switch else kwargs.get("nargs"), const=True if switch else None,
                            type=kwargs.get("type"), choices=kwargs.get("choices"), default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
    return action
