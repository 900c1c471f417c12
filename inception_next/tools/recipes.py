"""The official training recipes as data, and our experiment YAMLs held against them.

The official runs are sail-sg/inceptionnext's shell scripts on its train.py (timm 0.6.11's, with gradient
accumulation added): a script's flags override train.py's defaults. Each value below carries its source, file and
line at commit 3f9769c, so that docs/recipes.md can cite it and tests/tools/test_recipes.py can hold our resolved
configs to it. `python -m inception_next.tools.recipes` prints docs/recipes.md.
"""

import math
from pathlib import Path

from ..training.cli import resolved_config
from ..training.config import EXPERIMENTS as EXPERIMENT_FOLDER
from ..training.optimization import peak_lr

REPOSITORY = "sail-sg/inceptionnext"
COMMIT = "3f9769c"

# train.py's defaults: option -> (value, line).
TRAIN_PY = {
    "epochs": (300, 212), "cooldown_epochs": (10, 226), "sched": ("cosine", 190), "warmup_epochs": (5, 224),
    "warmup_lr": (1e-6, 208), "min_lr": (1e-5, 210), "weight_decay": (0.05, 179),
    "opt_eps": (1e-8, 173), "opt_betas": ([0.9, 0.999], 175), "clip_grad": (None, 181),
    "mixup": (0.8, 267), "cutmix": (1.0, 269), "mixup_switch_prob": (0.5, 275), "smoothing": (0.1, 281),
    "aa": ("rand-m9-mstd0.5-inc1", 247), "color_jitter": (0.4, 245), "reprob": (0.25, 259), "remode": ("pixel", 261),
    "scale": ([0.08, 1.0], 237), "hflip": (0.5, 241), "train_interpolation": ("random", 283),
    "drop": (0.0, 285), "model_ema": (False, 311), "model_ema_decay": (0.9998, 315), "seed": (42, 320),
    "amp": (False, 334), "img_size": (224, 139),
}
TRAIN_PY_NOTES = {
    "opt_eps": "None: AdamW's default", "opt_betas": "None: AdamW's default",
    "img_size": "None: the model's default_cfg, 224",
}

# The model's default_cfg, which train.py's evaluation falls back to: crop_pct and interpolation.
MODEL_CFG = {"crop_pct": (0.875, "models/inceptionnext.py:288"), "crop_pct_384": (1.0, "models/inceptionnext.py:310"),
             "interpolation": ("bicubic", "models/inceptionnext.py:288")}

# Each script: its file, the batch lines (ALL_BATCH_SIZE, NUM_GPU, GRAD_ACCUM_STEPS) and its options -> (value, line).
SCRIPTS = {
    "atto": ("scripts/inceptionnext/train_inceptionnext_atto.sh", (5, 6, 7), (1280, 4, 1), {
        "model": ("inception_next_atto", 11), "drop_path": (0.1, 12), "lr": (1e-3, 16), "warmup_epochs": (5, 16),
        "aa": ("rand-m5-inc1-mstd101", 19), "color_jitter": (0.0, 20), "epochs": (600, 21), "mixup": (0.2, 22),
        "reprob": (0.1, 23), "warmup_lr": (5e-7, 24), "min_lr": (5e-7, 24)}),
    "tiny": ("scripts/inceptionnext/train_inceptionnext_tiny.sh", (5, 6, 7), (4096, 8, 4), {
        "model": ("inception_next_tiny", 11), "drop_path": (0.1, 12), "lr": (4e-3, 16), "warmup_epochs": (20, 16)}),
    "small": ("scripts/inceptionnext/train_inceptionnext_small.sh", (5, 6, 7), (4096, 8, 4), {
        "model": ("inception_next_small", 11), "drop_path": (0.3, 12), "lr": (4e-3, 16), "warmup_epochs": (20, 16)}),
    "base": ("scripts/inceptionnext/train_inceptionnext_base.sh", (5, 6, 7), (4096, 8, 4), {
        "model": ("inception_next_base", 11), "drop_path": (0.4, 12), "lr": (4e-3, 16), "warmup_epochs": (20, 16)}),
    "base_384_finetune": ("scripts/inceptionnext/finetune_inceptionnext_base.sh", (6, 7, 8), (1024, 8, 4), {
        "model": ("inception_next_base_384", 12), "drop_path": (0.7, 13), "drop": (0.5, 14), "img_size": (384, 18),
        "epochs": (30, 18), "lr": (5e-5, 18), "sched": (None, 18), "mixup": (0.0, 21), "cutmix": (0.0, 21),
        "model_ema": (True, 22), "model_ema_decay": (0.9999, 22)}),
    "table1": ("scripts/convnext_variants/train_convnext_tiny_k3_ema.sh", (5, 6, 7), (4096, 8, 4), {
        "model": ("convnext_tiny_k3", 11), "drop_path": (0.1, 12), "lr": (4e-3, 16), "warmup_epochs": (20, 16),
        "model_ema": (True, 19), "model_ema_decay": (0.9999, 19)}),
}

# The script typos not to copy: what the scripts say, and what the runs must have used.
SCRIPT_NOTES = {
    ("atto", "model"): "line 16 passes $MODEL_NAME, unset: a typo for $MODEL",
    ("atto", "drop_path"): "line 18 passes --drop-path $DATA_PATH: a typo for $DROP_PATH",
    ("atto", "color_jitter"): "line 25 adds --no-cj, which train.py does not know: a typo to leave out",
    ("base", "model"): "the script sets MODEL=inceptionnext_tiny, a typo for base",
    ("table1", "model"): "the scripts name inceptionnext_tiny_k3..., which do not exist: convnext_tiny_k3...",
}

# Where ours differs on purpose: our setting -> why, and what to set for the official value.
DEVIATIONS = {
    "trainer.precision": "bf16 mixed precision, about twice as fast on A100/H100; the official runs are fp32 (no "
                         "--amp; TF32 convolutions by PyTorch's default): set --trainer.precision 32-true",
    "seed_everything": "one seed on every rank (officially 42 + rank, train.py:426); the data order and every "
                       "image's augmentation are seeded per sample anyway, so only Mixup's and drop path's draws "
                       "repeat across ranks",
}

# Our experiment file for each official recipe.
EXPERIMENTS = {"atto": "atto.yaml", "tiny": "tiny.yaml", "small": "small.yaml", "base": "base.yaml",
               "base_384_finetune": "base_384_finetune.yaml",
               "table1": "ablations/table1/convnext_tiny_k3.yaml"}

# The table's rows: (our setting, what it is).
ROWS = [
    ("model.backbone", "model"), ("global_batch_size", "global batch"), ("data.batch_size", "batch per device"),
    ("peak lr", "peak lr (AdamW)"), ("model.sched", "lr schedule"),
    ("trainer.max_epochs", "epochs, cooldown included"), ("model.warmup_epochs", "warmup epochs"),
    ("model.warmup_lr", "warmup start lr"), ("model.min_lr", "min lr"),
    ("model.cooldown_epochs", "cooldown epochs at min lr"), ("model.step_on_epochs", "lr updated once an epoch"),
    ("model.weight_decay", "weight decay"), ("model.betas", "AdamW betas"), ("model.eps", "AdamW eps"),
    ("trainer.gradient_clip_val", "gradient clipping"), ("model.mixup", "Mixup alpha"),
    ("model.cutmix", "CutMix alpha"), ("model.mix_switch_prob", "Mixup/CutMix switch prob"),
    ("model.label_smoothing", "label smoothing"), ("data.auto_augment", "RandAugment"),
    ("data.color_jitter", "colour jitter"), ("data.reprob", "random erasing"), ("data.remode", "random erasing mode"),
    ("data.scale", "random resized crop scale"), ("data.hflip", "horizontal flip"),
    ("data.train_interpolation", "training interpolation"), ("data.img_size", "image size"),
    ("data.interpolation", "evaluation interpolation"), ("crop_pct", "evaluation crop_pct"),
    ("model.drop_path_rate", "drop path"), ("model.drop_rate", "head dropout"), ("model.ema_decay", "EMA decay"),
    ("checkpoint.monitor", "best checkpoint by"), ("seed_everything", "seed"), ("trainer.precision", "precision"),
]
DERIVED = {"peak lr": "model.lr_per_1024 x global batch / 1024",
           "crop_pct": "data.crop_pct, by default the model variant's (0.875; 1.0 for the 384 px one)"}
SCHEDULE_ONLY = {"model.warmup_epochs", "model.warmup_lr", "model.min_lr", "model.cooldown_epochs",
                 "model.step_on_epochs"}


def official(recipe):
    """Our setting -> (the official value, its source) for one recipe."""
    script, batch_lines, (global_batch, gpus, accumulation), options = SCRIPTS[recipe]
    name = Path(script).name

    def get(option):
        if option in options:
            value, line = options[option]
            note = SCRIPT_NOTES.get((recipe, option))
            return value, f"{name}:{line}" + (f" ({note})" if note else "")
        value, line = TRAIN_PY[option]
        note = TRAIN_PY_NOTES.get(option)
        return value, f"train.py:{line}" + (f" ({note})" if note else "")

    epochs, epochs_source = get("epochs")
    sched, sched_source = get("sched")
    cooldown, cooldown_source = get("cooldown_epochs")
    ema, ema_source = get("model_ema")
    img_size, img_size_source = get("img_size")
    batches = f"{name}:{batch_lines[0]}-{batch_lines[2]}"
    settings = {
        "model.backbone": get("model"),
        "global_batch_size": (global_batch, batches),
        "data.batch_size": (global_batch // gpus // accumulation, f"{batches} ({gpus} GPUs x {accumulation} "
                                                                    "accumulation)"),
        "peak lr": get("lr"),
        "model.sched": (sched, sched_source),
        "trainer.max_epochs": (epochs + cooldown if sched else epochs,
                               f"{epochs_source} + {cooldown_source}" if sched else epochs_source),
        "model.warmup_epochs": get("warmup_epochs"), "model.warmup_lr": get("warmup_lr"),
        "model.min_lr": get("min_lr"), "model.cooldown_epochs": (cooldown, cooldown_source),
        "model.step_on_epochs": (True, "train.py:727 (lr_scheduler.step(epoch + 1) after each epoch)"),
        "model.weight_decay": get("weight_decay"), "model.betas": get("opt_betas"), "model.eps": get("opt_eps"),
        "trainer.gradient_clip_val": get("clip_grad"), "model.mixup": get("mixup"), "model.cutmix": get("cutmix"),
        "model.mix_switch_prob": get("mixup_switch_prob"), "model.label_smoothing": get("smoothing"),
        "data.auto_augment": get("aa"), "data.color_jitter": get("color_jitter"), "data.reprob": get("reprob"),
        "data.remode": get("remode"), "data.scale": get("scale"), "data.hflip": get("hflip"),
        "data.train_interpolation": get("train_interpolation"), "data.img_size": (img_size, img_size_source),
        "data.interpolation": MODEL_CFG["interpolation"],
        "crop_pct": MODEL_CFG["crop_pct_384" if img_size >= 384 else "crop_pct"],
        "model.drop_path_rate": get("drop_path"), "model.drop_rate": get("drop"),
        "model.ema_decay": get("model_ema_decay") if ema else (None, ema_source),
        "checkpoint.monitor": ("val_ema/top1" if ema else "val/top1", "train.py:723 (the EMA's metrics, if any)"),
        "seed_everything": get("seed"), "trainer.precision": ("32", f"{get('amp')[1]} (no --amp)"),
    }
    if not sched:
        for key in SCHEDULE_ONLY:
            settings[key] = (None, f"{sched_source} (no schedule)")
    return settings


def ours(config):
    """Our setting -> value, from a resolved config, with the derived ones (peak lr, effective crop_pct)."""
    def lookup(key):
        node = config
        for part in key.split("."):
            node = node[part]
        return node

    model, data = config["model"], config["data"]
    values = {key: lookup(key) for key, _ in ROWS if key not in ("peak lr", "crop_pct")}
    values["peak lr"] = peak_lr(model["lr_per_1024"], config["global_batch_size"])
    values["crop_pct"] = data["crop_pct"]
    values["trainer.precision"] = str(values["trainer.precision"])
    if model["sched"] is None:
        for key in SCHEDULE_ONLY:
            values[key] = None
    return values


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def _show(value):
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def markdown():
    """docs/recipes.md: one table per recipe, ours beside the official value and its source."""
    lines = [
        "# The recipes, setting by setting",
        "",
        f"Each experiment YAML beside the official run it retraces: [{REPOSITORY}](https://github.com/{REPOSITORY}) at "
        f"commit {COMMIT}, its shell scripts on its `train.py` (timm 0.6.11's). A source `file:line` is in that "
        "repository; a script's flag overrides `train.py`'s default. Ours is the resolved config "
        "(`python -m inception_next fit --config experiments/<file> --print_config`). Generated by "
        "`python -m inception_next.tools.recipes > docs/recipes.md`; `tests/tools/test_recipes.py` fails when a "
        "YAML drifts from this table or this file from the YAMLs.",
        "",
        "Deliberate deviations, marked **bold** in the tables:",
        "",
    ]
    lines += [f"- `{key}`: {why}." for key, why in DEVIATIONS.items()]
    lines += [
        "",
        "Also in every recipe: the lr is given per 1024 images (`model.lr_per_1024`) and scaled by the real global "
        "batch, so it equals the official lr at the official batch; an epoch trains len(dataset) // global batch "
        "optimizer steps (the tail that would make a partial step is dropped, as officially); BatchNorm statistics "
        "are averaged across GPUs before each validation (`--dist-bn reduce`, train.py:304); weight decay skips "
        "every parameter with ndim <= 1 (timm's `filter_bias_and_bn`).",
        "",
        "Recipes without an official script follow the tiny one: the Table 8 ablations "
        "(`ablations/table8/*.yaml`, on InceptionNeXt-T, as the paper) and the isotropic models (`isotropic/*.yaml`; "
        "the paper gives no code for them). Table 1's recipe (`ablations/table1/recipe.yaml`) is shown on its k3 "
        "model; the other variants differ only in the model.",
    ]
    for recipe, experiment in EXPERIMENTS.items():
        config = resolved_config(EXPERIMENT_FOLDER / experiment)
        mine, theirs = ours(config), official(recipe)
        lines += ["", f"## {recipe}: `experiments/{experiment}`", "", "| setting | ours | official | source |",
                  "|---|---|---|---|"]
        for key, label in ROWS:
            value = _show(mine[key])
            if not same(mine[key], theirs[key][0]):
                value = f"**{value}**"
            setting = f"{label}: {DERIVED[key]}" if key in DERIVED else f"{label} (`{key}`)"
            lines.append(f"| {setting} | {value} | {_show(theirs[key][0])} | {theirs[key][1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
