"""Finished runs read back from their folders, `<logs>/<experiment>/version_N`: what notebooks/runs.ipynb shows."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from .checkpoints import checkpoints_of, run_folders


def finished_runs(logs):
    """Experiment name -> its newest run that saved a best checkpoint (a run killed before its first validation
    has none)."""
    runs = {}
    for experiment in sorted(p for p in Path(logs).glob("*") if p.is_dir()):
        run = next((r for r in run_folders(experiment) if checkpoints_of(r, "best")), None)
        if run is not None:
            runs[experiment.name] = run
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
