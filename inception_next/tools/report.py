"""`python -m inception_next report [LOG_DIR] [--paper table8|table1|table4] [--baseline NAME]`: finished runs as one
row per experiment, over its seeds.

Each row: the seeds, best and final val top-1 (and the EMA's, where the run kept one) as mean ± std over the seeds,
the difference of the best top-1 to the baseline experiment with its spread (the standard error of a difference of
means, sqrt(std_a^2 / n_a + std_b^2 / n_b)), params and MACs at the run's image size, the measured training images/s,
and the paper's figure. A run counts once its fit returned (`finished.json` in its folder); runs of one experiment
are the seeds of a `sweep` (`<experiment>/seed<N>`), or the newest run of an experiment run by hand. Writes
report.md, report.csv and report.png (mean with error bars per experiment, the paper's figure marked) to --out.
"""

import argparse
import csv
import json
import math
from pathlib import Path

import torch

from ..models.complexity import complexity
from ..models.factory import backbone_name, get_variant, list_models
from ..progress import Progress
from ..training import runs
from .compared_figures import TABLE8_TOP1


def run_summary(run):
    """What one run contributes: top-1 curves' best and final values, speed, params and MACs."""
    config = runs.run_config(run)
    row = dict(seed=config.get("seed_everything"))
    for tag in ("val/top1", "val_ema/top1"):
        _, values = runs.scalars(run, tag)
        if values:
            row[f"{tag}/best"], row[f"{tag}/final"] = max(values), values[-1]
    _, speed = runs.scalars(run, "train/device/samples_per_sec")
    row["train_img_s"] = sum(speed) / len(speed) if speed else None
    model = config["model"]
    checkpoints = runs.checkpoints_of(run, "last")
    classes = torch.load(checkpoints[0], map_location="cpu", weights_only=True, mmap=True)["hyper_parameters"][
        "num_classes"] if checkpoints else 1000
    params, macs = complexity(model["backbone"], config["data"]["img_size"], num_classes=classes,
                              **(model.get("backbone_args") or {}))
    row["params_m"], row["macs_g"] = params / 1e6, macs / 1e9
    row["img_size"], row["backbone"] = config["data"]["img_size"], backbone_name(model["backbone"])
    return row


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def paper_top1(experiment, backbone, table):
    if table == "table8":
        return TABLE8_TOP1.get(experiment.split("/")[-1])
    if table in ("table1", "table4") and backbone in list_models():
        paper = get_variant(backbone).paper
        return paper.top1 if paper else None
    return None


def build(logs, table=None):
    """One dict per experiment (sorted by name), the statistics over its runs."""
    groups, finished = {}, runs.finished_runs(logs)
    progress = Progress("report: reading the finished runs", len(finished), " runs")
    for name, run in finished.items():  # a sweep's seeds, <experiment>/seed<N>, are one experiment
        groups.setdefault(runs.experiment_of(name), []).append(run_summary(run))
        progress.update()
    rows = []
    for experiment, summaries in sorted(groups.items()):
        row = dict(experiment=experiment, seeds=len(summaries), img_size=summaries[0]["img_size"],
                   params_m=summaries[0]["params_m"], macs_g=summaries[0]["macs_g"])
        for key in ("val/top1/best", "val/top1/final", "val_ema/top1/best", "val_ema/top1/final", "train_img_s"):
            row[f"{key}/mean"], row[f"{key}/std"] = mean_std([s.get(key) for s in summaries])
        row["paper_top1"] = paper_top1(experiment, summaries[0]["backbone"], table)
        rows.append(row)
    return rows


def add_differences(rows, baseline):
    """Each experiment's best top-1 minus the baseline's, with the spread of that difference."""
    reference = next((r for r in rows if r["experiment"] == baseline), None)
    for row in rows:
        row["diff/mean"] = row["diff/std"] = None
        if reference is not None and row["val/top1/best/mean"] is not None:
            row["diff/mean"] = row["val/top1/best/mean"] - reference["val/top1/best/mean"]
            row["diff/std"] = math.sqrt(row["val/top1/best/std"] ** 2 / row["seeds"]
                                        + reference["val/top1/best/std"] ** 2 / reference["seeds"])


def _pm(mean, std, scale=100.0, digits=1):
    return "" if mean is None else f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def markdown(rows, baseline):
    columns = ["experiment", "seeds", "best top-1 %", "final top-1 %", "EMA best %", f"Δ best vs {baseline}",
               "params M", "MACs G (px)", "train img/s", "paper top-1"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r["experiment"], str(r["seeds"]), _pm(r["val/top1/best/mean"], r["val/top1/best/std"]),
                 _pm(r["val/top1/final/mean"], r["val/top1/final/std"]),
                 _pm(r["val_ema/top1/best/mean"], r["val_ema/top1/best/std"]),
                 "" if r["diff/mean"] is None else f"{r['diff/mean'] * 100:+.1f} ± {r['diff/std'] * 100:.1f}",
                 f"{r['params_m']:.2f}", f"{r['macs_g']:.2f} ({r['img_size']})",
                 "" if r["train_img_s/mean"] is None else f"{r['train_img_s/mean']:.0f}",
                 "" if r["paper_top1"] is None else f"{r['paper_top1']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["val/top1/best/mean"] is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(shown) + 2), 4.2))
    x = range(len(shown))
    ax.errorbar(x, [r["val/top1/best/mean"] * 100 for r in shown], [r["val/top1/best/std"] * 100 for r in shown],
                fmt="o", capsize=4, label="ours: best val top-1, mean ± std over seeds")
    ax.set_ylabel("val top-1 (%)")
    ax.set_xticks(list(x), [r["experiment"] for r in shown], rotation=40, ha="right")
    papers = [(i, r["paper_top1"]) for i, r in zip(x, shown) if r["paper_top1"] is not None]
    if papers:
        twin = ax.twinx()
        twin.plot([i for i, _ in papers], [p for _, p in papers], "rx", label="paper (ImageNet top-1, right axis)")
        twin.set_ylabel("paper's ImageNet top-1 (%)", color="tab:red")
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m inception_next report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="?", type=Path, default=Path("logs"))
    parser.add_argument("--paper", choices=("table8", "table1", "table4"), default=None,
                        help="the paper's figures to show beside ours")
    parser.add_argument("--baseline", default=None, help="the experiment the others are compared with "
                                                         "(default: tiny for table8, else the first)")
    parser.add_argument("--title", default="", help="the plot's title (say what the runs trained on)")
    parser.add_argument("--out", type=Path, default=Path("report"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if not args.logs.is_dir():
        raise SystemExit(f"error: {args.logs}: no such folder; expected the logs folder of finished runs")
    rows = build(args.logs, args.paper)
    if not rows:
        raise SystemExit(f"error: {args.logs}: no finished run (a fit that returned leaves {runs.FINISHED})")
    baseline = args.baseline or ("tiny" if args.paper == "table8" else rows[0]["experiment"])
    add_differences(rows, baseline)
    rows.sort(key=lambda row: row["experiment"] != baseline)  # the baseline first, the others by name
    table = markdown(rows, baseline)
    print(table, end="")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(table)
    with open(args.out / "report.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "report.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "report.png", args.title)
    print(f"saved {args.out / 'report.md'}, .csv, .json, .png")
    return rows
