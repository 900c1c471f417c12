"""A researcher's own token mixer and variant, in a folder outside the package, through every command: a 2-seed
sweep whose runs are killed and resumed, report, TensorBoard's layer-scale view, validate, predict, export and
benchmark from the checkpoint; and a checkpoint whose mixer's module is gone."""

import os
import textwrap

import pytest
import torch
from small_runs import TESTS, cli, small_run

from inception_next.models.complexity import count_params
from inception_next.models.factory import create_model
from inception_next.models.inception_next import VARIANTS
from inception_next.tools import benchmark, report, sweep
from inception_next.training.config import EXPERIMENTS
from inception_next.training.runs import scalars

MIXER = '''
from torch import nn


class DilatedBand(nn.Module):
    """A dilated k x k depthwise convolution over every channel."""

    def __init__(self, dim, kernel_size=5, dilation=2):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                              groups=dim)

    def forward(self, x):
        return self.conv(x)
'''

EXPERIMENT = f'''
extends: {EXPERIMENTS / "demo.yaml"}
model:
  backbone:
    name: atto_dilated
    base: inception_next_atto
    token_mixer: my_mixers.DilatedBand
    mixer_args: {{dilation: 3}}
'''


@pytest.fixture
def research_folder(tmp_path, monkeypatch):
    """The researcher's folder, the working folder of every command: my_mixers.py and dilated.yaml."""
    folder = tmp_path / "research"
    folder.mkdir()
    (folder / "my_mixers.py").write_text(textwrap.dedent(MIXER))
    (folder / "dilated.yaml").write_text(textwrap.dedent(EXPERIMENT))
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))  # what `python -m` does for the commands run in this process
    registered = set(VARIANTS)
    yield folder
    for name in set(VARIANTS) - registered:
        del VARIANTS[name]


@pytest.mark.slow
def test_an_own_mixer_and_variant_go_through_every_command(tiny_dataset, research_folder, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the tests' interruptions, not the research folder
    logs = tmp_path / "logs"
    run_flags = small_run(tiny_dataset, "--trainer.max_epochs", "1", "--save_every_n_steps", "2",
                          "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(logs))
    flags = ["dilated.yaml", "--seeds", "0", "1", *run_flags]
    with pytest.raises(SystemExit, match="2 run\\(s\\) failed"):  # each killed at step 3 (last.ckpt from step 2)
        sweep.main([*flags, "--trainer.callbacks+=interruptions.KillAt", "--trainer.callbacks.moment=step:3"])
    assert [name for name, _, _ in sweep.main(flags)] == ["dilated/seed0", "dilated/seed1"]
    run = logs / "dilated/seed0/version_0"
    last = run / "checkpoints/last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 6 and len(list((logs / "dilated/seed0").iterdir())) == 1  # resumed in place
    assert checkpoint["hyper_parameters"]["backbone"]["token_mixer"] == "my_mixers.DilatedBand"
    assert "backbone.stages.0.blocks.0.token_mixer.conv.weight" in checkpoint["state_dict"]
    assert len(scalars(run, "layer_scale/stage2.block5")[1]) > 0

    rows = report.main([str(logs), "--out", str(tmp_path / "report")])
    assert [(row["experiment"], row["seeds"]) for row in rows] == [("dilated", 2)]
    assert rows[0]["params_m"] == pytest.approx(count_params(create_model("atto_dilated", num_classes=3)) / 1e6)

    capsys.readouterr()
    measured = benchmark.main(["--config", "dilated.yaml", "--img-size", "32", "--batch-size", "4", "--warmup", "1",
                               "--iters", "1", "--no-chart", "--out", str(tmp_path / "benchmark")])
    assert [row["model"] for row in measured] == ["inception_next_atto", "dilated"]
    assert measured[0]["params_m"] != measured[1]["params_m"] and measured[1]["train_img_s"] > 0

    evaluation = small_run(tiny_dataset, "--ckpt_path", str(last), "--trainer.default_root_dir", str(logs))
    validated = cli(["validate", *evaluation], cwd=research_folder)
    assert "val/top1" in validated.stdout
    predicted = cli(["predict", *evaluation, "--data.predict_root", str(tiny_dataset / "val"), "--predict_csv",
                     str(tmp_path / "predictions.csv")], cwd=research_folder)
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 1 + 12, predicted.stdout
    exported = cli(["export", "--ckpt_path", str(last), "--output", str(tmp_path / "dilated.onnx")],
                   cwd=research_folder)
    assert "largest difference" in exported.stdout and (tmp_path / "dilated.onnx").stat().st_size > 10_000

    elsewhere = cli(["validate", *evaluation], cwd=tmp_path, check=False,
                    env={**os.environ, "PYTHONPATH": str(TESTS)})
    assert elsewhere.returncode == 1 and "Traceback" not in elsewhere.stderr
    assert elsewhere.stderr.strip().splitlines()[-1] == (
        "error: token_mixer my_mixers.DilatedBand: no module named 'my_mixers'; expected a module importable from "
        "the working folder or PYTHONPATH")
