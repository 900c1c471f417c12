"""Comparing experiments: a sweep over seeds (locally and as SLURM jobs), the report, and loggers besides
TensorBoard. The experiment compared with the demo is a researcher's own: a token mixer from their own folder (the
working folder of the sweep), in a variant their YAML declares."""

import csv
import os
import stat
import statistics

import pytest
import torch
import yaml
from research_folder import write_research_folder
from small_runs import HELPERS, small_run

from inception_next.commands import main
from inception_next.models.complexity import count_params
from inception_next.models.factory import create_model
from inception_next.tools import report, sweep
from inception_next.training.config import EXPERIMENTS
from inception_next.training.runs import scalars


def experiments(folder):
    """Two experiments on the demo recipe: as it is, and with a mixer of `folder`'s own (research_folder.py)."""
    a = folder / "base.yaml"
    a.write_text(f"extends: {EXPERIMENTS / 'demo.yaml'}\n")
    return [a, write_research_folder(folder)]


def tiny_flags(dataset, logs):
    return small_run(dataset, "--trainer.max_epochs", "1", "--save_every_n_steps", "2", "--trainer.default_root_dir",
                     str(logs))


@pytest.mark.slow
def test_a_sweep_runs_every_seed_resumes_interrupted_runs_skips_finished_ones_and_reports(tiny_dataset, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(tmp_path)  # the researcher's folder: each fit finds my_mixers.py in its working folder
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m` does, for report here
    configs, logs = experiments(tmp_path), tmp_path / "logs"
    flags = [*map(str, configs), "--seeds", "0", "1", *tiny_flags(tiny_dataset, logs)]
    with pytest.raises(SystemExit, match="1 run\\(s\\) failed: base/seed0"):  # killed at step 3 (saved: step 2)
        sweep.main([*flags, "--trainer.callbacks+=interruptions.KillAt", "--trainer.callbacks.moment=step:3",
                    f"--trainer.callbacks.once={tmp_path / 'killed'}"])  # the others run to their end
    assert [name for name, _, _ in sweep.main(flags)] == ["base/seed0"]  # resumed; the finished ones skipped
    for name, _, seed in sweep.sweep_runs(configs, [0, 1]):
        runs = list((logs / name).iterdir())
        assert [run.name for run in runs] == ["version_0"]  # resumed in place, not started again
        checkpoint = torch.load(runs[0] / "checkpoints/last.ckpt", weights_only=False)
        assert checkpoint["global_step"] == 6 and (runs[0] / "finished.json").is_file()
        assert yaml.safe_load((runs[0] / "config.yaml").read_text())["seed_everything"] == seed
    assert sweep.main(flags) == []  # all finished: nothing to run

    rows = {row["experiment"]: row for row in report.build(logs)}
    assert set(rows) == {"base", "dilated"} and rows["base"]["seeds"] == 2
    declared = yaml.safe_load(configs[1].read_text())["model"]["backbone"]
    assert rows["dilated"]["params_m"] == pytest.approx(count_params(create_model(declared, num_classes=3)) / 1e6)
    best = [max(scalars(logs / f"base/seed{s}/version_0", "val/top1")[1]) for s in (0, 1)]
    assert rows["base"]["val/top1/best/mean"] == pytest.approx(statistics.mean(best))
    assert rows["base"]["val/top1/best/std"] == pytest.approx(statistics.stdev(best))
    printed = report.main([str(logs), "--baseline", "base", "--out", str(tmp_path / "report")])
    assert next(r for r in printed if r["experiment"] == "base")["diff/mean"] == 0.0
    assert (tmp_path / "report/report.png").stat().st_size > 1000
    assert "| dilated | 2 |" in (tmp_path / "report/report.md").read_text()


def test_the_slurm_path_builds_one_job_per_run_with_its_command_and_resources(tmp_path, monkeypatch):
    """Through submitit, with fake srun and sbatch on PATH: sbatch records the job script instead of submitting."""
    pytest.importorskip("submitit", reason="the slurm extra is not installed")
    bin_dir, scripts = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {scripts}/\necho "Submitted batch job 42"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    configs = experiments(tmp_path)
    jobs = sweep.main([str(configs[0]), "--seeds", "0", "1", "--slurm", "--gpus", "8", "--nodes", "2",
                       "--cpus_per_task", "6", "--timeout_min", "600", "--partition", "gpu",
                       "--trainer.default_root_dir", str(tmp_path / "logs"), "--data.root", "/datasets/imagenet"])
    assert [name for name, _, _ in jobs] == ["base/seed0", "base/seed1"]
    command = jobs[0][2]
    assert command[1:4] == ["-m", "inception_next", "fit"]
    assert command[command.index("--seed_everything") + 1] == "0" and "--ckpt_path" in command
    assert command[-4:] == ["--trainer.devices", "8", "--trainer.num_nodes", "2"]
    assert "/datasets/imagenet" in command
    submitted = [path.read_text() for path in scripts.iterdir()]
    assert len(submitted) == 2
    for script in submitted:
        for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                     "#SBATCH --cpus-per-task=6", "#SBATCH --time=600", "#SBATCH --partition=gpu"):
            assert line in script, line
    assert {line for script in submitted for line in script.splitlines() if "--job-name" in line} == {
        "#SBATCH --job-name=base-seed0", "#SBATCH --job-name=base-seed1"}


def test_the_csv_logger_receives_the_config_and_the_metrics(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(EXPERIMENTS / "demo.yaml"), *tiny_flags(tiny_dataset, tmp_path / "logs"),
          "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path / "csv"),
          "--trainer.logger.name", "demo", "--trainer.log_every_n_steps", "2"])
    run = tmp_path / "csv/demo/version_0"
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["model.backbone"] == "inception_next_atto" and hparams["data.img_size"] == 32  # the config
    assert hparams["trainer.max_epochs"] == 1 and hparams["experiment"] == "demo"
    columns = next(csv.reader(open(run / "metrics.csv")))
    assert {"val/top1", "train/loss", "layer_scale/stage0", "hp/best_val/top1"} <= set(columns)
