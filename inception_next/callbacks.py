"""Callbacks the CLI attaches to runs: last.ckpt, what TensorBoard shows beyond the scalars, reports on data
quality, prediction output."""

import csv
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, Checkpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.utils import make_grid

from .module import DivergenceError


class LastCheckpoint(Checkpoint):
    """Write `<run>/checkpoints/last.ckpt` at the end of every epoch (after its validation) and, with
    `every_n_train_steps`, every that many optimizer steps, so that `--ckpt_path last` loses at most that much work.
    (Lightning's save_last only rewrites it when a new best is saved.) Saves go through
    checkpoints.AtomicCheckpointIO, so a kill or a full disk mid-save leaves the previous last.ckpt whole."""

    def __init__(self, every_n_train_steps=None):
        self.every_n_train_steps = every_n_train_steps
        self.path = None
        self.step_at_batch_start = None

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":  # beside the logs, as Lightning's ModelCheckpoint puts its files; the same on every rank
            folder = trainer.log_dir or trainer.default_root_dir  # fast_dev_run logs nowhere (and saves nothing)
            self.path = Path(trainer.strategy.broadcast(str(Path(folder) / "checkpoints" / "last.ckpt")))

    def _save(self, trainer):
        if not (trainer.fast_dev_run or trainer.sanity_checking):
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole training state, to resume from

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Only where an optimizer step ended: mid-accumulation, the accumulated gradient would not be saved.
        stepped = trainer.global_step != self.step_at_batch_start
        if stepped and self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, DivergenceError) and self.path is not None and self.path.is_file():
            exception.last_checkpoint = self.path


def show_image(logger, tag, image, step):
    """Log a CHW image in [0, 1] to a logger that can take one; False for a logger that cannot (CSV, ...)."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(tag, image, step)
    elif hasattr(logger, "log_image"):  # Weights & Biases
        logger.log_image(key=tag, images=[image], step=step)
    elif type(logger).__name__ == "MLFlowLogger":
        logger.experiment.log_image(logger.run_id, image.permute(1, 2, 0).numpy(), f"{tag.replace('/', '_')}.png")
    else:
        return False
    return True


class FirstBatchImages(Callback):
    """`train/augmented_batch`: the first training batch as the network sees it, after RandAugment and Mixup/CutMix
    (the `inputs` the module's training_step returns beside its loss), to every logger that takes images."""

    def __init__(self, images=32):
        self.images = images
        self.shown = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.shown or not trainer.is_global_zero or not isinstance(outputs, dict) or "inputs" not in outputs:
            return
        self.shown = True
        images = outputs["inputs"][:self.images].float().cpu()
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
        grid = make_grid((images * std + mean).clamp(0, 1), nrow=8)
        for logger in trainer.loggers:
            show_image(logger, "train/augmented_batch", grid, trainer.global_step)


class LayerScaleMagnitudes(Callback):
    """`layer_scale/stage<i>` (mean |gamma| over a stage's blocks) and `layer_scale/stage<i>.block<j>`, every
    `log_every_n_steps`, to every logger: how much each residual branch contributes. Reads the module's
    `layer_scales()`."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        scales = pl_module.layer_scales() if hasattr(pl_module, "layer_scales") else {}
        if not trainer.is_global_zero or not scales or trainer.global_step % trainer.log_every_n_steps:
            return
        magnitudes = torch.stack([gamma.detach().abs().mean() for gamma in scales.values()]).tolist()  # one copy
        values, stages = {}, defaultdict(list)
        for name, magnitude in zip(scales, magnitudes):
            values[f"layer_scale/{name}"] = magnitude
            stages[name.split(".")[0]].append(magnitude)
        values.update({f"layer_scale/{stage}": sum(v) / len(v) for stage, v in stages.items()})
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)


class HParamsWithMetrics(Callback):
    """The run's settings beside its latest and best val/top1, val/top5 and val/loss: TensorBoard's HPARAMS tab
    (settings and metrics tied together), and the same values to every other logger."""

    METRICS = ("val/top1", "val/top5", "val/loss")

    def __init__(self):
        self.best_top1 = None

    def on_fit_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        settings = dict(pl_module.hparams)
        if trainer.datamodule is not None:
            settings.update({f"data.{k}": v for k, v in trainer.datamodule.hparams.items()})
        settings.update(max_epochs=trainer.max_epochs, precision=str(trainer.precision),
                        global_batch=getattr(pl_module, "global_batch", None))
        start = {f"hp/{name}": float("nan") for name in (*self.METRICS, "best_val/top1")}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # the metrics' placeholders tie them to the settings
                logger.log_hyperparams(settings, start)
            else:
                logger.log_hyperparams(settings)

    def on_validation_end(self, trainer, pl_module):
        metrics = {name: trainer.callback_metrics[name].item() for name in self.METRICS
                   if name in trainer.callback_metrics}
        if not trainer.is_global_zero or trainer.sanity_checking or "val/top1" not in metrics:
            return
        self.best_top1 = max(metrics["val/top1"], self.best_top1 or 0.0)
        metrics["best_val/top1"] = self.best_top1
        for logger in trainer.loggers:
            logger.log_metrics({f"hp/{name}": value for name, value in metrics.items()}, step=trainer.global_step)


class UnreadableFilesReport(Callback):
    """At the end of each training epoch, say how many unreadable training files were skipped."""

    def __init__(self):
        self.reported = 0

    def on_train_epoch_end(self, trainer, pl_module):
        skipped = getattr(trainer.datamodule, "unreadable_train_files", 0)
        if skipped > self.reported:
            rank_zero_warn(f"epoch {trainer.current_epoch}: skipped {skipped - self.reported} unreadable training "
                           f"file(s) ({skipped} so far)")
            self.reported = skipped
        pl_module.log("train/unreadable_files", float(skipped), sync_dist=True)


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
