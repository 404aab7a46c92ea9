"""One shape for every claims table: the paper's claim, its number beside ours, the rule that decides, the verdict.

Each experiment that checks a paper's claims builds ``Claim`` rows and writes ``claims_frame(rows)`` as its
``claims`` table; the scoreboard reads those tables, so the columns and the verdict words are fixed here.

A verdict is one of four answers, computed from an interval by a rule fixed before the run (``Threshold``,
``Equivalence``), never written by hand:

- reproduced: the 95 % interval lies where the paper's effect is;
- contradicted: the interval excludes the paper's effect (or shows the opposite);
- inconclusive: the interval includes both; the reason gives the smallest effect the design could have detected;
- not comparable: the setting cannot test the claim (the reason says why: no boxes, an undertrained network).

A fifth word marks what the random-weights control exposes (``with_control``): a claim the same experiment on
randomly initialised weights also passes "holds for random weights too (uninformative)".

Each ``Evidence`` keeps the values a verdict was computed from (per image, seed or fold), the statistic and the
rule, so ``write_evidence`` can commit them beside the table and a test can recompute every committed verdict.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cnnvis.stats import MIN_RANGE_N, Estimate, bootstrap_mean, paired_difference, proportion, t_mean

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_COMPARABLE = "not comparable"
UNINFORMATIVE = "holds for random weights too (uninformative)"
ANSWERS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE)
VERDICTS = (*ANSWERS, UNINFORMATIVE)
COLUMNS = ["paper", "source", "claim", "paper's number", "ours", "n", "baseline", "random-weights control", "rule",
           "verdict", "reason"]
NO_CONTROL = "not run"
Z_POWER = 1.96 + 0.84  # a two-sided 5 % test with 80 % power detects about 2.8 standard errors
# An interval end this close to a bar (relative) touches it: float rounding (e.g. of stored values) must not decide.
TOUCH = 1e-9


@dataclass(frozen=True)
class Decision:
    verdict: str
    reason: str


def undecidable(est: Estimate) -> Decision | None:
    """Inconclusive when the interval cannot decide: there is none (n < 2), or it has no width because all of fewer
    than ``MIN_RANGE_N`` values are equal (so few values cannot show that the spread is zero); None otherwise."""
    if not est.has_interval:
        return Decision(INCONCLUSIVE, f"inconclusive (n = {est.n}): no interval")
    if est.n < MIN_RANGE_N and math.isclose(est.lo, est.hi):
        return Decision(INCONCLUSIVE, f"inconclusive (no spread: all n = {est.n} values equal, fewer than "
                                      f"{MIN_RANGE_N})")
    return None


def detectable(est: Estimate) -> float:
    """The smallest effect (distance from the bar) this interval's design detects with 80 % power."""
    return Z_POWER * (est.hi - est.lo) / (2 * 1.96)


@dataclass(frozen=True)
class Threshold:
    """The paper's effect as a one-sided bar: the statistic lies above ``bar`` (``above=False``: below it).

    Reproduced when the 95 % interval lies beyond the bar, contradicted when it lies wholly on the other side,
    inconclusive when it includes the bar, or when the interval cannot decide (``undecidable``). ``min_n`` marks a
    design too small to trust (e.g. fewer than 5 seeds): an interval that does not decide says so in its reason."""

    bar: float = 0.0
    above: bool = True
    min_n: int = 2

    def decide(self, est: Estimate) -> Decision:
        side = "above" if self.above else "below"
        if undecided := undecidable(est):
            return undecided
        tol = TOUCH * max(1.0, abs(self.bar))
        beyond = est.lo > self.bar + tol if self.above else est.hi < self.bar - tol
        against = est.hi <= self.bar + tol if self.above else est.lo >= self.bar - tol
        if beyond:
            return Decision(REPRODUCED, f"interval {side} {self.bar:g}")
        if against:
            return Decision(CONTRADICTED, f"interval excludes the paper's effect (not {side} {self.bar:g})")
        small = f"n < {self.min_n}; " if est.n < self.min_n else ""
        return Decision(INCONCLUSIVE, f"{small}interval includes {self.bar:g}; smallest detectable effect "
                                      f"{detectable(est):.3g}")

    def text(self, what: str) -> str:
        side, other = ("above", "at or below") if self.above else ("below", "at or above")
        return (f"reproduced when the 95 % interval of {what} lies {side} {self.bar:g}, contradicted when it lies "
                f"{other} it, inconclusive when it includes it")


@dataclass(frozen=True)
class Equivalence:
    """The paper's effect is *no* difference: the statistic lies within ``centre ± margin``.

    Reproduced when the whole 95 % interval lies inside the margin, contradicted when it lies wholly outside,
    inconclusive when it straddles a margin's edge or cannot decide (``undecidable``)."""

    margin: float
    centre: float = 0.0
    min_n: int = 2

    def decide(self, est: Estimate) -> Decision:
        lo, hi = self.centre - self.margin, self.centre + self.margin
        tol = TOUCH * max(1.0, abs(lo), abs(hi))
        if undecided := undecidable(est):
            return undecided
        if lo + tol < est.lo and est.hi < hi - tol:
            return Decision(REPRODUCED, f"interval within {self.centre:g} ± {self.margin:g}")
        if est.lo >= hi - tol or est.hi <= lo + tol:
            return Decision(CONTRADICTED, f"interval outside {self.centre:g} ± {self.margin:g}")
        small = f"n < {self.min_n}; " if est.n < self.min_n else ""
        return Decision(INCONCLUSIVE, f"{small}interval crosses the margin {self.centre:g} ± {self.margin:g}")

    def text(self, what: str) -> str:
        return (f"reproduced when the 95 % interval of {what} lies within {self.centre:g} ± {self.margin:g} "
                f"(equivalence), contradicted when it lies wholly outside, inconclusive otherwise")


STATISTICS = {"bootstrap_mean": bootstrap_mean, "paired_difference": paired_difference, "proportion": proportion,
              "t_mean": t_mean}
RULES = {"Threshold": Threshold, "Equivalence": Equivalence}


def claim_seed(*words: str) -> int:
    """A bootstrap seed of the claim's own (from its source and text), so no two claims share resamples."""
    return int.from_bytes(hashlib.sha256(" | ".join(words).encode()).digest()[:4], "little")


@dataclass(frozen=True)
class Evidence:
    """The per-sample values a verdict is computed from, the statistic over them and the rule on its interval.

    ``values``: one array (``bootstrap_mean``, ``t_mean``, ``proportion`` of booleans) or two paired arrays
    (``paired_difference``: first minus second)."""

    statistic: str
    values: tuple
    rule: Threshold | Equivalence
    seed: int = 0

    def __post_init__(self):
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic {self.statistic!r} is not one of {sorted(STATISTICS)}")
        object.__setattr__(self, "values", tuple(np.asarray(v, dtype=float).ravel() for v in self.values))

    def estimate(self) -> Estimate:
        if self.statistic == "proportion":
            values = self.values[0][np.isfinite(self.values[0])]
            return proportion(int((values > 0).sum()), len(values))
        if self.statistic == "t_mean":
            return t_mean(self.values[0])
        return STATISTICS[self.statistic](*self.values, seed=self.seed)

    def decide(self) -> Decision:
        return self.rule.decide(self.estimate())


def all_of(decisions: list[Decision]) -> Decision:
    """A claim made of several conditions: reproduced when all are, contradicted when any is, else inconclusive."""
    verdicts = [d.verdict for d in decisions]
    for answer in (NOT_COMPARABLE, CONTRADICTED, INCONCLUSIVE):
        if answer in verdicts:
            return Decision(answer, "; ".join(d.reason for d in decisions if d.verdict == answer))
    return Decision(REPRODUCED, "; ".join(d.reason for d in decisions))


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
    reason: str = ""  # why this verdict, in one line (the interval's place, the missing data, the failed gate)
    control: str = NO_CONTROL  # the random-weights control's number, or why there is none
    evidence: tuple[Evidence, ...] = field(default=(), compare=False, repr=False)
    control_evidence: tuple[Evidence, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


def decided(paper: str, source: str, claim: str, paper_number: str, ours: str, n: int, baseline: str, rule: str,
            evidence: list[Evidence]) -> Claim:
    """A claim whose verdict is computed from ``evidence`` (all of its conditions, ``all_of``)."""
    decision = all_of([e.decide() for e in evidence])
    return Claim(paper, source, claim, paper_number, ours, n, baseline, rule, decision.verdict, decision.reason,
                 evidence=tuple(evidence))


def combine_with_control(trained: Claim, control: Claim | None, why_none: str = NO_CONTROL) -> Claim:
    """``trained`` with its random-weights control beside it: a claim the control also reproduces is uninformative."""
    if control is None:
        return replace(trained, control=why_none)
    answer = control_answer(control)
    out = replace(trained, control=f"{control.ours} ({answer})", control_evidence=control.evidence)
    if trained.verdict == REPRODUCED and answer == REPRODUCED:
        return replace(out, verdict=UNINFORMATIVE,
                       reason=f"the random-weights control passes the same rule ({control.reason})")
    return out


def control_answer(control: Claim) -> str:
    """What the rule says of the control's own values: a random network is untrained by design, so a gate that
    calls it "not comparable" must not hide that it passes the rule (as recomputation from the evidence does)."""
    return all_of([e.decide() for e in control.evidence]).verdict if control.evidence else control.verdict


def with_control(trained: list[Claim], control: list[Claim] | None, why_none: str = NO_CONTROL) -> list[Claim]:
    """Pairs each trained claim with the control's claim of the same source and text (``combine_with_control``)."""
    by_key = {(c.source, c.claim): c for c in control or []}
    return [combine_with_control(c, by_key.get((c.source, c.claim)), why_none) for c in trained]


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    rows = []
    for c in claims:
        row = {f.name: getattr(c, f.name) for f in fields(c) if f.name not in ("evidence", "control_evidence")}
        row["paper's number"] = row.pop("paper_number")
        row["random-weights control"] = row.pop("control")
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------- committed evidence


def _pack(evidence: tuple[Evidence, ...], prefix: str, arrays: dict) -> list[dict]:
    meta = []
    for j, e in enumerate(evidence):
        keys = []
        for k, v in enumerate(e.values):
            key = f"{prefix}_{j}_{k}"
            arrays[key] = v.astype(np.float32) if np.allclose(v, v.astype(np.float32), equal_nan=True) else v
            keys.append(key)
        meta.append({"statistic": e.statistic, "values": keys, "seed": e.seed,
                     "rule": {"kind": type(e.rule).__name__, **asdict(e.rule)}})
    return meta


def write_evidence(path: Path, claims: list[Claim]) -> Path:
    """The values behind each claim's verdict, compressed: ``<path>`` (.npz) holds the arrays and a JSON index."""
    arrays, index = {}, []
    for i, c in enumerate(claims):
        index.append({"source": c.source, "claim": c.claim, "verdict": c.verdict,
                      "evidence": _pack(c.evidence, f"c{i}", arrays),
                      "control_evidence": _pack(c.control_evidence, f"c{i}_control", arrays)})
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    Path(path).write_bytes(buffer.getvalue())
    return Path(path)


def _unpack(meta: list[dict], arrays) -> tuple[Evidence, ...]:
    out = []
    for m in meta:
        rule = dict(m["rule"])
        out.append(Evidence(m["statistic"], tuple(arrays[k] for k in m["values"]), RULES[rule.pop("kind")](**rule),
                            m["seed"]))
    return tuple(out)


def read_evidence(path: Path) -> list[dict]:
    """Each claim's source, text, committed verdict and its ``Evidence`` (and its control's) from ``write_evidence``."""
    with np.load(path) as arrays:
        index = json.loads(bytes(arrays["index"]).decode())
        return [{**entry, "evidence": _unpack(entry["evidence"], arrays),
                 "control_evidence": _unpack(entry["control_evidence"], arrays)} for entry in index]


def recomputed_verdict(evidence: tuple[Evidence, ...], control_evidence: tuple[Evidence, ...]) -> str | None:
    """The verdict the rule gives on the committed values (None when a claim committed none): the trained network's
    answer, made uninformative when the control's values pass the same rule."""
    if not evidence:
        return None
    verdict = all_of([e.decide() for e in evidence]).verdict
    if verdict == REPRODUCED and control_evidence and all_of([e.decide() for e in control_evidence]).verdict == REPRODUCED:
        return UNINFORMATIVE
    return verdict
