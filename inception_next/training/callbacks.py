"""Callbacks the CLI attaches to runs: the run's folder, last.ckpt, what TensorBoard shows beyond the scalars, reports
on data quality, prediction output.

Every series a callback logs goes through the module's `log` (or at the step Lightning's own `log` uses), so that a
run resumed from step N continues each series at N, as the loggers' other series do."""

import csv
import random
import sys
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, Checkpoint, ProgressBar
from lightning.pytorch.utilities import rank_zero_warn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.utils import make_grid

from ..deprecation import moved_names, warn_renamed
from ..progress import Progress
from . import runs
from .loggers import logger_identity, show_image, start_loggers
from .module import DivergenceError

__getattr__ = moved_names(__name__, {"LOGGER_IDENTITIES": "inception_next.training.runs", **{
    name: "inception_next.training.loggers" for name in ("LoggerError", "logger_identity", "where_to_look",
                                                         "show_image")}})


class RunFolder(Callback):
    """A fit's own folder (see `runs`), whatever the logger: its checkpoints (last and best), its resolved config and
    its finished marker go there, so that `--ckpt_path last|best` finds them and no
    two runs share a file. TensorBoard's and CSV's loggers write there too; a logger with a store of its own (MLflow,
    Weights & Biases) gets metrics, settings and images, never a checkpoint inside its store's layout.

    `resumed`: the run a fit continues (its folder is kept). Each logger's identity in its own store is recorded in
    the folder (`runs.record_logger_identities`), so that the CLI resumes the same MLflow or W&B run too."""

    def __init__(self, experiment_dir, resumed=None):
        self.experiment_dir = Path(experiment_dir)
        self.resumed = resumed
        self.path = None

    def setup(self, trainer, pl_module, stage):
        if stage != "fit" or trainer.fast_dev_run:
            return
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        path = None
        if trainer.is_global_zero:
            start_loggers(trainer.loggers)
            if self.resumed is not None:
                path = Path(self.resumed)
            elif log_dir and runs.is_run_folder(log_dir, self.experiment_dir):
                path = Path(log_dir)
            else:
                path = runs.new_run_folder(self.experiment_dir)
            path.mkdir(parents=True, exist_ok=True)
            runs.record_logger_identities(path, {type(logger).__name__: logger_identity(logger)
                                                 for logger in trainer.loggers})
        self.path = Path(trainer.strategy.broadcast(str(path) if path else None))
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None) is None:
                callback.dirpath = str(runs.checkpoint_folder(self.path))



class LastCheckpoint(Checkpoint):
    """Write the run's last.ckpt (see `runs`) at the end of every epoch (after its validation) and, with
    `every_n_train_steps`, every that many optimizer steps (but an epoch's last), so that `--ckpt_path last` loses at
    most that much work; `save_now` for whoever must save at once (preemption). (Lightning's save_last only rewrites
    it when a new best is saved.) Saves go through checkpoints.AtomicCheckpointIO, so a kill or a full disk mid-save
    leaves the previous last.ckpt whole."""

    def __init__(self, every_n_train_steps=None, dirpath=None):
        self.every_n_train_steps = every_n_train_steps
        self.dirpath = dirpath  # set by RunFolder; else beside the logs, as Lightning's ModelCheckpoint does
        self.path = None
        self.step_at_batch_start = None

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":  # the same on every rank
            folder = self.dirpath or runs.checkpoint_folder(trainer.log_dir or trainer.default_root_dir)
            self.path = Path(trainer.strategy.broadcast(str(Path(folder) / runs.LAST)))

    def save_now(self, trainer):
        if not (trainer.fast_dev_run or trainer.sanity_checking):
            for logger in trainer.loggers:  # what was logged up to this checkpoint is on disk before it is
                logger.save()
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole training state, to resume from

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Only where an optimizer step ended: mid-accumulation, the accumulated gradient would not be saved. Not after
        # an epoch's last batch: the epoch's own save follows its validation, and a save between the two would make
        # a run killed while validating resume past a validation that never finished.
        stepped = trainer.global_step != self.step_at_batch_start
        epoch_ends = batch_idx + 1 >= trainer.num_training_batches
        if (stepped and not epoch_ends and self.every_n_train_steps
                and trainer.global_step % self.every_n_train_steps == 0):
            self.save_now(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self.save_now(trainer)

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, DivergenceError) and self.path is not None and self.path.is_file():
            exception.last_checkpoint = self.path


class RandomStateInCheckpoints(Callback):
    """Python's, NumPy's and torch's (CPU and CUDA) global random state in every checkpoint, restored with it, so that
    a resumed run draws the same Mixup, drop path and dropout as an unbroken one. (The loaders' augmentation needs
    none: each sample is seeded by its seed, epoch and index.)"""

    KEY = "random_state"

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        version, python_state, gauss = random.getstate()
        kind, keys, position, has_gauss, cached = np.random.get_state()
        checkpoint[self.KEY] = dict(
            python=(version, torch.tensor(python_state), gauss), torch=torch.get_rng_state(),
            numpy=(kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
            cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        state = checkpoint.get(self.KEY)
        if state is None:
            return
        version, python_state, gauss = state["python"]
        random.setstate((version, tuple(python_state.tolist()), gauss))
        kind, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.device_count() == len(state["cuda"]):
            torch.cuda.set_rng_state_all(state["cuda"])


class FirstBatchImages(Callback):
    """`train/augmented_batch`: the first training batch as the network sees it, after RandAugment and Mixup/CutMix
    (the module's input, caught by a forward pre-hook for that one batch), to every logger that takes images."""

    def __init__(self, images=32):
        self.images = images
        self.shown = False
        self.caught = self.hook = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.shown and trainer.is_global_zero:
            self.hook = pl_module.register_forward_pre_hook(self._catch)

    def _catch(self, module, args):
        if torch.is_tensor(args[0]):  # under DDP, Lightning first routes training_step(batch, ...) through forward
            self.caught = args[0][:self.images].detach().float().cpu()
            self.hook.remove()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.shown or self.caught is None:
            return
        self.shown = True
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
        grid = make_grid((self.caught * std + mean).clamp(0, 1), nrow=8)
        for logger in trainer.loggers:
            show_image(logger, "train/augmented_batch", grid, trainer.global_step)


class LayerScaleMagnitudes(Callback):
    """`layer_scale/stage<i>` (mean |gamma| over a stage's blocks) and `layer_scale/stage<i>.block<j>`, every
    `log_every_n_steps`, to every logger: how much each residual branch contributes. Reads the module's
    `layer_scales()`."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        scales = pl_module.layer_scales() if hasattr(pl_module, "layer_scales") else {}
        if not scales or trainer.global_step % trainer.log_every_n_steps:
            return
        magnitudes = torch.stack([gamma.detach().abs().mean() for gamma in scales.values()]).tolist()  # one copy
        values, stages = {}, defaultdict(list)
        for name, magnitude in zip(scales, magnitudes):
            values[f"layer_scale/{name}"] = magnitude
            stages[name.split(".")[0]].append(magnitude)
        values.update({f"layer_scale/{stage}": sum(v) / len(v) for stage, v in stages.items()})
        pl_module.log_dict(values, on_step=True, on_epoch=False, rank_zero_only=True)


class TrainingThroughput(Callback):
    """`train/device/samples_per_sec` and `train/device/flops_per_sec` (the module's `flops_per_batch`), over the
    last `window` optimizer steps, logged with the step's other metrics. Unlike Lightning's ThroughputMonitor it
    logs no counters that restart at zero when a run resumes, and no validation figures on the training steps' axis.
    A resumed run's first rate is measured from its first batch, so the series has no gap."""

    def __init__(self, window=10):
        self.window = window
        self.points = deque(maxlen=window + 1)  # (time, samples, flops) at optimizer step boundaries
        self.samples = self.flops = 0
        self.step_at_batch_start = None

    def _restart_clock(self):
        self.points.clear()
        self.points.append((time.perf_counter(), self.samples, self.flops))

    def on_train_start(self, trainer, pl_module):  # a run resumed mid-epoch starts here
        self._restart_clock()

    def on_train_epoch_start(self, trainer, pl_module):  # the time between epochs (validation, saves) is not training
        self._restart_clock()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.samples += len(batch[0])
        self.flops += getattr(pl_module, "flops_per_batch", None) or 0
        if trainer.global_step == self.step_at_batch_start:  # mid-accumulation: the step is not over
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.points.append((time.perf_counter(), self.samples, self.flops))
        (start, samples, flops), (end, now_samples, now_flops) = self.points[0], self.points[-1]
        rates = {"train/device/samples_per_sec": (now_samples - samples) / (end - start)}
        if now_flops:
            rates["train/device/flops_per_sec"] = (now_flops - flops) / (end - start)
        pl_module.log_dict(rates, on_step=True, on_epoch=False, rank_zero_only=True)


class HParamsWithMetrics(Callback):
    """The run's latest and best val/top1, val/top5 and val/loss, beside its settings: the CLI gives TensorBoard the
    settings with `placeholders()` for these (its HPARAMS tab then ties them together); every logger gets the
    values."""

    METRICS = ("val/top1", "val/top5", "val/loss")

    def __init__(self):
        self.best_top1 = None

    @classmethod
    def placeholders(cls):
        return {f"hp/{name}": float("nan") for name in (*cls.METRICS, "best_val/top1")}

    def state_dict(self):
        return {"best_top1": self.best_top1}

    def load_state_dict(self, state_dict):
        self.best_top1 = state_dict["best_top1"]

    def on_validation_end(self, trainer, pl_module):
        metrics = {name: trainer.callback_metrics[name].item() for name in self.METRICS
                   if name in trainer.callback_metrics}
        if not trainer.is_global_zero or trainer.sanity_checking or "val/top1" not in metrics:
            return
        self.best_top1 = max(metrics["val/top1"], self.best_top1 or 0.0)
        metrics["best_val/top1"] = self.best_top1
        for logger in trainer.loggers:  # at the step of the val/ metrics: the last optimizer step's
            logger.log_metrics({f"hp/{name}": value for name, value in metrics.items()},
                               step=max(trainer.global_step - 1, 0))


class UnreadableFilesReport(Callback):
    """`train/unreadable_files`, the training files skipped as unreadable so far, with each step's metrics; at the end
    of each training epoch, a warning when there were new ones."""

    def __init__(self):
        self.reported = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        skipped = getattr(trainer.datamodule, "unreadable_train_files", 0)
        pl_module.log("train/unreadable_files", float(skipped), on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_epoch_end(self, trainer, pl_module):
        skipped = getattr(trainer.datamodule, "unreadable_train_files", 0)
        if skipped > self.reported:
            rank_zero_warn(f"epoch {trainer.current_epoch}: skipped {skipped - self.reported} unreadable training "
                           f"file(s) ({skipped} so far)")
            self.reported = skipped


class TopKCSVWriter(BasePredictionWriter):
    """Write one CSV row per image: the file, then its top-5 class names and probabilities. Under DDP each rank
    predicts its share of the images; rank 0 gathers them and writes the one file."""

    def __init__(self, output: str):
        super().__init__(write_interval="epoch")
        self.output = Path(output)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        rows = [(path, probs.tolist(), indices.tolist()) for batch in predictions
                for path, probs, indices in zip(batch["paths"], batch["probs"], batch["indices"])]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered = [None] * trainer.world_size if trainer.is_global_zero else None
            dist.gather_object(rows, gathered, dst=0)
            rows = sorted(row for part in gathered or [] for row in part)
        if not trainer.is_global_zero:
            return
        names = trainer.datamodule.class_names
        self.output.parent.mkdir(parents=True, exist_ok=True)
        partial = self.output.with_name(self.output.name + ".partial")
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            k = len(rows[0][1])
            writer.writerow(["file"] + [f"{field}{i}" for i in range(1, k + 1) for field in ("class", "prob")])
            for path, probs, indices in rows:
                writer.writerow([path] + [item for p, i in zip(probs, indices) for item in (names[i], f"{p:.4f}")])
        partial.replace(self.output)


class AverageBatchNormAcrossRanks(Callback):
    """Kept so that configs naming it still load: averaging BatchNorm statistics across ranks before each validation
    is part of training under DDP now, which ImageClassifier does whatever the callbacks."""

    def __init__(self):
        warn_renamed("the callback AverageBatchNormAcrossRanks", "nothing: ImageClassifier averages BatchNorm "
                     "statistics across ranks itself under DDP")


class LineProgressBar(ProgressBar):
    """Lightning's progress bar as whole lines, for a log file (`progress.Progress`: a line every few seconds while
    it moves, at least one a minute, none written over): the epoch and batch, the time left, the bar's metrics. The
    CLI uses it when standard output is not a terminal."""

    def __init__(self):
        super().__init__()
        self.enabled, self.progress = True, None

    def disable(self):
        self.enabled = False

    def enable(self):
        self.enabled = True

    def _start(self, what, total):
        self.progress = Progress(what, None if total == float("inf") else int(total), " batches", sys.stdout)

    def _update(self, trainer, pl_module):
        if self.enabled and self.progress is not None:
            metrics = self.get_metrics(trainer, pl_module)
            self.progress.update(note=", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                                                for key, value in metrics.items()))

    def on_train_epoch_start(self, trainer, pl_module):
        self._start(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", self.total_train_batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._update(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._start(f"validation of epoch {trainer.current_epoch + 1}", self.total_val_batches)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._update(trainer, pl_module)

    def on_test_start(self, trainer, pl_module):
        self._start("test", sum(trainer.num_test_batches))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(trainer, pl_module)

    def on_predict_start(self, trainer, pl_module):
        self._start("predict", sum(trainer.num_predict_batches))

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(trainer, pl_module)
