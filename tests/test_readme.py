"""The README's commands run as written (set-up excepted), so that the README cannot drift from the code: every
``python run.py ...`` composes, as ``--cfg job`` would, once per swept value; the library example runs; the main
command runs through the shell as printed; the scripts and modules it names exist; every experiment has its row."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException

from cnnvis.config import REPO, check_config, register_configs
from experiments import experiment_configs, experiment_names

register_configs(experiment_configs())

README = (REPO / "README.md").read_text()
# the README's placeholders, as a user fills them in (dataset.root=PATH: a folder of one's own images)
FILLED_IN = {"<partition>": "gpu", "dataset.root=PATH": "dataset.root=/tmp/my_images", "--nproc_per_node=N": ""}


def fenced_blocks(text: str, language: str = "") -> list[str]:
    """The fenced blocks tagged ``language`` (none: shell commands), shell continuation lines joined."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)  # in order, so fences pair up
    return [body.replace("\\\n", " ") for tag, body in blocks if tag == language]


def shell_commands(text: str) -> list[str]:
    """Every command line of the shell blocks, ``for x in ...; do ...; done`` unrolled, plus every inline
    ``python ...`` / ``torchrun ...`` code span that is a command rather than a template (``[key=value ...]``)."""
    lines = [line for block in fenced_blocks(text) for line in block.splitlines()]
    lines += [span for span in re.findall(r"`((?:python|torchrun) [^`]+)`", text) if "..." not in span]
    commands = []
    for line in lines:
        for placeholder, value in FILLED_IN.items():
            line = line.replace(placeholder, value)
        loop = re.fullmatch(r"\s*for (\w+) in (.+?); do (.+?); done\s*", line)
        if loop:
            commands += [loop[3].replace(f"${loop[1]}", value) for value in loop[2].split()]
        elif line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def run_py_arguments(text: str) -> list[list[str]]:
    """The arguments after ``run.py`` of every command that runs it, as the shell splits them."""
    found = []
    for command in shell_commands(text):
        words = shlex.split(command, comments=True)
        if "run.py" in words:
            found.append(words[words.index("run.py") + 1:])
    return found


def composed_configs(arguments: list[str]):
    """What ``python run.py ARGUMENTS --cfg job`` composes; a sweep (``a=1,2``) once per value of each swept key."""
    overrides = OverridesParser.create().parse_overrides([a for a in arguments if not a.startswith("--")])
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    swept = [o for o in overrides if o.is_sweep_override()]
    firsts = [f"{o.key_or_group}={next(o.sweep_string_iterator())}" for o in swept]
    variants = [fixed + firsts] + [fixed + firsts[:i] + [f"{o.key_or_group}={value}"] + firsts[i + 1:]
                                   for i, o in enumerate(swept) for value in list(o.sweep_string_iterator())[1:]]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for variant in variants:
            cfg = compose(config_name="config", overrides=variant, return_hydra_config=True)
            check_config(cfg)
            yield cfg


def test_every_run_py_command_of_the_readme_composes():
    commands = run_py_arguments(README)
    assert len(commands) >= 30  # the gallery, the tables, the blocks: the parser finds them
    assert ["--multirun", "experiment=activation_max_sweep"] in [c[:2] for c in commands]
    for arguments in commands:
        for cfg in composed_configs(arguments):
            assert cfg.experiment.name in experiment_names(), arguments


@pytest.mark.parametrize("drifted", ["python run.py experiment=no_such_experiment",
                                     "python run.py experiment=filters experiment.no_such_key=3",
                                     "python run.py --multirun experiment=filters model=alexnet,no_such_model"])
def test_a_readme_naming_an_unknown_experiment_key_or_choice_fails(drifted):
    [arguments] = run_py_arguments(f"```\n{drifted}\n```\n")
    with pytest.raises(ConfigCompositionException):
        list(composed_configs(arguments))


def test_every_experiment_has_a_row_in_the_readme_table():
    rows = set(re.findall(r"^\| `(\w+)` \| `python run\.py experiment=\1", README, re.M))
    assert rows == set(experiment_names())


def figure_patterns(experiment: str) -> list[str]:
    """The names ``experiments/<experiment>.py`` passes to ``out.figure``, as regular expressions for the written
    files: a formatted part (``f"{name}_grid"``) matches any ``<placeholder>`` the README writes for it."""
    import ast

    found = []
    for node in ast.walk(ast.parse((REPO / "experiments" / f"{experiment}.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "figure" and len(node.args) > 1:
            name = node.args[1]
            parts = name.values if isinstance(name, ast.JoinedStr) else [name]
            found.append("".join(re.escape(p.value) if isinstance(p, ast.Constant) and isinstance(p.value, str)
                                 else "<[^>]+>" for p in parts) + re.escape(".png"))
    return found


def test_the_figures_table_lists_each_experiments_figures_and_no_other():
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*?) \|$", README.split("The figures each experiment writes")[1].split(
        "\n\n", 2)[1], re.M))
    assert sorted(rows) == experiment_names()
    for experiment, cell in rows.items():
        listed, patterns = re.findall(r"`([^`]+\.png)`", cell), figure_patterns(experiment)
        assert patterns and listed, experiment
        assert [p for p in patterns if not any(re.fullmatch(p, f) for f in listed)] == [], experiment
        assert [f for f in listed if not any(re.fullmatch(p, f) for p in patterns)] == [], experiment


def test_the_scripts_and_modules_the_readme_names_exist():
    commands = shell_commands(README) + re.findall(r"`(python [^`]+)`", README)
    scripts = {w for c in commands for w in shlex.split(c, comments=True) if w.endswith(".py")}
    modules = {m for c in commands for m in re.findall(r"python -m ([\w.]+)", c)}
    assert "benchmarks/occlusion.py" in scripts and "cnnvis.scoreboard" in modules
    assert [s for s in scripts if not (REPO / s).is_file()] == []
    assert [m for m in modules if importlib.util.find_spec(m) is None] == []


def test_the_library_example_runs(tmp_path):
    [example] = fenced_blocks(README, "python")
    from PIL import Image

    Image.new("RGB", (300, 240), (200, 120, 40)).save(tmp_path / "cat.jpg")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the example reads cat.jpg and writes cat_gradcam.png beside it
    try:
        exec(compile(example, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert (tmp_path / "cat_gradcam.png").stat().st_size > 1000


def test_the_main_command_runs_in_the_shell_as_printed(tmp_path):
    [main_block] = [b for b in fenced_blocks(README) if "export DATA_ROOT" in b and "zfnet_occlusion" in b]
    # as printed, with the interpreter running the tests and --cfg job: the shell and run.py, not the 15 minutes
    script = main_block.replace("python run.py", f"{shlex.quote(sys.executable)} {REPO / 'run.py'}")
    script = script.replace("experiment=zfnet_occlusion", "experiment=zfnet_occlusion --cfg job --resolve")
    result = subprocess.run(["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "name: zfnet_occlusion" in result.stdout and "root: /path/to/datasets" in result.stdout


def test_the_readme_says_where_its_sweep_goes_and_a_smoke_sweep_goes_elsewhere():
    from cnnvis.runner import sweep_destination

    sweep = next(a for a in run_py_arguments(README) if a[:2] == ["--multirun", "experiment=activation_max_sweep"])
    real = sweep_destination(next(composed_configs(sweep)))
    smoke = sweep_destination(next(composed_configs([*sweep, "smoke=true"])))
    assert real == Path("results/activation_max/multirun") and f"into `{real}/`" in README
    assert smoke.parent == real.parent and smoke != real and f"goes to `{smoke.name}/` beside it" in README
