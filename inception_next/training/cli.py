"""`python -m inception_next {fit,validate,test,predict}`: LightningCLI over ImageClassifier and
ImageNetDataModule, with the experiment YAMLs that ship in inception_next/experiments/ (their `extends` chains are
config.py's); and the other commands of OTHER_COMMANDS (`python -m inception_next {benchmark,prepare,...}`).
Without a config, the subcommand runs `experiments/demo.yaml`. The CLI wires: it parses, picks the checkpoint
(checkpoints.py), evaluates as the weights were trained, names the run's folder and adds the callbacks every run needs.
"""

import contextlib
import importlib
import io
import json
import logging
import re
import sys
import tempfile
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from timm.data import ImageNetInfo

from ..data import ImageNetDataModule
from ..errors import UserError
from ..models.factory import backbone_name, create_model, get_variant, read_state_dict
from . import preemption
from .callbacks import (
    LOGGER_IDENTITIES,
    HParamsWithMetrics,
    LastCheckpoint,
    LoggerError,
    RandomStateInCheckpoints,
    RunFolder,
    TopKCSVWriter,
    where_to_look,
)
from .checkpoints import (
    AtomicCheckpointIO,
    checkpoint_folder,
    choose_checkpoint,
    remove_partial_saves,
    trained_data_settings,
)
from .config import DEMO_CONFIG, ActionExperimentConfig, ConfigError
from .module import ImageClassifier
from .preemption import Preempted, Preemption, catch_job_signals
from .runs import mark_finished

OTHER_COMMANDS = {  # name: (module, what it does)
    "benchmark": ("tools.benchmark", "training and inference images/s, params, MACs and memory, ours beside timm's"),
    "benchmark-data": ("tools.data_benchmark",
                       "decode + augment images/s per loader worker, ours beside a bare timm loop"),
    "prepare": ("data.prepare", "ImageNet as downloaded (archives, Kaggle, parquet, WebDataset) into class folders"),
    "export": ("tools.export", "a checkpoint or released weights to ONNX, checked against onnxruntime"),
    "sweep": ("tools.sweep", "each experiment with each seed as a fit, one after another or as SLURM jobs"),
    "report": ("tools.report", "finished runs as a table: mean and spread over seeds beside the paper's figures"),
}
# What every run shows and checks beyond its metrics: defaults of `trainer.callbacks` that a YAML can change (a list
# there replaces them; `--trainer.callbacks+=X` adds to them). The run's mechanics (its folder, last.ckpt, random
# state, preemption, predict's CSV) are the CLI's own, whatever the list.
DEFAULT_CALLBACKS = [f"inception_next.training.callbacks.{name}" for name in (
    "UnreadableFilesReport", "FirstBatchImages", "LayerScaleMagnitudes", "HParamsWithMetrics", "TrainingThroughput",
    "AverageBatchNormAcrossRanks")]


class CountingLimitsTrainer(L.Trainer):
    """Lightning's Trainer, with batch limits typed so that the command line reads `--trainer.limit_train_batches 1`
    as one batch (an integer, as Lightning documents) and 0.5 as half the batches. (Lightning annotates them
    float-first, so the parser would turn 1 into 1.0: the whole epoch.)"""

    def __init__(self, *, limit_train_batches: int | float | None = None, limit_val_batches: int | float | None = None,
                 limit_test_batches: int | float | None = None, limit_predict_batches: int | float | None = None,
                 **kwargs):
        super().__init__(limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                         limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches, **kwargs)


def check_writable(folder, flag):
    """Create `folder` if needed and write a file in it, so that a folder the run cannot write to stops it before
    any work rather than at its first save."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(f"{flag} {folder}: not writable ({error.strerror or error}); expected a folder this user "
                          "can create files in") from None


class SaveFitConfig(SaveConfigCallback):
    """The resolved config in a fit's run folder (RunFolder's; evaluation commands make none), and, flattened, to
    every logger as the run's hyperparameters, once, as the fit begins (the module and the data module keep theirs
    from Lightning's automatic logging): TensorBoard's with HParamsWithMetrics' metrics, which tie settings and
    results together in its HPARAMS tab."""

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage):
        run = next((cb.path for cb in trainer.callbacks if isinstance(cb, RunFolder)), None)
        if run is not None and trainer.is_global_zero:
            self.parser.save(self.config, str(run / self.config_filename), skip_none=False, overwrite=True,
                             multifile=self.multifile)
        if self.config.get("ckpt_path") is not None:  # a resumed run's loggers hold them from when it began
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))

        def flat(node, prefix=""):
            if not isinstance(node, dict):
                return {prefix[:-1]: node}
            return {key: value for name, child in node.items()
                    for key, value in flat(child, f"{prefix}{name}.").items()}

        shown = any(isinstance(callback, HParamsWithMetrics) for callback in trainer.callbacks)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and shown:
                logger.log_hyperparams(flat(config), HParamsWithMetrics.placeholders())
            else:
                logger.log_hyperparams(flat(config))


def configured_loggers(settings):
    """The loggers a command's config names by class (`--trainer.logger <class>`, one or a list); not the default."""
    configured = settings.trainer.logger
    return [logger for logger in (configured if isinstance(configured, list) else [configured])
            if hasattr(logger, "class_path")]


class InceptionNeXtCLI(LightningCLI):
    def init_parser(self, **kwargs):
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={L.__version__}"])
        kwargs.setdefault("epilog", "Other commands: " + "; ".join(
            f"{name}: {what} (python -m inception_next {name} --help)" for name, (_, what) in OTHER_COMMANDS.items()))
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=ActionExperimentConfig,
                            help="an experiment YAML (its `extends:` chain applied first); default: the demo")
        return parser

    def add_arguments_to_parser(self, parser):
        parser.add_argument("--extends", type=str | None, default=None,
                            help="in a config file: the file it builds on (applied first by --config)")
        parser.add_argument("--experiment", type=str, default="default",
                            help="run name: runs go to <trainer.default_root_dir>/<experiment>/version_N/, each with "
                                 "its checkpoints/")
        parser.add_argument("--global_batch_size", type=int | None, default=None,
                            help="the recipe's global batch; gradient accumulation is derived from it")
        parser.add_argument("--predict_csv", type=str, default="predictions.csv",
                            help="where `predict` writes file, top-5 class names and probabilities")
        parser.add_argument("--save_every_n_steps", type=int | None, default=None,
                            help="write last.ckpt every N optimizer steps too, not only after each epoch")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.batch_size", "model.batch_size")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"trainer.default_root_dir": "logs", "checkpoint.monitor": "val/top1",
                             "checkpoint.mode": "max", "checkpoint.save_top_k": 1,
                             "checkpoint.auto_insert_metric_name": False,
                             "checkpoint.filename": "best-epoch{epoch:03d}-top1-{val/top1:.4f}",
                             "trainer.callbacks": [{"class_path": path} for path in DEFAULT_CALLBACKS]})

    def _settings(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def _experiment_dir(self, settings):
        return Path(settings.trainer.default_root_dir).expanduser().resolve() / settings.experiment

    def parse_arguments(self, parser, args):
        """As LightningCLI, with the demo's config when a subcommand is given none, and `--ckpt_path` resolved."""
        args = list(sys.argv[1:] if args is None else args)
        if args[:1] and args[0] in self.subcommands() and not any(
                arg in ("-c", "--config") or arg.startswith("--config=") for arg in args):
            args[1:1] = ["--config", str(DEMO_CONFIG)]
        self.config = parser.parse_args(args)
        subcommand = self.config.get("subcommand")
        settings = self.config[subcommand] if subcommand else self.config
        self.resumed_run = self.resumed_step = None
        if subcommand:  # before LightningCLI reads the checkpoint's hyperparameters
            settings.ckpt_path = self._resolve_checkpoint(subcommand, settings)
        if subcommand in ("validate", "test", "predict"):
            self._evaluate_as_trained(settings)

    @staticmethod
    def _evaluate_as_trained(settings):
        """Evaluation labels and preprocesses images as the weights were trained: a checkpoint's classes and image
        size, crop and interpolation (as LightningCLI takes the model's settings from it); released ImageNet
        weights given as --model.pretrained, without a dataset, ImageNet's classes and the variant's input."""
        data = settings.data
        if settings.ckpt_path:
            trained_on = trained_data_settings(settings.ckpt_path)
        elif settings.model.pretrained and data.root is None and data.classes is None:
            name = backbone_name(settings.model.backbone)
            variant = get_variant(name)
            with torch.device("meta"):
                classifier = create_model(name).pretrained_cfg["classifier"]
            rows = read_state_dict(settings.model.pretrained).get(f"{classifier}.weight")
            if rows is None or len(rows) != 1000:
                return
            trained_on = dict(img_size=variant.input_size, crop_pct=variant.crop_pct, interpolation="bicubic",
                              classes=ImageNetInfo().label_names())
        else:
            return
        for key, value in trained_on.items():
            data[key] = value

    def _resolve_checkpoint(self, subcommand, settings):
        """`last` / `best`: the newest whole one of this experiment's newest run (named, so the user sees which);
        a file: checked whole. A fit continues the run that holds its checkpoint, in that run's folder."""
        path = settings.get("ckpt_path")
        if path is None:
            return None
        found, self.resumed_run = choose_checkpoint(path, self._experiment_dir(settings), settings.experiment,
                                                    fit=subcommand == "fit")
        if found is None:
            return None
        if self.resumed_run is not None:
            self.resumed_step = torch.load(found, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        return str(found)

    def _continue_logger_runs(self, settings):
        """A resumed fit logs into the same run of each logger's own store (MLflow's run, W&B's run, TensorBoard's
        and CSV's version) as the run it continues, unless the command names one."""
        recorded = self.resumed_run / LOGGER_IDENTITIES if self.resumed_run else None
        if recorded is None or not recorded.is_file():
            return
        identities = json.loads(recorded.read_text())
        for logger in configured_loggers(settings):
            identity = identities.get(logger.class_path.rsplit(".", 1)[-1], {})
            for key, value in identity.items():
                if logger.init_args.get(key) is None:
                    logger.init_args[key] = value

    def instantiate_classes(self):
        settings = self._settings()
        # Absolute, so that every path the run prints names one place whatever the working folder.
        self.root = Path(settings.trainer.default_root_dir).expanduser().resolve()
        if self.subcommand == "fit":
            check_writable(self._experiment_dir(settings), "--trainer.default_root_dir")
            stale = sorted(self.root.glob("hpc_ckpt_*.ckpt")) if SLURMEnvironment.detect() else []
            if stale:  # Lightning would start this fit from them, whatever the experiment
                raise ConfigError(f"{', '.join(map(str, stale))}: Lightning's auto-requeue checkpoints, which it would "
                                  "load into this run; expected none (this project saves in each run's folder): move "
                                  "them away")
        if self.subcommand == "predict":
            check_writable(Path(settings.predict_csv).expanduser().resolve().parent, "--predict_csv")
        if self.subcommand == "fit" and self.resumed_run is not None:  # it writes there again
            check_writable(checkpoint_folder(self.resumed_run), "checkpoint folder")
            remove_partial_saves(self.resumed_run)
        if self.subcommand == "fit":
            self._continue_logger_runs(settings)
        try:
            super().instantiate_classes()
        except Exception as error:
            raise self._logger_error(settings, error) or error
        # A forward pass on one image of the data's size gives the model summary its FLOPs.
        self.model.example_input_array = torch.zeros(1, 3, self.datamodule.img_size, self.datamodule.img_size)

    @staticmethod
    def _logger_error(settings, error):
        """A configured logger that fails as it is built (its store refused, its package missing) as one line naming
        it and the logger's own reason, or None when the error is not a logger's."""
        failed = next((logger.class_path for logger in configured_loggers(settings)
                       if logger.class_path in str(error)), None)
        if failed is None:
            return None
        cause = error
        while cause.__cause__ or cause.__context__:
            cause = cause.__cause__ or cause.__context__
        detail = " ".join(str(cause).split())
        return LoggerError(f"--trainer.logger {failed.rsplit('.', 1)[-1]}: could not start ({detail})")

    def instantiate_trainer(self, **kwargs):
        settings = self._settings()
        configured = self.config_init[self.subcommand].trainer.callbacks or []
        # RunFolder first: its setup tells the checkpoint callbacks and the config where the run's folder is.
        callbacks = [RunFolder(self._experiment_dir(settings), self.resumed_run)]
        callbacks += list(configured) if isinstance(configured, list) else [configured]
        # In every subcommand, not only fit: Lightning warns when a checkpoint's callbacks are missing on loading it.
        callbacks += [LastCheckpoint(settings.save_every_n_steps), RandomStateInCheckpoints(), Preemption()]
        if self.subcommand == "predict":
            callbacks.append(TopKCSVWriter(settings.predict_csv))
        plugins = self.config_init[self.subcommand].trainer.plugins or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        plugins.append(AtomicCheckpointIO())
        if SLURMEnvironment.detect():  # job signals are Preemption's: no hpc_ckpt_*.ckpt beside every experiment
            plugins.append(SLURMEnvironment(auto_requeue=False))
        if settings.trainer.logger in (None, True):  # the default: a fit's own run folder; evaluation logs nowhere
            # A resumed run purges what the interrupted one logged after its checkpoint, which it logs again.
            resumed = dict(version=self.resumed_run.name, purge_step=self.resumed_step) if self.resumed_run else {}
            kwargs["logger"] = False if self.subcommand != "fit" else TensorBoardLogger(
                save_dir=self.root, name=settings.experiment, default_hp_metric=False, **resumed)
        trainer = super().instantiate_trainer(callbacks=callbacks, plugins=plugins, default_root_dir=str(self.root),
                                              **kwargs)
        self._derive_accumulation(trainer)
        return trainer

    def _warn_if_untrained(self):
        settings = self._settings()
        if settings.ckpt_path is None and not settings.model.pretrained:
            rank_zero_warn(f"{self.subcommand} without --ckpt_path or --model.pretrained: these are untrained, "
                           "randomly initialised weights (--ckpt_path best or last picks this experiment's newest run)")

    def before_validate(self):
        self._warn_if_untrained()
        self.config_init[self.subcommand].verbose = False  # after_validate prints the metrics, rounded

    def before_test(self):
        self._warn_if_untrained()
        self.config_init[self.subcommand].verbose = False

    def _print_metrics(self):
        if self.trainer.is_global_zero:
            metrics = self.trainer.callback_metrics
            print("  ".join(f"{name} {value.item():.4f}" for name, value in sorted(metrics.items())))

    def after_validate(self):
        self._print_metrics()

    def after_test(self):
        self._print_metrics()

    def before_predict(self):
        self._warn_if_untrained()

    def after_predict(self):
        writer = next(cb for cb in self.trainer.callbacks if isinstance(cb, TopKCSVWriter))
        if self.trainer.is_global_zero:
            print(f"predictions: {writer.output.resolve()}")

    def _derive_accumulation(self, trainer):
        """The recipe's global batch as gradient accumulation: a fit's arithmetic alone (evaluation takes any batch)."""
        target = self._settings().global_batch_size
        if target is None or self.subcommand != "fit":
            return
        per_step = self.datamodule.batch_size * trainer.world_size
        if target % per_step:
            raise ConfigError(f"global_batch_size {target}: not a multiple of data.batch_size "
                              f"{self.datamodule.batch_size} x {trainer.world_size} device(s) = {per_step}")
        trainer.accumulate_grad_batches = target // per_step

    def after_fit(self):
        best = next((cb for cb in self.trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)), None)
        last = next((cb for cb in self.trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint)), None)
        run = next(cb.path for cb in self.trainer.callbacks if isinstance(cb, RunFolder))
        if not self.trainer.is_global_zero:
            return
        if run is not None:
            print(f"run: {run}")
        for logger in self.trainer.loggers:
            print(f"logs: {where_to_look(logger)}")
        if best is not None and best.best_model_path:
            score = f" (val/top1 {best.best_model_score:.4f})" if best.best_model_score is not None else ""
            print(f"best checkpoint: {best.best_model_path}{score}")
        if last is not None and last.path is not None and last.path.is_file():
            print(f"last checkpoint: {last.path}")
        if run is not None:  # the run is done: `sweep` skips it, `report` reads it
            metrics = {name: value.item() for name, value in self.trainer.callback_metrics.items()}
            mark_finished(run, experiment=self._settings().experiment, seed=self._settings().seed_everything,
                          epochs=self.trainer.current_epoch, global_step=self.trainer.global_step, final=metrics)


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


def own_message(error):
    """An error raised in a loader worker comes back wrapped in the worker's traceback; its own message is the
    traceback's last line, after the error's name."""
    text = str(error).strip()
    if "Original Traceback" not in text:
        return text
    return text.splitlines()[-1].split(": ", 1)[-1]


def main(args=None):
    args = list(sys.argv[1:] if args is None else args)
    quiet_third_party_noise()
    try:
        if args[:1] and args[0] in OTHER_COMMANDS:
            module, _ = OTHER_COMMANDS[args[0]]
            return importlib.import_module(f"inception_next.{module}").main(args[1:])
        sys.argv = sys.argv[:1] + args  # where DDP's launcher finds the command to start the other processes
        strict = {"exit_on_error": False}  # parse errors come back here, to be printed as one line
        with catch_job_signals():  # from the start: a cluster may signal a job before it trains
            InceptionNeXtCLI(ImageClassifier, ImageNetDataModule, trainer_class=CountingLimitsTrainer,
                             save_config_callback=SaveFitConfig, save_config_kwargs=dict(save_to_log_dir=False),
                             auto_configure_optimizers=False,
                             parser_kwargs={**strict, **{name: strict for name in LightningCLI.subcommands()}})
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


def resolved_config(path):
    """`fit --config PATH --print_config` as a dict: the experiment as fit resolves it (its `extends` chain and
    every default). A config that does not parse has printed its one-line error and exits."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            main(["fit", "--config", str(path), "--print_config"])
    except SystemExit as stop:
        if stop.code:
            raise
    return yaml.safe_load(printed.getvalue())
