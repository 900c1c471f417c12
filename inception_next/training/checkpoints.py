"""Checkpoints on disk: written so that no kill or full disk can break the previous one, and checked whole before they
are loaded (`runs` knows where a run keeps them).

A save writes the new file beside its final name (same folder, so the same filesystem), flushes it to
disk, then renames it over the old one: at any instant the old file or the new one is whole under that name.
"""

import io
import os
import shutil
import uuid
import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from timm.data import ImageNetInfo

from ..data import ImageNetDataModule
from ..deprecation import moved_names
from ..errors import UserError
from ..models.factory import CheckpointError, classifier_name, preprocessing, read_state_dict

PARTIAL_SUFFIX = ".partial"  # a save in progress, or left by a killed one: never a checkpoint

__getattr__ = moved_names(__name__, {name: "inception_next.training.runs" for name in (
    "LAST", "BEST_PATTERN", "is_run_folder", "checkpoint_folder", "run_folders", "new_run_folder", "checkpoints_of",
    "find_checkpoint", "choose_checkpoint", "remove_partial_saves")})


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


def trained_data_settings(path):
    """How a checkpoint's weights saw their images: the data module's image size, crop and interpolation, and its
    classes in label order (those it recorded), for evaluating, predicting and exporting it as trained."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    settings = {key: value for key, value in checkpoint.get("datamodule_hyper_parameters", {}).items()
                if key in ("img_size", "crop_pct", "interpolation") and value is not None}
    if "img_size" in settings and "crop_pct" not in settings:  # written before the variant owned it: the rule then
        settings["crop_pct"] = 1.0 if settings["img_size"] >= 384 else 0.875
    classes = checkpoint.get(ImageNetDataModule.__qualname__, {}).get("classes")
    return {**settings, **({"classes": list(classes)} if classes else {})}


def evaluation_data_settings(ckpt_path, pretrained, backbone, has_data):
    """The data settings under which evaluation sees weights as they were trained: a checkpoint's classes and
    preprocessing; released ImageNet weights (`pretrained`, a 1000-class classifier) given without a dataset
    (`has_data` false), ImageNet's classes and the variant's preprocessing. {} for anything else."""
    if ckpt_path:
        return trained_data_settings(ckpt_path)
    if not pretrained or has_data:
        return {}
    rows = read_state_dict(pretrained).get(f"{classifier_name(backbone)}.weight")
    if rows is None or len(rows) != 1000:
        return {}
    return dict(preprocessing(backbone), classes=ImageNetInfo().label_names())
