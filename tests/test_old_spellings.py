"""A renamed module, name, setting or flag keeps its old spelling working for a while, with a warning naming the new
one; checkpoints written before the layout changed still validate and resume."""

import importlib
import sys

import pytest
import torch
import yaml
from small_runs import cli, demo_run

from inception_next.commands import main
from inception_next.deprecation import RenamedWarning
from inception_next.tools import data_benchmark, sweep

FIRST_LAYOUT = [("inception_next.cli", "inception_next.training.cli", "main"),
                ("inception_next.model", "inception_next.models.inception_next", "VARIANTS"),
                ("inception_next.callbacks", "inception_next.training.callbacks", "LastCheckpoint"),
                ("inception_next.paper", "inception_next.tools.compared_figures", "TABLE8_TOP1")]
MOVED = [("inception_next.data", "ImageFolderDataModule", "inception_next.data.ImageNetDataModule"),
         ("inception_next.training.checkpoints", "choose_checkpoint", "inception_next.training.runs.choose_checkpoint"),
         ("inception_next.training.callbacks", "LOGGER_IDENTITIES", "inception_next.training.runs.LOGGER_IDENTITIES"),
         ("inception_next.training.callbacks", "LoggerError", "inception_next.training.loggers.LoggerError"),
         ("inception_next.training.module", "parameter_groups",
          "inception_next.training.optimization.parameter_groups"),
         ("inception_next.data.sampler", "seeded_randomness", "inception_next.data.seeding.seeded_randomness"),
         ("inception_next.training.preemption", "ignore_job_signals", "inception_next.jobs.ignore_job_signals")]


@pytest.mark.parametrize("old, new, name", FIRST_LAYOUT)
def test_the_first_layouts_modules_import_with_a_warning(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(RenamedWarning, match=f"^deprecated: module {old}; use {new} instead$"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("module, name, new", MOVED)
def test_names_that_moved_import_from_their_old_module_with_a_warning(module, name, new):
    with pytest.warns(RenamedWarning, match=f"^deprecated: {module}.{name}; use {new} instead$"):
        value = getattr(importlib.import_module(module), name)
    place, new_name = new.rsplit(".", 1)
    assert value is getattr(importlib.import_module(place), new_name)


def test_the_old_device_settings_become_device_from_in_one_warning_line(tmp_path):
    """As a user sees it: the command's one line on stderr, and the config it would run."""
    done = cli(["fit", "--data.augment_on", "device", "--data.decode_on", "device", "--print_config"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.splitlines() == ["warning: deprecated: data.augment_on device and data.decode_on device; use "
                                        "data.device_from decode instead"]
    data = yaml.safe_load(done.stdout)["data"]
    assert (data["device_from"], data["augment_on"], data["decode_on"]) == ("decode", None, None)


def test_the_old_settings_map_the_same_way_by_hand():
    from inception_next.data import ImageNetDataModule

    with pytest.warns(RenamedWarning, match="data.augment_on device; use data.device_from randaugment instead"):
        data = ImageNetDataModule(augment_on="device")
    assert data.hparams.device_from == "randaugment" and data.device_work.randaugment is not None


def test_the_commands_take_their_old_dashed_flags(tmp_path):
    with pytest.warns(RenamedWarning, match="^deprecated: --macs-only; use --macs_only instead$"):
        rows = main(["benchmark", "--macs-only", "--out", str(tmp_path)])
    assert len(rows) == 16 and (tmp_path / "benchmark.csv").is_file()
    with pytest.warns(RenamedWarning, match="--img-size; use --img_size instead"):
        assert data_benchmark.parse(["--img-size", "48", "--loader-workers", "2"]).img_size == 48
    config = tmp_path / "x.yaml"
    config.write_text("{}\n")
    with pytest.warns(RenamedWarning, match="--cpus-per-task; use --cpus_per_task instead"):
        args, _ = sweep.parse([str(config), "--cpus-per-task", "3", "--timeout_min", "9"])
    assert (args.cpus_per_task, args.timeout_min) == (3, 9)


def test_a_checkpoint_written_before_the_layout_changed_validates_and_resumes(tiny_dataset, tmp_path, monkeypatch,
                                                                               capsys):
    """Its data settings as the earlier layout saved them (augment_on, decode_on, no device_from, crop_pct left to
    the data module): evaluated with its own crop, resumed to the end."""
    monkeypatch.chdir(tmp_path)
    flags = demo_run(tiny_dataset, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2")
    main(["fit", *flags, "--trainer.max_epochs", "1"])
    last = tmp_path / "logs/demo/version_0/checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    data = checkpoint["datamodule_hyper_parameters"]
    del data["device_from"]
    data.update(crop_pct=None, augment_on="workers", decode_on="workers")
    torch.save(checkpoint, last)
    capsys.readouterr()
    main(["validate", *flags, "--ckpt_path", str(last)])
    assert "val/top1" in capsys.readouterr().out
    main(["fit", *flags, "--ckpt_path", "last"])
    assert torch.load(last, weights_only=False)["global_step"] == 4  # 2 epochs of 2 steps, in the same run
