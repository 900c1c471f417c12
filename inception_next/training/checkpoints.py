"""Checkpoints on disk: written so that no kill or full disk can break the previous one, checked whole before they are
loaded, and found by run for `--ckpt_path last` / `best`.

A run keeps its checkpoints in its own folder, `<logs>/<experiment>/version_N/checkpoints`: `last.ckpt` and
`best-*.ckpt`. A save writes the new file beside its final name (same folder, so the same filesystem), flushes it to
disk, then renames it over the old one: at any instant the old file or the new one is whole under that name.
"""

import io
import os
import re
import shutil
import uuid
import warnings
import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from ..data import ImageNetDataModule
from ..errors import UserError
from ..models.factory import CheckpointError

PARTIAL_SUFFIX = ".partial"  # a save in progress, or left by a killed one: never a checkpoint
LAST = "last.ckpt"
BEST_PATTERN = "best-*.ckpt"


class CheckpointSaveError(UserError, RuntimeError):
    """A checkpoint could not be written (disk full, quota, permissions); the previous ones are intact."""


def _megabytes(size):
    return f"{size / 2**20:.1f} MB"


def write_bytes(handle, data):
    """The one place a checkpoint's bytes reach the disk (tests stall here to kill a process mid-save)."""
    handle.write(data)


def save_atomically(data, path):
    """Write `data` to `path` so that a kill or an error at any point leaves the previous file whole."""
    path = Path(path)
    folder = path.parent
    partial = folder / f".{path.stem}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as handle:
            write_bytes(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
    except OSError as error:
        partial.unlink(missing_ok=True)
        free = shutil.disk_usage(folder).free if folder.is_dir() else 0
        raise CheckpointSaveError(
            f"could not save {path.name} in {folder}: {error.strerror or error} (it needs {_megabytes(len(data))}, "
            f"{_megabytes(free)} free there); the checkpoints saved before are intact") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, writing local files with `save_atomically`. (Lightning's own writes a
    temporary file in $TMPDIR and moves it into place: across filesystems that move copies over the old checkpoint in
    place, so a kill or a full disk during it destroys the old one.) Remote URLs keep Lightning's way."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        save_atomically(buffer.getbuffer(), path)


def check_checkpoint(path, flag="--ckpt_path"):
    """Raise CheckpointError naming `path` unless it is a whole checkpoint that this project wrote: a torch.save zip
    archive whose every member matches its checksum, holding a Lightning `state_dict`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{flag} {path}: no such file; expected a checkpoint (.ckpt) or `last` / `best`")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{flag} {path}: empty file; expected a checkpoint written by this project")
    try:
        if not zipfile.is_zipfile(path):
            raise zipfile.BadZipFile("not the zip archive torch.save writes")
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"{flag} {path}: damaged or not a checkpoint ({error}); expected a whole checkpoint "
                              "written by this project") from None
    if damaged is not None:
        raise CheckpointError(f"{flag} {path}: damaged ({damaged} does not match its checksum); expected a whole "
                              "checkpoint written by this project")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # any unpickling failure of a foreign file
        raise CheckpointError(f"{flag} {path}: not a checkpoint of this project ({error})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{flag} {path}: weights without training state; expected a checkpoint written by "
                              "`fit` (to start from these weights, use --model.pretrained)")
    return path


def is_run_folder(path, experiment_dir):
    path = Path(path)
    return path.parent.resolve() == Path(experiment_dir).resolve() and re.fullmatch(r"version_\d+", path.name)


def checkpoint_folder(run):
    """Where a run's checkpoints go: `<run>/checkpoints`."""
    return Path(run) / "checkpoints"


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
    folder = checkpoint_folder(run)
    pattern = BEST_PATTERN if kind == "best" else "*.ckpt"
    return sorted(folder.glob(pattern), key=lambda p: (p.name != LAST, -p.stat().st_mtime))


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


def remove_partial_saves(run):
    """Delete what killed saves left in a run's checkpoint folder (only ever partial files, never a checkpoint)."""
    for leftover in checkpoint_folder(run).glob(f".*{PARTIAL_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def trained_data_settings(path):
    """How a checkpoint's weights saw their images: the data module's image size, crop and interpolation, and its
    classes in label order (those it recorded), for evaluating, predicting and exporting it as trained."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    settings = {key: value for key, value in checkpoint.get("datamodule_hyper_parameters", {}).items()
                if key in ("img_size", "crop_pct", "interpolation")}
    classes = checkpoint.get(ImageNetDataModule.__qualname__, {}).get("classes")
    return {**settings, **({"classes": list(classes)} if classes else {})}
