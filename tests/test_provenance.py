"""Every committed result names the clean commit it came from: run.json's commit has no "+dirty" and is an
ancestor of HEAD (issue 14). A result changed by hand, or run from a dirty tree, fails here until its README
command is re-run from a clean commit. A result whose source has changed since says why it was not re-run."""

import json
import subprocess
from pathlib import PurePosixPath

from cnnvis.config import REPO
from cnnvis.provenance import result_statuses, revision_blobs, source_sha256, working_tree_blobs
from cnnvis.results import provenance_problems

RESULTS = REPO / "results"


def test_committed_results_name_a_clean_ancestor_commit():
    problems = {str(PurePosixPath(path.relative_to(RESULTS))): why for path, why in provenance_problems(RESULTS)}
    assert problems == {}


def test_committed_results_come_from_the_source_at_head_or_say_why_not():
    """Each committed run.json that records a source hash (cnnvis.provenance: the tracked modules of src/cnnvis, its
    experiments/<name>.py and the conf/ files it composed) hashes as HEAD's same files do, or run.json's
    stale_reason or a line of results/STALE.md says why it was not re-run. run.json files written before runs
    recorded a source hash have none and are not checked."""
    unexplained = [s.folder for s in result_statuses(RESULTS, REPO) if s.state == "stale" and not s.reason]
    assert unexplained == []


def test_a_result_turns_stale_when_its_source_changes_and_a_recorded_reason_explains_it(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    def commit(files: dict):
        for path, text in files.items():
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(text)
        git("add", "-A")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "change")

    git("init", "-q")
    commit({"src/cnnvis/a.py": "A = 1\n", "experiments/exp.py": "", "conf/config.yaml": "", "conf/other.yaml": ""})
    conf = ["conf/config.yaml"]
    source = {"sha256": source_sha256(working_tree_blobs(tmp_path), "exp", conf), "conf": conf}
    commit({"results/exp/run.json": json.dumps({"experiment": "exp", "source": source}),
            "results/old/run.json": json.dumps({"experiment": "exp"})})
    assert source["sha256"] == source_sha256(revision_blobs(tmp_path), "exp", conf)  # same bytes, same hash
    assert result_statuses(tmp_path / "results", tmp_path) == [("exp", "current", ""), ("old", "no source hash", "")]

    commit({"conf/other.yaml": "not composed by the run\n", "experiments/other.py": "", "results/README.md": ""})
    assert result_statuses(tmp_path / "results", tmp_path)[0].state == "current"
    commit({"src/cnnvis/b.py": "B = 2\n"})  # a new library module counts
    assert result_statuses(tmp_path / "results", tmp_path)[0] == ("exp", "stale", "")
    reason = "b.py adds a function exp does not call"
    commit({"results/STALE.md": f"# Stale results\n\n- `exp`: {reason}\n"})
    assert result_statuses(tmp_path / "results", tmp_path)[0] == ("exp", "stale", reason)
