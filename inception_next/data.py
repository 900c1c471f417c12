"""ImageNet-1K, or any dataset in its class-folder layout, as a LightningDataModule.

    root/train/<class>/*.JPEG     root/val/<class>/*.JPEG

The number of classes and their names come from the folders. Transforms are timm's, with the paper's defaults.
With `root: null` the module trains on the generated demo dataset (`inception_next.demo_data`), through the same code.

Unreadable files. Training skips them: each is named once in a warning, another image takes its place (batches stay
full, which Mixup needs) and the count is reported at the end of the epoch. Validation and test do not skip: leaving
an image out would silently change the metric's denominator. Before any training starts, every validation file is
opened, so empty or non-image files stop the run at once with their names; a file that opens but fails to decode
later (a truncated JPEG) stops validation with an error naming it.
"""

import multiprocessing
import os
import random
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageNetInfo, create_transform
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from . import demo_data
from .preemption import ignore_job_signals

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A dataset folder or data setting that is not as expected; the message names it and what was expected."""


class UnreadableImageError(DatasetError):
    pass


def is_image_file(path):
    return path.suffix.lower() in IMAGE_EXTENSIONS


def load_rgb(path):
    """Decode an image file to 8-bit RGB, whatever its mode (grayscale, CMYK, palette with transparency, 16-bit)
    and whatever its extension says (PNG data under a .JPEG name is common in scraped folders)."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit (or 32-bit integer) grayscale: keep the top byte rather than clip at 255.
                shift = 8 if image.mode.startswith("I;16") else 24
                image = Image.fromarray((np.asarray(image).astype(np.uint32) >> shift).astype(np.uint8))
            elif image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise UnreadableImageError(f"{path}: unreadable image ({error})") from None


def list_classes(split_dir):
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))


def list_images(folder):
    return sorted(Path(folder, name) for name in os.listdir(folder) if is_image_file(Path(name)))


def imagenet_class_names(folder_names):
    """Human-readable names when the folders are ImageNet-1K's synsets, the folder names otherwise."""
    info = ImageNetInfo()
    synsets = set(info.label_names())
    if folder_names and all(name in synsets for name in folder_names):
        return [info.label_name_to_description(name) for name in folder_names]
    return list(folder_names)


@contextmanager
def seeded_randomness(seed):
    """Seed Python's, NumPy's and torch's generators with `seed`, so that a sample's augmentation depends on
    (seed, epoch, index) alone: not on the worker that loads it, on how many workers there are, or on where training
    resumed. A loader worker's generators serve nothing else, so there they are only reseeded (cheap); in the main
    process (num_workers=0) their states are put back afterwards, leaving Mixup's and drop path's draws untouched."""
    saved = None
    if get_worker_info() is None:
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed % 2**63)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class ResumableSampler(DistributedSampler):
    """Each epoch's order is a permutation drawn from (seed, epoch), split across ranks (rank r takes every
    world_size-th index), so any rank can recompute it. `resume(epoch, start)` makes that epoch begin at its
    `start`-th index, skipping what was trained before an interruption. Yields (index, augmentation seed) pairs.

    The order is drawn when iteration starts. A DataLoader with workers starts it as soon as its iterator is made
    (the workers prefetch), which Lightning does before it calls `set_epoch` on resuming, so the data module sets
    the epoch itself when it builds the sampler.

    Training shuffles and drops the tail that does not fill a whole optimizer step (`step_samples` per rank: batch x
    gradient accumulation), as the official train.py trains len(dataset) // global batch steps an epoch. Evaluation
    keeps every index in order (ranks may get one index more or less: each is evaluated exactly once, no padding
    duplicates to bias the metric).

    A DistributedSampler, so that a Trainer leaves it alone (it wraps any other sampler in one of its own under DDP,
    which would shard the data a second time). Its __init__ is not called: it would ask torch.distributed for the
    rank, which is given here."""

    def __init__(self, size, seed=0, shuffle=True, rank=0, world_size=1, step_samples=1):
        self.size, self.seed, self.shuffle, self.rank, self.world_size = size, seed, shuffle, rank, world_size
        self.step_samples = step_samples
        self.epoch, self._resume_at = 0, None
        self.started, self.consumed = (0, 0), 0  # the running iteration's (epoch, start), and samples trained since

    def set_epoch(self, epoch):  # called by Lightning before each epoch
        self.epoch = epoch

    def resume(self, epoch, start):
        self._resume_at = (epoch, start)

    def __len__(self):
        if self.shuffle:
            return self.size // self.world_size // self.step_samples * self.step_samples
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
            order = order[self.rank:len(self) * self.world_size:self.world_size].tolist()
        else:
            order = list(range(self.rank, self.size, self.world_size))
        start = 0
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            start = self._resume_at[1]
            self._resume_at = None
        self.started, self.consumed = (self.epoch, start), 0
        epoch_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        return iter([(index, epoch_seed + index) for index in order[start:]])

    def position(self, epoch_samples=None):
        """Where the next sample to train comes from, (epoch, index into this rank's order), counting the samples
        trained (`consumed`, which the data module advances); an epoch's end (after `epoch_samples`, when the
        Trainer trains fewer than all, as with limit_train_batches) points to the next one's start."""
        epoch, start = self.started
        done = start + self.consumed
        return (epoch + 1, 0) if done >= min(len(self), epoch_samples or len(self)) else (epoch, done)


class ClassFolderDataset(Dataset):
    """(image, label) pairs from `split_dir/<class>/*`, labels indexing `classes`.

    With `skip_unreadable`, an unreadable file is named once in a warning and the next readable file is returned in
    its place; `skipped` (shared with the loader's worker processes) counts them.
    """

    def __init__(self, split_dir, classes, transform=None, skip_unreadable=False):
        self.split_dir = Path(split_dir)
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        self.samples = [(path, label) for label, name in enumerate(classes)
                        if (self.split_dir / name).is_dir() for path in list_images(self.split_dir / name)]
        # The platform's own start method, as the loader's workers use: on Linux (fork) the counter's semaphore is
        # unnamed, so no resource tracker races a job's signals over it at exit.
        self.skipped = multiprocessing.Value("i", 0) if skip_unreadable else None
        self._warned = set()

    def __len__(self):
        return len(self.samples)

    def _report(self, path, error):
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"skipping {error}", stacklevel=3)
        with self.skipped.get_lock():
            self.skipped.value += 1

    def __getitem__(self, index):
        """`index`, or (index, seed) from ResumableSampler: the seed makes the augmentation reproducible."""
        index, seed = index if isinstance(index, tuple) else (index, None)
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                image = load_rgb(path)
                break
            except UnreadableImageError as error:
                if not self.skip_unreadable:
                    raise
                if attempt == 0:  # count the file asked for, not the neighbours tried in its place
                    self._report(path, error)
        else:
            raise DatasetError(f"{self.split_dir}: no readable image at all")
        if self.transform is None:
            return image, label
        if seed is None:
            return self.transform(image), label
        with seeded_randomness(seed):
            return self.transform(image), label


class ImageFolderDataset(Dataset):
    """Unlabelled images under a folder (recursively), for prediction: (image, path) pairs."""

    def __init__(self, root, transform):
        self.paths = sorted(p for p in Path(root).rglob("*") if p.is_file() and is_image_file(p))
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        index = index[0] if isinstance(index, tuple) else index  # from ResumableSampler: (index, unused seed)
        return self.transform(load_rgb(self.paths[index])), str(self.paths[index])


class ImageFolderDataModule(L.LightningDataModule):
    """ImageNet-1K, or your own dataset in the same layout.

    Args:
        root: folder holding train/ and val/ class folders; null for the generated demo dataset.
        img_size: training and evaluation resolution.
        crop_pct: evaluation resizes to img_size / crop_pct, then centre-crops; default 0.875, or 1.0 from 384 px.
        batch_size: per device (the global batch is this x devices x nodes x gradient accumulation).
        auto_augment, color_jitter, reprob, remode, scale, hflip, train_interpolation: timm's training transform
            ("random": bilinear or bicubic per image, as the official runs).
        interpolation: the evaluation resize's.
        predict_root: folder of unlabelled images for `predict`.
        classes: the class folder names in label order; default: the folders under root/train. The CLI sets the
            checkpoint's when it evaluates one, so its labels keep their meaning without the training data.
        seed: seed of the epoch order and of every sample's augmentation; null: the run's seed (seed_everything).

    Under DDP the module shards the data itself (see ResumableSampler), so the Trainer runs with
    `use_distributed_sampler=False` (the CLI sets it). Its state in a checkpoint records how far into the epoch
    training got, so a run resumed mid-epoch continues with the next batch of the same order.
    """

    def __init__(self, root: str | None = None, img_size: int = 224, crop_pct: float | None = None,
                 batch_size: int = 128, num_workers: int = 8, pin_memory: bool = True,
                 persistent_workers: bool = True, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                 color_jitter: float = 0.4, reprob: float = 0.25, remode: str = "pixel",
                 scale: tuple[float, float] = (0.08, 1.0), hflip: float = 0.5, train_interpolation: str = "random",
                 interpolation: str = "bicubic",
                 predict_root: str | None = None, seed: int | None = None, classes: list[str] | None = None):
        super().__init__()
        self.save_hyperparameters()
        for name, least in (("img_size", 1), ("batch_size", 1), ("num_workers", 0)):
            value = self.hparams[name]
            if not isinstance(value, int) or value < least:
                raise DatasetError(f"data.{name} {value}: expected an integer of at least {least}")
        if crop_pct is not None and not 0 < crop_pct <= 1:
            raise DatasetError(f"data.crop_pct {crop_pct}: expected a fraction in (0, 1]")
        self.demo = root is None
        self.root = demo_data.default_root() if self.demo else Path(root).expanduser()
        self.img_size = img_size
        self.crop_pct = crop_pct if crop_pct is not None else (1.0 if img_size >= 384 else 0.875)
        self.batch_size = batch_size
        self._classes = None
        self.train_set = self.val_set = self.predict_set = None
        self.seed = seed
        self.train_sampler = None
        self._resume_at = None

    # -- classes: known before setup, so the CLI can hand num_classes to the model --------------------------------
    @property
    def classes(self):
        """Folder names of the classes, in label order."""
        if self._classes is None:
            if self.hparams.classes is not None:
                self._classes = list(self.hparams.classes)
            else:
                self._classes = list(demo_data.CLASSES) if self.demo else self._check_layout()
        return self._classes

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def class_names(self):
        return imagenet_class_names(self.classes)

    def _check_layout(self):
        root = self.root
        if not root.is_dir():
            raise DatasetError(f"data.root {root}: no such folder; expected ImageNet (or a dataset in its layout, "
                               "root/train/<class>/*.JPEG and root/val/<class>/*.JPEG): set --data.root "
                               "/path/to/imagenet, or run experiments/demo.yaml, which needs no dataset")
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise DatasetError(f"{root}: no {split}/ folder; expected {root / split}/<class>/<images>")
        classes = list_classes(root / "train")
        if len(classes) < 2:
            raise DatasetError(f"{root / 'train'}: {len(classes)} class folder(s) {classes}; expected at least 2, "
                               f"as {root / 'train'}/<class>/<images>")
        val_classes = list_classes(root / "val")
        extra = sorted(set(val_classes) - set(classes))
        if extra:
            raise DatasetError(f"{root / 'val'}: classes absent from train/: {', '.join(extra[:10])}"
                               f"{' ...' if len(extra) > 10 else ''}; expected val classes to be a subset of train's")
        if not val_classes:
            raise DatasetError(f"{root / 'val'}: no class folders; expected {root / 'val'}/<class>/<images>")
        for split, names in (("train", classes), ("val", val_classes)):
            empty = [name for name in names if not list_images(root / split / name)]
            if empty:
                raise DatasetError(f"{root / split}: class folders without images: {', '.join(empty[:10])}"
                                   f"{' ...' if len(empty) > 10 else ''}; expected image files "
                                   f"({', '.join(IMAGE_EXTENSIONS)}) in each")
        return classes

    # -- transforms -----------------------------------------------------------------------------------------------
    def train_transform(self):
        h = self.hparams
        return create_transform(self.img_size, is_training=True, scale=tuple(h.scale), hflip=h.hflip,
                                color_jitter=h.color_jitter, auto_augment=h.auto_augment, re_prob=h.reprob,
                                re_mode=h.remode, interpolation=h.train_interpolation, mean=IMAGENET_DEFAULT_MEAN,
                                std=IMAGENET_DEFAULT_STD)

    def eval_transform(self):
        return create_transform(self.img_size, is_training=False, interpolation=self.hparams.interpolation,
                                crop_pct=self.crop_pct, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)

    # -- Lightning hooks ------------------------------------------------------------------------------------------
    def prepare_data(self):
        predicting = self.trainer is not None and self.trainer.state.fn == "predict"
        if self.demo and not predicting:
            demo_data.ensure(self.root)

    def setup(self, stage=None):
        if stage == "predict":
            root = self.hparams.predict_root
            if not root:
                raise DatasetError("data.predict_root is not set: expected a folder of images to predict "
                                   "(--data.predict_root my_images/)")
            if not Path(root).expanduser().is_dir():
                raise DatasetError(f"data.predict_root {root}: no such folder; expected a folder of images to predict")
            self.predict_set = ImageFolderDataset(Path(root).expanduser(), self.eval_transform())
            if not len(self.predict_set):
                raise DatasetError(f"data.predict_root {root}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
            return
        if stage == "fit" and self.train_set is None:
            self.train_set = ClassFolderDataset(self._split("train"), self.classes, self.train_transform(),
                                                skip_unreadable=True)
        if self.val_set is None:
            self.val_set = ClassFolderDataset(self._split("val"), self.classes, self.eval_transform())
            self._check_files_open(self.val_set)
        if stage == "fit" and len(self.train_set) < self.batch_size:
            raise DatasetError(f"{self.root / 'train'}: {len(self.train_set)} images, fewer than one batch of "
                               f"{self.batch_size}; expected at least data.batch_size images")

    def _split(self, split):
        """root/<split>, checked against the classes (which may be given, rather than read from root/train)."""
        folder = self.root / split
        if not folder.is_dir():
            raise DatasetError(f"data.root {self.root}: no {split}/ folder; expected {folder}/<class>/<images>")
        unknown = sorted(set(list_classes(folder)) - set(self.classes))
        if unknown:
            raise DatasetError(f"{folder}: classes the model does not know: {', '.join(unknown[:5])}"
                               f"{' ...' if len(unknown) > 5 else ''}; expected some of its {self.num_classes} "
                               f"classes ({', '.join(self.classes[:3])}, ...)")
        return folder

    @staticmethod
    def _check_files_open(dataset):
        """Open (header only, no decode) every file, so empty and non-image files are named before training."""
        bad = []
        for path, _ in dataset.samples:
            try:
                with Image.open(path):
                    pass
            except (OSError, UnidentifiedImageError, ValueError):
                bad.append(str(path))
        if bad:
            raise DatasetError(f"{dataset.split_dir}: {len(bad)} unreadable file(s), which validation cannot skip "
                               f"without biasing the metric: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; "
                               "expected them repaired or removed")

    @property
    def unreadable_train_files(self):
        """How many times a training file was skipped as unreadable so far (all loader workers together)."""
        return self.train_set.skipped.value if self.train_set is not None else 0

    def _distribution(self):
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _sampler(self, dataset, train):
        if self.seed is None:
            self.seed = torch.initial_seed() % 2**31
            if self.trainer is not None:  # rank 0's: unseeded ranks would each draw another order, and overlap
                self.seed = self.trainer.strategy.broadcast(self.seed)
        rank, world_size = self._distribution()
        accumulation = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        sampler = ResumableSampler(len(dataset), self.seed, shuffle=train, rank=rank, world_size=world_size,
                                   step_samples=self.batch_size * accumulation if train else 1)
        if train and self._resume_at is not None:
            sampler.set_epoch(self._resume_at[0])
            sampler.resume(*self._resume_at)
            sampler.started = self._resume_at
            self._resume_at = None
        elif train and self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
            sampler.started = (self.trainer.current_epoch, 0)
        return sampler

    def _loader(self, dataset, sampler=None, train=False):
        workers = self.hparams.num_workers
        # Its own generator: starting an iterator then draws no seed from the global one, which Mixup and drop path
        # use (a resumed run starts its iterators at other moments than an unbroken one).
        # Workers leave a cluster's job signals (SIGTERM, SIGUSR1) to the main process, which saves and stops.
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=train, num_workers=workers,
                          worker_init_fn=ignore_job_signals,
                          pin_memory=self.hparams.pin_memory and torch.cuda.is_available(),
                          persistent_workers=self.hparams.persistent_workers and workers > 0,
                          generator=torch.Generator().manual_seed(self.seed or 0))

    def on_before_batch_transfer(self, batch, dataloader_idx):
        """Count the training samples about to be trained: the resume point is kept here rather than read from
        Lightning's loop counters, which a resumed run does not always restore consistently."""
        if self.train_sampler is not None and self.trainer is not None and self.trainer.training:
            self.train_sampler.consumed += len(batch[0])
        return batch

    def state_dict(self):
        """Saved in every checkpoint: the seed, and where the next training batch comes from (epoch, and how many
        of this rank's samples that epoch has already trained on), at an optimizer step's boundary (a save in the
        middle of gradient accumulation has not saved the accumulated gradient: those batches are trained again).
        A save at an epoch's last batch, during its validation or at its end points to the next epoch's start."""
        state = dict(seed=self.seed, classes=self.classes)  # the labels' meaning, for evaluating the checkpoint
        if self.train_sampler is not None and self.trainer is not None and self.trainer.state.fn == "fit":
            batches = self.trainer.num_training_batches  # fewer than the loader's with limit_train_batches
            epoch, samples = self.train_sampler.position(
                batches * self.batch_size if batches != float("inf") else None)
            state.update(epoch=epoch, samples=samples - samples % self.train_sampler.step_samples)
        return state

    def load_state_dict(self, state):
        self.seed = state["seed"]
        if "epoch" in state:
            self._resume_at = (state["epoch"], state["samples"])

    def train_dataloader(self):
        self.train_sampler = self._sampler(self.train_set, train=True)
        return self._loader(self.train_set, self.train_sampler, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set, self._sampler(self.val_set, train=False))

    def test_dataloader(self):
        return self.val_dataloader()

    def predict_dataloader(self):
        return self._loader(self.predict_set, self._sampler(self.predict_set, train=False))
