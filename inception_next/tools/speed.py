"""Measuring speed the paper's way, shared by `benchmark` and the GPU suite: build a model by name (ours or timm's),
time its training or inference steps on random images, and find the paper's A100 figures for it."""

import time
from contextlib import nullcontext

import timm
import torch

from ..models.factory import create_model, get_variant, list_models
from ..progress import Progress
from .compared_figures import TIMM_A100


def is_ours(name):
    return name in list_models()


def build(name):
    """`timm:<name>` is timm's model; a bare name is ours if registered, else timm's."""
    return create_model(name) if is_ours(name) else timm.create_model(name.removeprefix("timm:"), pretrained=False)


def native_size(name):
    """The image size a model was trained at: ours from its record, timm's 224."""
    return get_variant(name).input_size if is_ours(name) else 224


def paper_a100(name, img_size):
    """The paper's A100 (TF32, batch 128) train and inference images/s, only for a run at the size they were
    measured at; (None, None) otherwise. timm's InceptionNeXt has our variant's figures (the one of that size)."""
    timm_name = name.removeprefix("timm:")
    names = [name] if is_ours(name) else [f"{timm_name}_{img_size}", timm_name] if timm_name.startswith(
        "inception_next") else []
    for variant in map(get_variant, filter(is_ours, names)):
        if variant.input_size == img_size and variant.paper and variant.paper.a100:
            return variant.paper.a100
    return TIMM_A100.get((timm_name, img_size), (None, None)) if not names else (None, None)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images_per_second(step, batch, warmup, iters, device, progress):
    for _ in range(warmup):
        step()
        progress.update()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
        progress.update()
    _sync(device)
    return batch * iters / (time.perf_counter() - start)


def measure(model, device, batch, img_size, precision, channels_last, warmup, iters, train, what="benchmark"):
    """Images/s of one model for training or inference, halving the batch on out-of-memory; its progress as `what`
    (the model's name)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    while True:
        try:
            x = torch.randn(batch, 3, img_size, img_size, device=device).contiguous(memory_format=memory_format)
            if train:
                model.train()
                y = torch.randint(0, 1000, (batch,), device=device)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

                def step():
                    with autocast:
                        loss = torch.nn.functional.cross_entropy(model(x), y)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            else:
                model.eval()

                def step():
                    with torch.inference_mode(), autocast:
                        model(x)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            progress = Progress(f"{what}, {'training' if train else 'inference'} at batch {batch}", warmup + iters,
                                " steps")
            speed = _images_per_second(step, batch, warmup, iters, device, progress)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            return speed, batch, peak
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()
