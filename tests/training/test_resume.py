"""Runs that survive: mid-epoch resume after SIGKILL, kills during a save, the divergence guard, DDP on the CPU."""

import os
import random
import shutil
import signal
import subprocess

import lightning as L
import numpy as np
import pytest
import torch
from expected_lr import official_lr, per_step_lr
from small_runs import cli, read_records, run_flags, weights
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from inception_next.commands import main
from inception_next.data import ImageNetDataModule, LabelledImages, ResumableSampler
from inception_next.data.readers import folders
from inception_next.training.checkpoints import PARTIAL_SUFFIX, check_checkpoint
from inception_next.training.module import ImageClassifier


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
    data = ImageNetDataModule(root=str(tiny_dataset), img_size=32)
    dataset = LabelledImages(folders.class_folders(tiny_dataset / "train", data.classes), data.train_transform())
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


# 3 epochs; two ways to train them:
CHAINS = {
    # the official lr (once an epoch, a cooldown epoch at the end), 2 batches of 2 accumulated per step, 6 steps an
    # epoch; last.ckpt at steps 4, 8, 16 and at each epoch's end (after its validation: step 12 ends epoch 1, where
    # a step save would come before the validation)
    "epoch-lr, accumulation 2": ("--data.batch_size", "2", "--global_batch_size", "4", "--model.step_on_epochs",
                                 "true", "--model.cooldown_epochs", "1"),
    # the demo's lr (every optimizer step), one batch of 4 per step, in partial epochs as the README's demo proxy
    # trains them: 4 of the 6 batches; last.ckpt every 2 steps and at each epoch's end. The loader workers only
    # draw each crop and flip: decoding, the crop, RandAugment and random erasing run on the batch (drawn under each
    # sample's seed), in the main process.
    "step-lr, partial epochs": ("--trainer.limit_train_batches", "4", "--save_every_n_steps", "2",
                                "--data.device_from", "decode", "--data.reprob", "0.5"),
}
STEPS_PER_EPOCH = {"epoch-lr, accumulation 2": 6, "step-lr, partial epochs": 4}
TIMING = ("train/device/",)  # series whose values measure the machine, not the run
# Lightning's own lr monitor rides along: it must show the lr each step trained with, as train/lr does.
LR_MONITOR = ("--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor",
              "--trainer.callbacks.logging_interval=step")


def chain_flags(dataset, chain, *extra):
    return run_flags(dataset, "--trainer.max_epochs", "3", "--save_every_n_steps", "4", *CHAINS[chain], *LR_MONITOR,
                     *extra)


def logged_series(run):
    """Every scalar series of a run's TensorBoard files as (step, value) pairs, as TensorBoard shows them (what a
    killed run logged after the checkpoint its successor resumed from is purged); a timing series' values as None."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(event.step, None if tag.startswith(TIMING) else event.value) for event in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def unbroken(tiny_dataset, tmp_path_factory):
    """Per chain, an uninterrupted run with no loader worker: every batch, its lr, and the final weights."""
    runs = {}

    def run(chain):
        if chain not in runs:
            folder = tmp_path_factory.mktemp("unbroken")
            record = folder / "batches.txt"
            cli(["fit", *chain_flags(tiny_dataset, chain, "--trainer.callbacks+=interruptions.RecordBatches",
                                     f"--trainer.callbacks.path={record}")], cwd=folder)
            last = folder / "logs/demo/version_0/checkpoints/last.ckpt"
            runs[chain] = (read_records(record), weights(last), last.stat().st_size,
                           logged_series(folder / "logs/demo/version_0"))
        return runs[chain]

    return run


def kill_moments(seed, steps):
    """A kill mid-epoch at a random step after the first step save (one that has to be trained again), at an epoch's
    end, mid-validation and at a random save, in the order they come in the run's 3 epochs of `steps` steps."""
    rng = random.Random(seed)
    moments = [("step", rng.choice([s for s in range(3, steps) if s % 2])), ("epoch_end", 0), ("validation", 1),
               ("save", rng.randrange(2 * steps + 1, 3 * steps))]
    order = {"step": lambda v: v, "epoch_end": lambda v: steps * v + steps,
             "validation": lambda v: steps * v + steps, "save": lambda v: v}
    moments.sort(key=lambda m: order[m[0]](m[1]))
    return [f"{kind}:{value}" for kind, value in moments]


@pytest.mark.parametrize("workers, persistent, chain, seed", [(1, "false", "epoch-lr, accumulation 2", 11),
                                                              (2, "true", "step-lr, partial epochs", 12)])
@pytest.mark.slow
def test_a_run_killed_anywhere_resumes_exactly(workers, persistent, chain, seed, unbroken, tiny_dataset, tmp_path):
    """Kill one run four times (mid-epoch, at an epoch's end, mid-validation, mid-save), resuming each time with
    `--ckpt_path last`: every batch is the unbroken run's, trained with its lr, the weights end the same, and every
    series the run logged (losses, lr, validation, EMA, layer scales, epoch, HPARAMS) has the unbroken run's steps
    and values: no gap, no duplicate."""
    expected, final, _, series = unbroken(chain)
    batches_per_step = len(expected) // (3 * STEPS_PER_EPOCH[chain])
    record = tmp_path / "batches.txt"
    flags = chain_flags(tiny_dataset, chain, "--data.num_workers", str(workers), "--data.persistent_workers",
                        persistent, "--ckpt_path", "last", "--trainer.callbacks+=interruptions.RecordBatches",
                        f"--trainer.callbacks.path={record}")
    last = tmp_path / "logs/demo/version_0/checkpoints/last.ckpt"
    trained = {}  # (epoch, batch) -> its digest and lr, later runs replacing what a killed one did after its checkpoint
    moments = kill_moments(seed, STEPS_PER_EPOCH[chain])
    for moment in [*moments, None]:
        resumed_from = torch.load(last, weights_only=False)["global_step"] if last.exists() else 0
        record.unlink(missing_ok=True)
        kill = ["--trainer.callbacks+=interruptions.KillAt", f"--trainer.callbacks.moment={moment}"] if moment else []
        done = cli(["fit", *flags, *kill], cwd=tmp_path, check=moment is None)
        assert done.returncode == (-signal.SIGKILL if moment else 0), (moment, done.stderr[-2000:])
        records = read_records(record)
        if records:  # it resumed at the batch after its checkpoint's last
            assert records[0] == expected[resumed_from * batches_per_step], f"the run before the kill at {moment}"
        trained.update({(epoch, index): (epoch, index, digest, lr) for epoch, index, digest, lr in records})
    assert [trained[key] for key in sorted(trained)] == expected, f"kills at {moments}"
    assert [p.name for p in (tmp_path / "logs/demo").iterdir()] == ["version_0"]  # one run folder, continued
    resumed = weights(last)
    worst = max((final[k].double() - resumed[k].double()).abs().max().item() for k in final)
    print(f"{chain}: kills at {moments}; largest weight difference to the unbroken run: {worst:.3g}")
    assert worst < 1e-6
    logged = logged_series(tmp_path / "logs/demo/version_0")
    assert sorted(logged) == sorted(series)
    for tag, points in series.items():
        (steps, values), (logged_steps, logged_values) = zip(*points), zip(*logged[tag])
        assert logged_steps == steps, f"{tag} after kills at {moments}"
        if not tag.startswith(TIMING):
            assert logged_values == pytest.approx(values, rel=1e-6, nan_ok=True), f"{tag} after kills at {moments}"


@pytest.mark.parametrize("chain", list(CHAINS))
def test_the_logged_lr_is_the_official_schedule_at_every_step(chain, unbroken):
    """train/lr and Lightning's lr monitor, at every optimizer step: the lr timm's schedule gives that step, once an
    epoch with a cooldown epoch (the official recipes) or every step (the demo), with gradient accumulation."""
    series = unbroken(chain)[3]
    peak, warmup_lr, min_lr, steps = 3.2e-2 * 4 / 1024, 1e-6, 1e-5, STEPS_PER_EPOCH[chain]
    if chain == "step-lr, partial epochs":
        expected = [per_step_lr(step, peak, steps, warmup_lr, min_lr, 3 * steps) for step in range(3 * steps)]
    else:
        expected = [official_lr(step // steps, peak, 1, warmup_lr, min_lr, 2) for step in range(3 * steps)]
    steps_logged, lrs = zip(*series["train/lr"])
    assert list(steps_logged) == list(range(3 * steps))
    assert list(lrs) == pytest.approx(expected, rel=1e-6)
    for tag in ("lr-AdamW/pg1", "lr-AdamW/pg2"):  # Lightning's monitor logs once per accumulated batch
        assert {step for step, _ in series[tag]} == set(range(3 * steps)), tag
        assert [lr for _, lr in series[tag]] == pytest.approx([expected[step] for step, _ in series[tag]]), tag


@pytest.fixture
def tmpfs(tmp_path):
    """Mount tmpfs filesystems under tmp_path: `tmpfs(name, size, read_only=False)` returns the mounted folder."""
    mounted = []

    def mount(name, size, read_only=False):
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs (another filesystem, a small or a read-only one) needs root")
        folder = tmp_path / name
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)])


@pytest.mark.slow
def test_a_kill_mid_save_across_filesystems_leaves_the_previous_checkpoint(tiny_dataset, tmp_path, tmpfs):
    """$TMPDIR on a tmpfs, the logs on the disk: Lightning's own save moved its temporary file across them, copying
    over last.ckpt in place. Killed mid-save, the previous last.ckpt must load; the next start clears the debris."""
    env = dict(os.environ, TMPDIR=str(tmpfs("tmp", "200m")))
    checkpoints = tmp_path / "logs/demo/version_0/checkpoints"
    killed = cli(["fit", *run_flags(tiny_dataset, "--trainer.callbacks+=interruptions.KillAt",
                                    "--trainer.callbacks.moment=save:4")], cwd=tmp_path, env=env, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert os.stat(env["TMPDIR"]).st_dev != os.stat(checkpoints).st_dev
    assert check_checkpoint(checkpoints / "last.ckpt")
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 2
    assert [p.name for p in checkpoints.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]  # the half-written new one
    cli(["fit", *run_flags(tiny_dataset, "--ckpt_path", "last", "--trainer.max_epochs", "1")], cwd=tmp_path, env=env)
    assert not [p for p in checkpoints.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 6


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_checkpoints(tiny_dataset, tmp_path, tmpfs, unbroken):
    """Room for two checkpoints and a half: the third save cannot fit beside them."""
    checkpoint_size = unbroken("step-lr, partial epochs")[2]
    disk = tmpfs("disk", f"{int(2.5 * checkpoint_size / 2**20)}m")
    done = cli(["fit", *run_flags(tiny_dataset, "--trainer.default_root_dir", str(disk))], cwd=tmp_path, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    message = done.stderr.strip().splitlines()[-1]
    checkpoints = disk / "demo/version_0/checkpoints"
    assert message.startswith("error: could not save ") and f" in {checkpoints}: No space left on device" in message
    assert "it needs" in message and "MB free there" in message and "Traceback" not in done.stderr
    names = sorted(p.name for p in checkpoints.iterdir())
    assert not [n for n in names if n.endswith(PARTIAL_SUFFIX)]
    for name in names:  # every checkpoint under a checkpoint's name is whole
        check_checkpoint(checkpoints / name)
    assert "last.ckpt" in names


def test_a_read_only_log_folder_stops_before_training(tiny_dataset, tmp_path, tmpfs):
    read_only = tmpfs("ro", "1m", read_only=True)
    done = cli(["fit", *run_flags(tiny_dataset, "--trainer.default_root_dir", str(read_only))], cwd=tmp_path,
               check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --trainer.default_root_dir {read_only / 'demo'}: not writable (Read-only file system); expected a "
        "folder this user can create files in")
    assert "Traceback" not in done.stderr and "Epoch 0" not in done.stdout


def damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "zeroed":
        data = bytearray(len(data))
    elif how == "empty":
        data = bytearray()
    elif how == "middle":
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory):
    """One epoch of the demo on the tiny dataset: version_0 with last.ckpt and a best checkpoint."""
    folder = tmp_path_factory.mktemp("finished")
    cli(["fit", *run_flags(tiny_dataset, "--trainer.max_epochs", "1")], cwd=folder)
    return folder


DAMAGE = ["truncated", "zeroed", "empty", "middle"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_checkpoint_file_is_one_line_naming_it(how, finished_run, tiny_dataset, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "damaged.ckpt"
    checkpoint.write_bytes((finished_run / "logs/demo/version_0/checkpoints/last.ckpt").read_bytes())
    damage(checkpoint, how)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *run_flags(tiny_dataset, "--ckpt_path", str(checkpoint))])
    assert stopped.value.code == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"error: --ckpt_path {checkpoint}: ") and len(message.splitlines()) == 1
    assert ("damaged" in message or "empty" in message) and "weights_only" not in message


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_last_checkpoint_falls_back_to_the_newest_whole_one(how, finished_run, tiny_dataset, tmp_path,
                                                                      monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(finished_run / "logs", tmp_path / "logs")
    checkpoints = tmp_path / "logs/demo/version_0/checkpoints"
    damage(checkpoints / "last.ckpt", how)
    best = next(checkpoints.glob("best-*.ckpt"))
    with pytest.warns(UserWarning, match=f"{checkpoints / 'last.ckpt'}: .*; using {best} instead"):
        main(["fit", *run_flags(tiny_dataset, "--ckpt_path", "last", "--trainer.max_epochs", "1")])
    assert f"--ckpt_path last: {best}" in caplog.text


def test_the_largest_seed_and_a_drawn_seed_train(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed in ("4294967295", "true"):
        main(["fit", *run_flags(tiny_dataset, "--seed_everything", seed, "--trainer.fast_dev_run", "2",
                                "--data.num_workers", "1")])


def test_a_nonfinite_loss_names_the_step_and_the_intact_checkpoint(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *run_flags(tiny_dataset, "--trainer.callbacks+=interruptions.PoisonAtStep",
                                "--trainer.callbacks.step=3")])
    assert stopped.value.code == 1
    last = tmp_path / "logs" / "demo" / "version_0" / "checkpoints" / "last.ckpt"
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == (f"error: training diverged: loss nan at epoch 0, global step 3; last good checkpoint: {last} "
                       "(left intact)")
    assert torch.load(last, weights_only=False)["global_step"] == 2


def scalars(log_dir):
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_two_ddp_processes_validate_like_one_process_on_their_checkpoint(tiny_dataset, tmp_path):
    cli(["fit", *run_flags(tiny_dataset, "--trainer.devices", "2", "--trainer.strategy", "ddp",
                           "--trainer.max_epochs", "1", "--data.batch_size", "2", "--save_every_n_steps", "null")],
        cwd=tmp_path)
    logged = scalars(tmp_path / "logs" / "demo" / "version_0")
    checkpoint = tmp_path / "logs" / "demo" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 6  # 24 images / (2 x 2 ranks)
    model = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    data = ImageNetDataModule(root=str(tiny_dataset), img_size=32, batch_size=2, num_workers=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        use_distributed_sampler=False)
    alone = trainer.validate(model, datamodule=data, verbose=False)[0]
    for tag in ("val/top1", "val/top5", "val_ema/top1", "val/loss"):
        assert logged[tag][-1] == pytest.approx(alone[tag], abs=1e-5), tag
