"""Every experiment's smoke run draws readable figures: none of them is recorded in ``layout_problems.json``
(cnnvis.plotting.layout: overlapping or cut text, a legend over data, text under 6 pt).

About 8 minutes on one core (the smoke runs of every experiment but the GPU preset), so the default test run leaves
it out (pyproject: ``-m "not slow"``); run it with ``python -m pytest -m slow tests/test_figures_layout.py``.
"""

import json
import os

import pytest

from cnnvis.results import LAYOUT_FILE
from conftest import REPO, run_py

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml") if not p.stem.endswith("_gpu"))


@pytest.fixture(scope="module")
def checkpoint_root(tmp_path_factory):
    """One checkpoint folder for every smoke run: train's run writes there, zfnet_evolution reads it."""
    return tmp_path_factory.mktemp("checkpoints")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["train"] + [e for e in EXPERIMENTS if e != "train"])
def test_smoke_run_figures_have_no_layout_problems(experiment, checkpoint_root, tmp_path):
    env = {**os.environ, "CNNVIS_CHECKPOINTS": str(checkpoint_root)}
    proc = run_py(f"experiment={experiment}", "smoke=true", "threads=1", f"results_dir={tmp_path}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.rglob("*.png")), "the smoke run drew no figure"
    flagged = {str(p.relative_to(tmp_path)): json.loads(p.read_text()) for p in tmp_path.rglob(LAYOUT_FILE)}
    assert flagged == {}, json.dumps(flagged, indent=1)
