"""Which source and config a result came from, and whether HEAD still has that source.

run.json records ``config_sha256`` (of the resolved config as the run started) and ``source``: ``sha256`` and
``conf``, the conf/ files Hydra composed for the run. The source hash is the sha256 of the lines
``<path> <git blob id>`` (the id ``git hash-object`` gives the file), sorted by path, of every ``.py`` file git
tracks under ``src/cnnvis/``, of ``experiments/<name>.py`` and of the ``conf`` files. A run hashes its working
tree's files; a committed result is checked against a revision's (``git ls-tree``), so both hash the same bytes the
same way.

A result whose hash differs from HEAD's is stale; its reason is run.json's ``stale_reason`` or a line
``- <folder>: <reason>`` in ``results/STALE.md`` (``<folder>``: the result's folder under results/, or its first
part, so one line covers a sweep). ``python -m cnnvis.provenance [results folder]``, run in the repository, prints
each result's status.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

SOURCE_FOLDERS = ("src/cnnvis", "experiments", "conf")
STALE_FILE = "STALE.md"
STALE_LINE = re.compile(r"^\s*[-*]\s+`?(?P<folder>[^`:\s]+)`?\s*:\s*(?P<reason>\S.*)$")


class ResultStatus(NamedTuple):
    folder: str  # the result's folder under results/
    state: str  # current | stale | no source hash
    reason: str = ""  # why a stale result was not re-run ("" when none is recorded)


def config_sha256(config: dict) -> str:
    """sha256 of a resolved config (a plain dict), its keys sorted."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def blob_id(data: bytes) -> str:
    """The id git gives a file with these bytes (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def working_tree_blobs(repo) -> dict[str, str]:
    """{path: blob id} of the working tree's files that git tracks under SOURCE_FOLDERS."""
    paths = _git(repo, "ls-files", "-z", "--", *SOURCE_FOLDERS).split("\0")
    return {p: blob_id((Path(repo) / p).read_bytes()) for p in paths if p and (Path(repo) / p).is_file()}


def revision_blobs(repo, revision: str = "HEAD") -> dict[str, str]:
    """{path: blob id} of the files under SOURCE_FOLDERS at ``revision``."""
    blobs = {}
    for entry in _git(repo, "ls-tree", "-r", "-z", revision, "--", *SOURCE_FOLDERS).split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            blobs[path] = meta.split()[2]
    return blobs


def source_sha256(blobs: dict[str, str], experiment: str, conf: list[str]) -> str:
    """The source hash of the module docstring, from ``blobs`` ({path: blob id}); a missing file hashes as such."""
    files = {p for p in blobs if p.startswith("src/cnnvis/") and p.endswith(".py")}
    files |= {f"experiments/{experiment}.py", *conf}
    lines = "".join(f"{p} {blobs.get(p, 'missing')}\n" for p in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def stale_reasons(results_root) -> dict[str, str]:
    """{folder: reason} from ``results_root/STALE.md``'s ``- <folder>: <reason>`` lines."""
    path = Path(results_root) / STALE_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    return {m["folder"]: m["reason"].strip() for m in map(STALE_LINE.match, lines) if m}


def result_statuses(results_root, repo, revision: str = "HEAD") -> list[ResultStatus]:
    """Each run.json under ``results_root``: current (its source hash is ``revision``'s), stale (with the recorded
    reason, or "" when none is), or no source hash (written before run.json recorded one)."""
    root = Path(results_root)
    blobs, reasons = revision_blobs(repo, revision), stale_reasons(root)
    statuses = []
    for run_json in sorted(root.rglob("run.json")):
        folder = run_json.parent.relative_to(root).as_posix()
        run = json.loads(run_json.read_text())
        source = run.get("source")
        if not source:
            statuses.append(ResultStatus(folder, "no source hash"))
        elif source["sha256"] == source_sha256(blobs, run["experiment"], source["conf"]):
            statuses.append(ResultStatus(folder, "current"))
        else:
            reason = run.get("stale_reason") or reasons.get(folder) or reasons.get(folder.split("/")[0], "")
            statuses.append(ResultStatus(folder, "stale", reason))
    return statuses


def main(argv: list[str]) -> int:
    """Print each result's status under ``argv[0]`` (default: results/ of the repository the working directory is
    in), checked against HEAD; exit 1 when a stale result has no recorded reason."""
    repo = Path(_git(".", "rev-parse", "--show-toplevel").strip())
    statuses = result_statuses(Path(argv[0]) if argv else repo / "results", repo)
    for s in statuses:
        if s.state == "stale":
            print(f"{s.folder}: stale ({s.reason or 'no reason recorded: re-run it, or say why in ' + STALE_FILE})")
        else:
            print(f"{s.folder}: {s.state}")
    counts = {state: sum(s.state == state for s in statuses) for state in ("current", "stale", "no source hash")}
    print(", ".join(f"{n} {state}" for state, n in counts.items()))
    return int(any(s.state == "stale" and not s.reason for s in statuses))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
