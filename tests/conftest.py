import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("DATA_ROOT", REPO / "data"))

torch.set_num_threads(2)


def has_dataset(sub: str) -> bool:
    return (DATA_ROOT / sub).is_dir()


needs_caltech101 = pytest.mark.skipif(
    not has_dataset("caltech101/101_ObjectCategories"),
    reason=f"real Caltech-101 not under DATA_ROOT={DATA_ROOT} (set DATA_ROOT=../shared/datasets)")
needs_imagenet_val = pytest.mark.skipif(
    not has_dataset("imagenet-val-1300"),
    reason=f"imagenet-val-1300 not under DATA_ROOT={DATA_ROOT} (set DATA_ROOT=../shared/datasets)")


def run_py(*args, timeout=600):
    """``python run.py ARGS`` from the repository root, as a user runs it."""
    import subprocess

    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
