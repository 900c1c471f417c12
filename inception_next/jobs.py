"""How the processes of a job treat a cluster's signals. SLURM sends SIGTERM at the time limit, on `scancel` and on
preemption, and SIGUSR1 ahead of the limit when asked (`#SBATCH --signal=USR1@90` with `--requeue`); submitit, which
`sweep --slurm` uses, sends SIGUSR2. The main process speaks for the run (training.preemption acts on them); the
data layer's loader workers leave them to it."""

import signal

JOB_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
REQUEUE_SIGNAL = signal.SIGUSR1


def ignore_job_signals(worker_id=None):
    """A DataLoader worker_init_fn: loader workers leave job signals to the main process."""
    for signum in JOB_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
