"""`python -m inception_next benchmark`: training and inference images/s, params, MACs and peak memory of our
models and timm's, side by side in one run, measured the paper's way: random inputs, batch 128 (halved until it
fits), warm-up iterations, then timed ones; a training step is forward + cross-entropy + backward + AdamW step.

    python -m inception_next benchmark --models inception_next_tiny timm:convnext_tiny timm:resnet50
    python -m inception_next benchmark --macs_only
    python -m inception_next benchmark --config my_experiment.yaml      # your own mixer beside the variant it changes
    python -m inception_next benchmark --models inception_next_atto --backbone_args "{token_mixer: my_mixers.Band}"

A name with `timm:` is timm's model; a bare name is ours if registered, else timm's. An experiment YAML (`--config`)
is measured at its data.img_size as its fit builds it (model.backbone and model.backbone_args, through its `extends`
chain), after the registered variant it starts from; `--backbone_args` adds, after each of our models, that model
with these arguments changed.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import timm
import torch
import yaml
from timm.utils import reparameterize_model

from ..deprecation import add_flag
from ..errors import UserError
from ..models.complexity import complexity, count_macs, count_params
from ..models.factory import create_model, get_variant, list_models
from ..training.cli import resolved_config
from .speed import build, is_ours, measure, native_size, paper_a100


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def changed(name, backbone_args):
    """How a row names a registered model with some arguments changed."""
    return f"{name} [{', '.join(f'{key}={value}' for key, value in backbone_args.items())}]"


def candidates(args):
    """(row name, build, image size, the paper's A100 figures) of each model to measure, in order: the experiments'
    (each after the registered variant it starts from), then --models (each followed by its --backbone_args
    version)."""
    rows = []
    for config in args.config:
        settings = resolved_config(config)
        declared, overrides = settings["model"]["backbone"], settings["model"]["backbone_args"] or {}
        base = declared["base"] if isinstance(declared, dict) else declared
        size = args.img_size or settings["data"]["img_size"]
        if base not in [row[0] for row in rows]:
            rows.append((base, lambda base=base: create_model(base), size, paper_a100(base, size)))
        rows.append((Path(config).stem, lambda declared=declared, overrides=overrides: create_model(
            declared, **overrides), size, (None, None)))
    for name in args.models:
        size = args.img_size or native_size(name)
        rows.append((name, lambda name=name: build(name), size, paper_a100(name, size)))
        if args.backbone_args and is_ours(name):
            rows.append((changed(name, args.backbone_args), lambda name=name: create_model(name, **args.backbone_args),
                         size, (None, None)))
    return rows


def run(args):
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
        torch.backends.cudnn.benchmark = True
    rows, measured = [], candidates(args)
    for number, (name, build_model, img, paper) in enumerate(measured, 1):
        model = build_model()
        row = dict(model=name, device=device_name(device), img_size=img, precision=args.precision,
                   channels_last=args.channels_last,  # counted on the model before compiling (a meta copy)
                   params_m=round(count_params(model) / 1e6, 2), macs_g=round(count_macs(model, img) / 1e9, 2))
        if args.compile:
            model = torch.compile(model)
        common = dict(device=device, img_size=img, precision=args.precision, channels_last=args.channels_last,
                      warmup=args.warmup, iters=args.iters, what=f"benchmark {name} ({number}/{len(measured)})")
        row["train_img_s"], row["train_batch"], row["train_peak_mb"] = measure(model, batch=args.batch_size,
                                                                               train=True, **common)
        row["infer_img_s"], row["infer_batch"], row["infer_peak_mb"] = measure(model, batch=args.batch_size,
                                                                               train=False, **common)
        if args.fold:
            folded = reparameterize_model(model.eval())
            row["folded_infer_img_s"], _, _ = measure(folded, batch=args.batch_size, train=False,
                                                      **{**common, "what": f"{common['what']}, BatchNorm folded"})
        row["paper_a100_train"], row["paper_a100_infer"] = paper
        rows.append(row)
        del model
    for row in rows:
        row["train_ratio"] = round(row["train_img_s"] / rows[0]["train_img_s"], 2)
        row["infer_ratio"] = round(row["infer_img_s"] / rows[0]["infer_img_s"], 2)
    return rows


def macs_table():
    """Params and MACs of every registered variant at its size, beside the paper's where it gives them."""
    rows = []
    for name in list_models():
        variant = get_variant(name)
        params, macs = complexity(name)
        paper = variant.paper
        rows.append(dict(model=name, img_size=variant.input_size, params_m=round(params / 1e6, 2),
                         paper_params_m=paper.params if paper else None, macs_g=round(macs / 1e9, 2),
                         paper_macs_g=paper.macs if paper else None))
    return rows


def format_table(rows):
    columns = list(rows[0])
    cells = [[("" if row[c] is None else f"{row[c]:.1f}" if isinstance(row[c], float) and c.endswith("_s")
               else str(row[c])) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def describe(row):
    """What ran, in words: device, precision, image size, memory format."""
    layout = "channels-last" if row["channels_last"] else "channels-first"
    return f"{row['device']}, {row['precision']}, {row['img_size']} px, {layout}"


def save(rows, out, chart):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "benchmark.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "benchmark.json").write_text(json.dumps(rows, indent=1))
    if chart:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 2))
        for ax, key in zip(axes, ("train_img_s", "infer_img_s")):
            ax.barh([r["model"] for r in rows][::-1], [r[key] for r in rows][::-1], color="tab:blue")
            ax.set_xlabel(key.replace("_img_s", " images/s"))
        fig.suptitle(describe(rows[0]))
        fig.tight_layout()
        fig.savefig(out / "benchmark.png", dpi=100)
        plt.close(fig)


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m inception_next benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None,
                        help="default: inception_next_tiny timm:convnext_tiny timm:resnet50, or none with --config")
    parser.add_argument("--config", nargs="+", type=Path, default=[],
                        help="experiment YAMLs: their models as fit builds them, after the variants they change")
    add_flag(parser, "--backbone_args", type=yaml.safe_load, default=None,
                        help="YAML or JSON mapping: after each of our --models, that model with these arguments")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_flag(parser, "--batch_size", type=int, default=None, help="halved until it fits; default: the paper's 128 "
             "on a GPU, 8 on the CPU")
    add_flag(parser, "--img_size", type=int, default=None, help="default: each model's own (224, 384 for _384)")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default=None,
                        help="default: tf32 on a GPU (the paper's A100 setting), fp32 on the CPU (TF32 is CUDA's)")
    add_flag(parser, "--channels_last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model")
    parser.add_argument("--fold", action="store_true", help="also time inference with BatchNorm folded")
    parser.add_argument("--warmup", type=int, default=None, help="default: 10 on a GPU, 2 on the CPU")
    parser.add_argument("--iters", type=int, default=None, help="timed steps; default: 30 on a GPU, 5 on the CPU")
    parser.add_argument("--out", type=Path, default=Path("benchmark_results"))
    add_flag(parser, "--no_chart", action="store_true")
    add_flag(parser, "--macs_only", action="store_true", help="params/MACs of every variant against the paper")
    parser.add_argument("--suite", choices=("paper",), default=None,
                        help="the whole GPU suite in one command, one Markdown report (see inception_next/suite.py)")
    parser.add_argument("--small", action="store_true", help="with --suite: every part on the CPU, tiny and quick")
    add_flag(parser, "--photos_root", default=None,
                        help="with --suite: real JPEGs (a class-folder dataset) for the data supply, in place of "
                             "generated photograph-sized ones")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.suite:
        from .suite import run as suite

        out = args.out if args.out != Path("benchmark_results") else Path("docs/benchmarks")
        return suite(small=args.small, out=out, photos_root=args.photos_root)
    on_gpu = torch.device(args.device).type == "cuda"
    if args.precision == "tf32" and not on_gpu:
        raise SystemExit("error: --precision tf32: TF32 is a CUDA setting; expected fp32 or bf16 on the CPU")
    args.precision = args.precision or ("tf32" if on_gpu else "fp32")
    if args.models is None:
        args.models = [] if args.config else ["inception_next_tiny", "timm:convnext_tiny", "timm:resnet50"]
    if args.backbone_args is not None and not isinstance(args.backbone_args, dict):
        raise SystemExit(f"error: --backbone_args {args.backbone_args!r}: expected a mapping, such as "
                         "\"{token_mixer: my_mixers.Band, mixer_args: {dilation: 2}}\"")
    if args.macs_only:
        rows = macs_table()
        print(format_table(rows))
        save(rows, args.out, chart=False)
        return rows
    unknown = [m for m in args.models if m.removeprefix("timm:") not in list_models() + timm.list_models()]
    if unknown:
        raise SystemExit(f"error: --models: unknown {', '.join(unknown)}; expected ours ({', '.join(list_models())}) "
                         "or a timm model name")
    sizes = (128, 10, 30) if on_gpu else (8, 2, 5)
    if not on_gpu and (args.batch_size, args.warmup, args.iters) == (None, None, None):
        print("on the CPU: batch 8, 2 warm-up and 5 timed steps (the paper's batch 128, 10 and 30 would take many "
              "minutes a model here); --batch_size, --warmup and --iters set them", file=sys.stderr)
    args.batch_size, args.warmup, args.iters = (given if given is not None else default for given, default in zip(
        (args.batch_size, args.warmup, args.iters), sizes))
    print(f"device {args.device}, torch {torch.__version__}, timm {timm.__version__}, {args.precision}, "
          f"batch {args.batch_size}, threads {torch.get_num_threads()}")
    try:
        rows = run(args)
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    print(format_table(rows))
    save(rows, args.out, chart=not args.no_chart)
    print(f"saved {args.out / 'benchmark.csv'}, .json{'' if args.no_chart else ', .png'}")
    return rows
