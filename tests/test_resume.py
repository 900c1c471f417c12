"""Runs that survive: mid-epoch resume after SIGKILL, kills during a save, the divergence guard, DDP on the CPU."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from inception_next.cli import EXPERIMENTS, main
from inception_next.data import ClassFolderDataset, ImageFolderDataModule, ResumableSampler
from inception_next.module import ImageClassifier

TESTS = Path(__file__).parent


def run_flags(dataset, *extra):
    """The demo recipe on the tiny dataset: 6 steps an epoch, every source of randomness on (RandAugment, Mixup,
    drop path, EMA), last.ckpt every 2 steps, deterministic kernels."""
    return ["--config", str(EXPERIMENTS / "demo.yaml"), "--data.root", str(dataset), "--data.img_size", "32",
            "--data.batch_size", "4", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
            "--trainer.devices", "1", "--trainer.enable_progress_bar", "false", "--trainer.deterministic", "true",
            "--trainer.max_epochs", "2", "--model.drop_path_rate", "0.1", "--model.mixup", "0.8",
            "--model.ema_decay", "0.9", "--save_every_n_steps", "2", *extra]


def cli(args, cwd, check=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "inception_next", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 or not check, done.stderr[-3000:]
    return done


def weights(checkpoint):
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def test_sampler_order_depends_on_seed_and_epoch_and_resumes_mid_epoch():
    sampler = ResumableSampler(10, seed=3)
    sampler.set_epoch(1)
    order = list(sampler)
    assert sorted(i for i, _ in order) == list(range(10))
    assert order == list(sampler)  # recomputable
    sampler.set_epoch(2)
    assert list(sampler) != order
    sampler.set_epoch(1)
    sampler.resume(epoch=1, start=4)
    assert list(sampler) == order[4:]
    assert list(sampler) == order  # the resume point applies once


def test_ranks_split_an_epoch_without_overlap():
    ranks = [list(ResumableSampler(11, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5  # training drops the uneven tail
    assert not {i for i, _ in ranks[0]} & {i for i, _ in ranks[1]}
    evaluation = [list(ResumableSampler(11, shuffle=False, rank=r, world_size=2)) for r in range(2)]
    assert sorted(i for rank in evaluation for i, _ in rank) == list(range(11))  # each exactly once, no padding


def test_augmentation_depends_on_the_sample_seed_only(tiny_dataset):
    data = ImageFolderDataModule(root=str(tiny_dataset), img_size=32)
    dataset = ClassFolderDataset(tiny_dataset / "train", data.classes, data.train_transform())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    first, _ = dataset[(5, 1234)]
    torch.rand(100)  # whatever else the process draws in between
    again, _ = dataset[(5, 1234)]
    assert torch.equal(first, again)
    assert not torch.equal(first, dataset[(5, 1235)][0])
    assert (random.random(), np.random.rand(), torch.rand(1)) != before  # the torch.rand(100) above moved torch's
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    dataset[(5, 1234)]
    assert (random.random(), np.random.rand(), torch.rand(1)) == before  # loading a sample draws from no caller RNG


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tiny_dataset, tmp_path):
    (tmp_path / "whole").mkdir()
    (tmp_path / "broken").mkdir()
    cli(["fit", *run_flags(tiny_dataset)], cwd=tmp_path / "whole")
    killed = cli(["fit", *run_flags(tiny_dataset, "--trainer.callbacks+=interruptions.KillAtStep",
                                    "--trainer.callbacks.step=9")], cwd=tmp_path / "broken", check=False)
    assert killed.returncode == -signal.SIGKILL
    checkpoints = tmp_path / "broken" / "logs" / "demo" / "checkpoints"
    interrupted = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert (interrupted["global_step"], interrupted["epoch"]) == (8, 1)  # mid-epoch 1: 2 of its 6 steps done
    cli(["fit", *run_flags(tiny_dataset, "--ckpt_path", "last")], cwd=tmp_path / "broken")
    whole = weights(tmp_path / "whole" / "logs" / "demo" / "checkpoints" / "last.ckpt")
    resumed = weights(checkpoints / "last.ckpt")
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 12
    worst = max((whole[k].double() - resumed[k].double()).abs().max().item() for k in whole)
    print(f"largest difference, resumed vs uninterrupted: {worst:.3g}")
    assert worst < 1e-6


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tiny_dataset, tmp_path):
    signal_file = tmp_path / "saving"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "inception_next", "fit",
         *run_flags(tiny_dataset, "--trainer.callbacks+=interruptions.KillDuringSave", "--trainer.callbacks.step=4",
                    f"--trainer.callbacks.signal_file={signal_file}")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not signal_file.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert signal_file.exists(), "the run never reached the stalled save"
    process.send_signal(signal.SIGKILL)
    process.wait()
    last = tmp_path / "logs" / "demo" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2  # the save at step 4 never replaced it


def test_a_nonfinite_loss_names_the_step_and_the_intact_checkpoint(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *run_flags(tiny_dataset, "--trainer.callbacks+=interruptions.PoisonAtStep",
                                "--trainer.callbacks.step=3")])
    assert stopped.value.code == 1
    last = tmp_path / "logs" / "demo" / "checkpoints" / "last.ckpt"
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == (f"error: training diverged: loss nan at epoch 0, global step 3; last good checkpoint: {last} "
                       "(left intact)")
    assert torch.load(last, weights_only=False)["global_step"] == 2


def scalars(log_dir):
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_two_ddp_processes_validate_like_one_process_on_their_checkpoint(tiny_dataset, tmp_path):
    cli(["fit", *run_flags(tiny_dataset, "--trainer.devices", "2", "--trainer.strategy", "ddp",
                           "--trainer.max_epochs", "1", "--data.batch_size", "2", "--save_every_n_steps", "null")],
        cwd=tmp_path)
    logged = scalars(tmp_path / "logs" / "demo" / "version_0")
    checkpoint = tmp_path / "logs" / "demo" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 6  # 24 images / (2 x 2 ranks)
    model = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    data = ImageFolderDataModule(root=str(tiny_dataset), img_size=32, batch_size=2, num_workers=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        use_distributed_sampler=False)
    alone = trainer.validate(model, datamodule=data, verbose=False)[0]
    for tag in ("val/top1", "val/top5", "val_ema/top1", "val/loss"):
        assert logged[tag][-1] == pytest.approx(alone[tag], abs=1e-5), tag
