"""Callbacks that watch or break a run on purpose, passed to the real CLI with
`--trainer.callbacks+=interruptions.<Name>`. The tests put this folder on PYTHONPATH for their subprocesses."""

import hashlib
import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


def die():
    """SIGKILL this process: no cleanup, no exception handler, like the OOM killer or a preempted node."""
    os.kill(os.getpid(), signal.SIGKILL)


class RecordBatches(Callback):
    """Append one line per trained batch to `path`: epoch, batch index, a digest of the batch (images and labels)
    and the lr it was trained with, written as the batch ends (before any checkpoint of that step is saved)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        images, labels = batch
        digest = hashlib.sha1(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()[:16]
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        with open(self.path, "a") as handle:
            handle.write(f"{trainer.current_epoch} {batch_idx} {digest} {lr!r}\n")


class RecordMetrics(Callback):
    """Write the metrics the Trainer holds at the end of each validation to `path`, as JSON."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_validation_end(self, trainer, pl_module):
        self.path.write_text(json.dumps({key: float(value) for key, value in trainer.callback_metrics.items()}))


class RecordLR(Callback):
    """The lr of every optimizer step, as the optimizer holds it when it steps."""

    def __init__(self):
        self.lrs = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


class KillAt(Callback):
    """SIGKILL the run at `moment`:
    - `step:N`: as optimizer step N begins;
    - `epoch_end:E`: after epoch E has ended and its last.ckpt is saved, before the next epoch's first batch;
    - `validation:E`: in the middle of epoch E's validation (its second batch);
    - `save:N`: in the middle of writing the first checkpoint saved from step N on (half of the file written).
    With `once` (a file's path), only the first run that reaches the moment dies: it leaves that file."""

    def __init__(self, moment: str, once: str | None = None):
        kind, value = moment.split(":")
        self.kind, self.value, self.once = kind, int(value), once

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.kind == "step" and trainer.global_step == self.value:
            self.die()

    def die(self):
        if self.once is not None:
            if Path(self.once).exists():
                return
            Path(self.once).touch()
        die()

    def on_train_epoch_start(self, trainer, pl_module):
        if self.kind == "epoch_end" and trainer.current_epoch == self.value + 1:
            self.die()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if (self.kind == "validation" and not trainer.sanity_checking and trainer.current_epoch == self.value
                and batch_idx == 1):
            self.die()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.kind == "save" and trainer.global_step >= self.value:
            from inception_next.training import checkpoints

            def half_then_die(handle, data):
                handle.write(data[:len(data) // 2])
                handle.flush()
                die()

            checkpoints.write_bytes = half_then_die


class PoisonAtStep(Callback):
    """Make the loss non-finite from optimizer step `step` on by filling a weight with NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class SlowDown(Callback):
    """Sleep `seconds` after every training batch: a run long enough for a cluster to signal it mid-training."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import time

        time.sleep(self.seconds)
