"""The commands a newcomer types after the first fit: another fit, evaluation, prediction, --print_config."""

import re

import pytest
import torch
import yaml
from small_runs import SMALL, demo_run, small_run

from inception_next import create_model
from inception_next.commands import main
from inception_next.tools.export import main as export
from inception_next.training.config import EXPERIMENTS
from inception_next.training.runs import finished_runs, scalars


def one_epoch(dataset, *extra):
    return demo_run(dataset, "--trainer.max_epochs", "1", "--save_every_n_steps", "null", *extra)


@pytest.fixture
def two_fits(tiny_dataset, tmp_path, monkeypatch):
    """Two fits of the demo experiment, the second shorter (2 steps): logs/demo/version_0 and version_1."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *one_epoch(tiny_dataset)])
    first = sorted((tmp_path / "logs/demo/version_0/checkpoints").iterdir())
    main(["fit", *one_epoch(tiny_dataset, "--trainer.limit_train_batches", "2")])
    return tmp_path / "logs/demo", {path: path.read_bytes() for path in first}


def test_a_second_fit_leaves_the_first_runs_checkpoints_intact(two_fits):
    experiment, first = two_fits
    assert sorted(p.name for p in experiment.iterdir()) == ["version_0", "version_1"]
    assert all(path.read_bytes() == content for path, content in first.items())
    second = torch.load(experiment / "version_1/checkpoints/last.ckpt", weights_only=False)
    assert second["global_step"] == 2


def test_ckpt_path_last_and_best_pick_the_newest_run_and_name_it(two_fits, tiny_dataset, caplog, capsys):
    experiment, _ = two_fits
    main(["validate", *demo_run(tiny_dataset, "--ckpt_path", "best")])
    best = next((experiment / "version_1/checkpoints").glob("best-*.ckpt"))
    assert f"--ckpt_path best: {best}" in caplog.text
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"val/loss \d\.\d{4}  val/top1 \d\.\d{4}  val/top5 \d\.\d{4}", printed), printed
    main(["validate", *demo_run(tiny_dataset, "--ckpt_path", "last")])
    assert f"--ckpt_path last: {experiment / 'version_1/checkpoints/last.ckpt'}" in caplog.text


def test_evaluation_commands_make_no_run_folder(two_fits, tiny_dataset, tmp_path, capsys):
    experiment, _ = two_fits
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    main(["validate", *demo_run(tiny_dataset, "--ckpt_path", "best")])
    main(["test", *demo_run(tiny_dataset, "--ckpt_path", "best")])
    main(["predict", *demo_run(tiny_dataset, "--ckpt_path", "best", "--data.predict_root", str(tiny_dataset / "val"),
                           "--predict_csv", str(tmp_path / "out/predictions.csv"))])
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"predictions: {tmp_path / 'out/predictions.csv'}"
    with pytest.raises(SystemExit):
        main(["validate", *demo_run(tiny_dataset, "--ckpt_path", "nowhere.ckpt")])
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "out"))
    assert after == before
    # what notebooks/runs.ipynb reads: the newest run of each experiment, with its curves
    run = finished_runs(tmp_path / "logs")["demo"]
    assert run == experiment / "version_1" and len(scalars(run, "val/top1")[0]) == 1


def test_evaluating_without_a_checkpoint_says_the_weights_are_untrained(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="validate without --ckpt_path or --model.pretrained: these are untrained"):
        main(["validate", *demo_run(tiny_dataset)])


def test_ckpt_path_best_without_a_run_is_one_line(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["validate", *demo_run(tiny_dataset, "--ckpt_path", "best")])
    assert stopped.value.code == 1
    assert capsys.readouterr().err.strip() == (f"error: --ckpt_path best: no checkpoint under {tmp_path}/logs/demo; "
                                               "expected a finished `fit` of experiment 'demo' there")


@pytest.mark.parametrize("flags", [[], ["--config", str(EXPERIMENTS / "ablations/table8/band_kernel_7.yaml"),
                                        "--data.root", "{data}", "--global_batch_size", "null"]],
                         ids=["the demo default", "an ablation"])
def test_print_config_shows_what_the_same_command_runs(flags, tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = [flag.replace("{data}", str(tiny_dataset)) for flag in flags]
    small = [*SMALL, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches",
             "1", "--model.backbone", "inception_next_atto", "--trainer.precision", "32-true"]
    if not flags:
        small += ["--data.root", str(tiny_dataset)]
    with pytest.raises(SystemExit):
        main(["fit", *flags, *small, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    main(["fit", *flags, *small])
    saved = yaml.safe_load(next((tmp_path / "logs").rglob("config.yaml")).read_text())
    assert printed == saved
    assert printed["experiment"] == ("demo" if not flags else "band_kernel_7")


def test_a_fine_tuned_runs_checkpoints_stand_without_the_weights_file(tiny_dataset, tmp_path, monkeypatch, capsys):
    """The weights file is read when the fit starts from it, never again: with it deleted, the run's checkpoints
    validate, predict, export and resume."""
    monkeypatch.chdir(tmp_path)
    released = tmp_path / "released.pth"
    start = create_model("inception_next_atto", num_classes=3)
    torch.nn.init.normal_(start.stem[0].weight)
    torch.save(dict(model=start.state_dict()), released)
    main(["fit", *one_epoch(tiny_dataset, "--model.pretrained", str(released), "--trainer.limit_train_batches", "1",
                            "--model.ema_decay", "0.9")])
    last = tmp_path / "logs/demo/version_0/checkpoints/last.ckpt"
    trained = torch.load(last, weights_only=False)["state_dict"]
    # one step of training moved the released weights a little: the fit started from them, the EMA copy too
    for prefix in ("backbone.", "ema.module."):
        assert torch.allclose(trained[f"{prefix}stem.0.weight"], start.stem[0].weight, atol=0.01), prefix
    released.unlink()
    main(["validate", *demo_run(tiny_dataset, "--ckpt_path", "last")])
    main(["predict", *demo_run(tiny_dataset, "--ckpt_path", "last", "--data.predict_root", str(tiny_dataset / "val"),
                           "--predict_csv", str(tmp_path / "predictions.csv"))])
    assert export(["--ckpt_path", str(last), "--output", str(tmp_path / "model.onnx")]) < 1e-4
    main(["fit", *demo_run(tiny_dataset, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1",
                       "--ckpt_path", "last")])
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert "no such file" not in capsys.readouterr().err


def test_evaluation_takes_any_batch_size_whatever_the_recipes_global_batch(tiny_dataset, tmp_path, monkeypatch,
                                                                            capsys):
    monkeypatch.chdir(tmp_path)
    small = small_run(tiny_dataset, "--trainer.precision", "32-true", "--model.backbone", "inception_next_atto")
    for command in ("validate", "test"):
        main([command, "--config", str(EXPERIMENTS / "tiny.yaml"), *small, "--data.batch_size", "5"])
        assert "val/top1" in capsys.readouterr().out or command == "test"
    with pytest.raises(SystemExit):  # a fit still needs its global batch to be whole batches
        main(["fit", "--config", str(EXPERIMENTS / "tiny.yaml"), *small, "--data.batch_size", "5"])
    assert "global_batch_size 4096: not a multiple of data.batch_size 5" in capsys.readouterr().err
