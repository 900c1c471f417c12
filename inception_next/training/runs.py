"""What a fit leaves in its folder, `<logs>/<experiment>/version_N`: the FINISHED marker the CLI writes when a fit
returns, and the finished runs read back from their folders, which notebooks/runs.ipynb and `report` show."""

import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from .checkpoints import checkpoints_of, run_folders

FINISHED = "finished.json"  # what the CLI writes into a run's folder when its fit returns: its final metrics


def mark_finished(run, **record):
    """The run is done (`sweep` skips it, `report` reads it): `record` (its final metrics) in its FINISHED file."""
    Path(run, FINISHED).write_text(json.dumps(record, indent=1))


def finished_runs(logs):
    """Experiment name -> its newest finished run, for every experiment under `logs` (a sweep's experiments are
    nested: `<experiment>/seed<N>`)."""
    runs = {}
    for marker in sorted(Path(logs).rglob(FINISHED)):
        experiment = marker.parent.parent
        name = experiment.relative_to(logs).as_posix()
        if name not in runs:
            runs[name] = next(run for run in run_folders(experiment) if (run / FINISHED).is_file())
    return runs


def best_checkpoint(run):
    return checkpoints_of(run, "best")[0]


def scalars(run, tag):
    """(steps, values) of one TensorBoard scalar, over all of the run's event files (a resumed run has several;
    where they overlap, the later one wins)."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return [], []
    by_step = {event.step: event.value for event in events.Scalars(tag)}
    steps = sorted(by_step)
    return steps, [by_step[step] for step in steps]
