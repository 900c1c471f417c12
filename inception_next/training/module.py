"""The LightningModule: an image classifier around any registered backbone, with the paper's optimisation recipe."""

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..errors import UserError
from ..models.complexity import count_macs
from ..models.factory import backbone_name, create_model, load_pretrained


class DivergenceError(UserError, RuntimeError):
    """Training produced a non-finite loss more often than allowed. `last_checkpoint` is filled in by whoever saves
    checkpoints (callbacks.LastCheckpoint), which the message then names."""

    def __init__(self, message):
        super().__init__(message)
        self.last_checkpoint = None

    def __str__(self):
        return f"{self.args[0]}; last good checkpoint: {self.last_checkpoint or 'none saved yet'} (left intact)"


class RecipeError(UserError, ValueError):
    """Settings that cannot work together; the message names them and what was expected."""


def peak_lr(lr_per_1024, global_batch):
    """The paper's linear scaling rule: the peak learning rate for `global_batch` images per optimizer step."""
    return lr_per_1024 * global_batch / 1024


def parameter_groups(model, weight_decay, layer_decay=None):
    """timm's parameter groups: weight decay on weight matrices and kernels only, never on biases, norms, layer scales
    (every tensor with ndim <= 1) or what the model names in no_weight_decay(), as in the paper's recipe; with
    `layer_decay`, timm's layer-wise lr decay too (each group's `lr_scale` shrinks by that factor per level below
    the head, levels from the model's group_matcher)."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    if layer_decay:
        return param_groups_layer_decay(model, weight_decay=weight_decay, no_weight_decay_list=skip,
                                        layer_decay=layer_decay)
    return param_groups_weight_decay(model, weight_decay=weight_decay, no_weight_decay_list=skip)


class ImageClassifier(L.LightningModule):
    """Train and evaluate a registered backbone (see `inception_next.list_models()`).

    Args:
        backbone: registered model name, or a new variant declared in place: {name, base: a registered name, the
            base's arguments to change} (see `models.factory.declare_variant`).
        backbone_args: its architecture arguments (e.g. the ablation switches `mixer_args`, `norm`, or your own
            `token_mixer`, `block`, `mlp`, `norm`, `head` by import path, see `models.parts`); dict values update
            the variant's.
        num_classes: linked by the CLI from the data module.
        pretrained: weights to start from (fine-tuning), read as a Trainer's command starts, unless a checkpoint
            was restored: a run's own checkpoints hold the weights, so they never need this file again.
        drop_path_rate, drop_rate: stochastic depth and head dropout.
        batch_size: per-device batch, linked by the CLI from the data module; the global batch for lr scaling is
            batch_size x devices x nodes x gradient accumulation.
        lr_per_1024: peak learning rate per 1024 images of global batch (the paper: lr = 1e-3 x batch / 1024).
        weight_decay, betas, eps: AdamW.
        sched: a timm scheduler name (`timm.scheduler.create_scheduler_v2`), "cosine" in the paper; null for a
            constant lr, as the official fine-tune's `--sched None`.
        warmup_epochs, warmup_lr, min_lr, cooldown_epochs: timm's schedule, as the official runs used it: the warmup
            replaces the first epochs of a cosine over `trainer.max_epochs - cooldown_epochs` epochs, then
            `cooldown_epochs` at min_lr end the run.
        step_on_epochs: the lr changes once an epoch (the official runs), or every optimizer step if false.
        mixup, cutmix, mix_switch_prob, label_smoothing: timm's Mixup/CutMix; 0/0 turns mixing off.
        ema_decay: keep an EMA of the weights and validate it beside the raw weights; null for none.
        layer_decay: timm's layer-wise lr decay for fine-tuning (e.g. 0.75: each level below the head learns at 0.75x
            the next one's lr); null for none.
        grad_checkpointing: recompute each block's activations in the backward pass instead of keeping them: less
            memory (larger batches), more compute.
        channels_last, compile: speed options. max_nonfinite_steps: non-finite losses skipped before stopping.
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
        # In checkpoints; the loggers get the whole resolved config once, from the CLI (cli.SaveFitConfig).
        self.save_hyperparameters(logger=False)
        self.backbone = create_model(backbone_name(backbone), num_classes=num_classes,
                                     drop_path_rate=drop_path_rate, drop_rate=drop_rate, **(backbone_args or {}))
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if grad_checkpointing:
            self.backbone.set_grad_checkpointing(True)
        self.ema = ModelEmaV3(self.backbone, decay=ema_decay) if ema_decay else None
        if self.ema is not None:  # updated by averaging, never by gradients (DDP would wait for theirs)
            self.ema.requires_grad_(False)
            self.ema.train()  # it only runs in evaluation; in train mode like the rest, so Lightning sees no stray mode
        mixing = mixup > 0 or cutmix > 0
        self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, switch_prob=mix_switch_prob,
                           label_smoothing=label_smoothing, num_classes=num_classes) if mixing else None
        self.train_loss = SoftTargetCrossEntropy() if mixing else LabelSmoothingCrossEntropy(label_smoothing)
        self.eval_loss = nn.CrossEntropyLoss()
        top_k = min(5, num_classes)
        self.metrics = nn.ModuleDict({
            f"{prefix}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")  # images right / images
            for prefix in ("val", "val_ema", "test", "test_ema") for name, k in (("top1", 1), ("top5", top_k))})
        self.nonfinite_steps = 0
        # Read as a command starts (after any checkpoint is restored, which clears this): a run's own checkpoints,
        # and load_from_checkpoint, never need the file again.
        self.weights_from_pretrained = bool(pretrained)
        self.scheduler = None
        self.flops_per_batch = None  # read by callbacks.TrainingThroughput: FLOPs/s beside images/s

    # -- weights: the pretrained file when a command starts from it, never when a checkpoint holds them -----------
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

    def on_test_start(self):
        self._start_from_pretrained()

    def on_predict_start(self):
        self._start_from_pretrained()

    def configure_model(self):
        if self.hparams.compile:
            self.backbone.compile()

    def forward(self, x):
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    # -- optimisation ---------------------------------------------------------------------------------------------
    @property
    def global_batch(self):
        """Images per optimizer step over all devices: per-device batch x devices x gradient accumulation (the CLI
        derives the accumulation from the recipe's global_batch_size)."""
        return self.hparams.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def layer_scales(self):
        """The backbone's layer scales by `stage<i>.block<j>` (for callbacks that show them); empty without."""
        return self.backbone.layer_scales() if hasattr(self.backbone, "layer_scales") else {}

    def configure_optimizers(self):
        h = self.hparams
        peak = peak_lr(h.lr_per_1024, self.global_batch)
        optimizer = torch.optim.AdamW(parameter_groups(self.backbone, h.weight_decay, h.layer_decay), lr=peak,
                                      betas=h.betas, eps=h.eps)
        for group in optimizer.param_groups:  # layer-wise decay; timm's schedulers apply lr_scale the same way
            group["lr"] = peak * group.get("lr_scale", 1.0)
        epochs = self.trainer.max_epochs
        schedule = "constant"
        if h.sched is not None:
            if not epochs or epochs < 1:
                raise RecipeError(f"trainer.max_epochs {epochs}: model.sched {h.sched} needs a number of epochs")
            if epochs <= h.cooldown_epochs and not self.trainer.fast_dev_run:
                rank_zero_warn(f"trainer.max_epochs {epochs} leaves no epoch before model.cooldown_epochs "
                               f"{h.cooldown_epochs}: the whole run is one epoch of {h.sched} then the cooldown")
            cosine_epochs = max(1, epochs - h.cooldown_epochs)
            steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // epochs)
            self.scheduler, _ = create_scheduler_v2(
                optimizer, sched=h.sched, num_epochs=cosine_epochs, cooldown_epochs=h.cooldown_epochs,
                min_lr=h.min_lr, warmup_lr=h.warmup_lr, warmup_epochs=h.warmup_epochs,
                step_on_epochs=h.step_on_epochs, updates_per_epoch=steps_per_epoch)
            cooldown = f", then {h.cooldown_epochs} epochs at {h.min_lr:g}" if h.cooldown_epochs else ""
            schedule = (f"{h.sched} over {cosine_epochs} epochs ({h.warmup_epochs:g} of warmup from {h.warmup_lr:g}) "
                        f"to {h.min_lr:g}{cooldown}, updated every {'epoch' if h.step_on_epochs else 'optimizer step'}")
        rank_zero_info(
            f"global batch {self.global_batch} = {h.batch_size} per device x {self.trainer.world_size} "
            f"device(s) x {self.trainer.accumulate_grad_batches} accumulation step(s); peak lr {peak:.4g} "
            f"(= {h.lr_per_1024:g} x {self.global_batch} / 1024); lr schedule: {schedule}")
        # Lightning does not step the schedule: the module sets the lr as a function of the epoch or the optimizer
        # step (so it is right wherever a run resumed) as training and each epoch start and after each batch, so that
        # every callback and logger reading the optimizer in on_train_batch_start sees the lr the batch trains with.
        return optimizer

    def _apply_schedule(self):
        if self.scheduler is None:
            return
        if self.hparams.step_on_epochs:
            self.scheduler.step(self.current_epoch)
        else:
            self.scheduler.step_update(self.global_step)

    def on_train_start(self):  # a run resumed mid-epoch starts here, without on_train_epoch_start
        self._apply_schedule()

    def on_train_epoch_start(self):
        self._apply_schedule()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self._apply_schedule()

    # -- steps ----------------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        images, targets = batch
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        if self.flops_per_batch is None:
            self.flops_per_batch = self._training_flops(images)
        loss = self.train_loss(self(images), targets)
        if not torch.isfinite(loss):
            return self._nonfinite(loss)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", max(group["lr"] for group in self.trainer.optimizers[0].param_groups))  # the head's
        return loss

    def _training_flops(self, images):
        """FLOPs of one training step on this batch: forward and backward, about 3 x 2 FLOPs per forward MAC.
        Counted on a copy of the architecture on the meta device, which allocates and computes nothing."""
        h = self.hparams
        with torch.device("meta"):
            architecture = create_model(backbone_name(h.backbone), num_classes=h.num_classes,
                                        **(h.backbone_args or {}))
        return 6 * count_macs(architecture, images.shape[-1]) * len(images)

    def _nonfinite(self, loss):
        self.nonfinite_steps += 1
        where = f"epoch {self.current_epoch}, global step {self.global_step}"
        if self.nonfinite_steps > self.hparams.max_nonfinite_steps:
            raise DivergenceError(f"training diverged: loss {loss.item()} at {where}")
        rank_zero_warn(f"non-finite loss at {where}: step skipped ({self.nonfinite_steps} of "
                       f"{self.hparams.max_nonfinite_steps} allowed)")
        return None

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
        models = [("", self.backbone)] + ([("_ema", self.ema.module)] if self.ema is not None else [])
        for suffix, model in models:
            if self.hparams.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
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
