"""What the tests share to run the package's commands small: the flags of a small CPU run, a command in its own
process, and readers of what a run leaves behind. Test files in any folder import it (pyproject's `pythonpath`)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from inception_next.training.config import EXPERIMENTS

HELPERS = Path(__file__).parent  # commands the tests start get this folder on PYTHONPATH


def small_run(dataset, *extra):
    """Flags that point any experiment at a generated dataset: 32 px images, batches of 4, no loader workers, one
    CPU device, no progress bar."""
    return ["--data.root", str(dataset), "--data.img_size", "32", "--data.batch_size", "4", "--data.num_workers", "0",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false", *extra]


def demo_run(dataset, *extra):
    """The demo recipe, small."""
    return ["--config", str(EXPERIMENTS / "demo.yaml"), *small_run(dataset, *extra)]


def run_flags(dataset, *extra):
    """The demo recipe on the tiny dataset: 6 steps an epoch, every source of randomness on (RandAugment, Mixup,
    drop path, EMA), last.ckpt every 2 steps, deterministic kernels."""
    return demo_run(dataset, "--trainer.deterministic", "true", "--trainer.max_epochs", "2", "--model.drop_path_rate",
                    "0.1", "--model.mixup", "0.8", "--model.ema_decay", "0.9", "--save_every_n_steps", "2",
                    "--trainer.log_every_n_steps", "1", *extra)


def cli(args, cwd, check=True, env=None):
    """`python -m inception_next ARGS` in its own process, with the tests' callbacks (interruptions.py) importable."""
    env = dict(env or os.environ, PYTHONPATH=os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "inception_next", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 or not check, done.stderr[-3000:]
    return done


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
