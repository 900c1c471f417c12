"""Callbacks that break a run on purpose, passed to the real CLI with `--trainer.callbacks+=interruptions.<Name>`.
The tests put this folder on PYTHONPATH for their subprocesses."""

import os
import signal
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL this process as the optimizer step `step` begins: no cleanup, no exception handler, like the OOM
    killer or a preempted node."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillDuringSave(Callback):
    """From optimizer step `step` on, make checkpoint writes stall half-way through the file, after touching
    `signal_file`, so that the test can SIGKILL the process in the middle of a save."""

    def __init__(self, step: int, signal_file: str):
        self.step, self.signal_file = step, Path(signal_file)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        from fsspec.implementations.local import LocalFileOpener

        signal_file = self.signal_file

        def stalling_write(opener, data):
            opener.f.write(data[:len(data) // 2])
            opener.f.flush()
            signal_file.touch()
            time.sleep(600)

        LocalFileOpener.write = stalling_write


class PoisonAtStep(Callback):
    """Make the loss non-finite from optimizer step `step` on by filling a weight with NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))
