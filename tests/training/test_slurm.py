"""Preemption as clusters do it, on a real one-node SLURM cluster (tests/slurm_cluster.py): a plain job, a job stopped
by its time limit and resubmitted, a job requeued by SIGUSR1 (what `#SBATCH --signal=USR1@90` sends), and a 2-seed
sweep on the CPU partition through submitit, one of whose jobs submitit requeues. Every run uses 2 persistent loader
workers, which SLURM signals too. The time-limited job runs beside the others (each job takes one core)."""

import subprocess
import sys
import time

import pytest
import torch
from slurm_cluster import Cluster, missing_tools
from small_runs import HELPERS, run_flags

from inception_next.tools.sweep import FIT_SAVE_TIMEOUT_S
from inception_next.training.runs import FINISHED, scalars

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    bool(missing_tools()), reason=f"SLURM is not installed here ({', '.join(missing_tools())} missing): .ci/run "
    "installs Debian's slurm-wlm and munge")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


def fit_command(dataset, root, *extra):
    flags = run_flags(dataset, "--trainer.max_epochs", "2", "--data.num_workers", "2", "--data.persistent_workers",
                      "true", "--trainer.default_root_dir", str(root), "--ckpt_path", "last", *extra)
    return " ".join([sys.executable, "-m", "inception_next", "fit", *flags])


def job_script(name, command, folder, *sbatch):
    """A batch script as the README's: SBATCH lines, then srun of the fit."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --output={folder}/{name}-%j.out",
             "#SBATCH --cpus-per-task=1", "#SBATCH --open-mode=append",
             *[f"#SBATCH {option}" for option in sbatch],
             f"export PYTHONPATH={HELPERS}", f"srun {command}"]
    return "\n".join(lines) + "\n"


def weights(run):
    return torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def assert_same_run(run, reference):
    """The unbroken run's final step and weights, one run folder, continuous curves, nothing outside the folder."""
    assert [p.name for p in run.parent.iterdir()] == ["version_0"]
    assert (run / FINISHED).is_file()
    final, expected = weights(run), weights(reference)
    assert max((final[k] - expected[k]).abs().max().item() for k in expected) == 0.0
    for tag in ("val/top1", "train/loss"):
        assert scalars(run, tag) == scalars(reference, tag), tag
    root = run.parent.parent
    assert not list(root.rglob("hpc_ckpt_*")) and sorted(p.name for p in root.iterdir()) == [run.parent.name]


@pytest.fixture(scope="module")
def time_limited(cluster, tiny_dataset, tmp_path_factory):
    """A job whose fit (slowed to 8 s a step, 12 steps) outlasts its 1-minute limit (SLURM enforces it within about
    30 s more), submitted first so that it runs beside the other tests."""
    folder = tmp_path_factory.mktemp("time_limited")
    command = fit_command(tiny_dataset, folder / "logs", "--trainer.callbacks+=interruptions.SlowDown",
                          "--trainer.callbacks.seconds=8")
    return folder, cluster.submit(job_script("limited", command, folder, "--time=1"), "limited")


@pytest.fixture(scope="module")
def plain(cluster, tiny_dataset, tmp_path_factory, time_limited):
    """A plain job: the unbroken run the others are held to."""
    folder = tmp_path_factory.mktemp("plain")
    job = cluster.submit(job_script("plain", fit_command(tiny_dataset, folder / "logs"), folder), "plain")
    assert cluster.wait(job)["JobState"] == "COMPLETED", cluster.logs()
    return folder / "logs/demo/version_0"


def test_a_plain_job_trains_to_the_end(plain):
    assert torch.load(plain / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 12


def test_a_job_requeued_by_sigusr1_continues_its_run(cluster, plain, tiny_dataset, tmp_path):
    command = fit_command(tiny_dataset, tmp_path / "logs", "--trainer.callbacks+=interruptions.SlowDown",
                          "--trainer.callbacks.seconds=0.5")
    job = cluster.submit(job_script("requeued", command, tmp_path, "--requeue"), "requeued")
    last = tmp_path / "logs/demo/version_0/checkpoints/last.ckpt"
    cluster.wait(job, timeout=120, until=lambda _: last.is_file())  # it trains: step 2 is saved
    cluster.signal(job, "USR1")
    done = cluster.wait(job)
    assert done["JobState"] == "COMPLETED" and done["Restarts"] == "1", cluster.logs()
    output = "".join(path.read_text() for path in tmp_path.glob("requeued-*.out"))
    assert "stopped by SIGUSR1 at epoch " in output and "requeueing the job: it continues" in output
    assert "Traceback" not in output
    assert_same_run(tmp_path / "logs/demo/version_0", plain)


def test_a_sweep_runs_on_the_cpu_partition_and_a_requeued_job_resumes_in_place(cluster, plain, tiny_dataset,
                                                                               tmp_path):
    logs = tmp_path / "logs"
    flags = run_flags(tiny_dataset, "--trainer.max_epochs", "2", "--data.num_workers", "2",
                      "--trainer.default_root_dir", str(logs), "--trainer.callbacks+=interruptions.SlowDown",
                      "--trainer.callbacks.seconds=0.3")
    config, flags = flags[1], flags[2:]  # the sweep gives each run its config and seed
    env = dict(cluster.env, PYTHONPATH=str(HELPERS))
    submitted = subprocess.run([sys.executable, "-m", "inception_next", "sweep", config, "--seeds", "0", "1",
                                "--slurm", "--partition", "cpu", "--cpus_per_task", "1", "--timeout_min", "10",
                                *flags], env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    jobs = [line.rsplit(" ", 1)[1] for line in submitted.stdout.splitlines() if ": SLURM job " in line]
    assert len(jobs) == 2
    first_save = logs / "demo/seed0/version_0/checkpoints/last.ckpt"
    cluster.wait(jobs[0], timeout=120, until=lambda _: first_save.is_file())
    cluster.signal(jobs[0], "USR2")  # submitit's signal: the run saves, submitit requeues the same command
    signalled = time.monotonic()
    cluster.wait(jobs[0], timeout=120, until=lambda job: job.get("Restarts") == "1")
    # requeued once the fit has saved and exited (a few seconds), not after FIT_SAVE_TIMEOUT_S
    assert time.monotonic() - signalled < FIT_SAVE_TIMEOUT_S - 15, cluster.logs()
    states = [cluster.wait(job) for job in jobs]
    assert [s["JobState"] for s in states] == ["COMPLETED", "COMPLETED"], cluster.logs()
    assert states[0]["Restarts"] == "1"
    assert [p.name for p in (logs / "demo/seed0").iterdir()] == ["version_0"]  # resumed in place
    assert torch.load(first_save, weights_only=False)["global_step"] == 12
    output = "".join(path.read_text() for path in (logs / "slurm").glob(f"{jobs[0]}_*_log.*"))  # the requeued run's
    assert f"--ckpt_path last: {first_save}" in output  # it continued from the run's checkpoint
    report = subprocess.run([sys.executable, "-m", "inception_next", "report", str(logs), "--out",
                             str(tmp_path / "report")], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| demo | 2 |" in (tmp_path / "report/report.md").read_text()


def test_a_job_stopped_by_its_time_limit_and_resubmitted_continues_its_run(cluster, time_limited, plain,
                                                                           tiny_dataset):
    folder, job = time_limited
    stopped = cluster.wait(job, timeout=240)
    assert stopped["JobState"] == "TIMEOUT", cluster.logs()
    output = "".join(path.read_text() for path in folder.glob("limited-*.out"))
    assert "stopped by SIGTERM at epoch " in output and "Traceback" not in output
    saved = torch.load(folder / "logs/demo/version_0/checkpoints/last.ckpt", weights_only=False)["global_step"]
    assert 0 < saved < 12 and f"saved {folder / 'logs/demo/version_0/checkpoints/last.ckpt'} at step {saved}" in output
    again = cluster.submit(job_script("resubmitted", fit_command(tiny_dataset, folder / "logs"), folder),
                           "resubmitted")
    assert cluster.wait(again)["JobState"] == "COMPLETED", cluster.logs()
    assert_same_run(folder / "logs/demo/version_0", plain)
