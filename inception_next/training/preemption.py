"""Preemption as clusters do it: a cluster ends a job with a signal to every process of it (see `jobs`).

The main process records the signal as soon as the command starts (`catch_job_signals`). At the next optimizer
step's end (the `Preemption` callback) the run saves its own last.ckpt in its run folder, SIGUSR1 requeues the job
where SLURM allows it, and the command ends with one line saying what was saved and what happens next. Loader
workers ignore these signals (`jobs.ignore_job_signals`): the main process speaks for the run. Lightning's own SLURM
auto-requeue stays off (the CLI says so), so no `hpc_ckpt_*.ckpt` is written outside the run folder.
"""

import os
import signal
import subprocess
from contextlib import contextmanager

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..deprecation import moved_names
from ..jobs import JOB_SIGNALS, REQUEUE_SIGNAL

__getattr__ = moved_names(__name__, {"ignore_job_signals": "inception_next.jobs"})

received = []  # the job signals this process caught, first first
stopped = []  # how a run stopped when Lightning ended it for SIGTERM before Preemption could (a Preempted)


def _record(signum, frame):
    received.append(signal.Signals(signum))


@contextmanager
def catch_job_signals():
    """Within: record job signals instead of dying of them (the run acts on them at its next safe point)."""
    received.clear()
    stopped.clear()
    previous = {signum: signal.signal(signum, _record) for signum in JOB_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Preempted(Exception):
    """The command stopped for a job signal; the message says what was saved and what happens next. With `requeue`,
    the command requeues its SLURM job once everything is closed (`requeue()`): SLURM then ends the job's processes."""

    def __init__(self, message, signum, requeue=False):
        super().__init__(message)
        self.exit_code = 128 + signum
        self.requeue = requeue


def requeue():
    """Put this SLURM batch job back in the queue; None when done, else why not."""
    done = subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], capture_output=True, text=True)
    return None if done.returncode == 0 else " ".join((done.stderr or done.stdout).split()) or "scontrol failed"


class Preemption(Callback):
    """Act on a recorded job signal where the run can stop without losing what it trained. After an optimizer step it
    saves last.ckpt and stops as the next batch starts, once that step's metrics are logged (not after an epoch's
    last step, whose validation has not run: the epoch's own save follows it). Before training starts, or while
    validating in a single process, it stops at once: nothing new to save, the run resumes from its last checkpoint.
    Under DDP every rank decides at the same step (the decision is taken together)."""

    def __init__(self):
        self.step_at_batch_start = None
        self.at_step_end = False  # a step just ended (not an epoch's last): a save here resumes exactly
        self.saved = None  # what the save after the last step wrote, once a signal asked for it

    def on_train_start(self, trainer, pl_module):
        if received:
            self._stop(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.saved is not None:
            self._stop(trainer)
        self.step_at_batch_start = trainer.global_step
        self.at_step_end = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        stepped = trainer.global_step != self.step_at_batch_start  # not mid-accumulation
        self.at_step_end = stepped and batch_idx + 1 < trainer.num_training_batches
        if self.at_step_end and trainer.strategy.reduce_boolean_decision(bool(received), all=False):
            self._save(trainer)

    def on_validation_start(self, trainer, pl_module):
        self.at_step_end = False

    def _save(self, trainer):
        last = self._last(trainer)
        if last is not None:
            last.save_now(trainer)
            self.saved = f"saved {last.path} at step {trainer.global_step}"

    def on_train_epoch_start(self, trainer, pl_module):
        if received and trainer.world_size == 1:  # the epoch-end save, after validation, is the one to resume from
            self._stop(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        # Under DDP ranks may hold different numbers of validation batches: no collective decision here.
        if received and trainer.world_size == 1 and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._stop(trainer)

    @staticmethod
    def _last(trainer):
        return next((cb for cb in trainer.checkpoint_callbacks if hasattr(cb, "save_now")), None)

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, SIGTERMException):  # Lightning's own SIGTERM stop, right after a batch
            if self.saved is None and self.at_step_end:  # the signal came after this step's check: save it now
                self._save(trainer)
            stopped.append(self._preempted(trainer))

    def _stop(self, trainer):
        raise self._preempted(trainer)

    def _preempted(self, trainer):
        signum = received[0] if received else signal.SIGTERM
        if self.saved is None:
            last = self._last(trainer)
            found = last.path if last is not None and last.path is not None and last.path.is_file() else None
            self.saved = f"nothing new saved; {found or 'no checkpoint yet'} is where it resumes"
        requeueing = signum == REQUEUE_SIGNAL and "SLURM_JOB_ID" in os.environ
        then = ("requeueing the job: it continues with --ckpt_path last" if requeueing
                else "run the same command again (--ckpt_path last) to continue")
        return Preempted(f"stopped by {signum.name} at epoch {trainer.current_epoch}, step {trainer.global_step}: "
                         f"{self.saved}; {then}", signum, requeue=requeueing and trainer.is_global_zero)
