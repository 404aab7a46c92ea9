"""Every committed result names the clean commit it came from: run.json's commit has no "+dirty" and is an
ancestor of HEAD (issue 14). A result changed by hand, or run from a dirty tree, fails here until its README
command is re-run from a clean commit."""

from pathlib import PurePosixPath

from cnnvis.config import REPO
from cnnvis.results import provenance_problems

RESULTS = REPO / "results"


def test_committed_results_name_a_clean_ancestor_commit():
    problems = {str(PurePosixPath(path.relative_to(RESULTS))): why for path, why in provenance_problems(RESULTS)}
    assert problems == {}
