"""What an experiment writes: figures (PNG), tables (CSV + Markdown), sweep metrics, and run.json."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from cnnvis.claims import Claim, claims_frame, write_evidence

log = logging.getLogger(__name__)
LAYOUT_FILE = "layout_problems.json"

PACKAGES = ["torch", "torchvision", "numpy", "hydra-core", "omegaconf", "scikit-learn", "pandas", "matplotlib",
            "efficientnet-lite-pytorch"]


class Results:
    """An experiment's output folder."""

    def __init__(self, out_dir):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written: list[str] = []
        self.layout: dict[str, list[str]] = {}  # figure -> its layout problems (cnnvis.plotting.layout)
        # file -> what it shows ({"network", "data"}; a claims table: one per row), for run.json's "shows"
        self.shows: dict[str, dict | list[dict]] = {}

    def path(self, name: str) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.written.append(name)
        return path

    def figure(self, fig, name: str, dpi: int = 80, shows: dict | None = None) -> Path:
        """Save a matplotlib figure as ``<name>.png`` and close it; its layout problems (overlapping or cut text,
        a legend over data, text under 6 pt) are logged and recorded in ``layout_problems.json``. ``shows``
        (``RunRecord.shown``): the networks and data of this figure, where the run has others too."""
        import matplotlib.pyplot as plt

        from cnnvis.plotting.layout import layout_problems

        problems = layout_problems(fig)
        path = self.path(f"{name}.png")
        if shows is not None:
            self.shows[path.name] = shows
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        log.info("figure %s", path)
        if problems:
            log.warning("figure %s has %d layout problem(s): %s", path, len(problems), "; ".join(problems[:3]))
            self.layout[f"{name}.png"] = problems
            (self.dir / LAYOUT_FILE).write_text(json.dumps(self.layout, indent=1))
        return path

    def table(self, df: pd.DataFrame, name: str, title: str | None = None, notes: str | None = None) -> Path:
        """Save a table as ``<name>.csv`` and ``<name>.md`` (title, table, notes)."""
        df.to_csv(self.path(f"{name}.csv"), index=False)
        parts = [f"# {title}\n"] if title else []
        parts.append(markdown_table(df))
        if notes:
            parts.append(f"\n{notes.strip()}\n")
        md = self.path(f"{name}.md")
        md.write_text("\n".join(parts))
        log.info("table %s\n%s", md, markdown_table(df))
        return md

    def claims(self, claims: list[Claim], name: str = "claims", title: str | None = None,
               notes: str | None = None, shows: list[dict] | None = None) -> Path:
        """A claims table (``<name>.csv``/``.md``) and the values behind its verdicts (``<name>_evidence.npz``);
        ``shows``: each row's networks and data (``RunRecord.shown``), where the run has others too."""
        if shows is not None:
            if len(shows) != len(claims):
                raise ValueError(f"shows has {len(shows)} entries for {len(claims)} claims: give one per row")
            self.shows[f"{name}.csv"] = list(shows)
        write_evidence(self.path(f"{name}_evidence.npz"), claims)
        return self.table(claims_frame(claims), name, title, notes)

    def metrics(self, values: dict) -> Path:
        """Scalar metrics of this run (``summary.json``), gathered across jobs by a multirun sweep."""
        path = self.path("summary.json")
        path.write_text(json.dumps(values, indent=2, default=float))
        return path


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub Markdown table (no tabulate dependency)."""

    def fmt(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def git_commit(repo=None) -> str:
    """HEAD of the repository, with "+dirty" when a tracked file outside results/ differs from it (results/
    holds outputs that no run reads, and a canonical re-run rewrites it between runs)."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance_problems(results_root) -> list[tuple[Path, str]]:
    """Every run.json under ``results_root`` whose commit is unknown, dirty, or not an ancestor of HEAD
    (of the repository that holds ``results_root``), with the reason."""
    root = Path(results_root)
    problems = []
    for run_json in sorted(root.rglob("run.json")):
        commit = json.loads(run_json.read_text()).get("git_commit", "unknown")
        if commit == "unknown":
            problems.append((run_json, "commit unknown"))
        elif commit.endswith("+dirty"):
            problems.append((run_json, f"{commit}: run from a tree with uncommitted changes"))
        elif subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=root,
                            capture_output=True).returncode != 0:
            problems.append((run_json, f"{commit}: not an ancestor of HEAD"))
    return problems


def environment(device) -> dict:
    import torch

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    device_name = torch.cuda.get_device_name(device) if str(device).startswith("cuda") else (platform.processor() or platform.machine())
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "device": str(device),
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def write_run_json(out_dir, cfg: DictConfig, device, wall_time_s: float, overrides, commit: str, metrics=None,
                   extra=None) -> Path:
    """run.json; ``commit`` is git_commit() read when the run started, before the run wrote anything."""
    record = {
        "experiment": cfg.experiment.name,
        "overrides": list(overrides),
        "seed": cfg.seed,
        "smoke": cfg.smoke,
        "git_commit": commit,
        "wall_time_s": round(wall_time_s, 2),
        **environment(device),
        "metrics": metrics or {},
        **(extra or {}),
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }
    path = Path(out_dir) / "run.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    return path
