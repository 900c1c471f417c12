"""The LightningModule: an image classifier around any registered backbone, with the paper's optimisation recipe."""

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3, distribute_bn
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..deprecation import moved_names
from ..errors import UserError
from ..models.complexity import complexity
from ..models.factory import create_model, load_pretrained
from .optimization import RecipeError, optimizer_and_schedule

__getattr__ = moved_names(__name__, {"peak_lr": "inception_next.training.optimization",
                                     "parameter_groups": "inception_next.training.optimization"})


class DivergenceError(UserError, RuntimeError):
    """Training produced a non-finite loss more often than allowed. `last_checkpoint` is filled in by whoever saves
    checkpoints (callbacks.LastCheckpoint), which the message then names."""

    def __init__(self, message):
        super().__init__(message)
        self.last_checkpoint = None

    def __str__(self):
        return f"{self.args[0]}; last good checkpoint: {self.last_checkpoint or 'none saved yet'} (left intact)"


def averaged(model, decay):
    """timm's EMA of `model`'s weights. Updated by averaging, never by gradients (DDP would wait for theirs); it only
    runs in evaluation, but is in train mode like the rest, so that Lightning sees no stray mode."""
    ema = ModelEmaV3(model, decay=decay)
    ema.requires_grad_(False)
    return ema.train()


def mixing_and_loss(h):
    """timm's Mixup/CutMix for the recipe `h` (None when both are off) and the training loss that goes with it."""
    if not (h.mixup > 0 or h.cutmix > 0):
        return None, LabelSmoothingCrossEntropy(h.label_smoothing)
    return Mixup(mixup_alpha=h.mixup, cutmix_alpha=h.cutmix, switch_prob=h.mix_switch_prob,
                 label_smoothing=h.label_smoothing, num_classes=h.num_classes), SoftTargetCrossEntropy()


def training_flops(h, images):
    """FLOPs of a training step on `images` for the module settings `h`: forward and backward, about 3 x 2 FLOPs per
    forward MAC."""
    macs = complexity(h.backbone, images.shape[-1], num_classes=h.num_classes, **(h.backbone_args or {}))[1]
    return 6 * len(images) * macs


def count_nonfinite(loss, seen, allowed, where):
    """One more non-finite loss (`seen` before it): skipped with a warning while no more than `allowed`, else a
    DivergenceError. Returns the new count."""
    if seen + 1 > allowed:
        raise DivergenceError(f"training diverged: loss {loss.item()} at {where}")
    rank_zero_warn(f"non-finite loss at {where}: step skipped ({seen + 1} of {allowed} allowed)")
    return seen + 1


def accuracy_metrics(num_classes):
    """Top-1 and top-5 accuracy (images right / images) for validation and test, of the weights and of their EMA."""
    top_k = min(5, num_classes)
    return nn.ModuleDict({f"{prefix}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                          for prefix in ("val", "val_ema", "test", "test_ema") for name, k in (("top1", 1),
                                                                                             ("top5", top_k))})


class ImageClassifier(L.LightningModule):
    """Train and evaluate a registered backbone (see `inception_next.list_models()`) with the paper's recipe.

    Args:
        backbone: registered model name, or a variant declared in place: {name, base: a registered name, the base's
            arguments to change} (`models.factory.declared_variant`).
        backbone_args: architecture arguments to change (the ablations' `mixer_args`, `norm`; your own `token_mixer`,
            `block`, `mlp`, `norm`, `head` by import path, see `models.parts`); dicts update the variant's.
        num_classes, batch_size: linked by the CLI from the data module (batch_size: per device).
        pretrained: weights to start from (fine-tuning); a run's own checkpoints hold them, never needing the file.
        drop_path_rate, drop_rate, ema_decay: stochastic depth, head dropout, an EMA of the weights validated beside.
        lr_per_1024, weight_decay, betas, eps: AdamW, its peak lr per 1024 images of global batch (`optimization`).
        sched, warmup_epochs, warmup_lr, min_lr, cooldown_epochs, step_on_epochs: timm's schedule as the official runs
            used it (sched null: a constant lr); the lr changes once an epoch, or every step with step_on_epochs false.
        mixup, cutmix, mix_switch_prob, label_smoothing: timm's Mixup/CutMix; 0/0 turns mixing off.
        layer_decay: timm's layer-wise lr decay for fine-tuning (0.75: each level below the head at 0.75x its lr).
        grad_checkpointing, channels_last, compile: memory and speed (grad_checkpointing: recompute each block's
            activations in the backward pass). max_nonfinite_steps: non-finite losses skipped before stopping.

    Under DDP without SyncBatchNorm, BatchNorm statistics are averaged across ranks before each validation (timm's
    `distribute_bn`, the official runs' `--dist-bn reduce`), so every rank validates, and rank 0 saves, the same.
    """

    def __init__(self, backbone: str | dict = "inception_next_tiny", backbone_args: dict | None = None,
                 num_classes: int = 1000, pretrained: str | None = None, drop_path_rate: float = 0.0,
                 drop_rate: float = 0.0, batch_size: int = 128, lr_per_1024: float = 1e-3,
                 weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 sched: str | None = "cosine", warmup_epochs: float = 20, warmup_lr: float = 1e-6,
                 min_lr: float = 1e-5, cooldown_epochs: int = 10, step_on_epochs: bool = True, mixup: float = 0.8,
                 cutmix: float = 1.0, mix_switch_prob: float = 0.5, label_smoothing: float = 0.1,
                 ema_decay: float | None = None, layer_decay: float | None = None, grad_checkpointing: bool = False,
                 channels_last: bool = False, compile: bool = False, max_nonfinite_steps: int = 0):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the whole resolved config from the CLI
        self.backbone = create_model(backbone, num_classes=num_classes, drop_path_rate=drop_path_rate,
                                     drop_rate=drop_rate, **(backbone_args or {}))
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.backbone.set_grad_checkpointing(grad_checkpointing)
        self.ema = averaged(self.backbone, ema_decay) if ema_decay else None
        self.mixup, self.train_loss = mixing_and_loss(self.hparams)
        self.eval_loss = nn.CrossEntropyLoss()
        self.metrics = accuracy_metrics(num_classes)
        self.nonfinite_steps = 0
        self.weights_from_pretrained = bool(pretrained)  # cleared when a checkpoint is restored: it holds them
        self.scheduler = None
        self.flops_per_batch = None  # read by callbacks.TrainingThroughput: FLOPs/s beside images/s

    def _start_from_pretrained(self):
        if self.weights_from_pretrained:
            load_pretrained(self.backbone, self.hparams.pretrained)
            if self.ema is not None:
                self.ema.set(self.backbone)
            self.weights_from_pretrained = False

    def on_fit_start(self):
        h = self.hparams
        if self.mixup is not None and h.batch_size % 2:  # training's arithmetic: evaluation takes any batch
            raise RecipeError(f"data.batch_size {h.batch_size}: Mixup/CutMix (model.mixup {h.mixup}, model.cutmix "
                              f"{h.cutmix}) pair images within a batch, so expected an even batch size")
        self._start_from_pretrained()

    def on_validation_start(self):
        self._start_from_pretrained()

    on_test_start = on_predict_start = on_validation_start

    def on_validation_epoch_start(self):
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            distribute_bn(self, self.trainer.world_size, reduce=True)

    def configure_model(self):
        if self.hparams.compile:
            self.backbone.compile()

    def forward(self, x):
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def layer_scales(self):
        """The backbone's layer scales by `stage<i>.block<j>` (for callbacks that show them); empty without."""
        return self.backbone.layer_scales() if hasattr(self.backbone, "layer_scales") else {}

    def configure_optimizers(self):
        # Lightning does not step the schedule: `apply_schedule` sets the lr as a function of the epoch or the step
        # (so it is right wherever a run resumed), before any callback reads it in on_train_batch_start.
        optimizer, self.scheduler = optimizer_and_schedule(self.backbone, self.hparams, self.trainer)
        return optimizer

    def apply_schedule(self, *hook_args):
        """The lr of the epoch or optimizer step about to train, as training and each epoch start (a run resumed
        mid-epoch starts without on_train_epoch_start) and after each batch."""
        if self.scheduler is not None and self.hparams.step_on_epochs:
            self.scheduler.step(self.current_epoch)
        elif self.scheduler is not None:
            self.scheduler.step_update(self.global_step)

    on_train_start = on_train_epoch_start = on_train_batch_end = apply_schedule

    def training_step(self, batch, batch_idx):
        images, targets = batch
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        if self.flops_per_batch is None:
            self.flops_per_batch = training_flops(self.hparams, images)
        loss = self.train_loss(self(images), targets)
        if not torch.isfinite(loss):
            self.nonfinite_steps = count_nonfinite(loss, self.nonfinite_steps, self.hparams.max_nonfinite_steps,
                                                   f"epoch {self.current_epoch}, global step {self.global_step}")
            return None
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", max(group["lr"] for group in self.trainer.optimizers[0].param_groups))  # the head's
        return loss

    def on_load_checkpoint(self, checkpoint):
        self.weights_from_pretrained = False  # the checkpoint holds the weights

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end, which runs after the callbacks': a checkpoint saved at this step
        # must hold this step's average.
        if self.ema is not None:
            self.ema.update(self.backbone, step=self.global_step)

    def _evaluate(self, batch, stage):
        images, targets = batch
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        for suffix, model in [("", self.backbone)] + ([("_ema", self.ema.module)] if self.ema is not None else []):
            logits = model(images)
            self.log(f"{stage}{suffix}/loss", self.eval_loss(logits, targets), sync_dist=True, prog_bar=not suffix)
            for name in ("top1", "top5"):
                metric = self.metrics[f"{stage}{suffix}_{name}"]
                metric(logits, targets)
                self.log(f"{stage}{suffix}/{name}", metric, prog_bar=not suffix and name == "top1")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx):
        images, paths = batch
        probs = self(images).softmax(dim=-1)
        top = probs.topk(min(5, probs.shape[-1]), dim=-1)
        return dict(paths=list(paths), probs=top.values.cpu(), indices=top.indices.cpu())
