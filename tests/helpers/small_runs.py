"""What the tests share to run the package's commands small: the flags of a small CPU run, a command in its own
process, and readers of what a run leaves behind. Test files in any folder import it (pyproject's `pythonpath`)."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from inception_next.training.config import EXPERIMENTS

HELPERS = Path(__file__).parent  # commands the tests start get this folder on PYTHONPATH


# The flags of a small CPU run, for any experiment: 32 px images, batches of 4, no loader workers, one CPU device, no
# progress bar. Later flags override them.
SMALL = ["--data.img_size", "32", "--data.batch_size", "4", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
         "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"]


def small_run(dataset, *extra):
    """SMALL, on a generated dataset."""
    return ["--data.root", str(dataset), *SMALL, *extra]


def demo_run(dataset, *extra):
    """The demo recipe, small."""
    return ["--config", str(EXPERIMENTS / "demo.yaml"), *small_run(dataset, *extra)]


def run_flags(dataset, *extra):
    """The demo recipe on the tiny dataset: 6 steps an epoch, every source of randomness on (RandAugment, Mixup,
    drop path, EMA), last.ckpt every 2 steps, deterministic kernels."""
    return demo_run(dataset, "--trainer.deterministic", "true", "--trainer.max_epochs", "2", "--model.drop_path_rate",
                    "0.1", "--model.mixup", "0.8", "--model.ema_decay", "0.9", "--save_every_n_steps", "2",
                    "--trainer.log_every_n_steps", "1", *extra)


# Commands run in processes of their own are forked from a server that has imported the package once (about 6 s of
# imports a process on 2 cores): the process is the command's alone, as `python -m inception_next` would make it, and
# dies of its own signals. Runs of several ranks are real `python -m` processes (DDP's launcher starts the other
# ranks from the command line), and so are those that need the interpreter's exit (`fresh`: a logger that finishes
# its run in an atexit hook).
FORKS = multiprocessing.get_context("forkserver")
FORKS.set_forkserver_preload(["inception_next.commands", "interruptions"])
# A new interpreter's sys.path after the script's own folder: a forked command's, after its working folder and
# PYTHONPATH, whatever the server's was.
INTERPRETER_PATH = json.loads(subprocess.run(
    [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"], env={}, capture_output=True,
    text=True, check=True).stdout)


def run_command(args, cwd, env, out, err):
    """In a forked process: the command as `python -m inception_next ARGS` runs it, its output to files."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = [cwd, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep)), *INTERPRETER_PATH]
    multiprocessing.set_start_method("fork", force=True)  # the platform's, as the command's loader workers expect
    for stream, path in ((1, out), (2, err)):
        with open(path, "w") as handle:
            os.dup2(handle.fileno(), stream)
    sys.argv = [sys.executable, *args]
    from inception_next.commands import main

    main(list(args))


def cli(args, cwd, check=True, env=None, fresh=False):
    """`python -m inception_next ARGS` in its own process, with the tests' callbacks (interruptions.py) importable;
    a CompletedProcess (returncode negative for a signal, as subprocess's) whose `lines` are (seconds since the
    start, line) of what it printed, stdout and stderr together, as it printed them (for a forked process)."""
    env = dict(env or os.environ, PYTHONPATH=os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    if fresh or any("ddp" in arg for arg in args):
        done = subprocess.run([sys.executable, "-m", "inception_next", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)
        done.lines = []
    else:
        with tempfile.TemporaryDirectory(prefix="command-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            process = FORKS.Process(target=run_command, args=(list(args), str(cwd), env, str(out), str(err)))
            process.start()
            lines = watched(process, (out, err), f"inception_next {' '.join(args)}")
            done = subprocess.CompletedProcess(args, process.exitcode, out.read_text(), err.read_text())
            done.lines = lines
    assert done.returncode == 0 or not check, done.stderr[-3000:]
    return done


def watched(process, outputs, name, timeout=300):
    """Wait for `process`, reading the lines it writes to the files `outputs` as they come: [(seconds, line)]."""
    started, lines, read = time.monotonic(), [], {path: 0 for path in outputs}
    while True:
        running = process.is_alive()
        for path in outputs:
            data = path.read_bytes()[read[path]:] if path.exists() else b""
            whole = data[:data.rfind(b"\n") + 1]
            read[path] += len(whole)
            lines += [(time.monotonic() - started, line) for line in whole.decode(errors="replace").splitlines()]
        if not running:
            return lines
        if time.monotonic() - started > timeout:
            process.kill()
            raise TimeoutError(f"{name}: still running after {timeout} s")
        process.join(0.1)


def read_records(path):
    """interruptions.RecordBatches' lines: [(epoch, batch index, batch digest, lr)]."""
    rows = [line.split() for line in Path(path).read_text().splitlines()] if Path(path).exists() else []
    return [(int(epoch), int(index), digest, float(lr)) for epoch, index, digest, lr in rows]


def weights(checkpoint):
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def resumes_exactly(root, tmp_path, *flags):
    """Train on `root` unbroken with 2 loader workers, then again killed (SIGKILL) at step 3, just after the first
    epoch's end, and resumed each time with `--ckpt_path last`: the resumed run trains the unbroken run's batches
    with its lr, to weights within 1e-6. The second try runs 3 workers: a source read in blocks lays an epoch out
    for the loader's workers, and an epoch resumed with another count must finish in the layout it began with."""
    flags = run_flags(root, *flags, "--trainer.limit_train_batches", "4", "--data.shuffle_window", "8",
                      "--trainer.callbacks+=interruptions.RecordBatches")
    unbroken = tmp_path / "unbroken"
    unbroken.mkdir()
    cli(["fit", *flags, "--data.num_workers", "2", f"--trainer.callbacks.path={unbroken / 'batches.txt'}"],
        cwd=unbroken)
    expected = read_records(unbroken / "batches.txt")
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    trained = {}
    for moment, workers in (("step:3", 2), ("epoch_end:0", 3), (None, 2)):
        record = resumed / "batches.txt"
        record.unlink(missing_ok=True)
        kill = ["--trainer.callbacks+=interruptions.KillAt", f"--trainer.callbacks.moment={moment}"] if moment else []
        done = cli(["fit", *flags, f"--trainer.callbacks.path={record}", "--data.num_workers", str(workers),
                    "--ckpt_path", "last", *kill], cwd=resumed, check=moment is None)
        assert done.returncode == (-signal.SIGKILL if moment else 0), done.stderr[-2000:]
        trained.update({(e, i): (e, i, d, lr) for e, i, d, lr in read_records(record)})
    assert [trained[key] for key in sorted(trained)] == expected
    final = weights(unbroken / "logs/demo/version_0/checkpoints/last.ckpt")
    after = weights(resumed / "logs/demo/version_0/checkpoints/last.ckpt")
    assert max((final[k].double() - after[k].double()).abs().max().item() for k in final) < 1e-6


def ranks_split_the_data(root, tmp_path):
    """2 DDP ranks of a plain Trainer (plain_trainer_ddp.py) on the 24 + 12 images at `root`: each trains a disjoint
    half of the training split, and together they validate every validation image once."""
    done = subprocess.run([sys.executable, str(HELPERS / "plain_trainer_ddp.py"), str(root), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [[int(i) for i in (tmp_path / f"rank{r}.txt").read_text().split()] for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 12 and sorted(ranks[0] + ranks[1]) == list(range(24))
    validated = [int(i) for r in range(2) for i in (tmp_path / f"rank{r}_val.txt").read_text().split()]
    assert sorted(validated) == list(range(12))
