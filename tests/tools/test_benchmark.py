import json

import pytest

from inception_next.models.factory import list_models
from inception_next.tools.benchmark import main


def test_benchmark_runs_in_small_mode_and_writes_its_files(tmp_path, capsys):
    rows = main(["--models", "inception_next_atto", "timm:inception_next_atto", "--device", "cpu", "--batch_size", "2",
                 "--img_size", "32", "--warmup", "1", "--iters", "1", "--fold", "--precision", "fp32",
                 "--out", str(tmp_path)])
    assert [r["model"] for r in rows] == ["inception_next_atto", "timm:inception_next_atto"]
    assert all(r["train_img_s"] > 0 and r["infer_img_s"] > 0 and r["folded_infer_img_s"] > 0 for r in rows)
    assert rows[0]["train_ratio"] == 1.0
    assert rows[0]["params_m"] == rows[1]["params_m"] == 4.16
    assert rows[0]["paper_a100_train"] is None  # the paper's figures are at 224 px, not beside a 32 px run
    assert rows[0]["device"].startswith("CPU") and rows[0]["precision"] == "fp32"
    printed = capsys.readouterr().out
    assert "train_img_s" in printed and "timm:inception_next_atto" in printed
    assert json.loads((tmp_path / "benchmark.json").read_text())[1]["model"] == "timm:inception_next_atto"
    assert (tmp_path / "benchmark.csv").read_text().startswith("model,")
    assert (tmp_path / "benchmark.png").stat().st_size > 1000


def test_paper_figures_sit_beside_a_run_at_their_size_and_cpu_runs_are_not_labelled_tf32(tmp_path):
    rows = main(["--models", "inception_next_atto", "--device", "cpu", "--batch_size", "1", "--warmup", "0",
                 "--iters", "1", "--out", str(tmp_path), "--no_chart"])
    assert rows[0]["img_size"] == 224 and rows[0]["paper_a100_train"] == 2661
    assert rows[0]["precision"] == "fp32"
    with pytest.raises(SystemExit, match="--precision tf32: TF32 is a CUDA setting"):
        main(["--models", "inception_next_atto", "--device", "cpu", "--precision", "tf32"])


def test_macs_only_reproduces_the_paper_table(tmp_path, capsys):
    rows = main(["--macs_only", "--out", str(tmp_path)])
    assert [r["model"] for r in rows] == list_models()
    tiny = next(r for r in rows if r["model"] == "inception_next_tiny")
    assert (tiny["params_m"], tiny["macs_g"]) == (28.06, 4.19)
    assert (tiny["paper_params_m"], tiny["paper_macs_g"]) == ("28.06", "4.19")


def test_unknown_model_is_one_clear_error():
    with pytest.raises(SystemExit, match="--models: unknown nonexistent_net"):
        main(["--models", "nonexistent_net", "--device", "cpu"])


def test_data_benchmark_times_ours_beside_bare_timm(tiny_dataset, capsys):
    from inception_next.tools.data_benchmark import main as benchmark_data

    rows = benchmark_data(["--root", str(tiny_dataset), "--img_size", "32", "--images", "4", "--rounds", "1",
                           "--batch_size", "2", "--loader_workers", "2"])
    assert [r["transform"] for r in rows] == ["train", "train, RA on device", "train, decoded on device", "eval"]
    assert [r["images"] for r in rows] == [6, 6, 6, 6]  # worker 1 of 2: batches 0, 2, 4 of 2 images; eval: every batch
    assert all(r["ours_img_s"] > 0 and r["bare_timm_img_s"] > 0 for r in rows)
    assert "bare_timm_img_s" in capsys.readouterr().out


def test_data_benchmark_compares_the_same_photographs_in_every_layout(capsys):
    from inception_next.tools.data_benchmark import main as benchmark_data

    rows = benchmark_data(["--layouts", "--img_size", "32", "--images", "4", "--rounds", "1", "--batch_size", "2",
                           "--loader_workers", "2"])
    layouts = ("folders", "parquet", "webdataset", "litdata")
    assert [(r["layout"], r["transform"]) for r in rows] == [
        (layout, transform) for transform in ("train", "train, RA on device", "train, decoded on device", "eval")
        for layout in layouts]
    assert all(r["ours_img_s"] > 0 for r in rows)


def test_data_benchmark_says_how_many_workers_an_a100_needs():
    from inception_next.tools.data_benchmark import workers_per_a100

    rows = [dict(layout="folders", transform="train", ours_img_s=300.0),
            dict(layout="folders", transform="train, RA on device", ours_img_s=450.0),
            dict(layout="folders", transform="train, decoded on device", ours_img_s=1000.0),
            dict(layout="parquet", transform="train", ours_img_s=10.0)]
    needs = {need["model"]: need for need in workers_per_a100(rows)}
    assert needs["inception_next_tiny"] == dict(model="inception_next_tiny", train_img_s=901, workers=4,
                                                workers_ra_on_device=3, workers_decoding_on_device=1)  # 901 img/s
    assert needs["inception_next_atto"]["workers"] == 9  # 2661 img/s


def test_data_benchmark_names_a_bad_root(tmp_path):
    from inception_next.tools.data_benchmark import main as benchmark_data

    with pytest.raises(SystemExit, match=f"error: --root {tmp_path / 'nowhere'}: no such folder"):
        benchmark_data(["--root", str(tmp_path / "nowhere")])


@pytest.mark.slow
def test_the_gpu_suite_runs_every_part_in_small_mode_on_the_cpu(tmp_path):
    """The suite a lent GPU runs (python -m inception_next benchmark --suite paper), tiny and on the CPU, so that it
    cannot rot between leases: every section is there, and what it checks holds."""
    import re

    report = main(["--suite", "paper", "--small", "--out", str(tmp_path)])
    text = report.read_text()
    for heading in ("## Speed", "## InceptionNeXt / ConvNeXt", "## Ours / timm's InceptionNeXt", "## The training path",
                    "## Numerics", "## The data supply"):
        assert heading in text, heading
    assert "| inception_next_atto | bf16 | channels-last | compiled |" in text
    assert "- torch: " in text and "- date: " in text
    for step in ("bf16-mixed", "compiled fp32"):
        cosine = float(re.search(rf"\| {step} \| [^|]+ \| ([0-9.]+) \|", text).group(1))
        assert cosine > 0.99, step
    first, last = map(float, re.search(r"loss ([0-9.]+) \(first tenth\) -> ([0-9.]+)", text).groups())
    assert last < first
    assert re.search(r"photograph-sized JPEGs \((\d+) KB", text) and int(re.search(r"\((\d+) KB", text).group(1)) > 60
    worker, device = re.search(r"on the device \(`data.device_from: randaugment`\) ([0-9.]+) img/s, and the device's "
                               r"share \(RandAugment, normalize, erase\) runs at ([0-9.]+) img/s", text).groups()
    assert float(worker) > 0 and float(device) > 0
    worker, device = re.search(r"decoding there too \(`data.device_from: decode`\) ([0-9.]+) img/s, and the device's "
                               r"share \(decode, crop, flip, then the same\) runs at ([0-9.]+) img/s", text).groups()
    assert float(worker) > 0 and float(device) > 0
