"""The verdict's logic on synthetic per-example results with planted effects (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from kocurate.evaluate.metrics import macro_f1
from kocurate.experiment import parse_arms
from kocurate.experiment.bootstrap import resample_weights, resampled_scores
from kocurate.experiment.power import minimum_detectable_difference
from kocurate.experiment.verdict import AVERAGE, Pair, Scored, Wording, compare, headline, holm, plan

TASKS = ["kobest_boolq", "kobest_copa"]


def _arm(gold: np.ndarray, correct_rate: float, rng, units: int = 1) -> Scored:
    preds = np.stack([np.where(rng.random(len(gold)) < correct_rate, gold, 1 - gold) for _ in range(units)])
    return Scored(gold, preds, [macro_f1(gold.tolist(), p.tolist()) for p in preds])


def _shuffle_correctness(gold: np.ndarray, scored: Scored, swaps: int, rng) -> Scored:
    """Same accuracy as `scored`, other examples right: `swaps` right->wrong and as many wrong->right."""
    pred = scored.preds[0].copy()
    right, wrong = np.flatnonzero(pred == gold), np.flatnonzero(pred != gold)
    pred[rng.choice(right, swaps, replace=False)] ^= 1
    pred[rng.choice(wrong, swaps, replace=False)] ^= 1
    return Scored(gold, pred[None], [macro_f1(gold.tolist(), pred.tolist())])


def _results(n: int, rates: dict[str, float], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out: dict = {}
    for task in TASKS:
        gold = rng.integers(0, 2, n)
        for arm, rate in rates.items():
            out.setdefault(arm, {}).setdefault(task, {})[5] = _arm(gold, rate, rng)
    return out


def _claim(comps, arm, against):
    return next(c for c in comps if (c.arm, c.against, c.task) == (arm, against, AVERAGE))


def test_a_large_planted_effect_is_called_significant():
    results = _results(400, {"base": 0.55, "curated": 0.85})
    comps = compare(results, [Pair("curated", "base", "base")], TASKS, [5], metric="f1", samples=1000)
    claim = _claim(comps, "curated", "base")
    assert claim.headline and claim.holm_p is not None
    assert claim.significant and claim.difference.low > 0.15
    assert claim.difference.low <= claim.difference.delta <= claim.difference.high
    sentence = headline(comps, Wording("f1", TASKS))[0]
    assert sentence.startswith("curated vs base: KoBEST average F1 +0.")
    assert "significantly better (Holm-adjusted p" in sentence and "at 5 shots" in sentence
    assert "this experiment can detect differences of" in sentence


def test_no_effect_is_not_called_significant():
    rng = np.random.default_rng(1)
    results: dict = {}
    for task in TASKS:
        gold = rng.integers(0, 2, 400)
        a = _arm(gold, 0.7, rng)
        results.setdefault("a", {})[task] = {5: a}
        results.setdefault("b", {})[task] = {5: _shuffle_correctness(gold, a, 40, rng)}
    comps = compare(results, [Pair("a", "b", "full")], TASKS, [5], samples=1000)
    claim = _claim(comps, "a", "b")
    assert abs(claim.difference.delta) < 0.01
    assert not claim.significant and claim.difference.low < 0 < claim.difference.high
    assert "not significant" in headline(comps, Wording("f1", TASKS))[0]
    # the arms disagree on 80 of 400 examples per task: that is the rate the power figure uses
    assert claim.disagreement == pytest.approx(80 / 400)


def test_the_detectable_difference_shrinks_as_the_test_set_grows():
    small = _claim(compare(_results(150, {"a": 0.7, "b": 0.6}), [Pair("a", "b", "full")], TASKS, [5], samples=200), "a", "b")
    large = _claim(compare(_results(1500, {"a": 0.7, "b": 0.6}), [Pair("a", "b", "full")], TASKS, [5], samples=200), "a", "b")
    assert large.mdd < small.mdd / 2  # about sqrt(10) smaller
    # (1.96 + 0.84) * sqrt(d / n): a disagreement rate of 0.3 on 1000 examples
    assert minimum_detectable_difference([0.3], [1000]) == pytest.approx(2.8016 * np.sqrt(0.3 / 1000), rel=1e-3)
    assert minimum_detectable_difference([0.3], [4000]) == pytest.approx(minimum_detectable_difference([0.3], [1000]) / 2)


def test_seed_disagreement_widens_the_interval():
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, 500)
    steady = _arm(gold, 0.7, rng)
    agreeing = Scored(gold, np.repeat(steady.preds, 2, axis=0), np.repeat(steady.scores, 2))
    noisy = [_arm(gold, 0.55, rng).preds[0], _arm(gold, 0.85, rng).preds[0]]
    disagreeing = Scored(gold, np.stack(noisy), [macro_f1(gold.tolist(), p.tolist()) for p in noisy])
    base = _arm(gold, 0.6, rng)

    def width(arm: Scored) -> float:
        results = {"base": {"kobest_copa": {0: base}}, "arm": {"kobest_copa": {0: arm}}}
        d = compare(results, [Pair("arm", "base", "base")], ["kobest_copa"], [0], samples=1000)[0].difference
        return d.high - d.low

    assert width(disagreeing) > 1.5 * width(agreeing)


def test_resampled_macro_f1_is_the_evaluators_macro_f1_on_each_resample():
    rng = np.random.default_rng(3)
    gold, pred = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    pred[:5] = 3  # a label some resamples lose entirely
    weights = resample_weights(60, 25, rng)
    values = resampled_scores("f1", gold, pred, weights)
    for row, value in zip(weights, values):
        idx = np.repeat(np.arange(60), row.astype(int))
        assert value == pytest.approx(macro_f1(gold[idx].tolist(), pred[idx].tolist()), abs=1e-12)
    acc = resampled_scores("acc", gold, pred, weights)
    assert acc[0] == pytest.approx(np.mean(np.repeat(gold == pred, weights[0].astype(int))))


def test_holm_adjusts_in_step_down_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])


def test_holm_can_turn_a_nominal_finding_into_a_non_finding():
    rng = np.random.default_rng(7)
    results: dict = {}
    for task in TASKS:
        gold = rng.integers(0, 2, 300)
        results.setdefault("base", {})[task] = {k: _arm(gold, 0.6, rng) for k in (0, 5)}
        for arm in ("a", "b", "c"):
            results.setdefault(arm, {})[task] = {k: _arm(gold, 0.6, rng) for k in (0, 5)}
    pairs = [Pair(arm, "base", "base") for arm in ("a", "b", "c")]
    claims = [c for c in compare(results, pairs, TASKS, [0, 5], samples=500) if c.headline]
    assert len(claims) == 6  # three arms x two shot counts, KoBEST average only
    for c in claims:
        assert c.holm_p >= c.difference.p_value
        if c.holm_p >= 0.05:
            assert not c.significant


def test_the_plan_compares_curated_with_full_with_its_controls_and_everything_with_base():
    arms = parse_arms(["full=a", "kq=b", "ctrl=random:kq:full", "other=c"])
    pairs = plan(arms, {"full": 1000, "kq": 10, "ctrl": 10, "other": 50})
    found = {(p.arm, p.against, p.kind) for p in pairs}
    assert {("kq", "full", "full"), ("kq", "ctrl", "control"), ("other", "full", "full")} <= found
    assert {("full", "base", "base"), ("kq", "base", "base"), ("ctrl", "base", "base"), ("other", "base", "base")} <= found
    assert ("full", "full", "full") not in found and not any(p.arm == "ctrl" and p.kind != "base" for p in pairs)
    assert pairs[0] == Pair("kq", "full", "full")  # the claims that matter come first
