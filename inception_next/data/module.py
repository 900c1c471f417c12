"""ImageNet-1K, in any of the layouts its sources ship (see `readers`), or your own dataset in one of them, as a
LightningDataModule. With `root: null` it trains on the generated demo dataset (`demo`), through the same code.

Every layout goes through the same decode, the same timm transforms and the same per-sample seeded augmentation,
and labels index the classes in sorted-wnid order, so a recipe means the same thing whichever copy of ImageNet a
user holds. A command reads only the split it needs: validate and test run on the validation split alone.

Where the work happens: as timm's prefetcher in the official runs, the loader workers stop at uint8 pixels (decode,
crop, flip, RandAugment; a quarter of the bytes to pass between processes; the crop resized by torch, see
`transforms`), and the batch is normalized and randomly erased on the device (`on_after_batch_transfer`), each
image under its sample's seed. With `augment_on: device`, RandAugment moves there too (`randaugment`), for machines
with few CPU cores per GPU; with `decode_on: device` as well, the workers only read the JPEGs and draw their crops
and flips (`transforms.DrawnCrop`), and the batch is decoded (nvJPEG), cropped and flipped on the device before it.
A loader used by hand gives uint8 images (with `augment_on: device`, not yet RandAugmented; with `decode_on: device`,
a training loader gives what `decoded_batch` turns into them): `normalize` makes them the model's input.

Unreadable samples. Training skips them: each is named once in a warning (its file, or its shard and key), another
image takes its place (batches stay full, which Mixup needs) and the count is reported at the end of the epoch.
Validation and test do not skip: leaving an image out would silently change the metric's denominator. Before any
training starts, every validation file's header is read (shards are checked whole when indexed), so empty or
non-image files stop the run at once with their names; an image that fails to decode later stops validation with an
error naming it.
"""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from timm.data import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ImageNetInfo,
    create_transform,
)
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from torch.utils.data import DataLoader
from torchvision.transforms import Compose, RandomHorizontalFlip

from ..training.preemption import ignore_job_signals
from . import demo, readers
from .datasets import LabelledImages, UnlabelledImages
from .images import IMAGE_EXTENSIONS, DatasetError, decode, peek
from .object_store import is_url
from .randaugment import BatchRandAugment
from .sampler import ResumableSampler, kept_randomness, reseed, stream_seed
from .transforms import TORCH_RESIZES, DrawnCrop, FastResizedCrop, crops_on_device, with_fast_crop

SPLIT_NAMES = {"train": "training", "val": "validation"}
ERASING_MODES = ("const", "rand", "pixel")  # timm's: one colour, a random colour per erasure, noise per pixel
AUGMENT_PLACES = ("workers", "device")
DEVICE_CROP_INTERPOLATIONS = ("random", *(mode.value for mode in TORCH_RESIZES))  # "random": one of them


def collate_encoded(samples):
    """A training batch of `DrawnCrop` samples: [payloads (a list: their lengths differ), draws, names, labels]."""
    payloads, draws, names = zip(*(drawn for drawn, _ in samples))
    return [list(payloads), torch.stack(draws), list(names), torch.tensor([label for _, label in samples])]


def default_crop_pct(img_size):
    """The evaluation crop when a recipe names none: the paper's 0.875, or the whole image from 384 px (its
    fine-tuned models)."""
    return 1.0 if img_size >= 384 else 0.875


def imagenet_class_names(folder_names):
    """Human-readable names when the classes are ImageNet-1K's synsets, the names themselves otherwise."""
    info = ImageNetInfo()
    synsets = set(info.label_names())
    if folder_names and all(name in synsets for name in folder_names):
        return [info.label_name_to_description(name) for name in folder_names]
    return list(folder_names)


class ImageNetDataModule(L.LightningDataModule):
    """ImageNet-1K, or your own dataset in one of its layouts.

    Args:
        root: the dataset, in any layout of `readers` (class folders, Kaggle's download, Hugging Face parquet,
            WebDataset shards, LitData chunks in a folder or at s3://bucket/prefix); null for the generated demo
            dataset.
        format: the layout's name (folders, kaggle, parquet, webdataset, litdata); default: recognised from what is
            there.
        img_size: training and evaluation resolution.
        crop_pct: evaluation resizes to img_size / crop_pct, then centre-crops; default 0.875, or 1.0 from 384 px.
        batch_size: per device (the global batch is this x devices x nodes x gradient accumulation).
        auto_augment, color_jitter, scale, hflip, train_interpolation: timm's training transform ("random":
            bilinear or bicubic per image, as the official runs).
        augment_on: where RandAugment runs: "workers" (timm's transform, per image) or "device" (the batch on the
            training device, the same draws and the same pixels as timm's PIL ops; frees the loader workers of
            about a fifth of their work, for machines with few CPU cores per GPU).
        decode_on: where training JPEGs are decoded, cropped and flipped: "workers", or "device" (with augment_on
            device: the workers read and draw, the batch is decoded by nvJPEG through torchcodec on a GPU, by PIL on
            the CPU; other images, and cut JPEGs, are decoded in the workers).
        reprob, remode: timm's random erasing, applied to the training batch on the device.
        interpolation: the evaluation resize's.
        predict_root: folder of unlabelled images for `predict`.
        classes: the class names in label order; default: the layout's (class folders' names; ImageNet-1K's wnids for
            shards, whose labels are indices). The CLI sets the checkpoint's when it evaluates one, so its labels keep
            their meaning without the training data.
        num_workers: loader worker processes. A source read in blocks (parquet row groups, LitData chunks) gives
            each worker its own blocks, so its epoch order depends on this number (see ResumableSampler).
        shuffle_window: samples shuffled together in sources read in blocks (parquet row groups, see
            ResumableSampler); each loader worker holds about twice this many encoded images.
        seed: seed of the epoch order and of every sample's augmentation; null: the run's seed (seed_everything).

    Under DDP the module shards the data itself (see ResumableSampler, a DistributedSampler that any Trainer leaves
    as it is). Its state in a checkpoint records how far into the epoch training got, so a run resumed mid-epoch
    continues with the next batch of the same order.
    """

    def __init__(self, root: str | None = None, format: str | None = None, img_size: int = 224,
                 crop_pct: float | None = None,
                 batch_size: int = 128, num_workers: int = 8, pin_memory: bool = True,
                 persistent_workers: bool = True, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                 color_jitter: float = 0.4, reprob: float = 0.25, remode: str = "pixel",
                 scale: tuple[float, float] = (0.08, 1.0), hflip: float = 0.5, train_interpolation: str = "random",
                 augment_on: str = "workers", decode_on: str = "workers",
                 interpolation: str = "bicubic",
                 predict_root: str | None = None, seed: int | None = None, classes: list[str] | None = None,
                 shuffle_window: int = 1024):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the whole config from the CLI (cli.SaveFitConfig)
        for name, least in (("img_size", 1), ("batch_size", 1), ("num_workers", 0), ("shuffle_window", 1)):
            value = self.hparams[name]
            if not isinstance(value, int) or value < least:
                raise DatasetError(f"data.{name} {value}: expected an integer of at least {least}")
        if not 0 <= reprob <= 1:
            raise DatasetError(f"data.reprob {reprob}: expected a probability in [0, 1]")
        if augment_on not in AUGMENT_PLACES:
            raise DatasetError(f"data.augment_on {augment_on!r}: expected one of {', '.join(AUGMENT_PLACES)}")
        if augment_on == "device" and not (auto_augment or "").startswith("rand"):  # timm's test for RandAugment
            raise DatasetError(f"data.augment_on device moves timm's RandAugment to the device, and data.auto_augment "
                               f"is {auto_augment!r}; expected a rand-... policy, or data.augment_on workers")
        if decode_on not in AUGMENT_PLACES:
            raise DatasetError(f"data.decode_on {decode_on!r}: expected one of {', '.join(AUGMENT_PLACES)}")
        if decode_on == "device" and augment_on != "device":
            raise DatasetError("data.decode_on device: the crop, flip and RandAugment come after decoding; expected "
                               "data.augment_on device too")
        if decode_on == "device" and train_interpolation not in DEVICE_CROP_INTERPOLATIONS:
            raise DatasetError(f"data.decode_on device resizes crops with torch, and data.train_interpolation is "
                               f"{train_interpolation!r}; expected one of {', '.join(DEVICE_CROP_INTERPOLATIONS)}")
        if remode not in ERASING_MODES:  # timm's RandomErasing would take any other name for "const"
            raise DatasetError(f"data.remode {remode!r}: expected one of {', '.join(ERASING_MODES)}")
        if crop_pct is not None and not 0 < crop_pct <= 1:
            raise DatasetError(f"data.crop_pct {crop_pct}: expected a fraction in (0, 1]")
        if format is not None and format not in readers.READABLE:
            raise DatasetError(f"data.format {format!r}: expected one of {', '.join(readers.READABLE)} (the official "
                               "archives go through `python -m inception_next prepare` first)")
        self.demo = root is None
        self.root = demo.default_root() if self.demo else root if is_url(root) else Path(root).expanduser()
        self.img_size = img_size
        self.crop_pct = crop_pct if crop_pct is not None else default_crop_pct(img_size)
        self.batch_size = batch_size
        self._classes = self._source = None
        self.train_set = self.val_set = self.predict_set = None
        self.seed = seed
        self.train_sampler = None
        self._resume_at = None
        self._batch_seeds = None  # the training batch's samples', between the transfer hooks
        self._device_randaugment = None
        self._mean_std = {}  # normalize's, per device

    # -- the source and its classes: known before setup, so the CLI can hand num_classes to the model ------------
    @property
    def source(self):
        """The module reading root's layout (see `readers`)."""
        if self._source is None:
            self._source = readers.find_source(self.root, self.hparams.format)
            if self._source.NAME not in readers.READABLE:
                raise DatasetError(f"data.root {self.root}: {self._source.LAYOUT}, which are read once into class "
                                   f"folders: python -m inception_next prepare {self.root} /path/to/imagenet")
        return self._source

    @property
    def classes(self):
        """The class names (ImageNet's wnids, or folder names), in label order."""
        if self._classes is None:
            if self.hparams.classes is not None:
                self._classes = list(self.hparams.classes)
            elif self.demo:
                self._classes = list(demo.CLASSES)
            else:
                self._classes = self.source.classes(self.root)
        return self._classes

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def class_names(self):
        return imagenet_class_names(self.classes)

    # -- transforms: per image in the loader workers, then per batch on the device -------------------------------
    def _timm_train_transform(self):
        h = self.hparams
        return create_transform(self.img_size, is_training=True, scale=tuple(h.scale), hflip=h.hflip,
                                color_jitter=h.color_jitter, auto_augment=h.auto_augment,
                                interpolation=h.train_interpolation, use_prefetcher=True)

    def train_transform(self):
        """timm's training transform up to uint8 pixels (as with timm's prefetcher): crop, flip, RandAugment (unless
        it runs on the device: `device_randaugment`); the crop resized by torch (`transforms.FastResizedCrop`)."""
        transform = with_fast_crop(self._timm_train_transform())
        if self.hparams.augment_on == "device":
            transform = Compose([t for t in transform.transforms if not isinstance(t, RandAugment)])
        if self.hparams.decode_on == "device":
            crop, = [t for t in transform.transforms if isinstance(t, FastResizedCrop)]
            flips = [t for t in transform.transforms if isinstance(t, RandomHorizontalFlip)]
            return DrawnCrop(crop, flips[0] if flips else None)
        return transform

    def training_set(self):
        """The training split through `train_transform`, unreadable images skipped."""
        return LabelledImages(self.reader("train"), self.train_transform(), skip_unreadable=True,
                              decoder=peek if self.hparams.decode_on == "device" else decode)

    @property
    def training_collate(self):
        """The training loader's collate_fn: None (PyTorch's default), or with `decode_on: device` collate_encoded."""
        return collate_encoded if self.hparams.decode_on == "device" else None

    def decoded_batch(self, batch, device):
        """With `decode_on: device`, a training loader's batch (payloads, draws, names, labels) as the workers' path
        gives it, on `device`: [uint8 images, labels]."""
        payloads, draws, names, labels = batch
        images = crops_on_device(payloads, draws, names, (self.img_size, self.img_size), device)
        return [images, labels]

    def device_randaugment(self):
        """With `augment_on: device`, the recipe's RandAugment for training batches (`randaugment.BatchRandAugment`);
        None when it runs in the loader workers."""
        if self.hparams.augment_on != "device":
            return None
        randaugment, = [t for t in self._timm_train_transform().transforms if isinstance(t, RandAugment)]
        return BatchRandAugment(randaugment)

    def eval_transform(self):
        """timm's evaluation transform up to uint8 pixels: resize, centre crop."""
        return create_transform(self.img_size, is_training=False, interpolation=self.hparams.interpolation,
                                crop_pct=self.crop_pct, use_prefetcher=True)

    def normalize(self, images):
        """uint8 images as the loaders give them -> the model's input (ImageNet's mean and std)."""
        if images.device not in self._mean_std:  # once per device: a copy to the GPU each step would wait for it
            self._mean_std[images.device] = [torch.tensor([255 * v for v in values], device=images.device).view(
                1, 3, 1, 1) for values in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
        mean, std = self._mean_std[images.device]
        return (images.float() - mean) / std

    def erase(self, images, seeds):
        """timm's RandomErasing on normalized training images, each under its sample's seed."""
        erasing = RandomErasing(self.hparams.reprob, mode=self.hparams.remode, device=images.device)
        with kept_randomness(images.device):
            for image, seed in zip(images, seeds):
                reseed(stream_seed(seed, "erasing"), images.device)
                erasing(image)
        return images

    # -- Lightning hooks ------------------------------------------------------------------------------------------
    def prepare_data(self):
        predicting = self.trainer is not None and self.trainer.state.fn == "predict"
        if self.demo and not predicting:
            demo.ensure(self.root)

    def setup(self, stage=None):
        if stage == "predict":
            root = self.hparams.predict_root
            if not root:
                raise DatasetError("data.predict_root is not set: expected a folder of images to predict "
                                   "(--data.predict_root my_images/)")
            if not Path(root).expanduser().is_dir():
                raise DatasetError(f"data.predict_root {root}: no such folder; expected a folder of images to predict")
            self.predict_set = UnlabelledImages(Path(root).expanduser(), self.eval_transform())
            if not len(self.predict_set):
                raise DatasetError(f"data.predict_root {root}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
            return
        if stage == "fit" and self.train_set is None:
            self.train_set = self.training_set()
            self._device_randaugment = self.device_randaugment()
            if self._device_randaugment is not None and self.trainer is not None \
                    and self.trainer.strategy.root_device.type == "cpu":
                rank_zero_warn("data.augment_on device, training on the CPU: RandAugment then runs in the main "
                               "process, at 224 px about 5 times slower an image than timm's PIL ops in the loader "
                               "workers; it is meant for GPUs (data.augment_on workers here)")
            if self.hparams.decode_on == "device" and self.trainer is not None:
                self._check_device_decoding(self.trainer.strategy.root_device)
        if self.val_set is None:
            self.val_set = LabelledImages(self.reader("val"), self.eval_transform())
            self.val_set.reader.check_readable()
        if stage == "fit" and len(self.train_set) < self.batch_size:
            raise DatasetError(f"{self.train_set.reader.source}: {len(self.train_set)} images, fewer than one batch "
                               f"of {self.batch_size}; expected at least data.batch_size images")

    @staticmethod
    def _check_device_decoding(device):
        if device.type != "cuda":
            rank_zero_warn("data.decode_on device, training on the CPU: the main process then decodes every JPEG "
                           "(PIL), work the loader workers would share; it is meant for GPUs (nvJPEG)")
            return
        try:
            import torchcodec.decoders  # noqa: F401
        except ImportError:
            raise DatasetError("data.decode_on device decodes JPEGs on the GPU with nvJPEG through torchcodec; "
                               "expected it installed: pip install 'inception-next[nvjpeg]'") from None

    def reader(self, split):
        """The reader of root's `split` ("train" or "val"), its labels indexing the classes."""
        source = self.source
        if split not in source.splits(self.root):
            raise DatasetError(f"data.root {self.root}: no {SPLIT_NAMES[split]} split in {source.LAYOUT}")
        reader = source.open_split(self.root, split, self.classes)
        if not len(reader):
            raise DatasetError(f"{reader.source}: no images in the {SPLIT_NAMES[split]} split")
        if reader.blocks is not None:  # the row groups of the current window and the next (see ResumableSampler)
            reader.cache_blocks = 2 * (self.hparams.shuffle_window // min(reader.blocks) + 1)
        return reader

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
        blocks = dataset.reader.blocks if isinstance(dataset, LabelledImages) else None
        sampler = ResumableSampler(len(dataset), self.seed, shuffle=train, rank=rank, world_size=world_size,
                                   step_samples=self.batch_size * accumulation if train else 1, blocks=blocks,
                                   window=self.hparams.shuffle_window, batch_size=self.batch_size,
                                   streams=max(1, self.hparams.num_workers))
        if train and self._resume_at is not None:
            sampler.set_epoch(self._resume_at[0])
            sampler.resume(*self._resume_at)
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
                          collate_fn=self.training_collate if train else None,
                          generator=torch.Generator().manual_seed(self.seed or 0))

    @staticmethod
    def _from_a_loader(batch):
        """Whether `batch` is a loader's (uint8 images first): Lightning passes the model summary's example input
        through the transfer hooks too, while fitting."""
        return isinstance(batch, (list, tuple)) and torch.is_tensor(batch[0]) and batch[0].dtype == torch.uint8

    def on_before_batch_transfer(self, batch, dataloader_idx):
        """Count the training samples about to be trained: the resume point is kept here rather than read from
        Lightning's loop counters, which a resumed run does not always restore consistently. With `decode_on:
        device`, a training batch is decoded, cropped and flipped first, onto the training device."""
        self._batch_seeds = None
        if isinstance(batch, list) and len(batch) == 4 and isinstance(batch[0], list):  # collate_encoded's
            batch = self.decoded_batch(batch, self.trainer.strategy.root_device if self.trainer is not None
                                       else torch.device("cpu"))
        if not self._from_a_loader(batch):
            return batch
        if self.train_sampler is not None and self.trainer is not None and self.trainer.training:
            if self.hparams.reprob > 0 or self._device_randaugment is not None:
                self._batch_seeds = self.train_sampler.seeds(len(batch[0]))
            self.train_sampler.consumed += len(batch[0])
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx):
        """On the device, as timm's prefetcher in the official runs: normalize, and erase in training batches (after
        RandAugment, with `augment_on: device`)."""
        if not self._from_a_loader(batch):
            return batch
        images, *rest = batch
        if self._batch_seeds is not None and self._device_randaugment is not None:
            images = self._device_randaugment(images, self._batch_seeds)
        images = self.normalize(images)
        if self._batch_seeds is not None and self.hparams.reprob > 0:
            images = self.erase(images, self._batch_seeds)
        if self.trainer is not None:
            images = self.trainer.precision_plugin.convert_input(images)
        return type(batch)([images, *rest])

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
            samples -= samples % self.train_sampler.step_samples
            # a source read in blocks lays an epoch out for the loader's workers: finish it in the same layout
            streams = self.train_sampler.epoch_streams if samples else None
            state.update(epoch=epoch, samples=samples, streams=streams)
        return state

    def load_state_dict(self, state):
        self.seed = state["seed"]
        if "epoch" in state:
            self._resume_at = (state["epoch"], state["samples"], state.get("streams"))

    def train_dataloader(self):
        self.train_sampler = self._sampler(self.train_set, train=True)
        return self._loader(self.train_set, self.train_sampler, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set, self._sampler(self.val_set, train=False))

    def test_dataloader(self):
        return self.val_dataloader()

    def predict_dataloader(self):
        return self._loader(self.predict_set, self._sampler(self.predict_set, train=False))
