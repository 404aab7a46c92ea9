import os
import sys
from pathlib import Path

from cnnvis.threads import apply_threads, default_passive_wait

default_passive_wait()  # before torch loads: spin-waiting OpenMP threads make a shared machine 5x slower

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("DATA_ROOT", REPO / "data"))

apply_threads()  # the CPUs this process may use (affinity, cgroup quota, OMP_NUM_THREADS), as run.py does


def has_dataset(sub: str) -> bool:
    return (DATA_ROOT / sub).is_dir()


needs_caltech101 = pytest.mark.skipif(
    not has_dataset("caltech101/101_ObjectCategories"),
    reason=f"real Caltech-101 not under DATA_ROOT={DATA_ROOT} "
           "(DATA_ROOT must hold caltech101/101_ObjectCategories/<category>/image_NNNN.jpg)")
needs_imagenet_val = pytest.mark.skipif(
    not has_dataset("imagenet-val-1300"),
    reason=f"imagenet-val-1300 not under DATA_ROOT={DATA_ROOT} "
           "(DATA_ROOT must hold imagenet-val-1300/images/*.JPEG and imagenet-val-1300/labels.txt)")


def assert_argmax_up_to_ties(picked, scores, atol=1e-5):
    """Each index of ``picked`` points at an entry of ``scores`` (its shape + one last dim) within ``atol`` of the
    largest: an argmax over floats from another batch size or kernel may pick either of two near-equal entries."""
    import torch

    chosen = scores.gather(-1, picked.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(chosen, scores.max(-1).values, atol=atol, rtol=0)


def run_py(*args, timeout=600, cwd=REPO, env=None):
    """``python run.py ARGS`` from ``cwd`` (the repository root, as a user runs it), with ``env`` when given."""
    import subprocess

    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
