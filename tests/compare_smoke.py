"""Every experiment's smoke run at two revisions, table by table (issue 24 item 6): a refactor that changes no
behaviour leaves every table and claim as it was.

    python tests/compare_smoke.py BASE [HEAD] [--experiments NAME ...] [--keep]

BASE and HEAD are git revisions; without HEAD, the working tree (uncommitted changes included). A revision is checked
out as a detached worktree under a temporary folder (removed at the end unless ``--keep``). Each experiment (the
names of HEAD's conf/experiment/*.yaml, or ``--experiments``) runs ``python run.py experiment=<name> smoke=true
threads=1 results_dir=<tmp>`` in each tree, with a data cache and a checkpoint folder of its own per side
(CNNVIS_CACHE, CNNVIS_CHECKPOINTS), so neither side reuses the other's work; DATA_ROOT is passed through.

Compared: every CSV either run wrote, and run.json's metrics. Claims tables (``claims*.csv``) must be the same text;
any other table (the metrics: one row) the same columns and rows, numbers within ``--tolerance`` (absolute, 1e-6),
the rest the same text. Columns that time the run (seconds, minutes, wall time, ``*_s``) are left out, and each
side's own folders read as ``<tree>`` and ``<out>``. Prints one line per experiment and a summary; exits 1 when a table differs or a run fails.

Not collected by pytest (no ``test_`` prefix): it runs every experiment twice.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TIMING = re.compile(r"second|minute|wall_time|(^|_)s$")


def experiment_names(tree: Path) -> list[str]:
    return sorted(p.stem for p in (tree / "conf" / "experiment").glob("*.yaml"))


def smoke_run(tree: Path, name: str, out: Path, timeout: float) -> subprocess.CompletedProcess:
    """``name``'s smoke run from ``tree`` into ``out/<name>``, with ``out``'s own cache and checkpoints."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), str(tree)]),
           "CNNVIS_CACHE": str(out / "cache"), "CNNVIS_CHECKPOINTS": str(out / "checkpoints")}
    command = [sys.executable, "run.py", f"experiment={name}", "smoke=true", "threads=1", f"results_dir={out}"]
    try:
        return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, "timeout", "", f"no result after {timeout:.0f} s")


def read_csv(path: Path, folders: dict[str, str]) -> str:
    """The file's text with each side's own folders (``folders``: {path: placeholder}) replaced."""
    text = path.read_text()
    for folder, placeholder in folders.items():
        text = text.replace(folder, placeholder)
    return text


def table_difference(base: pd.DataFrame, head: pd.DataFrame, tolerance: float) -> str | None:
    """What differs between two tables (None: nothing), timing columns left out."""
    base, head = (t.drop(columns=[c for c in t.columns if TIMING.search(str(c))]) for t in (base, head))
    if list(base.columns) != list(head.columns):
        return f"columns {sorted(set(base.columns) ^ set(head.columns)) or 'in another order'}"
    if len(base) != len(head):
        return f"{len(base)} vs {len(head)} rows"
    differing = []
    for column in base.columns:
        a, b = base[column], head[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            same = np.isclose(a.to_numpy(float), b.to_numpy(float), rtol=0, atol=tolerance, equal_nan=True)
        else:  # text, missing in both counts as the same
            same = np.array([x == y or (pd.isna(x) and pd.isna(y)) for x, y in zip(a, b)], dtype=bool)
        if not same.all():
            differing.append(f"{column} ({int((~same).sum())} rows)")
    return f"values in {', '.join(differing)}" if differing else None


def compare_outputs(base: Path, head: Path, folders: tuple[dict, dict], tolerance: float) -> tuple[int, list[str]]:
    """(tables compared, what differs: one phrase per table) between two runs' folders; run.json's metrics are one
    more table."""
    tables = sorted({p.relative_to(d).as_posix() for d in (base, head) for p in d.rglob("*.csv")})
    differences = []
    for table in tables:
        present = [(d / table).is_file() for d in (base, head)]
        if not all(present):
            differences.append(f"{table} (only in {'base' if present[0] else 'head'})")
            continue
        texts = [read_csv(d / table, f) for d, f in zip((base, head), folders)]
        if Path(table).name.startswith("claims"):
            if texts[0] != texts[1]:
                differences.append(f"{table} (claims differ)")
            continue
        why = table_difference(*(pd.read_csv(io.StringIO(t)) for t in texts), tolerance)
        if why:
            differences.append(f"{table} ({why})")
    metrics = [pd.DataFrame([json.loads((d / "run.json").read_text())["metrics"]]) for d in (base, head)]
    why = table_difference(*metrics, tolerance)
    if why:
        differences.append(f"run.json metrics ({why})")
    return len(tables), differences


def failure(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return f"exit {result.returncode}: {lines[-1] if lines else '(no output)'}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="git revision before the change")
    parser.add_argument("head", nargs="?", help="git revision after it (default: the working tree)")
    parser.add_argument("--experiments", nargs="+", help="these experiments only (default: every one)")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="absolute, for numbers")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the worktrees and outputs")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="compare_smoke-"))
    trees, worktrees = {}, []
    for side, revision in (("base", args.base), ("head", args.head)):
        if revision is None:
            trees[side] = REPO
            continue
        trees[side] = tmp / f"tree-{side}"
        subprocess.run(["git", "worktree", "add", "--detach", str(trees[side]), revision], cwd=REPO, check=True,
                       capture_output=True)
        worktrees.append(trees[side])
    outs = {side: tmp / f"out-{side}" for side in trees}
    folders = tuple({str(outs[side]): "<out>", str(trees[side]): "<tree>"} for side in ("base", "head"))
    print(f"base: {args.base} ({trees['base']}); head: {args.head or 'working tree'} ({trees['head']}); outputs in "
          f"{tmp}", flush=True)
    counts = {"identical": 0, "differ": 0, "failed": 0}
    try:
        for name in args.experiments or experiment_names(trees["head"]):
            runs = {side: smoke_run(trees[side], name, outs[side], args.timeout) for side in ("base", "head")}
            failed = [f"in {side} ({failure(r)})" for side, r in runs.items() if r.returncode != 0]
            if failed:
                counts["failed"] += 1
                print(f"{name}: failed {'; '.join(failed)}", flush=True)
                continue
            n, differences = compare_outputs(outs["base"] / name, outs["head"] / name, folders, args.tolerance)
            counts["differ" if differences else "identical"] += 1
            print(f"{name}: " + (f"differs: {'; '.join(differences)}" if differences else
                                 f"identical ({n} tables and the metrics)"), flush=True)
    finally:
        if not args.keep:
            for tree in worktrees:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{sum(counts.values())} experiments: {counts['identical']} identical, {counts['differ']} differ, "
          f"{counts['failed']} failed")
    return int(counts["differ"] + counts["failed"] > 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
