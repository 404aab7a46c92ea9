"""The library API: the README's example runs verbatim, every public name resolves, importing is light."""

import subprocess
import sys

import numpy as np
from PIL import Image

import cnnvis
from cnnvis.config import REPO


def readme_example() -> str:
    section = (REPO / "README.md").read_text().split("## Use it as a library", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_library_example_runs_verbatim(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    assert Image.open(tmp_path / "cat_gradcam.png").size == (224, 224)
    assert namespace["heatmap"].shape == (1, 224, 224) and namespace["heatmap"].max() > 0  # ImageNet weights ran


def test_every_public_name_resolves():
    assert all(getattr(cnnvis, name) is not None for name in cnnvis.__all__)


def test_importing_cnnvis_and_building_a_model_pulls_in_neither_matplotlib_nor_hydra():
    code = ("import sys, cnnvis; cnnvis.build_model; cnnvis.GradCAM; "
            "print(sorted(m for m in ('matplotlib', 'hydra', 'omegaconf') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
