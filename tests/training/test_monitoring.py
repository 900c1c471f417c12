"""What `tensorboard --logdir logs` shows for a run: read back from the event files of a short one."""

import os

import pytest
import yaml
from small_runs import demo_run, small_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from inception_next.commands import main
from inception_next.training.config import EXPERIMENTS


@pytest.fixture(scope="module")
def events(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        main(["fit", *demo_run(tiny_dataset, "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "2",
                               "--model.ema_decay", "0.9", "--model.mixup", "0.8", "--model.cutmix", "1.0")])
    finally:
        os.chdir(cwd)
    accumulator = EventAccumulator(str(run_dir / "logs" / "demo" / "version_0"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


def test_scalars_cover_training_validation_ema_and_speed(events):
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/loss", "val/top1", "val/top5", "val_ema/loss", "val_ema/top1",
            "val_ema/top5", "train/device/samples_per_sec", "train/device/flops_per_sec"} <= tags
    assert len(events.Scalars("val/top1")) == 2  # one per epoch


def test_first_training_batch_is_shown_as_augmented(events):
    assert events.Tags()["images"] == ["train/augmented_batch"]
    image = events.Images("train/augmented_batch")[0]
    assert image.width > 32 and image.height > 32  # a grid of 4 images with padding


def test_layer_scale_magnitudes_per_stage_and_block(events):
    tags = set(events.Tags()["scalars"])
    assert {f"layer_scale/stage{i}" for i in range(4)} <= tags
    assert {"layer_scale/stage2.block0", "layer_scale/stage2.block5"} <= tags  # atto: 2, 2, 6, 2 blocks
    first, last = events.Scalars("layer_scale/stage0")[0].value, events.Scalars("layer_scale/stage0")[-1].value
    assert first != last  # they move during training


def test_hparams_tab_holds_settings_and_final_metrics(events):
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.backbone"].string_value == "inception_next_atto"
    assert hparams["model.lr_per_1024"].number_value == pytest.approx(3.2e-2)
    assert "data.img_size" in hparams
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"hp/val/top1", "hp/val/top5", "hp/val/loss",
                                                             "hp/best_val/top1"}
    final = events.Scalars("hp/val/top1")[-1].value
    assert final == pytest.approx(events.Scalars("val/top1")[-1].value)
    assert events.Scalars("hp/best_val/top1")[-1].value == max(e.value for e in events.Scalars("val/top1"))


def test_the_default_callbacks_are_defaults_a_yaml_replaces(tiny_dataset, tmp_path, capsys):
    """The callbacks that show a run (layer scales, the first batch, throughput, the HPARAMS tab...) are
    `trainer.callbacks` defaults, listed by --print_config; a YAML's own list replaces them, while the run's
    mechanics (its folder, last.ckpt) stay."""
    flags = ["--data.root", str(tiny_dataset), "--trainer.default_root_dir", str(tmp_path / "logs")]
    with pytest.raises(SystemExit):
        main(["fit", *flags, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert [c["class_path"].rsplit(".", 1)[-1] for c in printed["trainer"]["callbacks"]] == [
        "UnreadableFilesReport", "FirstBatchImages", "LayerScaleMagnitudes", "HParamsWithMetrics",
        "TrainingThroughput"]  # BatchNorm averaging under DDP is the module's: no list drops it
    own = tmp_path / "own.yaml"
    own.write_text(f"extends: {EXPERIMENTS / 'demo.yaml'}\ntrainer:\n  callbacks:\n"
                   "  - class_path: lightning.pytorch.callbacks.LearningRateMonitor\n")
    main(["fit", "--config", str(own), *small_run(tiny_dataset, "--trainer.default_root_dir", str(tmp_path / "logs"),
                                                  "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1")])
    run = tmp_path / "logs" / "own" / "version_0"
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert any(tag.startswith("lr-AdamW") for tag in tags) and "train/loss" in tags
    assert not any(tag.startswith(("layer_scale/", "train/device/", "hp/")) for tag in tags), tags
    assert accumulator.Tags()["images"] == []
    assert (run / "checkpoints" / "last.ckpt").is_file()
