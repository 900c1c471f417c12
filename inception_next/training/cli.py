"""`python -m inception_next {fit,validate,test,predict}`: LightningCLI over ImageClassifier and ImageNetDataModule,
with the experiment YAMLs that ship in inception_next/experiments/ (their `extends` chains are config.py's). Without
a config, a subcommand runs `experiments/demo.yaml`. The CLI parses and wires; it asks `runs` where a command starts
and where a fit's folder is, `checkpoints` how weights were trained, and the model's variant for its preprocessing.
"""

import logging
import re
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..data import ImageNetDataModule
from ..data.module import device_from_old_settings
from ..errors import UserError, own_message
from ..models.factory import preprocessing
from . import preemption, runs
from .callbacks import (
    HParamsWithMetrics,
    LastCheckpoint,
    LineProgressBar,
    RandomStateInCheckpoints,
    RunFolder,
    TopKCSVWriter,
)
from .checkpoints import AtomicCheckpointIO, evaluation_data_settings
from .config import DEMO_CONFIG, ActionExperimentConfig
from .loggers import LoggerError, configured_loggers, continue_logger_runs, logger_error, where_to_look
from .module import ImageClassifier
from .optimization import accumulation
from .preemption import Preempted, Preemption, catch_job_signals

# What every run shows and checks beyond its metrics: defaults of `trainer.callbacks` that a YAML can change (a list
# there replaces them; `--trainer.callbacks+=X` adds to them). The run's mechanics (its folder, last.ckpt, random
# state, preemption, predict's CSV) are the CLI's own, whatever the list; BatchNorm averaging is the module's.
DEFAULT_CALLBACKS = [f"inception_next.training.callbacks.{name}" for name in (
    "UnreadableFilesReport", "FirstBatchImages", "LayerScaleMagnitudes", "HParamsWithMetrics", "TrainingThroughput")]
EVALUATION = ("validate", "test", "predict")

__all__ = ["InceptionNeXtCLI", "CountingLimitsTrainer", "SaveFitConfig", "main", "parsed_command", "resolved_config",
           "LoggerError"]


class CountingLimitsTrainer(L.Trainer):
    """Lightning's Trainer, with batch limits typed so that the command line reads `--trainer.limit_train_batches 1`
    as one batch (an integer, as Lightning documents) and 0.5 as half the batches. (Lightning annotates them
    float-first, so the parser would turn 1 into 1.0: the whole epoch.)"""

    def __init__(self, *, limit_train_batches: int | float | None = None, limit_val_batches: int | float | None = None,
                 limit_test_batches: int | float | None = None, limit_predict_batches: int | float | None = None,
                 **kwargs):
        super().__init__(limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                         limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches, **kwargs)


class SaveFitConfig(SaveConfigCallback):
    """The resolved config in a fit's run folder (evaluation commands make none), and, flattened, to every logger as
    the run's hyperparameters, once, as the fit begins: TensorBoard's with HParamsWithMetrics' metrics, which tie
    settings and results together in its HPARAMS tab."""

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage):
        run = next((cb.path for cb in trainer.callbacks if isinstance(cb, RunFolder)), None)
        if run is not None and trainer.is_global_zero:
            self.parser.save(self.config, str(run / runs.CONFIG), skip_none=False, overwrite=True,
                             multifile=self.multifile)
        if self.config.get("ckpt_path") is not None:  # a resumed run's loggers hold them from when it began
            return
        flat = flatten(yaml.safe_load(self.parser.dump(self.config, skip_none=False)))
        shown = any(isinstance(callback, HParamsWithMetrics) for callback in trainer.callbacks)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and shown:
                logger.log_hyperparams(flat, HParamsWithMetrics.placeholders())
            else:
                logger.log_hyperparams(flat)


def flatten(node, prefix=""):
    """A nested config as {"data.img_size": 224, ...}."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {key: value for name, child in node.items() for key, value in flatten(child, f"{prefix}{name}.").items()}


def print_metrics(trainer):
    """What validate and test print: each metric, rounded."""
    if trainer.is_global_zero:
        print("  ".join(f"{name} {value.item():.4f}" for name, value in sorted(trainer.callback_metrics.items())))


def report_fit(trainer, experiment, seed):
    """What a fit prints as it ends (its folder, where each logger shows it, its checkpoints), and its finished
    marker in the run folder (`sweep` skips the run, `report` reads it)."""
    best = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)), None)
    last = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint)), None)
    run = next(cb.path for cb in trainer.callbacks if isinstance(cb, RunFolder))
    if not trainer.is_global_zero:
        return
    if run is not None:
        print(f"run: {run}")
    for logger in trainer.loggers:
        print(f"logs: {where_to_look(logger)}")
    if best is not None and best.best_model_path:
        score = f" (val/top1 {best.best_model_score:.4f})" if best.best_model_score is not None else ""
        print(f"best checkpoint: {best.best_model_path}{score}")
    if last is not None and last.path is not None and last.path.is_file():
        print(f"last checkpoint: {last.path}")
    if run is not None:
        metrics = {name: value.item() for name, value in trainer.callback_metrics.items()}
        runs.mark_finished(run, experiment=experiment, seed=seed, epochs=trainer.current_epoch,
                           global_step=trainer.global_step, final=metrics)


def complete_data_settings(settings):
    """The data settings a config leaves unset (img_size, crop_pct, interpolation) from the model's variant, and the
    old spellings of data.device_from (augment_on, decode_on) as it."""
    data = settings.data
    if data.get("augment_on") is not None or data.get("decode_on") is not None:
        data.device_from = device_from_old_settings(data.augment_on, data.decode_on)
        data.augment_on = data.decode_on = None
    for key, value in preprocessing(settings.model.backbone).items():
        if data.get(key) is None:
            data[key] = value


def evaluate_as_trained(settings):
    """Evaluation labels and prepares images as the weights were trained: a checkpoint's classes and preprocessing,
    or for released ImageNet weights without a dataset, ImageNet's (`checkpoints.evaluation_data_settings`)."""
    data = settings.data
    trained = evaluation_data_settings(settings.ckpt_path, settings.model.pretrained, settings.model.backbone,
                                       has_data=data.root is not None or data.classes is not None)
    for key, value in trained.items():
        data[key] = value


class InceptionNeXtCLI(LightningCLI):
    """Parses a command (its experiment's `extends` chain, the demo's when it names none) and wires its run: the
    checkpoint it starts from, evaluation as the weights were trained, the run folder, the callbacks and plugins
    every run needs, the gradient accumulation a recipe's global batch implies."""

    epilog = None  # what --help says after the options: the other commands (set by the front door)

    def init_parser(self, **kwargs):
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={L.__version__}"])
        parser = self.parser_class(epilog=self.epilog, **kwargs)
        parser.add_argument("-c", "--config", action=ActionExperimentConfig,
                            help="an experiment YAML (its `extends:` chain applied first); default: the demo")
        return parser

    def add_arguments_to_parser(self, parser):
        parser.add_argument("--extends", type=str | None, default=None,
                            help="in a config file: the file it builds on (applied first by --config)")
        parser.add_argument("--experiment", type=str, default="default",
                            help="run name: runs go to <trainer.default_root_dir>/<experiment>/version_N/")
        parser.add_argument("--global_batch_size", type=int | None, default=None,
                            help="the recipe's global batch; gradient accumulation is derived from it")
        parser.add_argument("--predict_csv", type=str, default="predictions.csv",
                            help="where `predict` writes file, top-5 class names and probabilities")
        parser.add_argument("--save_every_n_steps", type=int | None, default=None,
                            help="write last.ckpt every N optimizer steps too, not only after each epoch")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.batch_size", "model.batch_size")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"trainer.default_root_dir": runs.DEFAULT_ROOT, "checkpoint.monitor": "val/top1",
                             "checkpoint.mode": "max", "checkpoint.save_top_k": 1,
                             "checkpoint.auto_insert_metric_name": False, "checkpoint.filename": runs.BEST_FILENAME,
                             "trainer.callbacks": [{"class_path": path} for path in DEFAULT_CALLBACKS]})

    @property
    def settings(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def parse_arguments(self, parser, args):
        """As LightningCLI, with the demo's config when a subcommand is given none; then the model's preprocessing
        where the config leaves it, where the command starts (`runs.find_start`), and for evaluation the data
        settings the weights were trained with (before LightningCLI reads the checkpoint's hyperparameters)."""
        args = list(sys.argv[1:] if args is None else args)
        printing = [arg for arg in args[1:] if arg.startswith("--print_config")]  # printed once resolved, below
        if args[:1] and args[0] in self.subcommands():
            args = [arg for arg in args if arg not in printing]
            if not any(arg in ("-c", "--config") or arg.startswith("--config=") for arg in args):
                args[1:1] = ["--config", str(DEMO_CONFIG)]
        self.config = parser.parse_args(args)
        self.subcommand = self.config.get("subcommand")
        settings = self.settings
        complete_data_settings(settings)
        self.start = runs.Start()
        if self.subcommand:
            self.start = runs.find_start(settings.ckpt_path, settings.trainer.default_root_dir, settings.experiment,
                                         fit=self.subcommand == "fit")
            settings.ckpt_path = self.start.checkpoint
        if self.subcommand in EVALUATION:
            evaluate_as_trained(settings)
        if printing:  # what the command would run: LightningCLI's own --print_config, after the steps above
            print(yaml.safe_dump(self.resolved(skip_none="skip_null" in printing[0]), sort_keys=False), end="")
            sys.exit(0)

    def resolved(self, skip_none=False):
        """The command's config as parsed and completed, as a dict."""
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_none=skip_none))
        return dumped[self.subcommand] if self.subcommand else dumped

    def instantiate_classes(self):
        settings = self.settings
        if self.subcommand == "fit":
            runs.start_fit(settings.trainer.default_root_dir, settings.experiment, self.start,
                           on_slurm=SLURMEnvironment.detect())
            continue_logger_runs(configured_loggers(settings), runs.logger_identities(self.start.resumed_run))
        if self.subcommand == "predict":
            runs.check_writable(Path(settings.predict_csv).expanduser().resolve().parent, "--predict_csv")
        try:
            super().instantiate_classes()
        except Exception as error:
            raise logger_error(settings, error) or error
        # A forward pass on one image of the data's size gives the model summary its FLOPs.
        self.model.example_input_array = torch.zeros(1, 3, self.datamodule.img_size, self.datamodule.img_size)

    def instantiate_trainer(self, **kwargs):
        settings, init = self.settings, self.config_init[self.subcommand]
        configured = init.trainer.callbacks or []
        # RunFolder first: its setup tells the checkpoint callbacks and the config where the run's folder is. The
        # rest in every subcommand: Lightning warns when a checkpoint's callbacks are missing on loading it.
        callbacks = [RunFolder(runs.experiment_dir(settings.trainer.default_root_dir, settings.experiment),
                               self.start.resumed_run)]
        callbacks += list(configured) if isinstance(configured, list) else [configured]
        callbacks += [LastCheckpoint(settings.save_every_n_steps), RandomStateInCheckpoints(), Preemption()]
        if settings.trainer.enable_progress_bar is not False and not sys.stdout.isatty() and not any(
                isinstance(callback, ProgressBar) for callback in callbacks):  # a log file: lines, not a bar
            callbacks.append(LineProgressBar())
        if self.subcommand == "predict":
            callbacks.append(TopKCSVWriter(settings.predict_csv))
        plugins = init.trainer.plugins or []
        plugins = [*(plugins if isinstance(plugins, list) else [plugins]), AtomicCheckpointIO()]
        if SLURMEnvironment.detect():  # job signals are Preemption's: no hpc_ckpt_*.ckpt beside every experiment
            plugins.append(SLURMEnvironment(auto_requeue=False))
        if settings.trainer.logger in (None, True):  # the default: a fit's own run folder; evaluation logs nowhere
            kwargs["logger"] = self.default_logger(settings)
        root = str(runs.absolute(settings.trainer.default_root_dir))
        trainer = super().instantiate_trainer(callbacks=callbacks, plugins=plugins, default_root_dir=root, **kwargs)
        if settings.global_batch_size is not None and self.subcommand == "fit":  # evaluation takes any batch
            trainer.accumulate_grad_batches = accumulation(settings.global_batch_size, self.datamodule.batch_size,
                                                           trainer.world_size)
        return trainer

    def default_logger(self, settings):
        """TensorBoard in a fit's run folder (a resumed run purges what the interrupted one logged after its
        checkpoint, which it logs again); none for evaluation."""
        if self.subcommand != "fit":
            return False
        start = self.start
        resumed = dict(version=start.resumed_run.name, purge_step=start.resumed_step) if start.resumed_run else {}
        return TensorBoardLogger(save_dir=runs.absolute(settings.trainer.default_root_dir),
                                 name=settings.experiment, default_hp_metric=False, **resumed)

    def _warn_if_untrained(self):
        if self.settings.ckpt_path is None and not self.settings.model.pretrained:
            rank_zero_warn(f"{self.subcommand} without --ckpt_path or --model.pretrained: these are untrained, "
                           "randomly initialised weights (--ckpt_path best or last picks this experiment's newest run)")

    def before_validate(self):
        self._warn_if_untrained()
        self.config_init[self.subcommand].verbose = False  # after_validate prints the metrics, rounded

    before_test = before_validate

    def before_predict(self):
        self._warn_if_untrained()

    def after_validate(self):
        print_metrics(self.trainer)

    after_test = after_validate

    def after_predict(self):
        writer = next(cb for cb in self.trainer.callbacks if isinstance(cb, TopKCSVWriter))
        if self.trainer.is_global_zero:
            print(f"predictions: {writer.output.resolve()}")

    def after_fit(self):
        report_fit(self.trainer, self.settings.experiment, self.settings.seed_everything)


class ConfigReader(InceptionNeXtCLI):
    """Stops once the command line is parsed, with the resolved config (`Resolved`), as `--print_config` would print
    it: no class is built, no seed set."""

    class Resolved(Exception):
        def __init__(self, config):
            super().__init__("resolved")
            self.config = config

    def parse_arguments(self, parser, args):
        super().parse_arguments(parser, args)
        raise self.Resolved(self.resolved())


CLI_SETTINGS = dict(trainer_class=CountingLimitsTrainer, save_config_callback=SaveFitConfig,
                    save_config_kwargs=dict(save_to_log_dir=False, config_filename=runs.CONFIG),
                    auto_configure_optimizers=False)


def parsed_command(args):
    """The config a command (`fit ...`, `validate ...`) would run, as a dict, without running it: its experiment's
    `extends` chain, every default, the model's preprocessing, the checkpoint it starts from. A command that does not
    parse raises its ArgumentError or UserError."""
    strict = {"exit_on_error": False}
    try:
        ConfigReader(ImageClassifier, ImageNetDataModule, args=list(args),
                     parser_kwargs={**strict, **{name: strict for name in LightningCLI.subcommands()}},
                     **CLI_SETTINGS)
    except ConfigReader.Resolved as resolved:
        return resolved.config
    raise AssertionError("ConfigReader always stops after parsing")


def resolved_config(path, *flags):
    """An experiment (a YAML file) as `fit` resolves it (see `parsed_command`)."""
    return parsed_command(["fit", "--config", str(path), *flags])


def one_line(parse_error):
    """jsonargparse's multi-line message as one line: `--key value: expected <types>` where it names a key."""
    message = str(parse_error)
    keyed = re.match(r'Parser key "([^"]+)":\s*(.*)', message, re.S)
    if not keyed:
        return " ".join(message.split())
    key, detail = keyed.groups()
    given = re.search(r"(?:Given|Got) value: (.*)", detail)
    expected = re.findall(r"Expected a (<class '[^']+'>|typing\.Literal\[[^\]]*\]|[^\s.]+)", detail)
    if not (given and expected):
        return f"--{key}: {' '.join(detail.split())}"

    def readable(kind):
        kind = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", kind)
        kind = re.sub(r"typing\.Literal\[(.*)\]", r"one of \1", kind)
        return "null" if kind == "NoneType" else kind

    return f"--{key} {given.group(1).strip()}: expected {' or '.join(dict.fromkeys(map(readable, expected)))}"


class _DropLightningTip(logging.Filter):
    def filter(self, record):
        return not record.getMessage().startswith("💡 Tip")


def quiet_third_party_noise():
    """What Lightning prints on every command that is no use here: an advert for its cloud logger, and a torch
    deprecation inside Lightning's own code."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropLightningTip())


def main(args=None, epilog=None):
    """fit, validate, test and predict (the front door, `inception_next.commands`, hands them here): a mistake is one
    line and exit 1 (2 for one the parser finds), a job signal the line saying what was saved and its exit status."""
    args = list(sys.argv[1:] if args is None else args)
    quiet_third_party_noise()
    sys.argv = sys.argv[:1] + args  # where DDP's launcher finds the command to start the other processes
    strict = {"exit_on_error": False}  # parse errors come back here, to be printed as one line
    InceptionNeXtCLI.epilog = epilog
    try:
        with catch_job_signals():  # from the start: a cluster may signal a job before it trains
            InceptionNeXtCLI(ImageClassifier, ImageNetDataModule,
                             parser_kwargs={**strict, **{name: strict for name in LightningCLI.subcommands()}},
                             **CLI_SETTINGS)
    except ArgumentError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except (Preempted, SIGTERMException) as error:  # the Trainer has closed everything: SLURM may end the processes
        stop = error if isinstance(error, Preempted) else (preemption.stopped or [Preempted(
            "stopped by SIGTERM: --ckpt_path last resumes from the run's last checkpoint", 15)])[0]
        print(stop, file=sys.stderr, flush=True)
        refused = preemption.requeue() if stop.requeue else None
        if refused:
            print(f"error: not requeued ({refused}): run the same command again (--ckpt_path last) to continue",
                  file=sys.stderr)
        sys.exit(stop.exit_code)
    except (UserError, MisconfigurationException) as error:
        print(f"error: {own_message(error)}", file=sys.stderr)
        sys.exit(1)
