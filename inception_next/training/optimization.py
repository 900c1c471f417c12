"""The paper's optimisation as the official runs did it: AdamW over timm's parameter groups, the lr scaled linearly
with the global batch, timm's schedule (warmup, cosine, cooldown). The global batch has one owner here: it is the
per-device batch x devices x gradient accumulation, and a recipe states it (`global_batch_size`) to set the
accumulation (`accumulation`)."""

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2

from ..errors import UserError


class RecipeError(UserError, ValueError):
    """Settings that cannot work together; the message names them and what was expected."""


def peak_lr(lr_per_1024, global_batch):
    """The paper's linear scaling rule: the peak learning rate for `global_batch` images per optimizer step."""
    return lr_per_1024 * global_batch / 1024


def global_batch(trainer, batch_size):
    """Images per optimizer step over all devices: per-device batch x devices x gradient accumulation."""
    return batch_size * trainer.world_size * trainer.accumulate_grad_batches


def accumulation(global_batch_size, batch_size, world_size):
    """The gradient accumulation that makes `global_batch_size` (a recipe's) from the per-device batch and the
    number of devices."""
    per_step = batch_size * world_size
    if global_batch_size % per_step:
        raise RecipeError(f"global_batch_size {global_batch_size}: not a multiple of data.batch_size {batch_size} x "
                          f"{world_size} device(s) = {per_step}")
    return global_batch_size // per_step


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


def optimizer_and_schedule(model, h, trainer):
    """AdamW over `model`'s parameter groups at the peak lr for the run's global batch, and timm's scheduler for the
    recipe `h` (the module's hyperparameters; None for a constant lr). The log states the batch, lr and schedule."""
    images = global_batch(trainer, h.batch_size)
    peak = peak_lr(h.lr_per_1024, images)
    optimizer = torch.optim.AdamW(parameter_groups(model, h.weight_decay, h.layer_decay), lr=peak, betas=h.betas,
                                  eps=h.eps)
    for group in optimizer.param_groups:  # layer-wise decay; timm's schedulers apply lr_scale the same way
        group["lr"] = peak * group.get("lr_scale", 1.0)
    scheduler, schedule = None, "constant"
    if h.sched is not None:
        epochs = trainer.max_epochs
        if not epochs or epochs < 1:
            raise RecipeError(f"trainer.max_epochs {epochs}: model.sched {h.sched} needs a number of epochs")
        if epochs <= h.cooldown_epochs and not trainer.fast_dev_run:
            rank_zero_warn(f"trainer.max_epochs {epochs} leaves no epoch before model.cooldown_epochs "
                           f"{h.cooldown_epochs}: the whole run is one epoch of {h.sched} then the cooldown")
        cosine_epochs = max(1, epochs - h.cooldown_epochs)
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=h.sched, num_epochs=cosine_epochs, cooldown_epochs=h.cooldown_epochs, min_lr=h.min_lr,
            warmup_lr=h.warmup_lr, warmup_epochs=h.warmup_epochs, step_on_epochs=h.step_on_epochs,
            updates_per_epoch=max(1, trainer.estimated_stepping_batches // epochs))
        cooldown = f", then {h.cooldown_epochs} epochs at {h.min_lr:g}" if h.cooldown_epochs else ""
        schedule = (f"{h.sched} over {cosine_epochs} epochs ({h.warmup_epochs:g} of warmup from {h.warmup_lr:g}) "
                    f"to {h.min_lr:g}{cooldown}, updated every {'epoch' if h.step_on_epochs else 'optimizer step'}")
    rank_zero_info(f"global batch {images} = {h.batch_size} per device x {trainer.world_size} device(s) x "
                   f"{trainer.accumulate_grad_batches} accumulation step(s); peak lr {peak:.4g} (= {h.lr_per_1024:g} "
                   f"x {images} / 1024); lr schedule: {schedule}")
    return optimizer, scheduler
