import csv
import math

import lightning as L
import pytest
import torch
import yaml
from expected_lr import per_step_lr
from interruptions import RecordLR
from small_runs import cli
from small_runs import small_run as small_cpu_run

from inception_next.commands import main
from inception_next.data import ImageNetDataModule
from inception_next.data.device import DevicePipeline
from inception_next.data.randaugment import BatchRandAugment
from inception_next.training.config import EXPERIMENTS
from inception_next.training.module import ImageClassifier, parameter_groups
from inception_next.training.runs import scalars

EXPERIMENT_FILES = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if p.name != "recipe.yaml")


def small_run(dataset, *extra):
    """Any experiment, small, in fp32 and from scratch."""
    return small_cpu_run(dataset, "--trainer.precision", "32-true", "--model.pretrained", "null", *extra)


def test_every_experiment_is_found():
    names = {p.relative_to(EXPERIMENTS).as_posix() for p in EXPERIMENT_FILES}
    assert {"tiny.yaml", "small.yaml", "base.yaml", "atto.yaml", "base_384_finetune.yaml", "demo.yaml"} <= names
    assert len([n for n in names if n.startswith("isotropic/")]) == 3
    assert len([n for n in names if n.startswith("ablations/table8/")]) == 10
    assert len([n for n in names if n.startswith("ablations/table1/")]) == 8
    assert "debug.yaml" in names


@pytest.mark.parametrize("config", EXPERIMENT_FILES, ids=lambda p: p.relative_to(EXPERIMENTS).as_posix())
def test_every_experiment_trains_and_validates(config, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(config), *small_run(tiny_dataset, "--trainer.fast_dev_run", "2",
                                                     "--global_batch_size", "null")])


def test_a_fit_with_randaugment_on_the_device_augments_every_training_batch(tiny_dataset, tmp_path, monkeypatch):
    augmented = []
    original = BatchRandAugment.__call__
    monkeypatch.setattr(BatchRandAugment, "__call__",
                        lambda self, images, seeds: augmented.append(images.shape) or original(self, images, seeds))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="data.device_from randaugment, training on the CPU: the main process then"):
        main(["fit", "--config", str(EXPERIMENTS / "demo.yaml"), *small_run(
            tiny_dataset, "--trainer.fast_dev_run", "2", "--data.device_from", "randaugment",
            "--data.num_workers", "2")])
    assert augmented == [(4, 3, 32, 32)] * 2  # the training batches, not the validation ones


def test_a_fit_decoding_on_the_device_trains_on_the_decoded_batches(tiny_dataset, tmp_path, monkeypatch):
    decoded = []
    original = DevicePipeline.decode
    monkeypatch.setattr(DevicePipeline, "decode", lambda self, batch, device: decoded.append(
        (len(batch.labels), device.type)) or original(self, batch, device))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="data.device_from decode, training on the CPU: the main process then does"):
        main(["fit", "--config", str(EXPERIMENTS / "demo.yaml"), *small_run(
            tiny_dataset, "--trainer.fast_dev_run", "2", "--data.device_from", "decode", "--data.num_workers", "2")])
    assert decoded == [(4, "cpu")] * 2  # the training batches; validation's come decoded from the workers


@pytest.mark.parametrize("config", EXPERIMENT_FILES, ids=lambda p: p.relative_to(EXPERIMENTS).as_posix())
def test_every_experiment_prints_its_config(config, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(config), "--print_config"])
    assert stopped.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["backbone"] and printed["extends"] is None  # the chain is applied, not left to read


def tiny_trainer(tmp_path, **kwargs):
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                    limit_val_batches=0)
    return L.Trainer(**{**defaults, **kwargs})


def tiny_module(**kwargs):
    return ImageClassifier(**{**dict(backbone="inception_next_atto", num_classes=3, batch_size=4), **kwargs})


def tiny_data(dataset, **kwargs):
    return ImageNetDataModule(**{**dict(root=str(dataset), img_size=32, batch_size=4, num_workers=0), **kwargs})


def test_only_the_loaders_batches_count_as_trained_samples(tiny_dataset, tmp_path):
    """The model summary's example input (one image) goes through the transfer hooks while fitting. With loader
    workers the epoch's iteration has begun by then, and it was counted as 3 samples trained (its channels), which
    shifted the erasing seeds of a run's first epoch by 3 samples: a run resumed at an epoch's start erased others."""
    data, model = tiny_data(tiny_dataset, num_workers=2), tiny_module()
    model.example_input_array = torch.zeros(1, 3, 32, 32)  # as the CLI sets it
    tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=2, enable_model_summary=True).fit(model, datamodule=data)
    assert data.train_sampler.consumed == 2 * 4


def test_lr_follows_the_schedule_every_optimizer_step(tiny_dataset, tmp_path):
    record = RecordLR()
    model = tiny_module(lr_per_1024=1.0, warmup_epochs=1, warmup_lr=1e-4, min_lr=1e-4 / 2, cooldown_epochs=1,
                        step_on_epochs=False)
    trainer = tiny_trainer(tmp_path, max_epochs=4, callbacks=[record], accumulate_grad_batches=2)
    trainer.fit(model, tiny_data(tiny_dataset))
    peak = 1.0 * 8 / 1024  # 4 per device x 1 device x 2 accumulation
    steps_per_epoch = 24 // 4 // 2
    assert len(record.lrs) == 4 * steps_per_epoch
    expected = [per_step_lr(step, peak, steps_per_epoch, 1e-4, 5e-5, 3 * steps_per_epoch)
                for step in range(4 * steps_per_epoch)]
    assert record.lrs == pytest.approx(expected, rel=1e-9)
    assert record.lrs[0] == pytest.approx(1e-4) and max(record.lrs) < peak  # the warmup meets a decaying cosine
    assert record.lrs[-steps_per_epoch:] == [pytest.approx(5e-5)] * steps_per_epoch  # the cooldown epoch


def test_weight_decay_skips_biases_norms_and_layer_scales():
    model = tiny_module().backbone
    groups = parameter_groups(model, 0.05)
    decay = next(g for g in groups if g["weight_decay"] == 0.05)
    no_decay = next(g for g in groups if g["weight_decay"] == 0)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "stages.0.blocks.0.gamma" in no_decay_names and "stem.1.weight" in no_decay_names
    assert "head.norm.weight" in no_decay_names and "stages.1.downsample.1.bias" in no_decay_names
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_global_batch_sets_accumulation_and_lr(tiny_dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(EXPERIMENTS / "tiny.yaml"),
          *small_run(tiny_dataset, "--global_batch_size", "8", "--trainer.max_steps", "1",
                     "--trainer.limit_val_batches", "0")])
    assert "global batch 8 = 4 per device x 1 device(s) x 2 accumulation step(s); peak lr 7.813e-06" in caplog.text


def test_a_global_batch_that_does_not_divide_is_one_error(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(EXPERIMENTS / "tiny.yaml"), *small_run(tiny_dataset, "--global_batch_size", "10")])
    assert stopped.value.code == 1
    assert "global_batch_size 10: not a multiple of data.batch_size 4" in capsys.readouterr().err


def test_resume_continues_from_the_saved_step_and_lr(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(EXPERIMENTS / "demo.yaml"), *small_run(tiny_dataset, "--trainer.limit_val_batches", "1",
                                                                   "--trainer.log_every_n_steps", "1")]
    main(["fit", *args, "--trainer.max_epochs", "1"])
    checkpoints = tmp_path / "logs" / "demo" / "version_0" / "checkpoints"
    first = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert first["global_step"] == 6 and first["epoch"] == 0
    main(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    resumed = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 12 and resumed["epoch"] >= 1
    # The lr of the last step follows the 2-epoch schedule (its length is recomputed from max_epochs); the optimizer
    # saved after it holds the next step's.
    peak = 3.2e-2 * 4 / 1024  # demo.yaml lr_per_1024 x batch 4
    steps, lrs = scalars(checkpoints.parent, "train/lr")
    assert steps == list(range(12))
    assert lrs[11] == pytest.approx(per_step_lr(11, peak, 6, 1e-6, 1e-5, 12))
    lr = resumed["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(per_step_lr(12, peak, 6, 1e-6, 1e-5, 12))
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("best"))  # best kept beside last


def test_predict_writes_top5_csv(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(EXPERIMENTS / "demo.yaml"), *small_run(tiny_dataset)]
    main(["fit", *args, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1"])
    main(["predict", *args, "--ckpt_path", str(tmp_path / "logs/demo/version_0/checkpoints/last.ckpt"),
          "--data.predict_root", str(tiny_dataset / "val" / "circle"), "--predict_csv", str(tmp_path / "out.csv")])
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert len(rows) == 4
    assert set(rows[0]) == {"file", "class1", "prob1", "class2", "prob2", "class3", "prob3"}  # 3 classes: top-3
    assert rows[0]["class1"] in {"circle", "square", "triangle"}
    assert math.isclose(sum(float(rows[0][f"prob{i}"]) for i in (1, 2, 3)), 1.0, abs_tol=1e-3)


def test_without_imagenet_tiny_stops_at_once_with_one_clear_line(tmp_path):
    result = cli(["fit", "--config", str(EXPERIMENTS / "tiny.yaml"), "--data.root", str(tmp_path / "imagenet")],
                 cwd=tmp_path, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.root") and str(tmp_path / "imagenet") in last
    assert "--data.root /path/to/imagenet" in last and "experiments/demo.yaml" in last
    assert "Traceback" not in result.stderr


def test_a_diverging_run_stops_with_a_clear_message(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(EXPERIMENTS / "demo.yaml"),
              *small_run(tiny_dataset, "--model.lr_per_1024", "1e30", "--model.warmup_epochs", "0",
                         "--trainer.max_epochs", "3", "--trainer.limit_val_batches", "0")])
    assert stopped.value.code == 1
    assert "training diverged: loss nan at epoch" in capsys.readouterr().err


def test_mixup_with_an_odd_batch_is_one_clear_error(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(EXPERIMENTS / "demo.yaml"),
              *small_run(tiny_dataset, "--data.batch_size", "3", "--model.mixup", "0.2")])
    assert stopped.value.code == 1
    assert capsys.readouterr().err.strip() == ("error: data.batch_size 3: Mixup/CutMix (model.mixup 0.2, model.cutmix "
                                               "0.0) pair images within a batch, so expected an even batch size")


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.ckpt", "no such file; expected a checkpoint (.ckpt) or `last` / `best`"),
    (lambda tmp: (tmp / "notes.ckpt").write_text("not a checkpoint") and tmp / "notes.ckpt",
     "damaged or not a checkpoint (not the zip archive torch.save writes); expected a whole checkpoint written by "
     "this project"),
])
def test_a_bad_checkpoint_path_is_one_clear_error(make, message, tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = make(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["validate", "--config", str(EXPERIMENTS / "demo.yaml"), *small_run(tiny_dataset),
              "--ckpt_path", str(path)])
    assert stopped.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: --ckpt_path {path}: {message}"
