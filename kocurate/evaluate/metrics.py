"""acc, macro F1 (sklearn, as both harnesses) and hellaswag's acc_norm, from per-choice log-likelihoods."""

from __future__ import annotations

from typing import Sequence


def argmax(values: Sequence[float]) -> int:
    """First index of the maximum, like numpy.argmax (ties go to the earlier choice)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def predict(lls: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(pred, pred_norm): argmax of the raw sums, and of the sums divided by each choice's length in characters."""
    return argmax(lls), argmax([ll / float(len(c)) for ll, c in zip(lls, choices)])


def accuracy(golds: Sequence[int], preds: Sequence[int]) -> float:
    return sum(int(g == p) for g, p in zip(golds, preds)) / len(golds) if golds else float("nan")


def macro_f1(golds: Sequence[int], preds: Sequence[int]) -> float:
    """sklearn.metrics.f1_score(golds, preds, average="macro") over the whole set."""
    from sklearn.metrics import f1_score

    return float(f1_score(list(golds), list(preds), average="macro")) if golds else float("nan")


def compute(metric_names: Sequence[str], golds: list[int], preds: list[int], preds_norm: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in metric_names:
        if name == "acc":
            out["acc"] = accuracy(golds, preds)
        elif name == "acc_norm":
            out["acc_norm"] = accuracy(golds, preds_norm)
        elif name == "f1":
            out["f1"] = macro_f1(golds, preds)
        else:
            raise ValueError(f"unknown metric {name}")
    return out
