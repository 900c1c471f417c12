"""What the tests share to run the package's commands small: the flags of a small CPU run, a command in its own
process, and readers of what a run leaves behind. Test files in any folder import it (pyproject's `pythonpath`)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from inception_next.training.config import EXPERIMENTS

TESTS = Path(__file__).parent  # the helpers' folder: commands the tests start get it on PYTHONPATH


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
    env = dict(env or os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
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
