"""Experiment files and their `extends` chains: a file may start with `extends: other.yaml` (relative to itself) and
then state only what differs. `-c/--config FILE` applies the chain base first, each file as jsonargparse reads any
config file (so values that are paths resolve against their own file), so that later files, then later flags,
override earlier ones; the run is named after FILE.

A file that is not there names a packaged experiment (`find_experiment`): `experiments/tiny.yaml`, `tiny` and
`ablations/table8/no_square` work from any folder after a regular install; a file of that name where it is looked
for always wins."""

import difflib
import fnmatch
from pathlib import Path

import yaml
from jsonargparse import ActionConfigFile
from lightning.pytorch.utilities import rank_zero_info

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


def packaged_experiments():
    """The packaged experiments by name: their paths under experiments/ without `.yaml` (`tiny`,
    `ablations/table8/no_square`)."""
    return sorted(path.relative_to(EXPERIMENTS).with_suffix("").as_posix() for path in EXPERIMENTS.rglob("*.yaml"))


ANNOUNCED = set()  # the packaged experiments said once (a command parses its --config more than once)


def find_experiment(name, flag="--config", folder=None, extending=()):
    """The experiment file `name` stands for: the file of that name (relative to `folder`, else the working folder),
    unless it is one of the files `extending` it (a local tiny.yaml may extend the packaged one); else the packaged
    experiment of that name, `experiments/` and `.yaml` optional, said once; else ConfigError naming the nearest
    packaged experiments."""
    given = Path(name).expanduser()
    local = Path(folder) / given if folder is not None else given
    if local.is_file() and local.resolve() not in extending:
        return local.resolve()
    short = given.as_posix().removeprefix("./").removeprefix("experiments/").removesuffix(".yaml").removesuffix(".yml")
    packaged = EXPERIMENTS / f"{short}.yaml"
    if not given.is_absolute() and packaged.is_file():
        if (flag, name) not in ANNOUNCED:
            ANNOUNCED.add((flag, name))
            rank_zero_info(f"{flag} {name}: the packaged experiment {packaged}")
        return packaged
    if local.is_file():  # one of the files extending it, and no packaged one of its name
        raise ConfigError(f"--config {local.resolve()}: `extends` loops back to itself")
    nearest = difflib.get_close_matches(short, packaged_experiments(), n=4, cutoff=0.3)
    raise ConfigError(f"{flag} {name}: no such file, nor a packaged experiment of that name; expected a YAML file or "
                      f"a packaged experiment ({', '.join(nearest) or 'demo'}, ... as listed under {EXPERIMENTS})")


def find_experiments(names, flag):
    """`find_experiment` of each name, a pattern (`ablations/table8/*`) standing for the files it matches, or, where
    none does here, the packaged experiments it matches; in order, each once."""
    found = []
    for name in names:
        if any(mark in str(name) for mark in "*?["):
            short = str(name).removeprefix("experiments/").removesuffix(".yaml")
            matches = sorted(Path().glob(str(name))) or [EXPERIMENTS / f"{experiment}.yaml" for experiment in
                                                          packaged_experiments() if fnmatch.fnmatch(experiment, short)]
            if not matches:
                raise ConfigError(f"{flag} {name}: matches no file here and no packaged experiment")
            found += [path.resolve() for path in matches]
        else:
            found.append(find_experiment(name, flag))
    return list(dict.fromkeys(found))


def config_chain(name, seen=(), flag="--config", folder=None):
    """The experiment `name` names (see `find_experiment`) and the files it extends, base first."""
    path = find_experiment(name, flag, folder, extending=seen)
    if path in seen:
        raise ConfigError(f"--config {path}: `extends` loops back to itself")
    base = read_config(path).get("extends")
    return (config_chain(base, seen + (path,), f"extends in {path}", path.parent) if base else []) + [path]


def is_yaml_text(value):
    """Whether a --config value is settings written out (LightningCLI takes YAML there) rather than a file's name."""
    return any(mark in str(value) for mark in (":", "{", "\n"))


def is_absolute(value):
    """A path that needs no folder to mean one place: absolute, or a URL (s3://bucket/prefix)."""
    return "://" in value or Path(value).expanduser().is_absolute()


class ActionExperimentConfig(ActionConfigFile):
    """`-c/--config FILE`: FILE's `extends` chain applied base first, then the run named after FILE (unless a later
    flag or the file itself names it). A value written as settings (`{...}`, `key: value`) is a YAML string, as in
    LightningCLI."""

    def __call__(self, parser, cfg, values, option_string=None):
        if is_yaml_text(values):
            return super().__call__(parser, cfg, values, option_string)
        named = None
        for path in config_chain(values):
            self.apply_config(parser, cfg, self.dest, str(path))
            named = cfg.get("experiment") if cfg.get("experiment") != "default" else named
            self.resolve_relative_paths(cfg, read_config(path), path.parent)
        if "extends" in cfg:
            cfg["extends"] = None  # applied: what remains is the resolved config
        if "experiment" in cfg:
            cfg["experiment"] = named or Path(str(values)).name.removesuffix(".yaml").removesuffix(".yml")

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
