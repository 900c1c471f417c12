"""ImageNet-1K, in any of the layouts its sources ship (see `readers`), or your own dataset in one of them, as a
LightningDataModule. With `root: null` it trains on the generated demo dataset (`demo`), through the same code.

A training image's way, one module after another: a reader gives its bytes (`readers`), a loader worker decodes them
(`images`) and applies timm's transform (`transforms`) under the sample's seed (`datasets`), in the order the sampler
draws (`sampler`, `seeding`); the device does the rest on the batch (`device`). Every layout goes through that same
path, and labels index the classes in sorted-wnid order, so a recipe means the same thing whichever copy of ImageNet a
user holds. A command reads only the split it needs: validate and test run on the validation split alone.

Unreadable samples. Training skips them: each is named once in a warning (its file, or its shard and key), another
image takes its place (batches stay full, which Mixup needs) and the count is reported at the end of the epoch.
Validation and test do not skip: leaving an image out would silently change the metric's denominator. Before any
training starts, every validation file's header is read (shards are checked whole when indexed), so empty or
non-image files stop the run at once with their names; an image that fails to decode later stops validation with an
error naming it.
"""

from functools import cached_property
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from timm.data import ImageNetInfo
from torch.utils.data import DataLoader

from ..deprecation import warn_renamed
from ..jobs import ignore_job_signals
from ..models.factory import preprocessing
from . import demo, readers
from .datasets import LabelledImages, prediction_set
from .device import DevicePipeline, EncodedBatch, collate_encoded
from .images import DatasetError, decode, peek
from .object_store import is_url
from .sampler import ResumableSampler
from .transforms import (
    DEVICE_CROP_INTERPOLATIONS,
    evaluation_transform,
    randaugment_of,
    timm_training_transform,
    workers_transform,
)

ERASING_MODES = ("const", "rand", "pixel")  # timm's: one colour, a random colour per erasure, noise per pixel


def imagenet_class_names(folder_names):
    """Human-readable names when the classes are ImageNet-1K's synsets, the names themselves otherwise."""
    info = ImageNetInfo()
    synsets = set(info.label_names())
    if folder_names and all(name in synsets for name in folder_names):
        return [info.label_name_to_description(name) for name in folder_names]
    return list(folder_names)


def device_from_old_settings(augment_on, decode_on):
    """`data.device_from` for the settings it replaced (`augment_on`, `decode_on`: workers or device)."""
    for name, value in (("augment_on", augment_on), ("decode_on", decode_on)):
        if value not in (None, "workers", "device"):
            raise DatasetError(f"data.{name} {value!r}: expected one of workers, device")
    if decode_on == "device" and augment_on != "device":
        raise DatasetError("data.decode_on device: the crop, flip and RandAugment come after decoding; expected "
                           "data.augment_on device too")
    start = "decode" if decode_on == "device" else "randaugment" if augment_on == "device" else "normalize"
    given = [f"data.{name} {value}" for name, value in (("augment_on", augment_on), ("decode_on", decode_on)) if value]
    warn_renamed(" and ".join(given), f"data.device_from {start}")
    return start


def check_settings(h):
    """The data settings `h`, each as expected, the old spellings mapped, and what is left unset filled with the
    model's preprocessing (`models.preprocessing`: a variant's, when the CLI has not filled them in from the model)."""
    if h.augment_on is not None or h.decode_on is not None:
        h.device_from, h.augment_on, h.decode_on = device_from_old_settings(h.augment_on, h.decode_on), None, None
    for key, value in preprocessing().items():
        h[key] = value if h[key] is None else h[key]
    for name, least in (("img_size", 1), ("batch_size", 1), ("num_workers", 0), ("shuffle_window", 1)):
        if not isinstance(h[name], int) or h[name] < least:
            raise DatasetError(f"data.{name} {h[name]}: expected an integer of at least {least}")
    if not 0 <= h.reprob <= 1:
        raise DatasetError(f"data.reprob {h.reprob}: expected a probability in [0, 1]")
    if h.remode not in ERASING_MODES:  # timm's RandomErasing would take any other name for "const"
        raise DatasetError(f"data.remode {h.remode!r}: expected one of {', '.join(ERASING_MODES)}")
    if not 0 < h.crop_pct <= 1:
        raise DatasetError(f"data.crop_pct {h.crop_pct}: expected a fraction in (0, 1]")
    if h.format is not None and h.format not in readers.READABLE:
        raise DatasetError(f"data.format {h.format!r}: expected one of {', '.join(readers.READABLE)} (the official "
                           "archives go through `python -m inception_next prepare` first)")
    if h.device_from in ("randaugment", "decode") and not (h.auto_augment or "").startswith("rand"):
        raise DatasetError(f"data.device_from {h.device_from} moves timm's RandAugment to the device, and "
                           f"data.auto_augment is {h.auto_augment!r}; expected a rand-... policy, or "
                           "data.device_from normalize")
    if h.device_from == "decode" and h.train_interpolation not in DEVICE_CROP_INTERPOLATIONS:
        raise DatasetError(f"data.device_from decode resizes crops with torch, and data.train_interpolation is "
                           f"{h.train_interpolation!r}; expected one of {', '.join(DEVICE_CROP_INTERPOLATIONS)}")
    return h


def training_pipeline(h):
    """timm's training transform for the data settings `h`, and the device's part of it (`device.DevicePipeline`)."""
    transform = timm_training_transform(h.img_size, h.scale, h.hflip, h.color_jitter, h.auto_augment,
                                        h.train_interpolation)
    randaugment = randaugment_of(transform) if h.device_from != "normalize" else None
    return transform, DevicePipeline(h.device_from, h.img_size, h.reprob, h.remode, randaugment)


def shared_seed(seed, trainer):
    """`seed`, or if None one drawn from torch's, rank 0's under DDP: unseeded ranks would each draw another order,
    and overlap."""
    if seed is not None:
        return seed
    drawn = torch.initial_seed() % 2**31
    return trainer.strategy.broadcast(drawn) if trainer else drawn


def ordered(dataset, seed, trainer, h, train, resume_at=None):
    """The sampler of `dataset` for the Trainer's run (its rank, world size, gradient accumulation and epoch; one
    process's without one), training from `resume_at` (a checkpoint's ResumableSampler.state) if given."""
    rank, world_size, accumulation, epoch = (trainer.global_rank, trainer.world_size, trainer.accumulate_grad_batches,
                                             trainer.current_epoch) if trainer else (0, 1, 1, 0)
    sampler = ResumableSampler(len(dataset), seed, shuffle=train, rank=rank, world_size=world_size,
                               step_samples=h.batch_size * accumulation if train else 1,
                               blocks=getattr(dataset, "blocks", None), window=h.shuffle_window,
                               batch_size=h.batch_size, streams=max(1, h.num_workers))
    if train:
        sampler.start(epoch, resume_at)
    return sampler


def loader(dataset, sampler, h, seed, train=False):
    """A DataLoader of `dataset` in `sampler`'s order, with the data settings `h`. It has its own generator, so that
    starting an iterator draws no seed from the global one, which Mixup and drop path use; its workers leave a
    cluster's job signals (SIGTERM, SIGUSR1) to the main process, which saves and stops."""
    return DataLoader(dataset, batch_size=h.batch_size, sampler=sampler, drop_last=train, num_workers=h.num_workers,
                      worker_init_fn=ignore_job_signals, persistent_workers=h.persistent_workers and h.num_workers > 0,
                      pin_memory=h.pin_memory and torch.cuda.is_available(),
                      collate_fn=collate(h, train),
                      generator=torch.Generator().manual_seed(seed or 0))


def collate(h, train):
    """A loader's collate_fn with the data settings `h`: PyTorch's default (None), but for training batches the
    device decodes (`device.collate_encoded`)."""
    return collate_encoded if train and h.device_from == "decode" else None


def is_loader_batch(batch):
    """Whether `batch` is a loader's (uint8 images first): Lightning passes the model summary's example input through
    the transfer hooks too, while fitting."""
    return isinstance(batch, (list, tuple)) and torch.is_tensor(batch[0]) and batch[0].dtype == torch.uint8


class ImageNetDataModule(L.LightningDataModule):
    """ImageNet-1K, or your own dataset in one of its layouts.

    Args:
        root: the dataset, in any layout of `readers` (class folders, Kaggle's download, Hugging Face parquet,
            WebDataset shards, LitData chunks in a folder or at s3://bucket/prefix); null for the generated demo.
        format: the layout's name (folders, kaggle, parquet, webdataset, litdata); default: recognised.
        img_size, crop_pct, interpolation: the input size, and evaluation's resize (to img_size / crop_pct, then a
            centre crop); default: the model's (the CLI fills in its variant's).
        batch_size: per device (the global batch is this x devices x nodes x gradient accumulation).
        auto_augment, color_jitter, scale, hflip, train_interpolation, reprob, remode: timm's training transform
            and random erasing ("random" interpolation: bilinear or bicubic per image, as the official runs).
        device_from: the first step of the training pipeline done on the batch on the device (see `device`):
            normalize, randaugment or decode. augment_on, decode_on: its old spelling.
        predict_root: folder of unlabelled images for `predict`.
        classes: the class names in label order; default: the layout's (folder names; ImageNet's wnids for shards).
        num_workers: loader worker processes; with a source read in blocks (parquet row groups, LitData chunks)
            the epoch order depends on it (see ResumableSampler). shuffle_window: samples shuffled together there.
        seed: seed of the epoch order and of every sample's augmentation; null: the run's seed (seed_everything).

    Under DDP it shards the data itself (ResumableSampler); a checkpoint records where in the epoch training was.
    """

    def __init__(self, root: str | None = None, format: str | None = None, img_size: int | None = None,
                 crop_pct: float | None = None, batch_size: int = 128, num_workers: int = 8, pin_memory: bool = True,
                 persistent_workers: bool = True, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                 color_jitter: float = 0.4, reprob: float = 0.25, remode: str = "pixel",
                 scale: tuple[float, float] = (0.08, 1.0), hflip: float = 0.5, train_interpolation: str = "random",
                 device_from: Literal["normalize", "randaugment", "decode"] = "normalize",
                 interpolation: str | None = None, predict_root: str | None = None, seed: int | None = None,
                 classes: list[str] | None = None, shuffle_window: int = 1024, augment_on: str | None = None,
                 decode_on: str | None = None):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the whole config from the CLI (cli.SaveFitConfig)
        h = check_settings(self.hparams)
        self.demo = root is None
        self.root = demo.default_root() if self.demo else root if is_url(root) else Path(root).expanduser()
        self.img_size, self.crop_pct, self.batch_size, self.seed = h.img_size, h.crop_pct, batch_size, seed
        self.train_set = self.val_set = self.predict_set = self.train_sampler = None
        self._resume_at = self._batch_seeds = None
        self.timm_transform, self.device_work = training_pipeline(h)

    @cached_property
    def source(self):
        """The module reading root's layout (see `readers`)."""
        return readers.readable_source(self.root, self.hparams.format)

    @cached_property
    def classes(self):
        """The class names (ImageNet's wnids, or folder names), in label order."""
        given = self.hparams.classes
        return list(given if given is not None else demo.CLASSES if self.demo else self.source.classes(self.root))

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def class_names(self):
        return imagenet_class_names(self.classes)

    def train_transform(self):
        """What the loader workers do to a training image (see `transforms.workers_transform`)."""
        return workers_transform(self.timm_transform, self.hparams.device_from)

    def training_set(self):
        """The training split through `train_transform`, unreadable images skipped."""
        return LabelledImages(self.reader("train"), self.train_transform(), skip_unreadable=True,
                              decoder=peek if self.hparams.device_from == "decode" else decode)

    def eval_transform(self):
        return evaluation_transform(self.img_size, self.crop_pct, self.hparams.interpolation)

    def normalize(self, images):
        """uint8 images as a loader gives them -> the model's input."""
        return self.device_work.normalize(images)

    def prepare_data(self):
        if self.demo and not (self.trainer is not None and self.trainer.state.fn == "predict"):
            demo.ensure(self.root)

    def setup(self, stage=None):
        if stage == "predict":
            self.predict_set = prediction_set(self.hparams.predict_root, self.eval_transform())
            return
        if stage == "fit" and self.train_set is None:
            self.train_set = self.training_set()
            self.device_work.check(self.trainer.strategy.root_device if self.trainer else torch.device("cpu"))
        if self.val_set is None:
            self.val_set = LabelledImages(self.reader("val"), self.eval_transform())
            self.val_set.reader.check_readable()
        if stage == "fit" and len(self.train_set) < self.batch_size:
            raise DatasetError(f"{self.train_set.reader.source}: {len(self.train_set)} images, fewer than one batch "
                               f"of {self.batch_size}; expected at least data.batch_size images")

    def reader(self, split):
        """The reader of root's `split` ("train" or "val"), its labels indexing the classes."""
        return readers.open_split(self.source, self.root, split, self.classes, self.hparams.shuffle_window)

    @property
    def unreadable_train_files(self):
        """How many times a training file was skipped as unreadable so far (all loader workers together)."""
        return self.train_set.skipped.value if self.train_set is not None else 0

    def _sampler(self, dataset, train):
        self.seed = shared_seed(self.seed, self.trainer)
        resume_at, self._resume_at = (self._resume_at, None) if train else (None, self._resume_at)
        return ordered(dataset, self.seed, self.trainer, self.hparams, train, resume_at)

    def on_before_batch_transfer(self, batch, dataloader_idx):
        """A batch the device decodes is decoded here, onto it. The samples about to be trained are counted here (the
        resume point), rather than read from Lightning's loop counters, which a resumed run may restore otherwise."""
        self._batch_seeds = None
        if isinstance(batch, EncodedBatch):
            batch = self.device_work.decode(batch, self.trainer.strategy.root_device if self.trainer else "cpu")
        if is_loader_batch(batch) and self.train_sampler is not None and self.trainer and self.trainer.training:
            self._batch_seeds = self.train_sampler.take(len(batch[0]))
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx):
        """On the device, as timm's prefetcher in the official runs: the device's steps (`device`)."""
        if not is_loader_batch(batch):
            return batch
        images, *rest = batch
        images = self.device_work(images, self._batch_seeds)
        return type(batch)([self.trainer.precision_plugin.convert_input(images) if self.trainer else images, *rest])

    def state_dict(self):
        """In every checkpoint: the seed, the classes (the labels' meaning) and where training is (its sampler's)."""
        state = dict(seed=self.seed, classes=self.classes)
        if self.train_sampler is not None and self.trainer is not None and self.trainer.state.fn == "fit":
            batches = self.trainer.num_training_batches  # fewer than the loader's with limit_train_batches
            state.update(self.train_sampler.state(batches * self.batch_size if batches != float("inf") else None))
        return state

    def load_state_dict(self, state):
        self.seed = state["seed"]
        self._resume_at = state if "epoch" in state else None

    def train_dataloader(self):
        self.train_sampler = self._sampler(self.train_set, train=True)
        return loader(self.train_set, self.train_sampler, self.hparams, self.seed, train=True)

    def val_dataloader(self):
        return loader(self.val_set, self._sampler(self.val_set, train=False), self.hparams, self.seed)

    test_dataloader = val_dataloader

    def predict_dataloader(self):
        return loader(self.predict_set, self._sampler(self.predict_set, train=False), self.hparams, self.seed)
