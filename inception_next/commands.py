"""The front door: `python -m inception_next <command>` and the `inception-next` script.

    fit, validate, test, predict    LightningCLI over the experiment YAMLs (training.cli)
    benchmark, benchmark-data, prepare, export, sweep, report    the commands around training (below)

Both ways in find a researcher's own modules (a token mixer named by import path in a YAML) in the working folder, as
`python -m` does.
"""

import os
import sys

from .data import prepare
from .deprecation import show_renames_in_one_line
from .errors import UserError, own_message
from .tools import benchmark, data_benchmark, export, report, sweep
from .training import cli

COMMANDS = {  # name: (module with main(argv), what it does)
    "benchmark": (benchmark, "training and inference images/s, params, MACs and memory, ours beside timm's"),
    "benchmark-data": (data_benchmark, "decode + augment images/s per loader worker, ours beside a bare timm loop"),
    "prepare": (prepare, "ImageNet as downloaded (archives, Kaggle, parquet, WebDataset) into class folders"),
    "export": (export, "a checkpoint or released weights to ONNX, checked against onnxruntime"),
    "sweep": (sweep, "each experiment with each seed as a fit, one after another or as SLURM jobs"),
    "report": (report, "finished runs as a table: mean and spread over seeds beside the paper's figures"),
}


def find_modules_in_the_working_folder():
    """`python -m` puts the working folder first on sys.path, a console script its own folder: do as `python -m`."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def main(args=None):
    args = list(sys.argv[1:] if args is None else args)
    find_modules_in_the_working_folder()
    show_renames_in_one_line()
    cli.quiet_third_party_noise()
    if not (args[:1] and args[0] in COMMANDS):
        epilog = "Other commands: " + "; ".join(
            f"{name}: {what} (python -m inception_next {name} --help)" for name, (_, what) in COMMANDS.items())
        return cli.main(args, epilog=epilog)
    module, _ = COMMANDS[args[0]]
    try:
        return module.main(args[1:])
    except UserError as error:
        print(f"error: {own_message(error)}", file=sys.stderr)
        sys.exit(1)
