"""Every committed verdict follows from its committed values by the rule in code (issue 23 item 10).

Each claims table written by ``Results.claims`` has a ``<name>_evidence.npz`` beside it with the per-image, per-seed
or per-fold values each verdict came from. Recomputing the estimate (with the claim's own bootstrap seed) and
applying the rule must give the committed verdict; a claim that committed no values is "not comparable" with a
reason, or predates the evidence files.
"""

from pathlib import Path

import pandas as pd
import pytest

from cnnvis.claims import NOT_COMPARABLE, read_evidence, recomputed_verdict

RESULTS = Path(__file__).resolve().parents[1] / "results"
EVIDENCE = sorted(p for p in RESULTS.rglob("claims*_evidence.npz") if "multirun" not in p.parts)


def test_the_evidence_files_are_found_where_tables_are_written():
    assert all(p.with_name(p.name.replace("_evidence.npz", ".csv")).is_file() for p in EVIDENCE)


@pytest.mark.parametrize("path", EVIDENCE, ids=[str(p.relative_to(RESULTS)) for p in EVIDENCE])
def test_committed_verdicts_recompute(path):
    table = pd.read_csv(path.with_name(path.name.replace("_evidence.npz", ".csv")), dtype=str, keep_default_na=False)
    entries = read_evidence(path)
    assert list(table.verdict) == [e["verdict"] for e in entries]
    for entry, (_, row) in zip(entries, table.iterrows()):
        again = recomputed_verdict(entry["evidence"], entry["control_evidence"])
        if row.verdict == NOT_COMPARABLE:
            assert row.reason, f"{entry['claim']!r} is not comparable without a reason"
        elif again is not None:
            assert again == row.verdict, f"{entry['claim']!r}: committed {row.verdict!r}, recomputed {again!r}"
