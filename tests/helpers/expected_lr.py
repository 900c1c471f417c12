"""The learning rates the recipes must give, written out from timm's schedules (tests compare runs with them)."""

import math


def official_lr(epoch, peak, warmup_epochs, warmup_lr, min_lr, cosine_epochs):
    """timm 0.6.11's CosineLRScheduler as the official train.py steps it (PAPER.md): the warmup replaces the start
    of a cosine over `cosine_epochs`, then min_lr for the cooldown."""
    if epoch < warmup_epochs:
        return warmup_lr + epoch * (peak - warmup_lr) / warmup_epochs
    if epoch >= cosine_epochs:
        return min_lr
    return min_lr + (peak - min_lr) * (1 + math.cos(math.pi * epoch / cosine_epochs)) / 2


def per_step_lr(step, peak, warmup_steps, warmup_lr, min_lr, cosine_steps):
    """timm's cosine schedule stepped every optimizer step: the warmup replaces the cosine's first steps."""
    if step < warmup_steps:
        return warmup_lr + step * (peak - warmup_lr) / warmup_steps
    if step >= cosine_steps:
        return min_lr
    return min_lr + (peak - min_lr) * (1 + math.cos(math.pi * step / cosine_steps)) / 2
