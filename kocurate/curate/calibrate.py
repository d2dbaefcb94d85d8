"""The row rule's candidate cosine for an embedder, chosen on the Korean near-duplicate benchmark.

The shipped embedders (`use`, `lexical`) have thresholds chosen once on the dev split of the
project's benchmark (benchmarks/neardup/pairs.jsonl, `dedup.CANDIDATE_THRESHOLDS`). A
sentence-transformers model (`st:NAME`) is the user's own, so no shipped number fits it: the
first time it runs under the row rule without `--threshold`, its cosines on the dev pairs are
computed and the threshold is chosen on them (`choose`: within the limits of at most 1% of
must-keep pairs removed and no hard-negative kind above 2%, the highest threshold that finds at
most half a point fewer duplicates than the best), then
cached per model under the cache folder. The test split is never read here.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..resources import resource_file

#: candidate cosines tried (the second stage does not depend on it, so each costs one comparison)
GRID = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
#: limits on the dev split: the project's goal (at most 1% of must-keep rows removed, no
#: hard-negative kind above 2%). The exact-text candidates and the second stage alone already
#: remove 0.4% (one kind 1.7%) of the dev split's must-keep rows at any threshold.
MAX_FALSE = 0.01
MAX_WORST_NEGATIVE = 0.02
#: duplicates found a threshold may give up against the best one (on the dev split, the shipped
#: embedders then get 0.65 (use) and 0.6 (lexical), near their jointly tuned 0.6 / 0.5)
SLACK = 0.005


def pairs_path() -> Path:
    return resource_file("neardup/pairs.jsonl", checkout="benchmarks/neardup/pairs.jsonl")


def load_pairs(split: str) -> list[dict]:
    """The benchmark's labelled pairs of one split (`dev` calibrates, `test` reports)."""
    pairs = [json.loads(line) for line in pairs_path().read_text(encoding="utf-8").splitlines() if line.strip()]
    return [p for p in pairs if p["split"] == split]


def score(pairs: list[dict], decisions) -> dict:
    """Share of `dup` pairs whose second row is removed (found), of `keep` pairs whose second row
    is removed (false), the worst `keep` kind, and the share per kind."""
    by = defaultdict(list)
    for p, d in zip(pairs, decisions):
        by[(p["label"], p["kind"])].append(bool(d))
    found = [d for (label, _), v in by.items() if label == "dup" for d in v]
    false = [d for (label, _), v in by.items() if label == "keep" for d in v]
    return {"found": float(np.mean(found)), "false": float(np.mean(false)),
            "worst_negative": max(float(np.mean(v)) for (label, _), v in by.items() if label == "keep"),
            "kinds": {kind: float(np.mean(v)) for (_, kind), v in sorted(by.items())}}


def row_rule_parts(pairs: list[dict], check=None) -> tuple[np.ndarray, np.ndarray]:
    """(passes the second stage, is an exact-text candidate) for every pair, a seen first.

    The row rule removes b when (cosine >= threshold or exact-text candidate) and it passes:
    the two parts do not depend on the threshold, so a grid costs one comparison each."""
    from .dedup import RowCheck, RowView, check_pairs

    check = check or RowCheck()
    passing = check_pairs([p["a"] for p in pairs], [p["b"] for p in pairs], None, check).passing
    twins = []
    for p in pairs:
        a, b = RowView.of(p["a"], check), RowView.of(p["b"], check)
        twins.append(a.sq_prompt == b.sq_prompt
                     or (a.sq_output == b.sq_output and len(a.sq_output) >= check.min_output_chars))
    return np.asarray(passing, dtype=bool), np.asarray(twins, dtype=bool)


def pair_cosines(pairs: list[dict], embedder, cache_dir: Path | None = None) -> np.ndarray:
    """Cosine of each pair's instruction+input (normalised as dedup embeds them)."""
    from .embed import embed_texts

    texts = [f"{p[side]['instruction']} {p[side]['input']}" for p in pairs for side in "ab"]
    vectors = embed_texts(texts, embedder, cache_dir=cache_dir)
    return (vectors[0::2] * vectors[1::2]).sum(axis=1)


@dataclass
class Calibration:
    """The chosen candidate cosine and what it did on the dev split."""

    embedder: str
    threshold: float
    found: float
    false: float
    worst_negative: float
    meets_limits: bool
    pairs: int

    def describe(self) -> str:
        limits = "" if self.meets_limits else "; no threshold met the limits, the highest tried is used"
        return (f"calibrated for this model on the Korean near-duplicate benchmark's dev split ({self.pairs} pairs: "
                f"{self.found:.1%} of duplicates found, {self.false:.1%} of must-keep rows removed{limits})")


def choose(pairs: list[dict], cosines: np.ndarray, passing: np.ndarray, twins: np.ndarray, name: str) -> Calibration:
    """The highest grid threshold within the limits that finds at most `SLACK` fewer duplicates
    than the best one within the limits: a higher candidate cosine means fewer pairs to check and
    fewer look-alike rows of unseen templates reaching the second stage. None within the limits:
    the most conservative threshold, flagged."""
    rows = []
    for t in GRID:
        r = score(pairs, passing & ((cosines >= t) | twins))
        ok = r["false"] <= MAX_FALSE and r["worst_negative"] <= MAX_WORST_NEGATIVE
        rows.append((t, ok, Calibration(name, t, round(r["found"], 4), round(r["false"], 4),
                                        round(r["worst_negative"], 4), ok, len(pairs))))
    within = [c for _, ok, c in rows if ok]
    if not within:
        return rows[-1][2]
    best = max(c.found for c in within)
    return max((c for c in within if c.found >= best - SLACK), key=lambda c: c.threshold)


def calibrate(embedder, cache_dir: Path | None = None) -> Calibration:
    """The row rule's candidate cosine for `embedder` (a spec or an `Embedder`), cached per model
    name under `cache_dir`/calibration (no cache folder: computed every time)."""
    from .embed import load_embedder

    model = load_embedder(embedder) if isinstance(embedder, str) else embedder
    path = None
    if cache_dir is not None:
        # the model, the pairs and the rule name the cached choice: a new benchmark or rule recomputes it
        rule = json.dumps([model.name, GRID, MAX_FALSE, MAX_WORST_NEGATIVE, SLACK]).encode("utf-8")
        digest = hashlib.sha256(rule + hashlib.sha256(pairs_path().read_bytes()).digest()).hexdigest()[:16]
        path = Path(cache_dir) / "calibration" / f"row-rule-{digest}.json"
        if path.is_file():
            try:
                return Calibration(**json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                pass  # a damaged file is recomputed and rewritten
    pairs = load_pairs("dev")
    passing, twins = row_rule_parts(pairs)
    result = choose(pairs, pair_cosines(pairs, model, cache_dir), passing, twins, model.name)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(result), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
    return result


__all__ = ["GRID", "SLACK", "Calibration", "calibrate", "choose", "load_pairs", "pair_cosines", "row_rule_parts", "score"]
