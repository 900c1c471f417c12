"""`python -m inception_next sweep CONFIG... --seeds 0 1 2 [fit flags]`: each experiment with each seed, as an
ordinary `fit`.

    python -m inception_next sweep experiments/tiny.yaml experiments/ablations/table8/*.yaml --seeds 0 1 2 \\
        --data.root /datasets/imagenet
    python -m inception_next sweep experiments/ablations/table8/*.yaml --seeds 0 1 2 --slurm --gpus 8 --nodes 1

A run is named `<experiment>/seed<N>` (its folder: logs/<experiment>/seed<N>/version_0, see `training.runs`) and
started with `--ckpt_path last`, so a rerun resumes an interrupted run where its last checkpoint left it and skips a
finished one (a run is finished once its fit has returned: it leaves `finished.json` in its folder). Locally the runs
go one after another, each in its own process. With --slurm each run is a SLURM job submitted through submitit (an
optional extra: pip install "inception-next[slurm]"): one task per GPU with --gpus N, so that Lightning's DDP spans
the job's GPUs and nodes; one CPU task without (CPU-only partitions). A job at its time limit saves its run and
requeues itself (submitit signals it ahead of the limit), up to 3 times. Flags the sweep does not know are passed on
to every fit.
`report` then compares the runs.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..deprecation import add_flag
from ..progress import Progress
from ..training import runs
from ..training.config import ConfigError, find_experiments

FIT_SAVE_TIMEOUT_S = 60  # how long a signalled job waits for its fit to save and exit before it requeues


def sweep_runs(configs, seeds):
    """(experiment name, config, seed) of every run of the sweep."""
    return [(runs.seed_experiment(Path(config).stem, seed), config, seed) for config in configs for seed in seeds]


def fit_command(name, config, seed, extra):
    return [sys.executable, "-m", "inception_next", "fit", "--config", str(config), "--seed_everything", str(seed),
            "--experiment", name, "--ckpt_path", "last", *extra]


def is_finished(root, name):
    return name in runs.finished_runs(Path(root).expanduser())


def root_of(extra):
    """Where the runs go: --trainer.default_root_dir among the fit flags, else logs/."""
    for i, flag in enumerate(extra):
        if flag == "--trainer.default_root_dir" and i + 1 < len(extra):
            return extra[i + 1]
        if flag.startswith("--trainer.default_root_dir="):
            return flag.split("=", 1)[1]
    return runs.DEFAULT_ROOT


class ResumableFit:
    """One run as a SLURM job that survives its time limit: submitit calls `checkpoint` when it signals the job
    ahead of the limit; the fit (which saw the signal too) saves its last.ckpt and stops, and the same command,
    `--ckpt_path last`, is requeued to continue it. (submitit's Checkpointable protocol.)"""

    def __init__(self, command):
        self.command = command
        self.process = None

    def __call__(self):
        self.process = subprocess.Popen(self.command)
        if self.process.wait():
            raise RuntimeError(f"{' '.join(self.command)}: exit code {self.process.returncode}")

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + FIT_SAVE_TIMEOUT_S  # it saves at its next optimizer step
            while not has_exited(self.process.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        return DelayedSubmission(ResumableFit(self.command))


def has_exited(pid):
    """Whether the child `pid` has exited, leaving it to be reaped: submitit calls `checkpoint` from a signal handler
    that interrupts `__call__`'s `Popen.wait`, which holds the lock a second `Popen.wait` needs (that one would
    only time out)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def slurm_executor(args, folder):
    """submitit's SLURM executor for one run per job: a task per GPU on each node, or one CPU task without GPUs."""
    try:
        import submitit
    except ImportError:
        sys.exit('error: --slurm: submitit is not installed; expected pip install "inception-next[slurm]"')
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    parameters = dict(nodes=args.nodes, tasks_per_node=max(args.gpus, 1), cpus_per_task=args.cpus_per_task,
                      timeout_min=args.timeout_min)
    if args.gpus:
        parameters["gpus_per_node"] = args.gpus
    if args.partition:
        parameters["slurm_partition"] = args.partition
    executor.update_parameters(**parameters)
    return executor


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m inception_next sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="experiment YAMLs, or packaged experiments by name (tiny, "
                        "experiments/ablations/table8/no_square.yaml, 'ablations/table8/*')")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--slurm", action="store_true", help="submit each run as a SLURM job (submitit)")
    parser.add_argument("--gpus", type=int, default=0, help="with --slurm: GPUs per node, one task each; 0 (the "
                        "default): no GPU asked for, one CPU task")
    parser.add_argument("--nodes", type=int, default=1, help="with --slurm: nodes per run")
    add_flag(parser, "--cpus_per_task", type=int, default=10, help="with --slurm: loader workers need them")
    add_flag(parser, "--timeout_min", type=int, default=48 * 60, help="with --slurm: each job's time limit; a job "
             "that reaches it saves, requeues itself and continues")
    parser.add_argument("--partition", default=None, help="with --slurm")
    args, extra = parser.parse_known_args(argv)
    try:
        args.configs = find_experiments(args.configs, "sweep")
    except ConfigError as error:
        parser.exit(2, f"error: {error}\n")
    for flag, least in (("gpus", 0), ("nodes", 1), ("cpus_per_task", 1), ("timeout_min", 1)):
        if getattr(args, flag) < least:
            parser.exit(2, f"error: --{flag} {getattr(args, flag)}: expected an integer of at least "
                           f"{least}\n")
    return args, extra


def main(argv=None):
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    root = root_of(extra)
    todo = [run for run in sweep_runs(args.configs, args.seeds) if not is_finished(root, run[0])]
    print(f"sweep: {len(args.configs)} experiment(s) x {len(args.seeds)} seed(s); "
          f"{len(sweep_runs(args.configs, args.seeds)) - len(todo)} finished, {len(todo)} to run")
    if args.slurm:
        executor = slurm_executor(args, Path(root).expanduser() / "slurm")
        devices = ["--trainer.devices", str(args.gpus)] if args.gpus else ["--trainer.accelerator", "cpu",
                                                                             "--trainer.devices", "1"]
        launch = [*devices, "--trainer.num_nodes", str(args.nodes)]
        jobs = []
        for name, config, seed in todo:
            executor.update_parameters(name=name.replace("/", "-"))
            command = fit_command(name, config, seed, [*extra, *launch])
            try:
                job = executor.submit(ResumableFit(command))
            except Exception as error:  # submitit passes on sbatch's refusal as one of several kinds of error
                reason = " ".join(str(error).split())
                sys.exit(f"error: --slurm: sbatch refused {name} ({reason[-300:]}); expected a partition and "
                         "resources this cluster has (--partition, --gpus, --nodes, --cpus_per_task)")
            jobs.append((name, job, command))
            print(f"{name}: SLURM job {job.job_id}")
        return jobs
    failed, progress = [], Progress("sweep", len(todo), " runs")
    for number, (name, config, seed) in enumerate(todo, 1):
        print(f"sweep: run {number}/{len(todo)}, {name}: fit", flush=True)
        if subprocess.run(fit_command(name, config, seed, extra)).returncode:
            failed.append(name)
        progress.update()
    if failed:
        sys.exit(f"error: {len(failed)} run(s) failed: {', '.join(failed)}; run the sweep again to resume them")
    return todo
