"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd (Debian's `munge` and `slurm-wlm`, which
.ci/run installs) with their own key, configuration, state and logs in a temporary folder, on 127.0.0.1; a `cpu`
partition with every core of this machine and job requeue on. `stop` ends each daemon it started by its PID."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue", "sinfo")
FINAL_STATES = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


def missing_tools():
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    def __init__(self, folder):
        self.folder = Path(folder)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.daemons = []  # munged's PID (it daemonizes), then the Popen of slurmctld and slurmd

    def start(self):
        munge = self.folder / "munge"
        for sub in ("munge", "state", "spool"):
            (self.folder / sub).mkdir(parents=True)
        key = munge / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o600)
        subprocess.run(["munged", "--force", f"--socket={munge / 'munge.socket'}", f"--key-file={key}",
                        f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                        f"--seed-file={munge / 'munged.seed'}"], check=True, capture_output=True)
        self.daemons.append(int((munge / "munged.pid").read_text()))
        self.conf.write_text(self.configuration())
        for command in (["slurmctld", "-D", "-f", str(self.conf)],
                        ["slurmd", "-D", "-f", str(self.conf), "-N", self.node]):
            log = open(self.folder / f"{command[0]}.out", "w")
            self.daemons.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster did not come up: {self.logs()}")

    def configuration(self):
        f = self.folder
        return "\n".join([
            "ClusterName=tests", f"SlurmctldHost={self.node}(127.0.0.1)", "AuthType=auth/munge",
            # cred_expire: how long a requeued job waits before it starts again (120 s by default)
            f"AuthInfo=socket={f / 'munge/munge.socket'},cred_expire=10", "CredType=cred/munge", "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", f"StateSaveLocation={f / 'state'}",
            f"SlurmdSpoolDir={f / 'spool'}", f"SlurmctldPidFile={f / 'slurmctld.pid'}",
            f"SlurmdPidFile={f / 'slurmd.pid'}", f"SlurmctldLogFile={f / 'slurmctld.log'}",
            f"SlurmdLogFile={f / 'slurmd.log'}", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobRequeue=1", "SchedulerType=sched/builtin", "SelectType=select/cons_tres",
            # a requeued job becomes eligible after cred_expire with no event to wake the scheduler: it waited for
            # the periodic pass (every 60 s by default)
            "SchedulerParameters=sched_interval=2",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2", "MpiDefault=none", "KillWait=20", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            # 4 job slots whatever the cores: the jobs mostly wait (for a signal, a time limit)
            "SlurmdParameters=config_overrides", f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN",
            f"PartitionName=cpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP", ""])

    def logs(self):
        return " | ".join(path.read_text()[-1500:] for path in sorted(self.folder.glob("*.log")))

    def submit(self, script, name):
        path = self.folder / f"{name}.sh"
        path.write_text(script)
        done = subprocess.run(["sbatch", "--parsable", str(path)], env=self.env, capture_output=True, text=True,
                              check=True)
        return done.stdout.strip().split(";")[0]

    def job(self, job_id):
        """scontrol's fields of a job (JobState, Restarts, ExitCode, ...)."""
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=self.env, capture_output=True, text=True)
        return dict(field.split("=", 1) for field in shown.stdout.split() if "=" in field)

    def wait(self, job_id, timeout=300, until=lambda job: job.get("JobState") in FINAL_STATES):
        start = time.monotonic()
        while time.monotonic() < start + timeout:
            job = self.job(job_id)
            if until(job):
                print(f"job {job_id}: {job.get('JobState')} after {time.monotonic() - start:.0f} s")
                return job
            time.sleep(1)
        raise TimeoutError(f"job {job_id} still {self.job(job_id).get('JobState')} after {timeout} s: {self.logs()}")

    def signal(self, job_id, name):
        subprocess.run(["scancel", f"--signal={name}", job_id], env=self.env, check=True)

    def stop(self):
        """Cancel every job (their processes end with them), then end each daemon by its PID."""
        subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "-h"], env=self.env, capture_output=True, text=True)
            if queue.returncode or not queue.stdout.strip():
                break
            time.sleep(1)
        munged, *slurm = self.daemons
        for daemon in reversed(slurm):
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        os.kill(munged, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(munged, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(munged, signal.SIGKILL)
