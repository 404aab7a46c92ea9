"""cnnvis.threads against fake cgroup trees and a monkeypatched affinity mask; OMP_WAIT_POLICY in a fresh process."""

import os
import subprocess
import sys

import pytest

from cnnvis import threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_cgroup(tmp_path, proc_lines: str, files: dict):
    """A cgroup mount under tmp_path/cgroup with ``files`` ({relative path: text}) and a /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(proc_lines)
    return root, proc


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_v2_quota_caps_affinity(tmp_path, eight_cpus):
    root, proc = fake_cgroup(tmp_path, "0::/job\n", {"job/cpu.max": "250000 100000\n"})
    assert threads.cgroup_cpu_limit(root, proc) == 2.5
    assert threads.available_cpus(root, proc) == 2  # floor of 2.5
    assert threads.torch_threads(None, root, proc) == 2


def test_v2_unlimited_uses_affinity(tmp_path, eight_cpus):
    root, proc = fake_cgroup(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert threads.cgroup_cpu_limit(root, proc) is None
    assert threads.available_cpus(root, proc) == 8


def test_v2_parent_quota_applies_to_child(tmp_path, eight_cpus):
    root, proc = fake_cgroup(tmp_path, "0::/outer/inner\n",
                             {"outer/cpu.max": "300000 100000", "outer/inner/cpu.max": "max 100000"})
    assert threads.available_cpus(root, proc) == 3


def test_v1_quota(tmp_path, eight_cpus):
    root, proc = fake_cgroup(tmp_path, "4:memory:/x\n2:cpu,cpuacct:/\n",
                             {"cpu,cpuacct/cpu.cfs_quota_us": "400000", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert threads.available_cpus(root, proc) == 4


def test_v1_unlimited_and_quota_below_one_cpu(tmp_path, eight_cpus):
    root, proc = fake_cgroup(tmp_path, "1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert threads.available_cpus(root, proc) == 8
    (root / "cpu/cpu.cfs_quota_us").write_text("50000")  # half a CPU: still one thread
    assert threads.available_cpus(root, proc) == 1


def test_no_cgroup_files(tmp_path, eight_cpus):
    assert threads.available_cpus(tmp_path / "absent", tmp_path / "absent_proc") == 8


def test_affinity_smaller_than_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    root, proc = fake_cgroup(tmp_path, "0::/\n", {"cpu.max": "400000 100000"})
    assert threads.torch_threads(None, root, proc) == 2


def test_omp_num_threads_and_explicit_request(tmp_path, eight_cpus, monkeypatch):
    root, proc = fake_cgroup(tmp_path, "0::/\n", {"cpu.max": "200000 100000"})
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")  # a nested list: the outer level counts
    assert threads.torch_threads(None, root, proc) == 3
    assert threads.torch_threads(5, root, proc) == 5  # the config key wins over everything


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_request_names_the_key(bad):
    with pytest.raises(ValueError, match="set threads to a positive integer"):
        threads.torch_threads(bad)


def test_bad_omp_num_threads_names_the_variable(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
        threads.torch_threads(None)


def test_apply_threads_sets_torch():
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.apply_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("user_value, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_import_sets_passive_wait_unless_user_set_it(user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_value:
        env["OMP_WAIT_POLICY"] = user_value
    env["PYTHONPATH"] = os.path.join(REPO, "src")
    code = "import cnnvis, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected



def test_root_config_has_threads_key():
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    from cnnvis.config import Config

    schema = OmegaConf.structured(Config)
    assert schema.threads is None  # automatic by default
    assert OmegaConf.merge(schema, {"threads": 3}).threads == 3
    with pytest.raises(ValidationError):
        OmegaConf.merge(schema, {"threads": "many"})
    assert OmegaConf.load(os.path.join(REPO, "conf", "config.yaml")).threads is None
