"""Every model config against every experiment config, as a user runs it: ``python run.py experiment=E model=M
smoke=true``, with the experiment's own defaults (Caltech-101 parts on where DATA_ROOT holds the data) and random
weights. Each pair either runs (exit 0) or stops with exit 2 and one line saying why, never a traceback.

About 50 minutes on one core (VGG16's pairs 15, a transformer's, detector's or segmenter's 2: they stop at the
config check or build their own networks), so the default test run leaves it out (pyproject: ``-m "not model_matrix"``);
run it with ``python -m pytest -m model_matrix tests/test_model_matrix.py`` (``-k vgg16`` for one model). Each
pair's exit code, wall time and last log line go to ``outputs/model_matrix.md`` as the pairs finish.
"""

import os
import time

import pytest

from conftest import REPO, run_py

MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
# zfnet_evolution reads the checkpoints of train's run with the same model
EXPERIMENTS = ["train"] + sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml") if p.stem != "train")
PAIR_TIMEOUT_S = 1800
TABLE = REPO / "outputs" / "model_matrix.md"

outcomes: dict[tuple[str, str], tuple[str, float, str]] = {}


def write_table() -> None:
    lines = ["| model | experiment | outcome | wall (s) | last line |", "|---|---|---|---|---|"]
    for (model, experiment), (outcome, wall, last) in outcomes.items():
        cell = last.replace("|", "\\|")  # a "|" in the message would end the Markdown cell
        lines.append(f"| {model} | {experiment} | {outcome} | {wall:.0f} | {cell} |")
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def checkpoint_root(tmp_path_factory):
    """One checkpoint folder for the whole matrix: train's runs write there, zfnet_evolution reads them."""
    return tmp_path_factory.mktemp("checkpoints")


@pytest.mark.model_matrix
@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("model", MODELS)
def test_pair_runs_or_says_why_in_one_line(model, experiment, checkpoint_root, tmp_path):
    env = {**os.environ, "CNNVIS_CHECKPOINTS": str(checkpoint_root)}
    start = time.time()
    proc = run_py(f"experiment={experiment}", f"model={model}", "model.pretrained=false", "smoke=true", "threads=1",
                  f"results_dir={tmp_path}", timeout=PAIR_TIMEOUT_S, env=env)
    wall = time.time() - start
    # the run's log goes to stdout (its last line: "done in ..." or the one-line error), a traceback to stderr
    said = [line for line in (proc.stdout if proc.returncode in (0, 2) else proc.stderr).splitlines()
            if line.strip() and "HYDRA_FULL_ERROR" not in line]
    last = said[-1] if said else ""
    outcomes[model, experiment] = ("runs" if proc.returncode == 0 else f"exit {proc.returncode}", wall, last)
    write_table()
    assert proc.returncode in (0, 2), proc.stderr[-3000:]
    if proc.returncode == 2:
        assert "Traceback" not in proc.stderr and "[ERROR]" in last, proc.stdout[-3000:]
