"""Experiment files and their `extends` chains: a file may start with `extends: other.yaml` (relative to itself) and
then state only what differs. `-c/--config FILE` applies the chain base first, each file as jsonargparse reads any
config file (so values that are paths resolve against their own file), so that later files, then later flags,
override earlier ones; the run is named after FILE."""

from pathlib import Path

import yaml
from jsonargparse import ActionConfigFile

from ..errors import UserError

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
DEMO_CONFIG = EXPERIMENTS / "demo.yaml"


class ConfigError(UserError, ValueError):
    pass


# The settings that are paths: a relative one in a config file is relative to that file, not to where fit runs.
PATH_SETTINGS = ("data.root", "data.predict_root", "model.pretrained", "predict_csv", "trainer.default_root_dir")


def read_config(path):
    """A config file's settings as a dict, or ConfigError naming it."""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings at the top level")
    return config


def config_chain(path, seen=()):
    """`path` and the files it extends, base first."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file; the experiments are under {EXPERIMENTS}")
    if path in seen:
        raise ConfigError(f"--config {path}: `extends` loops back to itself")
    base = read_config(path).get("extends")
    return (config_chain(path.parent / base, seen + (path,)) if base else []) + [path]


def is_absolute(value):
    """A path that needs no folder to mean one place: absolute, or a URL (s3://bucket/prefix)."""
    return "://" in value or Path(value).expanduser().is_absolute()


class ActionExperimentConfig(ActionConfigFile):
    """`-c/--config FILE`: FILE's `extends` chain applied base first, then the run named after FILE (unless a later
    flag or the file itself names it). A value that is not a .yaml/.yml path is a YAML string, as in LightningCLI."""

    def __call__(self, parser, cfg, values, option_string=None):
        if not str(values).endswith((".yaml", ".yml")):
            return super().__call__(parser, cfg, values, option_string)
        named = None
        for path in config_chain(values):
            self.apply_config(parser, cfg, self.dest, str(path))
            named = cfg.get("experiment") if cfg.get("experiment") != "default" else named
            self.resolve_relative_paths(cfg, read_config(path), path.parent)
        if "extends" in cfg:
            cfg["extends"] = None  # applied: what remains is the resolved config
        if "experiment" in cfg:
            cfg["experiment"] = named or Path(values).stem

    @staticmethod
    def resolve_relative_paths(cfg, settings, folder):
        for key in PATH_SETTINGS:
            *parents, name = key.split(".")
            node = settings
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            value = node.get(name) if isinstance(node, dict) else None
            if isinstance(value, str) and not is_absolute(value) and key in cfg:
                cfg[key] = str(folder / value)
