"""Macro F1 and accuracy: kocurate's one home for them (lm-eval computes the task metrics; these
serve the polyglot / NSMC task YAML's aggregation and anything that re-scores predictions)."""

from __future__ import annotations

from typing import Sequence


def accuracy(golds: Sequence[int], preds: Sequence[int]) -> float:
    return sum(int(g == p) for g, p in zip(golds, preds)) / len(golds) if golds else float("nan")


def macro_f1(golds: Sequence[int], preds: Sequence[int], labels: Sequence[int] | None = None) -> float:
    """sklearn.metrics.f1_score(golds, preds, average="macro", labels=labels, zero_division=0)."""
    from sklearn.metrics import f1_score

    if not len(golds):
        return float("nan")
    kwargs = {"labels": list(labels)} if labels is not None else {}
    return float(f1_score(list(golds), list(preds), average="macro", zero_division=0, **kwargs))
