"""A researcher's own token mixer and variant (research_folder.py), outside the package, through the commands that
start from a run's checkpoint: validate, predict, export, benchmark; TensorBoard's layer-scale view; and a
checkpoint whose mixer's module is gone. (tests/tools/test_sweep.py runs a 2-seed sweep of it, killed and resumed,
and its report.)"""

import os

import pytest
import torch
from research_folder import write_research_folder
from small_runs import HELPERS, cli, small_run

from inception_next.commands import main
from inception_next.tools import benchmark
from inception_next.tools.export import main as export
from inception_next.training.runs import scalars


@pytest.fixture
def research_folder(tmp_path, monkeypatch):
    """The working folder of every command, holding my_mixers.py and dilated.yaml."""
    folder = tmp_path / "research"
    write_research_folder(folder)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))  # what `python -m` does, for the commands run in this process
    return folder


@pytest.mark.slow
def test_an_own_mixer_runs_through_every_command_from_its_checkpoint(tiny_dataset, research_folder, tmp_path,
                                                                    capsys):
    flags = small_run(tiny_dataset, "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1")
    main(["fit", "--config", "dilated.yaml", *flags])
    run = research_folder / "logs/dilated/version_0"
    last = run / "checkpoints/last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["backbone"]["token_mixer"] == "my_mixers.DilatedBand"
    assert "backbone.stages.0.blocks.0.token_mixer.conv.weight" in checkpoint["state_dict"]
    assert len(scalars(run, "layer_scale/stage2.block5")[1]) == 6

    capsys.readouterr()
    main(["validate", *small_run(tiny_dataset, "--ckpt_path", str(last))])
    assert "val/top1" in capsys.readouterr().out
    main(["predict", *small_run(tiny_dataset, "--ckpt_path", str(last), "--data.predict_root",
                                str(tiny_dataset / "val"), "--predict_csv", str(tmp_path / "predictions.csv"))])
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 1 + 12
    assert export(["--ckpt_path", str(last), "--output", str(tmp_path / "dilated.onnx")]) < 1e-4
    measured = benchmark.main(["--config", "dilated.yaml", "--img_size", "32", "--batch_size", "4", "--warmup", "1",
                               "--iters", "1", "--no_chart", "--out", str(tmp_path / "benchmark")])
    assert [row["model"] for row in measured] == ["inception_next_atto", "dilated"]
    assert measured[0]["params_m"] != measured[1]["params_m"] and measured[1]["train_img_s"] > 0

    elsewhere = cli(["validate", *small_run(tiny_dataset, "--ckpt_path", str(last))], cwd=tmp_path, check=False,
                    env={**os.environ, "PYTHONPATH": str(HELPERS)})
    assert elsewhere.returncode == 1 and "Traceback" not in elsewhere.stderr
    assert elsewhere.stderr.strip().splitlines()[-1] == (
        "error: token_mixer my_mixers.DilatedBand: no module named 'my_mixers'; expected a module importable from "
        "the working folder or PYTHONPATH")
