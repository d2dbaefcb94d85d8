"""The verdict: which comparisons an experiment makes, their statistics, and the headline sentences.

Comparisons, at each shot count, per task and for the KoBEST average:

* each curated arm against the full set (the pool its random controls draw from, else the
  largest data arm): "did the curation beat using everything?" (KoQuality: 1% beats 100%);
* each curated arm against each of its random controls (same size): "did the selection beat
  chance at the same size?";
* every data arm (controls included) against the base model: "did training on it help at all?".

The headline claims are the KoBEST average comparisons (a single task's when only one was run);
Holm's step-down correction runs over exactly those claims. Per-task rows carry unadjusted
intervals and are labelled so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arms import BASE, ArmSpec
from .bootstrap import Difference, difference, draw_units, mean_over_units, resample_weights, resampled_scores
from .power import disagreement_rate, minimum_detectable_difference

AVERAGE = "average"


@dataclass(frozen=True)
class Pair:
    arm: str
    against: str
    kind: str  # "full", "control" or "base"


@dataclass
class Scored:
    """One arm on one task at one shot count: gold labels, predictions and the metric, per unit."""

    gold: np.ndarray  # (examples,)
    preds: np.ndarray  # (units, examples)
    scores: np.ndarray  # (units,) the evaluator's metric per unit

    def __post_init__(self) -> None:
        self.gold = np.asarray(self.gold)
        self.preds = np.atleast_2d(np.asarray(self.preds))
        self.scores = np.atleast_1d(np.asarray(self.scores, dtype=np.float64))


#: results[arm][task][shots]
Results = dict[str, dict[str, dict[int, Scored]]]


@dataclass
class Comparison:
    arm: str
    against: str
    kind: str
    task: str  # a task name or AVERAGE
    shots: int
    difference: Difference
    mdd: float  # minimum detectable difference at 80% power, alpha 0.05 two-sided
    disagreement: float  # observed disagreement rate (mean over tasks for the average)
    examples: int  # test examples (summed over tasks for the average)
    headline: bool = False
    holm_p: float | None = None  # Holm-adjusted p-value (headline claims only)

    @property
    def significant(self) -> bool:
        """Headline claims: Holm-adjusted p below 1 - confidence; other rows: the interval excludes 0."""
        if self.holm_p is not None:
            return self.holm_p < 1 - self.difference.confidence
        return self.difference.significant

    def to_dict(self) -> dict:
        d = self.difference
        return {"arm": self.arm, "against": self.against, "kind": self.kind, "task": self.task, "shots": self.shots,
                "delta": d.delta, "low": d.low, "high": d.high, "p_value": d.p_value, "holm_p": self.holm_p,
                "significant": self.significant, "headline": self.headline, "mdd": self.mdd,
                "disagreement": self.disagreement, "examples": self.examples}


def plan(arms: list[ArmSpec], rows: dict[str, int]) -> list[Pair]:
    """The comparisons an experiment with these arms makes (see the module doc), claims first."""
    data = [a for a in arms if not a.is_base]
    plain = [a for a in data if not a.is_control]
    controls = [a for a in data if a.is_control]
    largest = max(plain, key=lambda a: rows.get(a.name, 0)).name if plain else None
    pairs: list[Pair] = []
    for arm in plain:
        mine = [c for c in controls if c.random_of == arm.name]
        full = next((c.pool for c in mine if c.pool), None) or largest
        if full and full != arm.name and rows.get(arm.name, 0) <= rows.get(full, 0):
            pairs.append(Pair(arm.name, full, "full"))
        pairs += [Pair(arm.name, c.name, "control") for c in mine]
    pairs += [Pair(a.name, BASE, "base") for a in data]
    return pairs


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare(results: Results, pairs: list[Pair], tasks: list[str], shots: list[int], *, metric: str = "f1",
            samples: int = 1000, seed: int = 0, confidence: float = 0.95) -> list[Comparison]:
    """Every pair at every shot count, per task and (with more than one task) for the average."""
    rng = np.random.default_rng(seed)
    arms = sorted({p.arm for p in pairs} | {p.against for p in pairs}, key=list(results).index)
    # The same example draw for every arm (paired), one unit draw per arm shared by tasks and shots.
    drawn = {arm: draw_units(len(results[arm][tasks[0]][shots[0]].scores), samples, rng) for arm in arms}
    out: list[Comparison] = []
    for k in shots:
        dist: dict[tuple[str, str], np.ndarray] = {}
        for task in tasks:
            n = len(results[arms[0]][task][k].gold)
            weights = resample_weights(n, samples, rng)
            for arm in arms:
                scored = results[arm][task][k]
                if len(scored.gold) != n:
                    raise ValueError(f"{task} {k}-shot: arms {arms[0]} and {arm} were scored on different examples")
                per_unit = np.stack([resampled_scores(metric, scored.gold, row, weights) for row in scored.preds])
                dist[arm, task] = mean_over_units(per_unit, drawn[arm])
        for pair in pairs:
            a, b = results[pair.arm], results[pair.against]
            rates, sizes, deltas, diffs = [], [], [], []
            for task in tasks:
                sa, sb = a[task][k], b[task][k]
                if not np.array_equal(sa.gold, sb.gold):
                    raise ValueError(f"{task} {k}-shot: arms {pair.arm} and {pair.against} were scored on different examples")
                rates.append(disagreement_rate(sa.gold, sa.preds, sb.preds))
                sizes.append(len(sa.gold))
                deltas.append(float(sa.scores.mean() - sb.scores.mean()))
                diffs.append(dist[pair.arm, task] - dist[pair.against, task])
                out.append(Comparison(pair.arm, pair.against, pair.kind, task, k,
                                      difference(deltas[-1], diffs[-1], confidence),
                                      minimum_detectable_difference([rates[-1]], [sizes[-1]], alpha=1 - confidence),
                                      rates[-1], sizes[-1], headline=len(tasks) == 1))
            if len(tasks) > 1:
                out.append(Comparison(pair.arm, pair.against, pair.kind, AVERAGE, k,
                                      difference(float(np.mean(deltas)), np.mean(diffs, axis=0), confidence),
                                      minimum_detectable_difference(rates, sizes, alpha=1 - confidence),
                                      float(np.mean(rates)), int(sum(sizes)), headline=True))
    claims = [c for c in out if c.headline]
    for c, p in zip(claims, holm([c.difference.p_value for c in claims])):
        c.holm_p = p
    return out


# ---------------------------------------------------------------------------------------------
# sentences


@dataclass
class Wording:
    metric: str = "f1"  # "f1" or "acc"
    tasks: list[str] = field(default_factory=list)

    @property
    def metric_name(self) -> str:
        return "F1" if self.metric == "f1" else "accuracy"

    def scope(self, task: str) -> str:
        return average_name(self.tasks) if task == AVERAGE else task


def average_name(tasks: list[str]) -> str:
    """'KoBEST average' when every task is a KoBEST task, else 'average of N tasks'."""
    return "KoBEST average" if tasks and all(t.startswith("kobest_") for t in tasks) else f"average of {len(tasks)} tasks"


def _shots(k: int) -> str:
    return "1 shot" if k == 1 else f"{k} shots"


def sentence(c: Comparison, wording: Wording) -> str:
    """One claim: 'kq vs full: KoBEST average F1 +0.012 [95% CI -0.004, +0.028] at 5 shots, not
    significant (Holm-adjusted p = 0.21); this experiment can detect differences of 0.021 or more.'"""
    d = c.difference
    level = round(d.confidence * 100)
    if c.holm_p is not None:
        p_text = f"Holm-adjusted p {_p(c.holm_p)}"
    else:
        p_text = f"p {_p(d.p_value)}, not adjusted"
    if c.significant:
        verdict = f"significantly {'better' if d.delta > 0 else 'worse'} ({p_text})"
    else:
        verdict = f"not significant ({p_text})"
    return (f"{c.arm} vs {c.against}: {wording.scope(c.task)} {wording.metric_name} {d.delta:+.3f} "
            f"[{level}% CI {d.low:+.3f}, {d.high:+.3f}] at {_shots(c.shots)}, {verdict}; "
            f"this experiment can detect differences of {c.mdd:.3f} or more.")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def headline(comparisons: list[Comparison], wording: Wording) -> list[str]:
    return [sentence(c, wording) for c in comparisons if c.headline]
