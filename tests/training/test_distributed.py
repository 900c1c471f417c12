"""Data parallel on the CPU (gloo): the data module under any Trainer, prediction sharded into one file."""

import csv
import os
import subprocess
import sys

import pytest
import torch
from small_runs import HELPERS, small_run

from inception_next.training.config import EXPERIMENTS

pytestmark = pytest.mark.slow  # real processes: DDP ranks



def plain_trainer_ddp(dataset, out, *how):
    """plain_trainer_ddp.py's 2 ranks on `dataset`, writing what each trained, validated and ended with to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(HELPERS / "plain_trainer_ddp.py"), str(dataset), str(out), *how],
                          cwd=out, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def plain_ddp_run(tiny_dataset, tmp_path_factory):
    """One plain-Trainer DDP run, the module's BatchNorm averaging on: the tests below read it."""
    return plain_trainer_ddp(tiny_dataset, tmp_path_factory.mktemp("plain-ddp"))


def test_a_plain_trainer_under_ddp_trains_each_sample_once(plain_ddp_run):
    """No CLI, Lightning's defaults (use_distributed_sampler=True) and no callbacks: the data module's sampler is
    already sharded, so Lightning must not shard it a second time, and the module averages BatchNorm itself."""
    ranks = [[int(i) for i in (plain_ddp_run / f"rank{r}.txt").read_text().split()] for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 12  # 24 training images, 2 ranks
    assert sorted(ranks[0] + ranks[1]) == list(range(24))  # every image once, none on both ranks
    validated = [int(i) for r in range(2) for i in (plain_ddp_run / f"rank{r}_val.txt").read_text().split()]
    assert sorted(validated) == list(range(12))  # each validation image exactly once
    statistics = [torch.load(plain_ddp_run / f"rank{r}_bn.pt") for r in range(2)]
    assert torch.equal(*statistics)  # averaged before validating: one model on both ranks


def test_batchnorm_statistics_are_the_ranks_average_not_rank_0s(plain_ddp_run, tiny_dataset, tmp_path):
    """DDP hands every rank rank 0's buffers at each forward; timm's train.py (the official runs) averages the
    ranks' statistics before evaluating instead, and so does the module: the same run without its averaging ends
    with other statistics (rank 0's alone), on both ranks alike."""
    statistics = {}
    for how, run in (("averaged", plain_ddp_run),
                     ("no-bn-averaging", plain_trainer_ddp(tiny_dataset, tmp_path, "no-bn-averaging"))):
        ranks = [torch.load(run / f"rank{r}_bn.pt") for r in range(2)]
        assert torch.equal(*ranks), how
        statistics[how] = ranks[0]
    assert not torch.allclose(statistics["averaged"], statistics["no-bn-averaging"])


def test_predict_under_ddp_writes_one_file_with_each_image_once(tiny_dataset, tmp_path):
    output = tmp_path / "predictions.csv"
    done = subprocess.run(
        [sys.executable, "-m", "inception_next", "predict", "--config", str(EXPERIMENTS / "demo.yaml"),
         *small_run(tiny_dataset, "--data.batch_size", "2", "--trainer.devices", "2", "--trainer.strategy", "ddp"),
         "--data.predict_root", str(tiny_dataset / "val"),
         "--predict_csv", str(output)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    files = [row["file"] for row in csv.DictReader(open(output))]
    expected = sorted(str(p) for p in (tiny_dataset / "val").rglob("*.JPEG"))
    assert sorted(files) == expected  # 12 images, each once, from both ranks' shares
    assert done.stdout.count("predictions: ") == 1
