"""Paired bootstrap over test examples (and seeds): is arm A's score really above arm B's?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def macro_f1(gold: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> float:
    """Macro F1 over `labels` (as sklearn's f1_score(average="macro") with zero_division=0)."""
    scores = []
    for label in labels:
        tp = np.sum((pred == label) & (gold == label))
        fp = np.sum((pred == label) & (gold != label))
        fn = np.sum((pred != label) & (gold == label))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(scores)) if scores else 0.0


def score(metric: str, gold: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> float:
    if metric == "acc":
        return float(np.mean(gold == pred)) if len(gold) else 0.0
    if metric == "f1":
        return macro_f1(gold, pred, labels)
    raise ValueError(f"unknown metric {metric}")


@dataclass
class Difference:
    """A - B with a percentile confidence interval."""

    delta: float
    low: float
    high: float
    samples: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.delta:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_bootstrap(
    gold: np.ndarray,
    preds_a: np.ndarray,
    preds_b: np.ndarray,
    metric: str = "f1",
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Difference:
    """Resample test examples with replacement, the same indices for both arms.

    `preds_a` and `preds_b` are (seeds, examples) arrays (one row per training seed): a
    resample's score is the mean over seeds, so seed variance and example variance both count.
    """
    preds_a = np.atleast_2d(preds_a)
    preds_b = np.atleast_2d(preds_b)
    # Fixed label set for every resample: the classes seen in gold or either arm's predictions.
    labels = np.unique(np.concatenate([gold, preds_a.ravel(), preds_b.ravel()]))
    n = gold.shape[0]

    def mean_score(preds: np.ndarray, idx: np.ndarray) -> float:
        return float(np.mean([score(metric, gold[idx], row[idx], labels) for row in preds]))

    full = np.arange(n)
    delta = mean_score(preds_a, full) - mean_score(preds_b, full)
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    for i in range(samples):
        idx = rng.integers(0, n, n)
        diffs[i] = mean_score(preds_a, idx) - mean_score(preds_b, idx)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return Difference(delta, float(low), float(high), samples)
