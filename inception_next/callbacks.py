"""Callbacks the CLI attaches to runs: last.ckpt, TensorBoard views, reports on data quality, prediction output."""

import csv
import re
from collections import defaultdict
from pathlib import Path

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.utils import make_grid

from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn


class LastCheckpoint(ModelCheckpoint):
    """Write last.ckpt at the end of every epoch (after its validation) and, with `every_n_train_steps`, every that
    many optimizer steps, so that `--ckpt_path last` loses at most that much work. (Lightning's own save_last only
    rewrites it when a new best is saved.) Saves go through checkpoints.AtomicCheckpointIO, so a kill or a full disk
    mid-save leaves the previous last.ckpt whole."""

    def __init__(self, dirpath, every_n_train_steps=None):
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True,
                         enable_version_counter=False)
        self.step_at_batch_start = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Only where an optimizer step ended: mid-accumulation, the accumulated gradient would not be saved (and
        # Lightning, resumed at step N, would otherwise save step N again after the next batch).
        if trainer.global_step != self.step_at_batch_start:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module):
        if not (trainer.fast_dev_run or trainer.sanity_checking):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module):
        pass

    def on_train_end(self, trainer, pl_module):
        pass


class TensorBoardViews(Callback):
    """What the scalars alone do not show, for TensorBoard:
    - `train/augmented_batch`: the first training batch as the network sees it (RandAugment, Mixup, CutMix);
    - `layer_scale/stage<i>` (mean |gamma| over a stage's blocks) and `layer_scale/stage<i>.block<j>`: how much each
      residual branch contributes, every `log_every_n_steps`;
    - the HPARAMS tab: the run's settings with its latest and best val/top1, val/top5 and val/loss.
    """

    HPARAM_METRICS = ("val/top1", "val/top5", "val/loss")

    def __init__(self, images=32):
        self.images = images
        self.batch_shown = False
        self.best_top1 = None

    @staticmethod
    def _tensorboard(trainer):
        """The run's TensorBoardLogger, on rank 0 only; None elsewhere or when logging elsewhere."""
        if not trainer.is_global_zero:
            return None
        return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)

    def on_fit_start(self, trainer, pl_module):
        logger = self._tensorboard(trainer)
        if logger is None:
            return
        settings = dict(pl_module.hparams)
        if trainer.datamodule is not None:
            settings.update({f"data.{k}": v for k, v in trainer.datamodule.hparams.items()})
        settings.update(max_epochs=trainer.max_epochs, precision=str(trainer.precision),
                        global_batch=getattr(pl_module, "global_batch_size", None))
        start = {f"hp/{name}": float("nan") for name in (*self.HPARAM_METRICS, "best_val/top1")}
        logger.log_hyperparams(settings, start)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        logger = self._tensorboard(trainer)
        if logger is None:
            return
        if not self.batch_shown:
            self.batch_shown = True
            inputs = getattr(pl_module, "last_inputs", None)
            images = (batch[0] if inputs is None else inputs)[:self.images].detach().float().cpu()
            mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
            grid = make_grid((images * std + mean).clamp(0, 1), nrow=8)
            logger.experiment.add_image("train/augmented_batch", grid, trainer.global_step)
        if trainer.global_step % trainer.log_every_n_steps == 0:
            self._log_layer_scales(logger.experiment, pl_module, trainer.global_step)

    @staticmethod
    def _log_layer_scales(writer, pl_module, step):
        names, gammas = [], []
        for name, parameter in pl_module.named_parameters():
            if name.endswith(".gamma") and not name.startswith("ema."):
                names.append(name)
                gammas.append(parameter.detach().abs().mean())
        if not gammas:
            return
        stages = defaultdict(list)
        for name, magnitude in zip(names, torch.stack(gammas).tolist()):  # one device-to-host copy, not one a block
            staged = re.search(r"stages\.(\d+)\.blocks\.(\d+)\.", name)  # isotropic models have one stage
            stage, block = staged.groups() if staged else ("0", re.search(r"blocks\.(\d+)\.", name).group(1))
            stages[stage].append(magnitude)
            writer.add_scalar(f"layer_scale/stage{stage}.block{block}", magnitude, step)
        for stage, magnitudes in stages.items():
            writer.add_scalar(f"layer_scale/stage{stage}", sum(magnitudes) / len(magnitudes), step)

    def on_validation_end(self, trainer, pl_module):
        logger = self._tensorboard(trainer)
        metrics = {name: trainer.callback_metrics[name].item() for name in self.HPARAM_METRICS
                   if name in trainer.callback_metrics}
        if logger is None or trainer.sanity_checking or "val/top1" not in metrics:
            return
        self.best_top1 = max(metrics["val/top1"], self.best_top1 or 0.0)
        metrics["best_val/top1"] = self.best_top1
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
    """Write one CSV row per image: the file, then its top-5 class names and probabilities."""

    def __init__(self, output: str):
        super().__init__(write_interval="epoch")
        self.output = Path(output)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        names = trainer.datamodule.class_names
        self.output.parent.mkdir(parents=True, exist_ok=True)
        partial = self.output.with_name(self.output.name + ".partial")
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            k = predictions[0]["indices"].shape[1]
            writer.writerow(["file"] + [f"{field}{i}" for i in range(1, k + 1) for field in ("class", "prob")])
            for batch in predictions:
                for path, probs, indices in zip(batch["paths"], batch["probs"], batch["indices"]):
                    row = [path]
                    for p, i in zip(probs.tolist(), indices.tolist()):
                        row += [names[i], f"{p:.4f}"]
                    writer.writerow(row)
        partial.replace(self.output)
