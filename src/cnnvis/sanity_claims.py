"""Adebayo et al. 2018's findings decided on a cascade's numbers (``cnnvis.sanity``) by a rule fixed here.

Per image, s - o: s is a similarity measure between the trained model's map and the map after re-initializing (same
image, same class); o is the same measure between the trained map and the trained map of an image of another class
(``sanity.other_class_partners``, seeded), what unrelated maps share (centre bias, borders). A step is *sensitive*
when the 95 % bootstrap interval of mean(s - o) lies below ``MARGIN`` (the randomized map is no closer to the
trained one than another class's map is, give or take the margin), *insensitive* when it lies above it, undecided
when it includes it.

The paper separates the methods at the top layers (Fig. 2, 4): re-initializing the logits and the blocks right below
them changes the maps of gradients and Grad-CAM, while guided backprop's and guided Grad-CAM's stay near the trained
ones until the lower layers go. So a claim reads the top-layer steps, the logits through the first half of the
cascade: "insensitive" is reproduced when every one of them is insensitive and contradicted when any is sensitive;
"sensitive" is reproduced when the last of them (the most layers re-initialized) is sensitive and contradicted when it
is insensitive; anything else is inconclusive. Each step is a ``claims.Threshold`` on the paired difference.

The rule's free parameters (the margin, which steps count as the top layers, the measure) move one at a time in
``fragility``; a verdict that any of them changes is marked fragile.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cnnvis.claims import (CONTRADICTED, INCONCLUSIVE, REPRODUCED, Claim, Decision, Evidence, Threshold, all_of,
                           claim_seed)
from cnnvis.gate import Gate, gated, undertrained
from cnnvis.sanity import EDGE, MEASURES, Cascade
from cnnvis.stats import Estimate, bootstrap_mean, paired_difference

SENSITIVE, INSENSITIVE, UNDECIDED = "sensitive", "insensitive", "undecided"
PAPER, SOURCE = "Adebayo et al. 2018", "Fig. 2 / Fig. 4 (Inception v3, ImageNet)"
# Adebayo et al. 2018, Sec. 4 / Fig. 2 and 4 (Inception v3, ImageNet): the methods it tested that cams.ALL_METHODS has.
PAPER_FINDINGS = {"saliency": SENSITIVE, "gradcam": SENSITIVE, "guided_backprop": INSENSITIVE,
                  "guided_gradcam": INSENSITIVE}
MEASURE = "spearman_abs"  # the paper's headline measure (Fig. 4: rank correlation of absolute maps)
MARGIN = 0.1  # in the measure's units: how much closer than another class's map still counts as "no closer"
LOGITS, TOP_HALF, ALL_STEPS = "the logits only", "the logits through the first half", "all steps"
FRAGILITY_MARGINS = (0.05, 0.2)


def top_layer_steps(n_randomized: int, which: str = TOP_HALF) -> list[int]:
    """Positions of the cascade steps a claim reads, of ``n_randomized`` (1: the logits re-initialized,
    ``n_randomized``: every layer); the first half rounds up, so a 3-step cascade reads 2."""
    last = {LOGITS: 1, TOP_HALF: math.ceil(n_randomized / 2), ALL_STEPS: n_randomized}[which]
    return list(range(1, last + 1))


def paired(s, o, seed: int = 0) -> Estimate | None:
    """mean(s - o) over the images that have another-class partner, with its bootstrap interval; None without one."""
    if not (np.isfinite(np.asarray(s, dtype=float)) & np.isfinite(np.asarray(o, dtype=float))).any():
        return None
    return paired_difference(s, o, seed)


def sensitivity(est: Estimate | None, margin: float = MARGIN) -> str:
    """A step's word: sensitive when the interval of mean(s - o) lies below ``margin``, insensitive when above,
    undecided when it includes it or has none (n < 2, no partner)."""
    if est is None:
        return UNDECIDED
    verdict = Threshold(margin).decide(est).verdict
    return {REPRODUCED: INSENSITIVE, CONTRADICTED: SENSITIVE}.get(verdict, UNDECIDED)


def first_step_below(per_step, o, steps: list[str], margin: float = MARGIN) -> str:
    """The first cascade step (``steps[0]`` is the trained model) that is sensitive, or "none"."""
    for k in range(1, len(steps)):
        if sensitivity(paired(per_step[k], o), margin) == SENSITIVE:
            return steps[k]
    return "none"


def read_steps(n_randomized: int, finding: str, which: str = TOP_HALF) -> list[int]:
    """The steps a finding is decided on: every top-layer step for "insensitive", the last one for "sensitive"."""
    top = top_layer_steps(n_randomized, which)
    return top if finding == INSENSITIVE else top[-1:]


def finding_evidence(per_step, o, finding: str, margin: float = MARGIN, which: str = TOP_HALF,
                     seed: int = 0) -> list[Evidence]:
    """Per step read, the paired values and the Threshold: above ``margin`` for "insensitive", below for "sensitive"."""
    rule = Threshold(margin, above=finding == INSENSITIVE)
    return [Evidence("paired_difference", (per_step[k], o), rule, seed)
            for k in read_steps(len(per_step) - 1, finding, which)]


def decide_finding(per_step, o, finding: str, steps: list[str], margin: float = MARGIN, which: str = TOP_HALF,
                   seed: int = 0) -> Decision:
    """Reproduced, contradicted or inconclusive (the module docstring's rule); ``per_step``: per-image similarities
    at each step (``steps``, the trained model first), ``o``: the other-class level per image."""
    if paired(per_step[-1], o) is None:
        return Decision(INCONCLUSIVE, "no image of another class to pair with")
    evidence = finding_evidence(per_step, o, finding, margin, which, seed)
    decisions = [e.decide() for e in evidence]
    verdict = all_of(decisions).verdict
    read = read_steps(len(per_step) - 1, finding, which)
    return Decision(verdict, "; ".join(f"{steps[k]}: {d.reason}" for k, d in zip(read, decisions)
                                       if d.verdict == verdict))


def rule_settings() -> dict[str, dict]:
    """The rule's default parameters and each one-at-a-time change: {label: {measure, margin, which}}."""
    default = {"measure": MEASURE, "margin": MARGIN, "which": TOP_HALF}
    settings = {"default": default}
    settings.update({f"margin {m:g}": {**default, "margin": m} for m in FRAGILITY_MARGINS})
    settings.update({f"steps: {w}": {**default, "which": w} for w in (LOGITS, ALL_STEPS)})
    settings.update({f"measure: {m}": {**default, "measure": m} for m in MEASURES if m != MEASURE})
    return settings


def fragility(sims: list[dict], other: dict, finding: str, steps: list[str], seed: int = 0) -> dict[str, str]:
    """{setting of ``rule_settings``: the finding's verdict}; ``sims``: per step {measure: per-image values},
    ``other``: {measure: per-image other-class level}."""
    return {label: decide_finding([s[p["measure"]] for s in sims], other[p["measure"]], finding, steps, p["margin"],
                                  p["which"], seed).verdict
            for label, p in rule_settings().items()}


def flips(verdicts: dict[str, str]) -> dict[str, str]:
    """The settings whose verdict differs from the default's: a verdict with any is fragile."""
    return {k: v for k, v in verdicts.items() if v != verdicts["default"]}


def short(est: Estimate | None) -> str:
    """'0.123 [0.100, 0.150]' (n said once, in the claim's own column); '-' without an estimate."""
    if est is None:
        return "-"
    return f"{est.value:.3f} [{est.lo:.3f}, {est.hi:.3f}]" if est.has_interval else f"{est.value:.3f}"


def interval_text(est: Estimate | None) -> str:
    return "-" if est is None else est.format(3)


def mean_text(values) -> str:
    values = np.asarray(values, dtype=float)
    return bootstrap_mean(values).format(3) if np.isfinite(values).any() else "-"


def step_rule_text(changed: str) -> str:
    """The step rule, for one comparison (``changed``: the model whose maps are compared with the trained one's)."""
    return (f"sensitive when the 95 % bootstrap interval (over images) of mean(s - o) lies below {MARGIN:g}, "
            f"insensitive when it lies above; s: the {MEASURE} similarity of the trained model's map with the "
            f"{changed}'s map of the same image, o: the trained map's with the trained map of a seeded image of "
            "another class (what unrelated maps share)")


def rule_text() -> str:
    settings = [k for k in rule_settings() if k != "default"]
    return ("A cascade step is " + step_rule_text("randomized model") + ". The claim reads the top-layer steps, the "
            "logits through the first half of the cascade (where the paper separates the methods): 'insensitive' is "
            "reproduced when every top-layer step is insensitive, contradicted when any is sensitive; 'sensitive' is "
            "reproduced when the last top-layer step is sensitive, contradicted when it is insensitive; inconclusive "
            f"otherwise. Fragile: a verdict that changes under one of {', '.join(settings)} (table fragility)")


def cascade_table(run: Cascade) -> pd.DataFrame:
    """One row per method: each measure at full randomization, s - o at the last top-layer step and at full
    randomization with the step's word, the first step below the bar, the other-class level."""
    last = top_layer_steps(len(run.steps) - 1)[-1]
    rows = []
    for name, per_step in run.sims.items():
        s, o = [x[MEASURE] for x in per_step], run.other[name][MEASURE]
        top, full = paired(s[last], o), paired(s[-1], o)
        rows.append({"method": name, **{f"{m} (fully randomized)": mean_text(per_step[-1][m]) for m in MEASURES},
                     "another class's map (o)": mean_text(o),
                     "s - o, last top-layer step": interval_text(top), "last top-layer step": sensitivity(top),
                     "s - o, fully randomized": interval_text(full), "fully randomized": sensitivity(full),
                     "first step below the bar": first_step_below(s, o, run.steps),
                     "paper (Adebayo 2018)": PAPER_FINDINGS.get(name, "not tested" if name != EDGE else "-"),
                     "constant maps (fully randomized)": f"{100 * run.constant[name]:.0f} %",
                     "seconds_per_map": round(run.seconds[name], 4)})
    return pd.DataFrame(rows)


def claim_text(method: str, network: str) -> str:
    finding = PAPER_FINDINGS[method]
    return f"{method} is {finding} to re-initializing the top layers (cascading from the logits) [{network}]"


def cascade_claims(run: Cascade, network: str, gate: Gate | None = None) -> list[Claim]:
    """Adebayo et al.'s findings, each decided by the rule on this network's top-layer steps; "not comparable" when
    ``gate`` (the network's trained-enough gate) failed."""
    steps, top = run.steps, top_layer_steps(len(run.steps) - 1)
    edge = run.sims.get(EDGE)
    edge_text = "-" if edge is None else short(paired(edge[top[-1]][MEASURE], run.other[EDGE][MEASURE]))
    claims = []
    for method, finding in PAPER_FINDINGS.items():
        if method not in run.sims:
            continue
        s, o = [x[MEASURE] for x in run.sims[method]], run.other[method][MEASURE]
        claim = claim_text(method, network)
        seed = claim_seed(SOURCE, claim)
        decision = decide_finding(s, o, finding, steps, seed=seed)
        evidence = finding_evidence(s, o, finding, seed=seed) if paired(s[-1], o) is not None else []
        flipped = flips(fragility(run.sims[method], run.other[method], finding, steps, seed))
        fragile = (f"fragile: {', '.join(f'{k} -> {v}' for k, v in flipped.items())}" if flipped else
                   "not fragile: the same verdict under every setting of table fragility")
        n = int((np.isfinite(s[top[-1]]) & np.isfinite(o)).sum())
        ours = (f"s - o ({MEASURE}) at the top-layer steps (n = {n}): "
                + "; ".join(f"{steps[k]} {short(paired(s[k], o, seed))}" for k in top)
                + f"; first step below the bar: {first_step_below(s, o, steps)}; {fragile}")
        baseline = (f"edge detector (ignores the weights), s - o at {steps[top[-1]]}: {edge_text}; o (the method's "
                    f"maps of another class): {mean_text(o)}")
        claims.append(gated(Claim(PAPER, SOURCE, claim, f"qualitative: {finding}", ours, n, baseline, rule_text(),
                                  decision.verdict, decision.reason, evidence=tuple(evidence)), gate))
    return claims


def fragility_table(runs: dict[str, Cascade]) -> pd.DataFrame:
    """Per network and paper method: the finding's verdict under each of ``rule_settings`` and whether it flips."""
    rows = []
    for network, run in runs.items():
        for method, finding in PAPER_FINDINGS.items():
            if method in run.sims:
                verdicts = fragility(run.sims[method], run.other[method], finding, run.steps,
                                     claim_seed(SOURCE, claim_text(method, network)))
                rows.append({"network": network, "method": method, "paper": finding, **verdicts,
                             "fragile": "yes" if flips(verdicts) else "no"})
    return pd.DataFrame(rows)


def fragility_text() -> str:
    return (f"Each column decides the paper's finding with one of the rule's free parameters changed from its default "
            f"(measure {MEASURE}, margin {MARGIN:g}, the top-layer steps: {TOP_HALF} of the cascade): "
            f"{', '.join(k for k in rule_settings() if k != 'default')}. A finding whose verdict changes in any "
            "column is fragile (its claim says so).")


def memorization_gate(fitted_top1: float, fit_top1: float) -> Gate:
    """The data randomization test needs a model that memorized its permuted labels (Adebayo et al.'s reached
    ~100 %): else a map that changes only shows a network that learned nothing."""
    return Gate(fitted_top1 >= fit_top1, f"the permuted-label model fits {fitted_top1:.3f} of its training labels "
                                         f"(memorized needs >= {fit_top1:g})")


def data_randomization_table(sims: dict, other: dict, constant: dict, gate: Gate) -> pd.DataFrame:
    """Per method: its maps on the permuted-label model against the true-label model's (``sanity.permuted_label_maps``),
    s - o with its word, or "not comparable (undertrained: ...)" when ``gate`` failed."""
    rows = []
    for name, s in sims.items():
        diff = paired(s[MEASURE], other[name][MEASURE])
        rows.append({"method": name, **{m: mean_text(s[m]) for m in MEASURES},
                     "another class's map (o)": mean_text(other[name][MEASURE]),
                     "s - o": interval_text(diff),
                     "verdict": sensitivity(diff) if gate.passed else undertrained(gate),
                     "constant maps (permuted-label model)": f"{100 * constant[name]:.0f} %"})
    return pd.DataFrame(rows)


def not_run(skipped: dict[str, str]) -> str:
    """The methods a run refused, with why, as a sentence (empty when none)."""
    return "Not run here: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ". " if skipped else ""


def data_randomization_notes(e, n_classes, epochs, n_train, train_seconds, ckpt, fitted, n, true_acc, random_acc,
                             skipped, gate) -> str:
    """The data randomization table's notes: the permuted-label run, its accuracy, the rule and its gates."""
    return (f"ZFNet (the train preset: width x{e.width}, {n_classes} classes, {epochs} epochs) trained on the "
            f"{n_train} training images with their labels permuted (seeded; class frequencies kept), in "
            f"{train_seconds:.0f} s ({ckpt}); its last epoch's training top-1 on the permuted labels: "
            f"{100 * fitted:.1f} % (a network that memorized them would approach 100 %). Top-1 on these {n} "
            f"validation images: true labels {true_acc.format(1, 100)}, permuted labels {random_acc.format(1, 100)} "
            f"(chance {100 / n_classes:.0f} %). Each row compares the two models' maps of the true-label model's "
            "top-1 class on the same images: " + step_rule_text("permuted-label model") + ". Gates (both models "
            f"trained enough, the permuted-label one to >= {100 * e.fit_top1:.0f} % of its labels; else every verdict "
            f"is 'not comparable'): {'passed' if gate.passed else 'FAILED'}: {gate.reason}. " + not_run(skipped)
            + "Adebayo et al. ran this test on MNIST and Fashion-MNIST (Fig. 5); ours is the only network here "
              "that can be retrained within the budget.")
