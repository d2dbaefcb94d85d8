"""What difference could this experiment detect? The minimum detectable difference (MDD).

For two arms scored on the same n test examples, the per-example difference in correctness is
-1, 0 or +1; its variance is at most the disagreement rate d (the share of examples that one arm
gets right and the other wrong). The standard error of the difference in accuracy is then
sqrt(d / n), and a two-sided test at level alpha detects, with probability `power`, a true
difference of (z[1 - alpha/2] + z[power]) * sqrt(d / n) or more. For macro F1 this is the same
figure used as an approximation. The KoBEST average of T tasks (tested independently) has standard
error sqrt(sum_t d_t / n_t) / T.

With the disagreement observed between the two arms, this says how large a difference the test
set could have shown; a difference below it that is "not significant" is not evidence of no effect.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Sequence

import numpy as np


def disagreement_rate(gold: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray) -> float:
    """Share of examples one arm gets right and the other wrong, averaged over pairs of units."""
    gold = np.asarray(gold)
    right_a = np.atleast_2d(preds_a) == gold
    right_b = np.atleast_2d(preds_b) == gold
    rates = [float(np.mean(a != b)) for a in right_a for b in right_b]
    return float(np.mean(rates)) if rates else 0.0


def standard_error(rates: Sequence[float], sizes: Sequence[int]) -> float:
    """SE of the (average over tasks of the) paired difference, from disagreement rates and test sizes.

    A rate of 0 (the arms agree everywhere) is taken as one example in n: zero would claim that
    any difference at all could be seen.
    """
    if not sizes:
        return float("nan")
    variance = sum(max(r, 1.0 / n) / n for r, n in zip(rates, sizes))
    return float(np.sqrt(variance) / len(sizes))


def minimum_detectable_difference(rates: Sequence[float], sizes: Sequence[int], *, alpha: float = 0.05,
                                  power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at `alpha` finds with probability `power`."""
    z = NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * standard_error(rates, sizes)
