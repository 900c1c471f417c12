"""The run folder: where a fit keeps what it leaves, and the one place its layout and file names are spelled. Everything
else (the CLI, the callbacks, `sweep`, `report`, the notebooks) asks here.

    <default_root_dir>/<experiment>/version_N/     one fit; a sweep's experiment is <experiment>/seed<N>
        config.yaml                                the resolved config
        loggers.json                               which run of each logger's own store it is (to continue it)
        finished.json                              written when the fit returns: its final metrics
        events.out.tfevents.*                      TensorBoard's
        checkpoints/last.ckpt                      after every epoch and every save_every_n_steps steps
        checkpoints/best-epoch003-top1-0.8125.ckpt the best val top-1

`--ckpt_path last` / `best` take the newest whole checkpoint of the experiment's newest run (`choose_checkpoint`); a
fit given a checkpoint of one of its runs continues that run, in its folder (`start_fit`).
"""

import json
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from lightning.pytorch.utilities import rank_zero_info
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ..models import CheckpointError
from .checkpoints import PARTIAL_SUFFIX, check_checkpoint
from .config import ConfigError

DEFAULT_ROOT = "logs"
CONFIG = "config.yaml"
LOGGER_IDENTITIES = "loggers.json"
FINISHED = "finished.json"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST_FILENAME = "best-epoch{epoch:03d}-top1-{val/top1:.4f}"  # ModelCheckpoint's template: best-epoch003-top1-0.8125
BEST_PATTERN = "best-*.ckpt"
SLURM_REQUEUE_PATTERN = "hpc_ckpt_*.ckpt"  # what Lightning's own SLURM auto-requeue would leave in the root


def absolute(root):
    """`trainer.default_root_dir` as an absolute path, so that every path a run prints names one place."""
    return Path(root).expanduser().resolve()


def experiment_dir(root, experiment):
    """Where an experiment's runs go."""
    return absolute(root) / experiment


def seed_experiment(experiment, seed):
    """A sweep's name for one seed of an experiment; `report` groups them back (`experiment_of`)."""
    return f"{experiment}/seed{seed}"


def experiment_of(name):
    return re.sub(r"/seed\d+$", "", name)


def is_run_folder(path, experiment_dir):
    path = Path(path)
    return path.parent.resolve() == Path(experiment_dir).resolve() and re.fullmatch(r"version_\d+", path.name)


def checkpoint_folder(run):
    return Path(run) / CHECKPOINTS


def run_folders(experiment_dir):
    """The runs of an experiment, newest (highest version) first."""
    folders = [p for p in Path(experiment_dir).glob("version_*") if is_run_folder(p, experiment_dir)]
    return sorted(folders, key=lambda p: int(p.name.split("_")[1]), reverse=True)


def new_run_folder(experiment_dir):
    """Create and return the experiment's next run folder, version_<highest + 1> (as TensorBoard's logger numbers
    them), never one that another process has just taken."""
    experiment_dir = Path(experiment_dir)
    experiment_dir.mkdir(parents=True, exist_ok=True)
    runs = run_folders(experiment_dir)
    version = int(runs[0].name.split("_")[1]) + 1 if runs else 0
    while True:
        try:
            (experiment_dir / f"version_{version}").mkdir()
            return experiment_dir / f"version_{version}"
        except FileExistsError:
            version += 1


def checkpoints_of(run, kind):
    """A run's checkpoints of `kind`, never a partial save: 'best', the best ones, newest first; 'last', last.ckpt
    then the others newest first, so that a damaged last.ckpt falls back to the newest whole one."""
    pattern = BEST_PATTERN if kind == "best" else "*.ckpt"
    return sorted(checkpoint_folder(run).glob(pattern), key=lambda p: (p.name != LAST, -p.stat().st_mtime))


def best_checkpoint(run):
    return checkpoints_of(run, "best")[0]


def find_checkpoint(experiment_dir, kind):
    """The newest whole checkpoint of `kind` in the newest run of the experiment that has one, or None when no run
    has any. A damaged newer one is named in a warning and skipped; if all are damaged, CheckpointError."""
    for run in run_folders(experiment_dir):
        candidates = checkpoints_of(run, kind)
        if not candidates:
            continue
        damaged = []
        for path in candidates:
            try:
                check_checkpoint(path)
            except CheckpointError as error:
                damaged.append(str(error))
                continue
            for message in damaged:
                warnings.warn(f"{message.split(';')[0]}; using {path} instead")
            return path
        raise CheckpointError(f"--ckpt_path {kind}: every checkpoint of {run} is damaged: {'; '.join(damaged)}")
    return None


def choose_checkpoint(path, experiment_dir, experiment, fit=False):
    """(checkpoint file, the run folder a fit continues or None) for --ckpt_path `path`: `last` / `best`, the newest
    whole one of the experiment's newest run (named, so the user sees which); a file, checked whole. A fit continues
    the run that holds its checkpoint, when that is one of this experiment's. (None, None) for a fit's `last` when
    nothing is saved yet: it starts a new run. Reads only: deletes nothing."""
    if path in ("last", "best"):
        found = find_checkpoint(experiment_dir, path)
        if found is None:
            if fit and path == "last":
                rank_zero_info(f"--ckpt_path last: no checkpoint under {experiment_dir} yet; starting a new run")
                return None, None
            raise CheckpointError(f"--ckpt_path {path}: no checkpoint under {experiment_dir}; expected a "
                                  f"finished `fit` of experiment {experiment!r} there")
        rank_zero_info(f"--ckpt_path {path}: {found}")
    else:
        found = check_checkpoint(path)
    run = found.resolve().parent.parent
    continues = fit and found.resolve().parent == checkpoint_folder(run) and is_run_folder(run, experiment_dir)
    return found, run if continues else None


@dataclass
class Start:
    """Where a command starts: the checkpoint it loads (or None), and for a fit that continues a run, that run's
    folder and the step its checkpoint holds."""
    checkpoint: str | None = None
    resumed_run: Path | None = None
    resumed_step: int | None = None


def find_start(ckpt_path, root, experiment, fit):
    """`--ckpt_path` (a file, `last` or `best`, or None) resolved for a command of `experiment` under `root`."""
    if ckpt_path is None:
        return Start()
    found, run = choose_checkpoint(ckpt_path, experiment_dir(root, experiment), experiment, fit=fit)
    if found is None:
        return Start()
    step = torch.load(found, map_location="cpu", weights_only=True, mmap=True)["global_step"] if run else None
    return Start(str(found), run, step)


def check_writable(folder, flag):
    """Create `folder` if needed and write a file in it, so that a folder the run cannot write to stops it before
    any work rather than at its first save."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(f"{flag} {folder}: not writable ({error.strerror or error}); expected a folder this user "
                          "can create files in") from None


def start_fit(root, experiment, start, on_slurm=False):
    """Before a fit builds anything: its folders writable, no auto-requeue checkpoint for Lightning to pick up, and
    what a killed save left in the run it continues removed."""
    check_writable(experiment_dir(root, experiment), "--trainer.default_root_dir")
    stale = sorted(absolute(root).glob(SLURM_REQUEUE_PATTERN)) if on_slurm else []
    if stale:  # Lightning would start this fit from them, whatever the experiment
        raise ConfigError(f"{', '.join(map(str, stale))}: Lightning's auto-requeue checkpoints, which it would "
                          "load into this run; expected none (this project saves in each run's folder): move "
                          "them away")
    if start.resumed_run is not None:  # it writes there again
        check_writable(checkpoint_folder(start.resumed_run), "checkpoint folder")
        remove_partial_saves(start.resumed_run)


def remove_partial_saves(run):
    """Delete what killed saves left in a run's checkpoint folder (only ever partial files, never a checkpoint)."""
    for leftover in checkpoint_folder(run).glob(f".*{PARTIAL_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def record_logger_identities(run, identities):
    Path(run, LOGGER_IDENTITIES).write_text(json.dumps(identities, indent=1))


def logger_identities(run):
    """{logger class name: its identity in its own store} as the run recorded them; {} when it did not."""
    recorded = Path(run, LOGGER_IDENTITIES) if run else None
    return json.loads(recorded.read_text()) if recorded is not None and recorded.is_file() else {}


def mark_finished(run, **record):
    """The run is done (`sweep` skips it, `report` reads it): `record` (its final metrics) in its FINISHED file."""
    Path(run, FINISHED).write_text(json.dumps(record, indent=1))


def finished_runs(logs):
    """Experiment name -> its newest finished run, for every experiment under `logs` (a sweep's experiments are
    nested: `<experiment>/seed<N>`)."""
    runs = {}
    for marker in sorted(Path(logs).rglob(FINISHED)):
        experiment = marker.parent.parent
        name = experiment.relative_to(logs).as_posix()
        if name not in runs:
            runs[name] = next(run for run in run_folders(experiment) if (run / FINISHED).is_file())
    return runs


def run_config(run):
    """The resolved config a run was started with."""
    return yaml.safe_load(Path(run, CONFIG).read_text())


def scalars(run, tag):
    """(steps, values) of one TensorBoard scalar, over all of the run's event files (a resumed run has several;
    where they overlap, the later one wins)."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return [], []
    by_step = {event.step: event.value for event in events.Scalars(tag)}
    steps = sorted(by_step)
    return steps, [by_step[step] for step in steps]
