"""One shape for every claims table: the paper's claim, its number beside ours, the rule that decides, the verdict.

Each experiment that checks a paper's claims builds ``Claim`` rows and writes ``claims_frame(rows)`` as its
``claims`` table; the scoreboard reads those tables, so the columns and the verdict words are fixed here.
A rule is a sentence a reader can check against ``ours`` (e.g. "yes when the 95 % interval of the paired drop
lies above 0"); ``verdict`` is computed from the numbers, never written by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_COMPARABLE = "not comparable"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_COMPARABLE)
COLUMNS = ["paper", "source", "claim", "paper's number", "ours", "n", "baseline", "rule", "verdict"]


@dataclass(frozen=True)
class Claim:
    paper: str  # "Zeiler & Fergus 2014"
    source: str  # where in the paper: "Fig. 7", "Table 1", "Sec. 4.2"
    claim: str  # the paper's claim, in a sentence
    paper_number: str  # the paper's figure for it, or "qualitative"
    ours: str  # our estimate with its 95 % interval (cnnvis.stats.Estimate.format)
    n: int  # images, runs or folds behind ``ours``
    baseline: str  # the strongest trivial baseline and its value, or "-" where none applies
    rule: str  # the decision rule, stated so a reader can apply it to ``ours``
    verdict: str  # one of VERDICTS, computed from the numbers

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


def decide(holds: bool) -> str:
    """The verdict word for a rule that was computed (``holds``: the rule's condition is met)."""
    return REPRODUCED if holds else NOT_REPRODUCED


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    rows = []
    for c in claims:
        row = asdict(c)
        row["paper's number"] = row.pop("paper_number")
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
