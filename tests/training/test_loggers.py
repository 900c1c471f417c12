"""Runs under loggers with stores of their own: a real MLflow tracking server (started here on 127.0.0.1, with a
SQLite store) and Weights & Biases offline. Whatever the logger, a run keeps every checkpoint in its own folder,
resumes in it and in the same run of the logger's store, and says where to look; a logger that cannot start is one
line."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from small_runs import cli, run_flags

pytestmark = pytest.mark.slow  # real processes: an MLflow server, W&B runs

MLFLOW = ["--trainer.logger", "lightning.pytorch.loggers.MLFlowLogger"]
WANDB = ["--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.offline", "true",
         "--trainer.logger.project", "demo"]
KILL_AT_STEP_3 = ["--trainer.callbacks+=interruptions.KillAt", "--trainer.callbacks.moment=step:3"]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite store; its URI once it answers /health (at most 120 s)."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(folder / "server.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                               f"sqlite:///{folder / 'mlflow.db'}", "--default-artifact-root",
                               str(folder / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                os.killpg(server.pid, signal.SIGKILL)
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri
    os.killpg(server.pid, signal.SIGKILL)  # its store is thrown away: no need to wait 9 s for a graceful stop
    server.wait(timeout=60)
    log.close()


def kill_and_resume(dataset, cwd, logger, env=None):
    """A 2-epoch fit killed at step 3 (its last.ckpt: step 2), then resumed with --ckpt_path last."""
    flags = run_flags(dataset, "--trainer.max_epochs", "2", "--ckpt_path", "last", *logger)
    killed = cli(["fit", *flags, *KILL_AT_STEP_3], cwd=cwd, check=False, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    return cli(["fit", *flags], cwd=cwd, env=env, fresh=True)  # the logger finishes its run as the interpreter exits


def check_run_folder(cwd):
    """One run folder holding every checkpoint, and nothing written beside logs/."""
    assert sorted(p.name for p in (cwd / "logs/demo").iterdir()) == ["version_0"]
    run = cwd / "logs/demo/version_0"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in names and any(name.startswith("best-") for name in names), names
    assert json.loads((run / "finished.json").read_text())["global_step"] == 12
    assert {p for p in cwd.rglob("*.ckpt")} == {run / "checkpoints" / name for name in names}
    return run


def test_an_mlflow_run_keeps_its_checkpoints_and_resumes_its_mlflow_run(mlflow_server, tiny_dataset, tmp_path):
    logger = [*MLFLOW, "--trainer.logger.tracking_uri", mlflow_server, "--trainer.logger.experiment_name", "resume"]
    done = kill_and_resume(tiny_dataset, tmp_path, logger)
    check_run_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]  # no mlruns/, no checkpoints/
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert len(runs) == 1  # the resumed fit logged into the interrupted fit's MLflow run
    run_id = runs[0].info.run_id
    assert f"logs: MLflow run {run_id} at {mlflow_server}" in done.stdout
    assert runs[0].data.params["model.backbone"] == "inception_next_atto"
    assert [m.step for m in client.get_metric_history(run_id, "val/top1")] == [5, 11]
    assert {m.step for m in client.get_metric_history(run_id, "train/lr")} == set(range(12))
    assert {m.step for m in client.get_metric_history(run_id, "layer_scale/stage0")} == set(range(12))


def test_a_wandb_offline_run_keeps_its_checkpoints_and_resumes_its_wandb_run(tiny_dataset, tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp_path / "wandb"))
    (tmp_path / "wandb").mkdir()
    done = kill_and_resume(tiny_dataset, tmp_path, [*WANDB, "--trainer.logger.save_dir", str(tmp_path / "wandb")],
                           env)
    run = check_run_folder(tmp_path)
    run_id = json.loads((run / "loggers.json").read_text())["WandbLogger"]["id"]
    offline_runs = sorted(p.name for p in (tmp_path / "wandb/wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(name.endswith(f"-{run_id}") for name in offline_runs)  # one W&B run
    assert "logs: Weights & Biases offline run: wandb sync " in done.stdout


def test_a_logger_that_cannot_start_is_one_line(tiny_dataset, tmp_path):
    """MLflow refuses its plain-file default store unless told otherwise: that is the user's to fix, in one line."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    done = cli(["fit", *run_flags(tiny_dataset, *MLFLOW)], cwd=tmp_path, check=False, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("error: --trainer.logger MLFlowLogger: could not start (")
    assert "MLFLOW_ALLOW_FILE_STORE" in message
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*.ckpt"))
