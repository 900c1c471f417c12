"""The README as a newcomer follows it, from an empty folder: the files its Python and YAML blocks say they are, its
Python snippet, and every `python -m inception_next` command of its bash blocks that runs on a CPU without ImageNet,
as written, but for training shrunk by the flags the README gives for trying it. Each command prints a line at least
every few seconds (a loaded 2-core machine aside: the longest silence allowed is SILENCE)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from small_runs import cli

README = (Path(__file__).parent.parent / "README.md").read_text()
SILENCE = 20.0  # seconds; a line comes every 5 s while a command works, a process takes about 6 s to import torch
SHRINK = shlex.split(re.search(r"To try a training command in seconds,\s+add `([^`]+)`", README).group(1))

pytestmark = pytest.mark.slow  # real commands, one after another


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def commands():
    """The inception_next commands of the bash blocks, in order, but those that need ImageNet or a file of the
    user's own (a /path/to/ in them)."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:3] == ["python", "-m", "inception_next"] and not any("/path/to/" in w for w in words):
                    found.append(words[3:])
    return found


def released_weights(path):
    """A file in the released checkpoints' layout (timm's, random weights), where the README's snippet loads one."""
    torch.save(timm.create_model("inception_next_tiny", pretrained=False).state_dict(), path)


def test_the_readme_shows_what_this_test_runs():
    assert [words[0] for words in commands()] == ["fit", "benchmark", "sweep", "report", "validate"]
    assert "--trainer.max_epochs" in SHRINK


def test_the_readme_from_an_empty_folder(tmp_path):
    folder = tmp_path / "newcomer"
    folder.mkdir()
    for block in blocks("python") + blocks("yaml"):
        named = re.match(r"# ([\w.]+\.(?:py|yaml))[:,]", block)
        if named:
            (folder / named.group(1)).write_text(block)
    assert {"my_mixers.py", "dilated.yaml"} <= {p.name for p in folder.iterdir()}
    snippet = next(block for block in blocks("python") if block.startswith("import inception_next"))
    released_weights(folder / "inceptionnext_tiny.pth")
    ran = subprocess.run([sys.executable, "-c", snippet], cwd=folder, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    for words in commands():
        shrunk = [*words, *SHRINK] if words[0] in ("fit", "sweep") else words
        done = cli(shrunk, cwd=folder)
        times = [seconds for seconds, _ in done.lines]
        assert times, f"{' '.join(words)}: printed nothing"
        silences = [later - earlier for earlier, later in zip(times, times[1:])]
        assert max(silences, default=0.0) < SILENCE, (" ".join(words), done.lines)
        assert not any("\r" in line for _, line in done.lines)  # whole lines: the output is a file here
        shown = [line for _, line in done.lines]
        assert words[0] not in ("fit", "sweep") or any(line.startswith("epoch 1/1: ") for line in shown), shown
    assert (folder / "logs" / "dilated" / "seed1" / "version_0" / "finished.json").is_file()
