"""The entry point: config files and their `extends:` chains, the demo default, --help, a regular install."""

import ast
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from research_folder import write_research_folder
from small_runs import SMALL

from inception_next.commands import main
from inception_next.training.config import EXPERIMENTS, ConfigError, config_chain

REPO = Path(__file__).parent.parent


def printed_config(args, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--print_config"])
    assert stopped.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("form", [["-c", "{}"], ["--config", "{}"], ["--config={}"]])
def test_a_config_applies_its_extends_chain_and_names_the_run(form, capsys):
    ablation = EXPERIMENTS / "ablations/table8/band_kernel_7.yaml"
    config = printed_config(["fit", *[part.format(ablation) for part in form]], capsys)
    assert config["model"]["backbone_args"] == {"mixer_args": {"band_kernel_size": 7}}  # the ablation
    assert config["model"]["backbone"] == "inception_next_tiny" and config["model"]["drop_path_rate"] == 0.1  # tiny
    assert config["trainer"]["max_epochs"] == 310 and config["global_batch_size"] == 4096  # the recipe
    assert config["experiment"] == "band_kernel_7" and config["extends"] is None


def test_later_flags_and_files_override_earlier_ones(tmp_path, capsys):
    mine = tmp_path / "configs" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text(f"extends: {EXPERIMENTS / 'tiny.yaml'}\nmodel:\n  drop_path_rate: 0.2\n"
                    "data:\n  root: ../imagenet\n")
    config = printed_config(["fit", "-c", str(mine), "--model.drop_path_rate", "0.3", "--experiment", "named"],
                            capsys)
    assert config["model"]["drop_path_rate"] == 0.3 and config["experiment"] == "named"
    assert config["data"]["root"] == str(mine.parent / "../imagenet")  # relative to the file, not to here
    assert config["model"]["backbone"] == "inception_next_tiny"


def test_without_a_config_a_subcommand_runs_the_demo(capsys):
    config = printed_config(["fit"], capsys)
    assert config["experiment"] == "demo" and config["data"]["root"] is None and config["data"]["img_size"] == 64


def test_an_experiment_file_states_only_what_differs():
    chain = config_chain(EXPERIMENTS / "ablations/table8/band_kernel_7.yaml")
    assert [p.name for p in chain] == ["recipe.yaml", "tiny.yaml", "band_kernel_7.yaml"]
    assert set(yaml.safe_load(chain[-1].read_text())) == {"extends", "model"}


def test_config_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no such file"):
        config_chain(tmp_path / "absent.yaml")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "-c", str(tmp_path / "loop.yaml")])
    assert stopped.value.code == 1
    loop = tmp_path / "loop.yaml"
    assert capsys.readouterr().err.strip() == f"error: --config {loop}: `extends` loops back to itself"


def test_a_config_found_nowhere_is_one_line_naming_the_nearest_packaged_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", "experiments/tinny.yaml"])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("error: --config experiments/tinny.yaml: no such file, nor a packaged experiment of that "
                          "name; expected a YAML file or a packaged experiment (tiny, "), err


def test_a_file_where_the_command_runs_wins_over_the_packaged_one_of_its_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "tiny.yaml").write_text("extends: tiny.yaml\nexperiment: mine\n")  # the packaged
    config = printed_config(["fit", "--config", "experiments/tiny.yaml"], capsys)
    assert config["experiment"] == "mine" and config["model"]["backbone"] == "inception_next_tiny"
    assert printed_config(["fit", "--config", "ablations/table8/no_square"], capsys)["experiment"] == "no_square"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for command in ("fit", "validate", "test", "predict", "benchmark:", "benchmark-data:"):
        assert command in shown


@pytest.mark.slow
def test_a_regular_install_runs_packaged_experiments_from_any_folder_and_a_researchers_own(tmp_path):
    """`pip install .` (not editable): the experiments ship inside the package. The wheel goes into a new
    environment that borrows this one's dependencies (torch and the rest) but not its editable install. From an
    empty folder `--config experiments/debug.yaml` and `--config debug` are the packaged experiment; in a
    researcher's folder holding an experiments/debug.yaml of their own, theirs wins, and the `inception-next` script
    (which puts its own folder first on sys.path, not the working one) finds their mixer as `python -m` does."""
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # Built from a copy: setuptools writes build/ and *.egg-info into the folder it builds, not into the checkout.
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "logs", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("inception_next-*.whl"))
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    dependencies = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (target / "dependencies.pth").write_text("\n".join(dependencies) + "\n")  # a plain path list: no editable finder
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere, research = tmp_path / "elsewhere", tmp_path / "research"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import inception_next; print(inception_next.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target))  # the wheel's copy, not the checkout
    packaged = target / "inception_next" / "experiments"
    (research / "experiments").mkdir(parents=True)  # a file of the packaged one's name, which wins here
    (research / "experiments" / "debug.yaml").write_text(write_research_folder(research, packaged).read_text())
    script = target / "bin" / "inception-next"  # run by the new environment's python, as its own script would be
    runs = {"packaged, from an empty folder": (elsewhere, ["-m", "inception_next", "fit", "--config",
                                                          "experiments/debug.yaml", *SMALL, "--trainer.fast_dev_run",
                                                          "1"]),
            "by its short name": (elsewhere, ["-m", "inception_next", "fit", "--config", "debug", "--print_config"]),
            "the script, a local file of the same name": (research, [str(script), "fit", "--config",
                                                                     "experiments/debug.yaml", *SMALL,
                                                                     "--trainer.max_epochs", "1",
                                                                     "--trainer.limit_train_batches", "2"])}
    done = {how: subprocess.run([str(python), *command], cwd=folder, capture_output=True, text=True, timeout=600,
                                env=dict(os.environ, PYTHONPATH="")) for how, (folder, command) in runs.items()}
    for how, result in done.items():
        assert result.returncode == 0, (how, result.stderr[-3000:])
    said = f"--config experiments/debug.yaml: the packaged experiment {packaged / 'debug.yaml'}"
    assert said in done["packaged, from an empty folder"].stderr
    assert yaml.safe_load(done["by its short name"].stdout)["experiment"] == "debug"
    assert "packaged experiment" not in done["the script, a local file of the same name"].stderr.split("extends")[0]
    trained = yaml.safe_load((research / "logs" / "debug" / "version_0" / "config.yaml").read_text())
    assert trained["model"]["backbone"]["token_mixer"] == "my_mixers.DilatedBand"  # the local file, its own mixer
    assert "from inception_next.commands import main" in script.read_text()


LAYERS = ["inception_next.errors", "inception_next.deprecation", "inception_next.jobs", "inception_next.progress",
          "inception_next.models",
          "inception_next.data", "inception_next.training", "inception_next.tools"]  # bottom to top
TOP = ("inception_next.commands", "inception_next.__main__", "inception_next")  # the front door: anything


def package_imports(by_name=False):
    """{module: the package's modules it imports} (relative imports resolved, `from . import x` to module x); with
    `by_name`, also those a string names (an import by name, such as a moved name's new place)."""
    package = REPO / "inception_next"
    names = {".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
             for path in package.rglob("*.py")}

    def module_of(dotted):
        parts = dotted.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in names), None)

    graph = {}
    for name, path in names.items():
        here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here.split(".")[:len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                modules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in names]
                deps.update(modules or [target])
            elif by_name and isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                    r"inception_next(\.\w+)+", node.value) and module_of(node.value):
                deps.add(module_of(node.value))
        graph[name] = deps - {name}
    return graph


def layer(module):
    return next((i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + ".")), None)


def test_the_package_has_no_import_cycle():
    graph = package_imports()

    def reaches(start, goal, seen=()):
        return any(dep == goal or (dep not in seen and reaches(dep, goal, seen + (dep,)))
                   for dep in graph.get(start, ()))

    assert not [module for module in graph if reaches(module, module)]


def test_each_layer_imports_only_the_layers_below_it():
    """errors, deprecation, jobs, progress < models (pure torch) < data < training < tools < the front door
    (commands), by import or by a module's name in a string; no exception."""
    graph = package_imports(by_name=True)
    assert {module for module in graph if layer(module) is None} == set(TOP)
    wrong = [(module, dep) for module, deps in graph.items() if module not in TOP for dep in deps
             if layer(dep) is None or layer(dep) > layer(module)]
    assert not wrong
    assert all(graph[f"inception_next.{bottom}"] == set() for bottom in ("deprecation", "jobs", "progress"))


THIRD_PARTY = ("torch", "lightning", "timm")


def private_names(tree):
    """Private names of torch, Lightning or timm a module reaches: imported, or by attribute from an import."""
    roots, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                         if alias.name.split(".")[0] in THIRD_PARTY)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in THIRD_PARTY:
            found += [f"{node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_")]
            found += [node.module] if any(part.startswith("_") for part in node.module.split(".")) else []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in roots:
                found.append(ast.unparse(node))
    return found


def test_every_room_can_be_read_and_uses_only_public_names():
    """No class over 150 lines, no function over 60, no module over 750 (the model file may be longer: it reads as
    the paper does); no private name of torch, Lightning or timm, in the package or its tests."""
    too_big, private = [], []
    for path in sorted([*(REPO / "inception_next").rglob("*.py"), *(REPO / "tests").rglob("*.py")]):
        text = path.read_text()
        tree = ast.parse(text)
        where = path.relative_to(REPO)
        if len(text.splitlines()) > 750 and path.name != "inception_next.py" and "tests" not in path.parts:
            too_big.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(tree):
            limit = 150 if isinstance(node, ast.ClassDef) else 60 if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if limit and "tests" not in path.parts and node.end_lineno - node.lineno + 1 > limit:
                too_big.append(f"{where}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
        private += [f"{where}: {name}" for name in private_names(tree)]
    assert not too_big and not private
