"""The commands the README and docs/ show: every `python -m inception_next ...` line of their bash blocks goes through
the parser of its command as written (the experiment files, flags and choices it names), with only the places that
stand for the user's own (a dataset, a checkpoint of a run) pointed at ones the test makes. What each command then
does is tested where its feature is."""

import glob
import re
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
from research_folder import write_research_folder
from small_runs import demo_run

from inception_next.commands import COMMANDS, main
from inception_next.deprecation import RenamedWarning
from inception_next.tools import sweep
from inception_next.training import runs
from inception_next.training.cli import parsed_command

REPO = Path(__file__).parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands():
    """(page, the words after `inception_next`) of each command in a bash block, continuation lines joined and
    comments dropped; a launcher in front of it (srun, torchrun ... -m) left out."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if "inception_next" in words:
                    found.append((page.name, words[words.index("inception_next") + 1:]))
    return found


COMMANDS_SHOWN = documented_commands()


@pytest.fixture(scope="module")
def folder(tiny_dataset, tmp_path_factory):
    """A user's working folder: `experiments/`, a research folder's dilated.yaml and my_mixers.py, and, for each
    experiment a command names with `--ckpt_path best|last` or by path, a run holding a real checkpoint."""
    work = tmp_path_factory.mktemp("user")
    (work / "experiments").symlink_to(REPO / "experiments")
    write_research_folder(work)
    made = tmp_path_factory.mktemp("made")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(made)
        main(["fit", *demo_run(tiny_dataset, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                               "--trainer.limit_val_batches", "1")])
    checkpoint = made / "logs" / "demo" / "version_0" / runs.CHECKPOINTS / runs.LAST
    for experiment in ("tiny", "demo", "finetune", "dilated/seed0"):
        saved = runs.checkpoint_folder(runs.experiment_dir(work / runs.DEFAULT_ROOT, experiment) / "version_0")
        saved.mkdir(parents=True)
        for name in (runs.LAST, "best-epoch000-top1-0.5000.ckpt"):
            shutil.copy(checkpoint, saved / name)
    return work


def test_every_page_shows_commands_and_every_command_is_one_there_is():
    shown = {page for page, _ in COMMANDS_SHOWN}
    assert {"README.md", "data.md", "experiments.md", "clusters.md", "object-storage.md", "comparing.md",
            "benchmarks.md", "models.md"} <= shown
    assert {words[0] for _, words in COMMANDS_SHOWN} <= {"fit", "validate", "test", "predict", *COMMANDS}


@pytest.mark.parametrize("page, words", COMMANDS_SHOWN, ids=[f"{page}:{' '.join(words)[:60]}"
                                                             for page, words in COMMANDS_SHOWN])
def test_a_documented_command_parses_as_written(page, words, folder, monkeypatch):
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    words = [match for word in words for match in (sorted(glob.glob(word)) or [word] if "*" in word else [word])]
    command, args = words[0], words[1:]
    warnings.simplefilter("error", RenamedWarning)  # the docs show the current spellings
    if command == "sweep":  # its own flags, and the fit flags it passes on, as each run's fit parses them
        parsed, fit_flags = sweep.parse(args)
        parsed_command(["fit", "--config", str(parsed.configs[0]), *fit_flags])
        return
    if command in COMMANDS:
        assert COMMANDS[command][0].parse(args) is not None
        return
    if "--print_config" in args:
        with pytest.raises(SystemExit) as stopped:
            parsed_command(words)
        assert stopped.value.code == 0
        return
    config = parsed_command(words)
    if "--ckpt_path" in args and args[args.index("--ckpt_path") + 1] not in ("last",):
        assert Path(config["ckpt_path"]).is_file()  # best, or a path: a checkpoint of the run it names
