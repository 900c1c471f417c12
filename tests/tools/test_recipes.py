"""The experiment YAMLs hold the official recipes: every setting, and the lr the schedule really sets each epoch."""

from pathlib import Path

import lightning as L
import pytest
from expected_lr import official_lr
from interruptions import RecordLR

from inception_next.data import ImageNetDataModule
from inception_next.tools import recipes
from inception_next.training.cli import resolved_config
from inception_next.training.config import EXPERIMENTS
from inception_next.training.module import ImageClassifier

DOCS = Path(__file__).parents[2] / "docs" / "recipes.md"
SCHEDULE = ("lr_per_1024", "sched", "warmup_epochs", "warmup_lr", "min_lr", "cooldown_epochs", "step_on_epochs")


def differences(recipe, config):
    """[(setting, ours, official)] where ours differs from the official value, deliberate deviations included."""
    mine, theirs = recipes.ours(config), recipes.official(recipe)
    return [(key, mine[key], theirs[key][0]) for key, _ in recipes.ROWS if not recipes.same(mine[key], theirs[key][0])]


@pytest.mark.parametrize("recipe", recipes.EXPERIMENTS)
def test_every_recipe_resolves_to_the_official_values(recipe):
    config = resolved_config(EXPERIMENTS / recipes.EXPERIMENTS[recipe])
    drift = [(key, ours, official) for key, ours, official in differences(recipe, config)
             if key not in recipes.DEVIATIONS]
    assert not drift, f"{recipe}: (setting, ours, official) {drift}"


def test_the_only_value_that_differs_is_the_documented_precision():
    config = resolved_config(EXPERIMENTS / "tiny.yaml")
    assert differences("tiny", config) == [("trainer.precision", "bf16-mixed", "32")]


def test_docs_recipes_md_is_generated_from_the_yamls():
    regenerate = "regenerate: python -m inception_next.tools.recipes > docs/recipes.md"
    assert DOCS.read_text() == recipes.markdown(), regenerate


def distinct_schedules():
    """One experiment per distinct once-an-epoch schedule among all the YAMLs (most share the tiny recipe's; the
    demo's per-step one is tested in test_training)."""
    schedules = {}
    for path in sorted(EXPERIMENTS.rglob("*.yaml")):
        if path.name == "recipe.yaml":
            continue
        config = resolved_config(path)
        if not config["model"]["step_on_epochs"]:
            continue
        key = (config["trainer"]["max_epochs"], config["global_batch_size"],
               *(repr(config["model"][name]) for name in SCHEDULE))
        schedules.setdefault(key, (path.relative_to(EXPERIMENTS).as_posix(), config))
    return list(schedules.values())


def fit_one_batch_epochs(config, tiny_dataset, tmp_path):
    """The recipe's optimizer and schedule on a tiny network, one optimizer step an epoch. The module is told the
    recipe's global batch, so the lr it scales is the official one."""
    model, epochs = config["model"], config["trainer"]["max_epochs"]
    module = ImageClassifier(backbone="inception_next_atto", num_classes=3, mixup=0.0, cutmix=0.0,
                             backbone_args=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
                             batch_size=config["global_batch_size"] or config["data"]["batch_size"],
                             **{name: model[name] for name in SCHEDULE})
    data = ImageNetDataModule(root=str(tiny_dataset), img_size=32, batch_size=2, num_workers=0)
    record = RecordLR()
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", callbacks=[record], default_root_dir=tmp_path)
    trainer.fit(module, data)
    return record.lrs


@pytest.mark.parametrize("experiment, config", distinct_schedules(), ids=lambda value: value
                         if isinstance(value, str) else "")
def test_the_lr_of_every_epoch_is_the_official_one(experiment, config, tiny_dataset, tmp_path):
    model, epochs = config["model"], config["trainer"]["max_epochs"]
    lrs = fit_one_batch_epochs(config, tiny_dataset, tmp_path)
    peak = model["lr_per_1024"] * config["global_batch_size"] / 1024
    assert len(lrs) == epochs
    if model["sched"] is None:
        assert lrs == [pytest.approx(peak, rel=1e-12)] * epochs  # the fine-tune: constant
        return
    cosine = epochs - model["cooldown_epochs"]
    expected = [official_lr(e, peak, model["warmup_epochs"], model["warmup_lr"], model["min_lr"], cosine)
                for e in range(epochs)]
    worst = max(abs(a - b) / b for a, b in zip(lrs, expected))
    print(f"{experiment}: {epochs} epochs, largest relative difference to the official lr {worst:.2g}")
    assert worst < 0.01
    cooldown = model["cooldown_epochs"]
    assert lrs[epochs - cooldown:] == [pytest.approx(model["min_lr"])] * cooldown
