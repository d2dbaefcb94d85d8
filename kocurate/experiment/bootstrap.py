"""Paired bootstrap over test examples, and over training seeds / control draws.

One resample draws every test example of a task with replacement (the same draw for every arm,
so the comparison is paired) and, for each arm, draws its units (training seeds; for a random
control, seed and row draw together) with replacement. An arm's resampled score is the mean over
its drawn units of the metric on the drawn examples, so an interval covers the choice of test
examples, training noise and (for controls) the choice of rows. The KoBEST average resamples each
task on its own and averages the task scores.

Resamples are integer weights on the examples (a multinomial draw), so a metric on a resample is
computed from weighted confusion counts for all resamples at once. The point estimates are not
computed here: they are the evaluator's own numbers (`kocurate.evaluate.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def resample_weights(n: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """(samples, n) counts: how often each of n examples is drawn in each resample."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(np.float64)


def resampled_scores(metric: str, gold: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The metric of `pred` against `gold` on each resample (one per row of `weights`).

    `f1` is macro F1 over the labels present in the resample's gold or predictions, so each value
    equals sklearn's `f1_score(average="macro")` on the materialised resample.
    """
    gold = np.asarray(gold)
    pred = np.asarray(pred)
    total = weights.sum(axis=1)
    if metric == "acc":
        return weights @ (gold == pred).astype(np.float64) / total
    if metric != "f1":
        raise ValueError(f"unknown metric {metric}")
    labels = np.unique(np.concatenate([gold, pred]))
    columns = []
    for label in labels:
        columns += [(pred == label) & (gold == label), pred == label, gold == label]
    counts = weights @ np.stack(columns, axis=1).astype(np.float64)  # (samples, 3 * labels)
    tp, predicted, actual = counts[:, 0::3], counts[:, 1::3], counts[:, 2::3]
    denominator = predicted + actual
    present = denominator > 0
    f1 = np.where(present, 2 * tp / np.where(present, denominator, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def draw_units(units: int, samples: int, rng: np.random.Generator) -> np.ndarray | None:
    """(samples, units) indices of the units each resample uses; None for a single unit."""
    return None if units == 1 else rng.integers(0, units, size=(samples, units))


def mean_over_units(scores: np.ndarray, drawn: np.ndarray | None) -> np.ndarray:
    """(units, samples) -> (samples,): per resample, the mean over the units it drew."""
    if drawn is None:
        return scores.mean(axis=0)
    return scores[drawn, np.arange(scores.shape[1])[:, None]].mean(axis=1)


@dataclass
class Difference:
    """A - B: the point estimate, a percentile interval and a two-sided bootstrap p-value."""

    delta: float
    low: float
    high: float
    samples: int
    p_value: float = 1.0
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (no correction for multiple comparisons)."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.delta:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def difference(delta: float, diffs: np.ndarray, confidence: float = 0.95) -> Difference:
    """Summarise resampled differences `diffs` around the point estimate `delta`.

    The interval is the percentile interval of `diffs`. The p-value is two-sided, from the
    bootstrap standard error (z = delta / sd): unlike counting resamples beyond zero it is not
    floored at 2 / (samples + 1), so Holm's correction over many claims stays meaningful.
    """
    from statistics import NormalDist

    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    spread = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    if spread > 0:
        p_value = 2 * (1 - NormalDist().cdf(abs(delta) / spread))
    else:
        p_value = 1.0 if delta == 0 else 0.0
    return Difference(float(delta), float(low), float(high), len(diffs), float(p_value), confidence)


def paired_bootstrap(
    gold: np.ndarray,
    preds_a: np.ndarray,
    preds_b: np.ndarray,
    metric: str = "f1",
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Difference:
    """One task: arms A and B as (units, examples) prediction arrays against one gold vector."""
    from ..evaluate.metrics import accuracy, macro_f1

    gold = np.asarray(gold)
    preds_a, preds_b = np.atleast_2d(preds_a), np.atleast_2d(preds_b)
    point = accuracy if metric == "acc" else macro_f1
    delta = (np.mean([point(gold.tolist(), row.tolist()) for row in preds_a])
             - np.mean([point(gold.tolist(), row.tolist()) for row in preds_b]))
    rng = np.random.default_rng(seed)
    weights = resample_weights(len(gold), samples, rng)
    a = mean_over_units(np.stack([resampled_scores(metric, gold, row, weights) for row in preds_a]),
                        draw_units(len(preds_a), samples, rng))
    b = mean_over_units(np.stack([resampled_scores(metric, gold, row, weights) for row in preds_b]),
                        draw_units(len(preds_b), samples, rng))
    return difference(delta, a - b, confidence)
