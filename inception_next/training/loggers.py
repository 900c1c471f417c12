"""The loggers a run writes to (TensorBoard by default; CSV, MLflow, Weights & Biases, any of Lightning's): which ones a
config names, how a resumed fit continues each one's own run, one line for one that cannot start, images to those
that take them, and where to look at each."""

import inspect
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger

from ..errors import UserError


class LoggerError(UserError, RuntimeError):
    """A logger that cannot start (its package, its store, its server); the message names it."""


def logger_identity(logger):
    """The constructor arguments that make a new logger continue `logger`'s run, where its class takes them."""
    name = type(logger).__name__
    if name == "MLFlowLogger":
        return {"run_id": logger.run_id}
    if name == "WandbLogger":
        return {"id": logger.version, "resume": "allow"}
    if "version" in inspect.signature(type(logger)).parameters:  # TensorBoard, CSV
        return {"version": logger.version}
    return {}


def where_to_look(logger):
    """One line saying where a logger's view of the run is."""
    name = type(logger).__name__
    if isinstance(logger, TensorBoardLogger):
        return f"tensorboard --logdir {Path(logger.log_dir).parent.parent}"
    if name == "CSVLogger":
        return f"metrics: {Path(logger.log_dir) / 'metrics.csv'}"
    if name == "MLFlowLogger":
        return f"MLflow run {logger.run_id} at {logger.experiment.tracking_uri}"
    if name == "WandbLogger":
        run = logger.experiment
        return (f"Weights & Biases offline run: wandb sync {Path(run.dir).parent}" if run.offline
                else f"Weights & Biases run: {run.url}")
    return f"{name}: {logger.name} version {logger.version}"


def configured_loggers(settings):
    """The loggers a command's config names by class (`--trainer.logger <class>`, one or a list); not the default."""
    configured = settings.trainer.logger
    return [logger for logger in (configured if isinstance(configured, list) else [configured])
            if hasattr(logger, "class_path")]


def continue_logger_runs(loggers, identities):
    """A resumed fit logs into the same run of each logger's own store (MLflow's run, W&B's run, TensorBoard's and
    CSV's version) as the run it continues (`identities`, as it recorded them), unless the command names one."""
    for logger in loggers:
        for key, value in identities.get(logger.class_path.rsplit(".", 1)[-1], {}).items():
            if logger.init_args.get(key) is None:
                logger.init_args[key] = value


def start_loggers(loggers):
    """Start each logger (its store, its server), or one line naming the one that cannot and its reason."""
    for logger in loggers:
        try:
            logger.experiment
        except Exception as error:  # each package fails its own way: a missing store, a refused server...
            detail = " ".join(str(error).split())
            raise LoggerError(f"--trainer.logger {type(logger).__name__}: could not start ({detail[:300]})") from None


def logger_error(settings, error):
    """A configured logger that fails as it is built (its store refused, its package missing) as one line naming it
    and the logger's own reason, or None when the error is not a logger's."""
    failed = next((logger.class_path for logger in configured_loggers(settings)
                   if logger.class_path in str(error)), None)
    if failed is None:
        return None
    cause = error
    while cause.__cause__ or cause.__context__:
        cause = cause.__cause__ or cause.__context__
    detail = " ".join(str(cause).split())
    return LoggerError(f"--trainer.logger {failed.rsplit('.', 1)[-1]}: could not start ({detail})")


def show_image(logger, tag, image, step):
    """Log a CHW image in [0, 1] to a logger that can take one; False for a logger that cannot (CSV, ...)."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(tag, image, step)
    elif hasattr(logger, "log_image"):  # Weights & Biases
        logger.log_image(key=tag, images=[image], step=step)
    elif type(logger).__name__ == "MLFlowLogger":
        logger.experiment.log_image(logger.run_id, image.permute(1, 2, 0).numpy(), f"{tag.replace('/', '_')}.png")
    else:
        return False
    return True
