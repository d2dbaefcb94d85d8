"""Exact and semantic near-duplicate removal: what makes two rows the same example.

Two rules, one for each question a curator may ask (``rule``):

``row`` (the default): two rows are duplicates when they are the same training example, i.e.
the same request about the same thing with the same answer. Instruction, input AND output
count, and more than one signal decides:

1. Candidates. Rows whose embedded instruction+input has cosine >= the candidate threshold
   (per embedder, calibrated on the dev split of benchmarks/neardup: `CANDIDATE_THRESHOLDS`),
   plus rows with the same squashed prompt (NFKC, case, spaces and punctuation dropped) and
   rows with the same squashed output of >= `min_output_chars` characters: spacing edits
   and reworded requests with the same long answer are found even where the encoder's
   cosine is low.
2. A second-stage check of each candidate pair (`compare`), on Korean jamo n-grams (NFD
   of the squashed text, `ngram` = 4: one edited syllable changes a few grams only):

   * the numbers (digit strings, thousands separators dropped) of the prompts are the same,
     and those of the outputs too: 헌법 제10조 and 제26조, 17 x 23 and 17 x 32 are different
     examples however alike their wording;
   * no entity conflict: a word of one prompt that its own answer repeats (the thing asked
     about: 춘천, 김치찌개) and that appears nowhere in the other row, on both sides;
   * the outputs contain each other (n-gram containment >= `output_overlap`) and neither
     says much more (Jaccard >= `output_jaccard`): rows with different answers are kept;
   * the inputs overlap (Jaccard >= `input_overlap`) when there are inputs;
   * and either the prompts overlap (Jaccard >= `prompt_overlap`: a surface edit) or the
     answer is long, nearly identical (containment >= `paraphrase_overlap`) and the prompts
     share the word the answer is about, or the same input (a paraphrased request). Short
     answers (< `min_output_chars`) say little on their own: their prompts must overlap
     by `short_prompt_overlap`.

``instruction`` (Platypus, the kopen-platypus recipe): a row is a duplicate when the cosine
of its instruction+input to a kept row is > the threshold; exact dedup keys on
instruction+input and keeps the longest output.

The row rule runs in three parts, each usable alone (the Ray executor runs the first two in its
workers and the third on the driver):

(a) candidates: `select_candidates` orders each row's cosine neighbours and exact-text twins
    (`first_members` / `group_pairs`) as the checks are made: one per pair, numbers
    pre-filtered, best cosine first, at most `RowCheck.max_checks` per row;
(b) `check_pairs` / `check_pair_index`: the second stage on a whole batch of pairs at once
    (jamo n-gram sets as sorted integer arrays, `gram_sets`; the Python-only tests run on the
    few pairs left); it depends only on the two rows, and decides exactly as `compare`;
(c) `resolve_row_pairs`: greedy keep-first over the passing pairs in input order.

Greedy keep-first in input order in both rules: a row stays unless an earlier KEPT row is its
duplicate; `dup_of` is the most similar such row. The pass streams: query blocks are searched
in input order and each row needs only its neighbours among earlier rows, so memory holds one
block's pairs plus, per row, at most a few qualifying earlier neighbours (`SemanticResult`
keeps them to explain each removal and to re-threshold without searching again).

`ExactDedup` (same rule names): ``row`` keys on the normalised instruction+input+output and
counts, but keeps, rows that share an instruction+input with a different output; ``instruction``
keys on instruction+input (the longest output wins).
"""

from __future__ import annotations

import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import ClassVar, Sequence

import numpy as np
import polars as pl

from ..errors import InputError
from ..records import removal_frame
from ..records.text import exact_keys, normalize_text, row_texts  # noqa: F401 (exact_keys re-exported)
from .embed import Embedder, embed_texts, load_embedder
from .index import Pairs, build_index, choose_method, nearest, pair_recall, range_pairs
from .step import RunContext, Step, StepResult

RULES = ("row", "instruction")
#: `instruction` rule: cosine thresholds per embedder family (benchmarks/results/dedup.md).
DEFAULT_THRESHOLDS = {"use": 0.8, "lexical": 0.8, "st": 0.9}
#: `row` rule: candidate cosine per embedder family, chosen on the dev split of
#: benchmarks/neardup (benchmarks/results/neardup.md). An st: model is calibrated on the same
#: split at first use (`resolve_threshold`, `calibrate.py`); 0.7 is only the fallback of
#: `default_threshold`, which does not load models.
CANDIDATE_THRESHOLDS = {"use": 0.6, "lexical": 0.5, "st": 0.7}
#: Thresholds `--analyze` reports.
ANALYZE_THRESHOLDS = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)
ROW_ANALYZE_THRESHOLDS = (0.5, 0.55, 0.6, 0.7, 0.8, 0.9)
KEEP_POLICIES = ("longest-output", "first")
#: Query rows per streamed search block (exact flat index / IVF cells).
BLOCK_EXACT = 4096
BLOCK_IVF = 16384


def check_threshold(value: float | None, flag: str = "--threshold") -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{flag} {value!r}: not a number; give a cosine in (0, 1], e.g. 0.85") from None
    if not (0.0 < number <= 1.0) or number != number:
        raise InputError(f"{flag} {value}: must be in (0, 1] (a cosine similarity); e.g. {flag} 0.85")
    return number


def check_rule(rule: str, flag: str = "--rule") -> str:
    if rule not in RULES:
        raise InputError(f"{flag} {rule}: unknown; use row (instruction, input and output: the default) "
                         "or instruction (Platypus: instruction+input only)")
    return rule


def embedder_family(embedder: str | Embedder) -> str:
    """`use`, `lexical` or `st` for an embedder spec or instance."""
    name = embedder if isinstance(embedder, str) else embedder.name
    if name in ("default", "") or name.startswith("use"):
        return "use"
    if name.startswith("lexical"):
        return "lexical"
    return "st"


def default_threshold(embedder: str | Embedder, rule: str = "instruction") -> float:
    """The shipped default for an embedder family under `rule` (no model is loaded)."""
    table = CANDIDATE_THRESHOLDS if rule == "row" else DEFAULT_THRESHOLDS
    return table[embedder_family(embedder)]


def resolve_threshold(embedder: str | Embedder, rule: str = "row", cache_dir=None) -> tuple[float, str]:
    """(threshold, where it comes from) when none is given: the shipped default, except a
    sentence-transformers model under the row rule, which is calibrated on the benchmark's dev
    split at first use (cached per model under `cache_dir`)."""
    family = embedder_family(embedder)
    if rule == "row" and family == "st":
        from .calibrate import calibrate

        found = calibrate(embedder, cache_dir)
        return found.threshold, found.describe()
    return default_threshold(embedder, rule), f"default of the {rule} rule for {family} embedders"


def _param(value):
    """A step parameter as the manifest records it (an Embedder instance by its name)."""
    return value.name if isinstance(value, Embedder) else value


def check_columns(frame: pl.DataFrame, columns: Sequence[str], flag: str = "--columns") -> None:
    """Every named column exists, and holds text in some row (an all-empty `input` is allowed)."""
    choices = ", ".join(c for c in frame.columns if frame.schema[c] == pl.String) or "(none)"
    for column in columns:
        if column not in frame.columns:
            raise InputError(f"{flag}: no column '{column}' in the data; text columns: {choices}")
    if not frame.height:
        return
    for column in columns:
        if frame.schema[column] != pl.String:
            raise InputError(f"{flag}: column '{column}' is not text ({frame.schema[column]}); text columns: {choices}")
        empty = frame.select((pl.col(column).fill_null("").str.strip_chars() != "").any()).item() is False
        # an all-empty `input` is common (no row has one) and harmless beside other columns
        if empty and (column != "input" or len(columns) == 1):
            raise InputError(f"{flag}: column '{column}' is empty in every row; text columns: {choices}")


def split_empty(frame: pl.DataFrame, texts: list[str], step: str, columns: Sequence[str]):
    """Rows whose text is empty after normalisation go to removed/ (reason `empty-text`)."""
    empty = np.array([not t for t in texts], dtype=bool)
    if not empty.any():
        return frame, texts, frame.head(0)
    mask = pl.Series(empty)
    removed = removal_frame(
        frame.filter(mask), step, "empty-text",
        detail=f"{'+'.join(columns)} is empty after NFKC and whitespace folding",
    )
    return frame.filter(~mask), [t for t, e in zip(texts, empty) if not e], removed


# --------------------------------------------------------------------------------------------
# the second-stage signals (Korean jamo n-grams, numbers, entities)

_NON_WORD = re.compile(r"[\W_]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+")
#: Particles and copula endings stripped from the end of a word to get its stem (longest first).
_SUFFIXES = tuple(sorted(
    ["은", "는", "이", "가", "을", "를", "의", "에", "에서", "으로", "로", "와", "과", "도", "만", "에게", "께서", "라는",
     "이라는", "란", "이란", "에는", "이나", "나", "부터", "까지", "처럼", "보다", "하고", "이며", "며", "인", "이고", "에도"],
    key=len, reverse=True))


def squash(text: str | None) -> str:
    """NFKC, whitespace folded, case-folded, then spaces and punctuation dropped: the form
    the n-gram signals and the exact-text candidate keys use (Korean spacing varies)."""
    return _NON_WORD.sub("", normalize_text(text).casefold())


def _squash_series(texts: pl.Series) -> pl.Series:
    """`squash` for a whole column at once (polars: NFKC, lower case, non-word characters out)."""
    return texts.fill_null("").str.normalize("NFKC").str.to_lowercase().str.replace_all(r"[\W_]+", "")


def jamo_grams(squashed: str, n: int) -> frozenset:
    """Character n-grams of the jamo (NFD) spelling: one changed syllable touches few grams."""
    s = unicodedata.normalize("NFD", squashed)
    if len(s) <= n:
        return frozenset((s,)) if s else frozenset()
    return frozenset({s[i:i + n] for i in range(len(s) - n + 1)})


def numbers(text: str | None, normalized: bool = False) -> tuple[str, ...]:
    """The digit strings of `text`, thousands separators dropped, sorted (1,000 == 1000)."""
    return tuple(sorted(m.replace(",", "") for m in _NUMBER.findall(text if normalized else normalize_text(text))))


_SUFFIX_SET = frozenset(_SUFFIXES)
#: Request words that say what to do, not what about: never the subject of a row.
_REQUEST_WORDS = frozenset(
    "알려 주세 주십 설명 다음 아래 무엇 무슨 어떻게 어떤 어디 언제 얼마 누구 대해 관해 간단 자세 하나 질문 답하 답변 부탁 "
    "만들 작성 정리 요약 번역 분류 판단 추천 구하 계산 해주 해줘 궁금 그리고 또는 있는 없는 하는 되는 같은".split())
#: Verb and sentence endings: a word ending so is a predicate, not a thing asked about.
_PREDICATE_END = ("요", "다", "까", "니", "줘", "해", "죠", "냐")


def stems(text: str, normalized: bool = False) -> set[str]:
    """Content words: >= 2 characters, a trailing particle stripped, request words and
    predicates left out (what a row is about: 김치찌개, 제10조, 춘천, python)."""
    out = set()
    for word in _WORD.findall((text if normalized else normalize_text(text)).casefold()):
        word = word.replace("_", "")
        for size in (3, 2, 1):  # the longest particle first
            if len(word) - size >= 2 and word[-size:] in _SUFFIX_SET:
                word = word[:-size]
                break
        if len(word) < 2 or word[:2] in _REQUEST_WORDS or word.endswith(_PREDICATE_END):
            continue
        out.add(word)
    return out


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def containment(a: frozenset, b: frozenset) -> float:
    """Share of the smaller set found in the other (1.0 when both are empty)."""
    if not a or not b:
        return 1.0 if not a and not b else 0.0
    return len(a & b) / min(len(a), len(b))


@dataclass(frozen=True)
class RowCheck:
    """The second-stage thresholds of the `row` rule (calibrated on benchmarks/neardup dev)."""

    ngram: int = 4
    prompt_overlap: float = 0.3
    output_overlap: float = 0.8
    output_jaccard: float = 0.3
    input_overlap: float = 0.5
    paraphrase_overlap: float = 0.9
    short_prompt_overlap: float = 0.6
    min_output_chars: int = 10
    max_chars: int = 1500
    max_checks: int = 32
    max_edges: int = 8
    group_limit: int = 8

    def describe(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RowView:
    """What the second stage reads of one row (computed once per row, on demand)."""

    __slots__ = ("prompt", "sq_prompt", "sq_input", "sq_output", "prompt_grams", "input_grams", "output_grams",
                 "prompt_numbers", "output_numbers", "anchors", "has_input")

    def __init__(self, prompt: str, input_text: str, output: str, check: RowCheck):
        self.prompt = normalize_text(prompt)
        out = normalize_text(output)
        self.sq_prompt = _NON_WORD.sub("", self.prompt.casefold())[: check.max_chars]
        self.sq_input = squash(input_text)[: check.max_chars]
        self.sq_output = _NON_WORD.sub("", out.casefold())[: check.max_chars]
        self.has_input = bool(self.sq_input)
        self.prompt_grams = jamo_grams(self.sq_prompt, check.ngram)
        self.input_grams = jamo_grams(self.sq_input, check.ngram)
        self.output_grams = jamo_grams(self.sq_output, check.ngram)
        self.prompt_numbers = numbers(self.prompt, normalized=True)
        self.output_numbers = numbers(out, normalized=True)
        self.anchors = tuple(sorted(w for w in stems(self.prompt, normalized=True) if w in self.sq_output))

    @classmethod
    def of(cls, row: dict, check: RowCheck, prompt_columns=("instruction", "input"), output_column="output") -> "RowView":
        prompt = " ".join((row.get(c) or "") for c in prompt_columns)
        input_text = (row.get("input") or "") if "input" in prompt_columns else ""
        return cls(prompt, input_text, row.get(output_column) or "", check)


def _conflict(a: RowView, b: RowView) -> str | None:
    """'x / y' when each prompt names a thing its own answer repeats and the other row lacks."""
    mine = [w for w in a.anchors if w not in b.sq_prompt and w not in b.sq_output]
    theirs = [w for w in b.anchors if w not in a.sq_prompt and w not in a.sq_output]
    return f"{mine[0]} / {theirs[0]}" if mine and theirs else None


def _shared_anchor(a: RowView, b: RowView) -> bool:
    return any(w in b.sq_prompt for w in a.anchors) or any(w in a.sq_prompt for w in b.anchors)


def compare(a: RowView, b: RowView, cosine: float | None, check: RowCheck, full: bool = False) -> dict:
    """The `row` rule on one pair: {'duplicate': bool, 'why': str, and the signals}.

    With `full=False` it stops at the first failed test (the dedup loop); `full=True`
    computes every signal (explain)."""
    sig: dict = {"cosine": None if cosine is None else round(float(cosine), 4)}
    fails: list[str] = []

    def stop() -> bool:
        return bool(fails) and not full

    sig["numbers_same"] = a.prompt_numbers == b.prompt_numbers and a.output_numbers == b.output_numbers
    if not sig["numbers_same"]:
        left = a.prompt_numbers if a.prompt_numbers != b.prompt_numbers else a.output_numbers
        right = b.prompt_numbers if a.prompt_numbers != b.prompt_numbers else b.output_numbers
        fails.append(f"numbers differ ({' '.join(left) or '-'} vs {' '.join(right) or '-'})")
        if stop():
            return {**sig, "duplicate": False, "why": fails[0]}
    sig["output_overlap"] = round(containment(a.output_grams, b.output_grams), 4)
    if sig["output_overlap"] < check.output_overlap:
        fails.append(f"outputs differ (overlap {sig['output_overlap']:.2f} < {check.output_overlap})")
        if stop():
            return {**sig, "duplicate": False, "why": fails[0]}
    sig["output_jaccard"] = round(jaccard(a.output_grams, b.output_grams), 4)
    if sig["output_jaccard"] < check.output_jaccard:
        fails.append(f"one answer says much more (output Jaccard {sig['output_jaccard']:.2f} < {check.output_jaccard})")
        if stop():
            return {**sig, "duplicate": False, "why": fails[0]}
    if a.has_input or b.has_input:
        sig["input_overlap"] = round(jaccard(a.input_grams, b.input_grams), 4)
        if sig["input_overlap"] < check.input_overlap:
            fails.append(f"inputs differ (overlap {sig['input_overlap']:.2f} < {check.input_overlap})")
            if stop():
                return {**sig, "duplicate": False, "why": fails[0]}
    conflict = _conflict(a, b)
    sig["entity_conflict"] = conflict
    if conflict:
        fails.append(f"about different things ({conflict})")
        if stop():
            return {**sig, "duplicate": False, "why": fails[0]}
    sig["prompt_overlap"] = round(jaccard(a.prompt_grams, b.prompt_grams), 4)
    short = min(len(a.sq_output), len(b.sq_output)) < check.min_output_chars
    path = None
    if short:
        if sig["prompt_overlap"] >= check.short_prompt_overlap:
            path = "surface edit (short answer)"
    elif sig["prompt_overlap"] >= check.prompt_overlap:
        path = "surface edit"
    elif sig["output_overlap"] >= check.paraphrase_overlap and (
            _shared_anchor(a, b) or (a.has_input and b.has_input and sig.get("input_overlap", 0) >= 0.99)):
        path = "reworded request, same answer"
    if path is None:
        need = check.short_prompt_overlap if short else check.prompt_overlap
        fails.append(f"requests differ (prompt overlap {sig['prompt_overlap']:.2f} < {need}"
                     + (", short answer)" if short else ", no shared subject)"))
    sig["path"] = path
    if fails:
        return {**sig, "duplicate": False, "why": fails[0]}
    return {**sig, "duplicate": True, "why": path}


def describe_signals(sig: dict) -> str:
    """One line: every signal of a pair."""
    parts = []
    if sig.get("cosine") is not None:
        parts.append(f"cosine {sig['cosine']:.3f}")
    for key, label in (("prompt_overlap", "prompt"), ("input_overlap", "input"), ("output_overlap", "output"),
                       ("output_jaccard", "output Jaccard")):
        if sig.get(key) is not None:
            parts.append(f"{label} n-gram {sig[key]:.2f}")
    if "numbers_same" in sig:
        parts.append("numbers same" if sig["numbers_same"] else "numbers differ")
    if sig.get("entity_conflict"):
        parts.append(f"entities differ: {sig['entity_conflict']}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# the second stage as batch functions: per-row features once, every pair of a batch at once

_SQUASH_CACHE_LIMIT = 1 << 18
#: pairs per `check_pair_index` pass, and n-grams expanded at once per intersection pass (memory)
CHECK_CHUNK = 1 << 16
#: threads checking chunks of pairs at once (two chunks' n-gram arrays in memory at a time)
CHECK_THREADS = min(2, os.cpu_count() or 1)
OVERLAP_CHUNK = 1 << 24


def _expand(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR `offsets` and `rows` (k = 0..len(rows)-1): (k repeated per element of row k,
    the element positions), i.e. the concatenated slices offsets[r]:offsets[r+1]."""
    lens = offsets[rows + 1] - offsets[rows]
    k = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
    first = np.cumsum(lens) - lens
    return k, offsets[rows][k] + (np.arange(int(lens.sum()), dtype=np.int64) - first[k])


def gram_sets(strings: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """`jamo_grams` of many squashed strings at once, as integer sets in CSR layout.

    Returns (offsets, grams, bound): the grams of string r are grams[offsets[r]:offsets[r+1]],
    sorted and distinct, each < bound; equal grams get equal integers within ONE call (a
    string of at most n jamo is one gram, itself, as in `jamo_grams`)."""
    nfd = [unicodedata.normalize("NFD", s) for s in strings]
    rows = len(nfd)
    lens = np.fromiter(map(len, nfd), dtype=np.int64, count=rows)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    total = int(lens.sum())
    if not total:
        return offsets, np.zeros(0, dtype=np.int64), 1
    cp = np.frombuffer("".join(nfd).encode("utf-32-le"), dtype=np.uint32)
    present = np.zeros(int(cp.max()) + 1, dtype=bool)
    present[cp] = True
    lut = np.cumsum(present, dtype=np.int64)  # characters -> 1..D (0 pads)
    base = int(lut[-1]) + 1
    # each string followed by n-1 pads: a window never reaches into the next string
    row_of = np.repeat(np.arange(rows, dtype=np.int64), lens)
    padded = np.zeros(total + rows * (n - 1), dtype=np.int64)
    padded[np.arange(total, dtype=np.int64) + row_of * (n - 1)] = lut[cp]
    starts = np.concatenate(([0], np.cumsum(lens + n - 1)[:-1]))
    nwin = np.where(lens > n, lens - n + 1, (lens > 0).astype(np.int64))
    wrow, local = _expand(np.concatenate(([0], np.cumsum(nwin))), np.arange(rows, dtype=np.int64))
    wpos = starts[wrow] + (local - np.concatenate(([0], np.cumsum(nwin)))[wrow])
    if base ** n < (1 << 62):
        code = padded[wpos]
        for t in range(1, n):
            code = code * base + padded[wpos + t]
        bound = base ** n
    else:  # many distinct characters or long grams: number the windows by their bytes
        windows = np.ascontiguousarray(np.stack([padded[wpos + t] for t in range(n)], axis=1))
        _, code = np.unique(windows.view(np.dtype((np.void, 8 * n))).ravel(), return_inverse=True)
        code = code.reshape(-1).astype(np.int64)
        bound = int(code.max()) + 1
    if rows * bound >= (1 << 62):
        uniq, code = np.unique(code, return_inverse=True)
        code = code.reshape(-1).astype(np.int64)
        bound = len(uniq)
    keys = np.sort(wrow * bound + code)
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    owner = keys // bound
    np.cumsum(np.bincount(owner, minlength=rows), out=offsets[1:])
    return offsets, keys - owner * bound, bound


def _overlap_counts(sets: tuple[np.ndarray, np.ndarray, int], a: np.ndarray, b: np.ndarray):
    """(|A∩B|, |A|, |B|) for the sets of rows a[k] and b[k] (indices into `gram_sets`' rows)."""
    offsets, grams, bound = sets
    la, lb = offsets[a + 1] - offsets[a], offsets[b + 1] - offsets[b]
    pairs = len(a)
    if not pairs:
        return la.copy(), la, lb
    total = np.cumsum(la + lb)
    # memory: about OVERLAP_CHUNK grams expanded at a time (a pair is never split)
    edges = np.unique(np.concatenate(([0], np.searchsorted(total, np.arange(OVERLAP_CHUNK, total[-1], OVERLAP_CHUNK)),
                                      [pairs])))
    if pairs * bound >= (1 << 62):
        uniq, grams = np.unique(grams, return_inverse=True)
        grams, bound = grams.reshape(-1).astype(np.int64), max(len(uniq), 1)
    inter = np.concatenate([_overlap_part(offsets, grams, bound, a[s:e], b[s:e]) for s, e in zip(edges[:-1], edges[1:])])
    return inter, la, lb


def _overlap_part(offsets: np.ndarray, grams: np.ndarray, bound: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    pairs = len(a)
    ka, pa = _expand(offsets, a)
    kb, pb = _expand(offsets, b)
    key_a = ka * bound + grams[pa]  # sorted: pairs in order, grams sorted within a set
    key_b = kb * bound + grams[pb]
    if not key_b.size:
        return np.zeros(pairs, dtype=np.int64)
    at = np.minimum(np.searchsorted(key_b, key_a), key_b.size - 1)
    hit = key_b[at] == key_a
    return np.bincount(ka[hit], minlength=pairs)


def _jaccard_of(inter, la, lb) -> np.ndarray:
    union = la + lb - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _containment_of(inter, la, lb) -> np.ndarray:
    small = np.minimum(la, lb)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(small > 0, inter / np.maximum(small, 1), np.where((la == 0) & (lb == 0), 1.0, 0.0))


def _at_least(values: np.ndarray, threshold: float) -> np.ndarray:
    """round(value, 4) >= threshold, as `compare` decides (it compares the rounded signal)."""
    ok = values >= threshold
    for k in np.flatnonzero(np.abs(values - threshold) < 1e-4).tolist():
        ok[k] = round(float(values[k]), 4) >= threshold
    return ok


#: Characters whose NFKC, case folding and word test polars does exactly as Python does (every
#: one checked alone and beside Hangul, Latin and digits: tests/test_dedup.py does it again), in
#: the blocks Korean text uses: Latin-1, Hangul, punctuation, symbols, CJK, full-width forms.
#: Texts made only of them are squashed in polars, the others in Python (`squash_texts`).
_SAFE_RANGES = (
    (0x0, 0xA7), (0xA9, 0xAC), (0xAE, 0xAE), (0xB0, 0xB3), (0xB5, 0xB7), (0xB9, 0xDE), (0xE0, 0xFF), (0x1100, 0x11FF),
    (0x2000, 0x200A), (0x200E, 0x2016), (0x2018, 0x203D), (0x2041, 0x2053), (0x2055, 0x205F), (0x2061, 0x2064),
    (0x2066, 0x206F), (0x2190, 0x2426), (0x2440, 0x244A), (0x2460, 0x24EA), (0x2500, 0x2775), (0x2794, 0x27BF),
    (0x3000, 0x3029), (0x3030, 0x303F), (0x3131, 0x318E), (0x3200, 0x321E), (0x3220, 0x3247), (0x3250, 0x32FF),
    (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF01, 0xFF9D), (0xFFA0, 0xFFBE), (0xFFC2, 0xFFC7), (0xFFCA, 0xFFCF),
    (0xFFD2, 0xFFD7), (0xFFDA, 0xFFDC), (0xFFE0, 0xFFE2), (0xFFE4, 0xFFE6), (0xFFE8, 0xFFEE),
)
_UNSAFE = "[^" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in _SAFE_RANGES) + "]"


def squash_texts(texts, max_chars: int | None = None) -> list[str]:
    """`squash(t)[:max_chars]` of many texts at once (polars; Python for rows with rarer characters)."""
    texts = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    t = pl.col("t").fill_null("")
    sq = t.str.normalize("NFKC").str.to_lowercase().str.replace_all(r"[\W_]+", "")
    if max_chars is not None:
        sq = sq.str.slice(0, max_chars)
    done = texts.rename("t").to_frame().select(sq.alias("sq"), t.str.contains(_UNSAFE).alias("rare"))
    out = done["sq"].to_list()
    for k in np.flatnonzero(done["rare"].to_numpy()).tolist():
        out[k] = squash(texts[k])[:max_chars]
    return out


class RowFeatures:
    """What the second stage reads of many rows, computed for the rows a batch of pairs needs.

    Built from the rows' prompts (the embedded columns joined by a space), inputs and outputs
    (raw text); `RowView` is the one-row form of the same features (explain, tests)."""

    def __init__(self, prompts, inputs, outputs, check: RowCheck):
        as_series = lambda v: (v if isinstance(v, pl.Series) else pl.Series(list(v), dtype=pl.String)).fill_null("")  # noqa: E731
        self.check = check
        self.columns = {1: as_series(prompts), 2: as_series(inputs), 3: as_series(outputs)}
        self._numbers: dict[int, tuple] = {}
        self._anchors: dict[int, tuple] = {}
        self._squashed: dict[int, pl.Series] = {}

    @property
    def prompts(self) -> pl.Series:
        return self.columns[1]

    @property
    def inputs(self) -> pl.Series:
        return self.columns[2]

    @property
    def outputs(self) -> pl.Series:
        return self.columns[3]

    @classmethod
    def of_rows(cls, rows, check: RowCheck, prompt_columns=("instruction", "input"), output_column="output") -> "RowFeatures":
        """From dicts (or a polars frame) with the text columns, as `RowView.of` reads one row."""
        if isinstance(rows, pl.DataFrame):
            rows = rows.to_dicts()
        prompts = [" ".join((r.get(c) or "") for c in prompt_columns) for r in rows]
        inputs = [(r.get("input") or "") if "input" in prompt_columns else "" for r in rows]
        return cls(prompts, inputs, [r.get(output_column) or "" for r in rows], check)

    def __len__(self) -> int:
        return len(self.columns[1])

    def field(self, rows: np.ndarray, which: int) -> list[str]:
        """The squashed prompt (1), input (2) or output (3) of `rows`, cut at max_chars: `RowView`'s.

        Each column is squashed once, for all rows, on first use: a row is read by many chunks
        of pairs, and squashing it again each time was a sixth of the second stage's time."""
        column = self._squashed.get(which)
        if column is None:
            column = pl.Series(squash_texts(self.columns[which], self.check.max_chars), dtype=pl.String)
            self._squashed[which] = column
        return column.gather(rows).to_list()

    def numbers(self, i: int) -> tuple[tuple, tuple]:
        """(prompt numbers, output numbers) of row i, as `RowView` reads them."""
        got = self._numbers.get(i)
        if got is None:
            got = (numbers(self.columns[1][i]), numbers(self.columns[3][i]))
            self._numbers[i] = got
            if len(self._numbers) >= _SQUASH_CACHE_LIMIT:
                self._numbers.clear()
        return got

    def anchors(self, i: int, sq_output: str) -> tuple[str, ...]:
        """The words of row i's prompt that its answer repeats (what it is about), as `RowView.anchors`."""
        got = self._anchors.get(i)
        if got is None:
            got = tuple(sorted(w for w in stems(self.columns[1][i]) if w in sq_output))
            self._anchors[i] = got
            if len(self._anchors) >= _SQUASH_CACHE_LIMIT:
                self._anchors.clear()
        return got


#: `PairChecks.path` codes
_PATHS = (None, "surface edit (short answer)", "surface edit", "reworded request, same answer")


@dataclass
class PairChecks:
    """The `row` rule on a batch of pairs: `passing[k]` is `compare(...)['duplicate']` of pair k.

    Signals are filled as far as each pair got (nan / -1 where a pair failed earlier); for a
    passing pair `signals(k)` is the dict `compare` returns for it."""

    passing: np.ndarray
    cosine: np.ndarray
    output_overlap: np.ndarray
    output_jaccard: np.ndarray
    input_overlap: np.ndarray  # nan when neither row has an input
    prompt_overlap: np.ndarray
    path: np.ndarray  # index into _PATHS (0: none)

    def __len__(self) -> int:
        return len(self.passing)

    def signals(self, k: int) -> dict:
        path = _PATHS[int(self.path[k])]
        cos = self.cosine[k]
        sig: dict = {"cosine": None if cos != cos else round(float(cos), 4), "numbers_same": True,
                     "output_overlap": round(float(self.output_overlap[k]), 4),
                     "output_jaccard": round(float(self.output_jaccard[k]), 4)}
        if self.input_overlap[k] == self.input_overlap[k]:
            sig["input_overlap"] = round(float(self.input_overlap[k]), 4)
        sig.update(entity_conflict=None, prompt_overlap=round(float(self.prompt_overlap[k]), 4), path=path)
        return {**sig, "duplicate": bool(self.passing[k]), "why": path}


def check_pair_index(features: RowFeatures, a: np.ndarray, b: np.ndarray, cosines=None,
                     check: RowCheck | None = None) -> PairChecks:
    """`compare(row a[k], row b[k])` for every k at once (indices into `features`).

    The cheap vectorised tests run first on every pair (output n-gram containment and Jaccard,
    then inputs, then prompts), the per-row Python ones (numbers, entities, shared subject) only
    on the few pairs left; the decision is `compare`'s (it does not depend on the order)."""
    check = check or features.check
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    pairs = len(a)
    if pairs > CHECK_CHUNK:  # memory: the n-gram arrays of one chunk of pairs at a time
        cut = range(0, pairs, CHECK_CHUNK)
        features.field(a[:1], 1), features.field(a[:1], 2), features.field(a[:1], 3)  # squash once, not per thread

        def part(s: int) -> PairChecks:
            return check_pair_index(features, a[s:s + CHECK_CHUNK], b[s:s + CHECK_CHUNK],
                                    None if cosines is None else np.asarray(cosines)[s:s + CHECK_CHUNK], check)

        # chunks are independent; their numpy work (sorts, searches) runs outside the GIL
        with ThreadPoolExecutor(max(1, min(CHECK_THREADS, len(cut)))) as pool:
            parts = list(pool.map(part, cut))
        return PairChecks(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(PairChecks)))
    nan = np.full(pairs, np.nan)
    cos = nan.copy() if cosines is None else np.asarray(cosines, dtype=np.float64).copy()
    out = PairChecks(np.zeros(pairs, dtype=bool), cos, nan.copy(), nan.copy(), nan.copy(), nan.copy(),
                     np.zeros(pairs, dtype=np.int8))
    if not pairs:
        return out
    n = check.ngram

    def squashed(k: np.ndarray, which: int):
        rows = np.unique(np.concatenate([a[k], b[k]]))
        return rows, features.field(rows, which)

    def overlaps(rows, strings, k):
        return _overlap_counts(gram_sets(strings, n), np.searchsorted(rows, a[k]), np.searchsorted(rows, b[k]))

    # outputs: containment and Jaccard (a Jaccard is at most the ratio of the set sizes: pairs
    # whose sizes already rule it out skip the intersection)
    live = np.arange(pairs)
    rows, strings = squashed(live, 3)
    sets = gram_sets(strings, n)
    ra, rb = np.searchsorted(rows, a), np.searchsorted(rows, b)
    size_a, size_b = sets[0][ra + 1] - sets[0][ra], sets[0][rb + 1] - sets[0][rb]
    big = np.maximum(size_a, size_b)
    live = live[_at_least(np.where(big > 0, np.minimum(size_a, size_b) / np.maximum(big, 1), 1.0), check.output_jaccard)]
    inter, la, lb = _overlap_counts(sets, ra[live], rb[live])
    cont, jac = _containment_of(inter, la, lb), _jaccard_of(inter, la, lb)
    out.output_overlap[live], out.output_jaccard[live] = cont, jac
    live = live[_at_least(cont, check.output_overlap) & _at_least(jac, check.output_jaccard)]
    if not live.size:
        return out
    kept_rows = np.unique(np.concatenate([a[live], b[live]]))
    sq_output = dict(zip(kept_rows.tolist(), (strings[w] for w in np.searchsorted(rows, kept_rows).tolist())))
    # inputs, where either row has one
    rows, strings = squashed(live, 2)
    has = np.array([bool(s) for s in strings], dtype=bool)
    has_a, has_b = has[np.searchsorted(rows, a[live])], has[np.searchsorted(rows, b[live])]
    either = has_a | has_b
    if either.any():
        inter, la, lb = overlaps(rows, strings, live[either])
        out.input_overlap[live[either]] = _jaccard_of(inter, la, lb)
        keep = np.ones(live.size, dtype=bool)
        keep[either] = _at_least(out.input_overlap[live[either]], check.input_overlap)
        live, has_a, has_b = live[keep], has_a[keep], has_b[keep]
    if not live.size:
        return out
    # prompts and the path
    rows, strings = squashed(live, 1)
    inter, la, lb = overlaps(rows, strings, live)
    pj = _jaccard_of(inter, la, lb)
    out.prompt_overlap[live] = pj
    sq_prompt = dict(zip(rows.tolist(), strings))
    short = np.array([min(len(sq_output[i]), len(sq_output[j])) < check.min_output_chars
                      for i, j in zip(a[live].tolist(), b[live].tolist())], dtype=bool)
    path = np.where(short, np.where(_at_least(pj, check.short_prompt_overlap), 1, 0),
                    np.where(_at_least(pj, check.prompt_overlap), 2, 0)).astype(np.int8)
    maybe = np.flatnonzero((path == 0) & ~short & _at_least(out.output_overlap[live], check.paraphrase_overlap))
    same_input = has_a & has_b & _at_least(np.nan_to_num(out.input_overlap[live], nan=0.0), 0.99)
    for t in maybe.tolist():
        i, j = int(a[live[t]]), int(b[live[t]])
        if same_input[t]:
            path[t] = 3
            continue
        if features.numbers(i) != features.numbers(j):
            continue  # fails below anyway: its subject words are not needed
        anchors_i, anchors_j = features.anchors(i, sq_output[i]), features.anchors(j, sq_output[j])
        if any(w in sq_prompt[j] for w in anchors_i) or any(w in sq_prompt[i] for w in anchors_j):
            path[t] = 3
    out.path[live] = path
    live = live[path > 0]
    # numbers and entities (per row, Python): on the few pairs left
    for k in live.tolist():
        i, j = int(a[k]), int(b[k])
        if features.numbers(i) != features.numbers(j):
            continue
        # an entity conflict: each prompt names a thing its own answer repeats and the other row lacks
        ai, aj = features.anchors(i, sq_output[i]), features.anchors(j, sq_output[j])
        if (any(w not in sq_prompt[j] and w not in sq_output[j] for w in ai)
                and any(w not in sq_prompt[i] and w not in sq_output[i] for w in aj)):
            continue
        out.passing[k] = True
    return out


def check_pairs(rows_a, rows_b, cosines=None, check: RowCheck | None = None, *,
                prompt_columns=("instruction", "input"), output_column: str = "output") -> PairChecks:
    """The `row` rule's second stage on a batch of pairs (row rows_a[k] seen first, rows_b[k]
    second): `passing[k] == compare(RowView.of(rows_a[k]), RowView.of(rows_b[k]), ...)['duplicate']`.

    `rows_a`, `rows_b`: sequences of dicts (or polars frames) with the text columns, or one
    `RowFeatures` each. Depends on the two rows only, so any worker can run it on any batch."""
    check = check or RowCheck()
    if isinstance(rows_a, RowFeatures) and isinstance(rows_b, RowFeatures):
        features = RowFeatures(*(pl.concat([rows_a.columns[w], rows_b.columns[w]]) for w in (1, 2, 3)), check)
        na = len(rows_a)
    else:
        rows_a = rows_a.to_dicts() if isinstance(rows_a, pl.DataFrame) else list(rows_a)
        rows_b = rows_b.to_dicts() if isinstance(rows_b, pl.DataFrame) else list(rows_b)
        if len(rows_a) != len(rows_b):
            raise ValueError(f"check_pairs: {len(rows_a)} rows against {len(rows_b)}; pass one row per pair on each side")
        features = RowFeatures.of_rows([*rows_a, *rows_b], check, prompt_columns, output_column)
        na = len(rows_a)
    index = np.arange(na, dtype=np.int64)
    return check_pair_index(features, index, index + na, cosines, check)


def row_keys(frame: pl.DataFrame, columns: Sequence[str], check: RowCheck, output_column: str = "output") -> dict:
    """The exact-text candidate keys and the numbers pre-filter of every row (polars, vectorised):
    prompt_key, output_key, output_long (the output is long enough to count), number_key."""
    get = lambda c: frame[c].fill_null("") if c in frame.columns else pl.Series([""] * frame.height, dtype=pl.String)  # noqa: E731
    if columns:
        prompts = frame.select(pl.concat_str([get(c) for c in columns], separator=" ").alias("p"))["p"]
    else:
        prompts = pl.Series([""] * frame.height, dtype=pl.String)
    outputs = get(output_column)
    sq_prompt, sq_output = _squash_series(prompts), _squash_series(outputs).str.slice(0, check.max_chars)

    def number_list(texts: pl.Series) -> pl.Series:
        found = texts.fill_null("").str.normalize("NFKC").str.extract_all(_NUMBER.pattern)
        return found.list.eval(pl.element().str.replace_all(",", "")).list.sort().list.join("\x1f")

    return {"prompt_key": sq_prompt.hash(seed=7).to_numpy(), "output_key": sq_output.hash(seed=7).to_numpy(),
            "output_long": (sq_output.str.len_chars() >= check.min_output_chars).to_numpy(),
            "number_key": (number_list(prompts) + "\x1e" + number_list(outputs)).hash(seed=7).to_numpy(),
            "prompts": prompts}


class _Rows(RowFeatures):
    """The texts of a frame for the second stage: keys for all rows, features on demand."""

    def __init__(self, frame: pl.DataFrame, columns: Sequence[str], check: RowCheck, output_column: str = "output"):
        keys = row_keys(frame, columns, check, output_column)
        blank = pl.Series([""] * frame.height, dtype=pl.String)
        super().__init__(keys.pop("prompts"), frame["input"] if "input" in columns and "input" in frame.columns else blank,
                         frame[output_column] if output_column in frame.columns else blank, check)
        self.prompt_key, self.output_key = keys["prompt_key"], keys["output_key"]
        self.output_long, self.number_key = keys["output_long"], keys["number_key"]

    def view(self, i: int) -> RowView:
        return RowView(self.prompts[i], self.inputs[i], self.outputs[i], self.check)


# --------------------------------------------------------------------------------------------
# exact


@dataclass
class ExactDedup(Step):
    """Drop rows whose normalised text repeats another row's.

    rule `row` (default): the key is instruction+input+output (`columns` + `output`): only
    true copies go; rows sharing an instruction+input with a different output are counted
    (stats `same_prompt_different_output`) and kept. rule `instruction` (Platypus): the key
    is `columns` only.
    keep: `longest-output` keeps the row with the longest output in each group (Platypus;
    ties: the first), `first` keeps the first row in input order.
    """

    columns: tuple[str, ...] = ("instruction", "input")
    keep: str = "longest-output"
    rule: str = "row"
    name: ClassVar[str] = "exact-dedup"

    def __post_init__(self):
        if self.keep not in KEEP_POLICIES:
            raise InputError(f"--keep {self.keep}: unknown policy; use one of {', '.join(KEEP_POLICIES)}")
        self.rule = check_rule(self.rule)
        self.columns = tuple(self.columns)

    def key_columns(self) -> tuple[str, ...]:
        if self.rule == "row" and "output" not in self.columns:
            return (*self.columns, "output")
        return self.columns

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        if not frame.height:
            return self.keep_all(frame, groups=0, rule=self.rule, key="+".join(self.key_columns()))
        check_columns(frame, self.columns)
        prompts = row_texts(frame, self.columns, separator="\n")
        frame, prompts, empty = split_empty(frame, prompts, self.name, self.columns)
        keys = exact_keys(frame, self.key_columns()).to_list() if self.key_columns() != self.columns else prompts
        work = frame.with_columns(
            pl.Series("_key", keys, dtype=pl.String),
            pl.Series("_prompt", prompts, dtype=pl.String),
            pl.int_range(pl.len(), dtype=pl.Int64).alias("_pos"),
            # the normalised length: a copy retyped with doubled spaces is not "longer"
            pl.Series("_olen", [len(t) for t in row_texts(frame, ("output",))], dtype=pl.Int64),
        )
        if self.keep == "longest-output":
            ranked = work.sort(["_key", "_olen", "_pos"], descending=[False, True, False])
        else:
            ranked = work.sort(["_key", "_pos"])
        winners = ranked.group_by("_key", maintain_order=True).first().select("_key", pl.col("id").alias("_keep_id"), pl.col("_pos").alias("_keep_pos"))
        work = work.join(winners, on="_key", how="left").sort("_pos")
        is_kept = pl.col("_pos") == pl.col("_keep_pos")
        helper = ["_key", "_prompt", "_pos", "_olen", "_keep_id", "_keep_pos"]
        kept_work = work.filter(is_kept)
        # rows kept although another kept row has the same instruction+input (another answer)
        same_prompt = int(kept_work.height - kept_work["_prompt"].n_unique()) if self.rule == "row" else 0
        kept = kept_work.drop(helper)
        dropped = work.filter(~is_kept)
        removed = removal_frame(
            dropped, self.name, "exact-duplicate", dup_of=pl.col("_keep_id"), similarity=1.0,
            detail=pl.lit(f"same normalised {'+'.join(self.key_columns())}; rule={self.rule}; keep={self.keep}"),
        ).drop(helper)
        removed = pl.concat([empty, removed], how="diagonal_relaxed") if empty.height else removed
        stats = {"rule": self.rule, "key": "+".join(self.key_columns()), "groups": int(winners.height),
                 "exact_duplicates": dropped.height, "empty_text": empty.height}
        if self.rule == "row":
            stats["same_prompt_different_output"] = same_prompt
        return StepResult(kept, removed, stats)


# --------------------------------------------------------------------------------------------
# semantic


@dataclass
class SemanticResult:
    """The outcome of a greedy semantic dedup, with what it needs to explain and re-threshold.

    Per row, its qualifying EARLIER neighbours ("edges", CSR: `lims`, `edge_j`, `edge_s`),
    best cosine first: under `instruction` every earlier row with cosine >= the searched
    threshold (at most `max_edges` kept per row; `truncated` counts rows cut), under `row` the
    candidates that passed the second stage (`edge_forced`: found by an exact-text key, so
    they count at any threshold). `rethreshold(t)` for t >= searched_threshold reruns only the
    greedy pass over the edges.
    """

    ids: list[str]
    lims: np.ndarray
    edge_j: np.ndarray
    edge_s: np.ndarray
    searched_threshold: float
    rule: str = "instruction"
    edge_forced: np.ndarray | None = None
    truncated: int = 0
    signals: dict = field(default_factory=dict, repr=False)  # row -> second-stage signals of its edge to dup_of
    stats: dict = field(default_factory=dict)
    threshold: float = 0.0
    kept: np.ndarray = field(default=None, repr=False)
    dup_of: np.ndarray = field(default=None, repr=False)  # row index of the kept twin, -1 if kept
    similarity: np.ndarray = field(default=None, repr=False)  # cosine to that twin, nan if kept

    @classmethod
    def from_pairs(cls, ids: list[str], pairs: Pairs, threshold: float) -> "SemanticResult":
        """The `instruction` rule from every pair of a (non-streamed) search."""
        q = pairs.query_index()
        j, s = pairs.ids, pairs.scores
        mask = (j >= 0) & (j < q)
        q, j, s = q[mask], j[mask], s[mask]
        order = np.lexsort((-s, q))
        lims = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(q, minlength=len(ids)), out=lims[1:])
        result = cls(ids=list(ids), lims=lims, edge_j=j[order].astype(np.int64), edge_s=s[order].astype(np.float32),
                     searched_threshold=pairs.threshold, rule="instruction")
        return result.rethreshold(threshold)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def removed_count(self) -> int:
        return int((~self.kept).sum())

    @property
    def duplicate_ratio(self) -> float:
        return self.removed_count / self.n if self.n else 0.0

    def rethreshold(self, threshold: float) -> "SemanticResult":
        """Rerun the greedy pass at `threshold` (>= the searched threshold); returns self."""
        threshold = check_threshold(threshold)
        if threshold < self.searched_threshold - 1e-9:
            raise InputError(
                f"--threshold {threshold}: below the searched threshold {self.searched_threshold}; "
                "pairs under it were never collected; rerun the search with the lower threshold"
            )
        s = self.edge_s
        # instruction: kept only if max cosine to kept rows <= threshold; row: candidates from >= threshold
        ok = s > threshold if self.rule == "instruction" else s >= np.float32(threshold) - 1e-7
        if self.edge_forced is not None:
            ok |= self.edge_forced
        kept = np.ones(self.n, dtype=bool)
        dup_of = np.full(self.n, -1, dtype=np.int64)
        similarity = np.full(self.n, np.nan, dtype=np.float32)
        lims, js, ss, oks = self.lims.tolist(), self.edge_j.tolist(), s.tolist(), ok.tolist()
        for row in np.flatnonzero(np.diff(self.lims) > 0).tolist():
            for k in range(lims[row], lims[row + 1]):  # best cosine first
                if oks[k] and kept[js[k]]:
                    kept[row], dup_of[row], similarity[row] = False, js[k], ss[k]
                    break
        self.threshold, self.kept, self.dup_of, self.similarity = threshold, kept, dup_of, similarity
        return self

    def removals(self) -> list[tuple[str, str, float]]:
        """(removed id, kept twin id, cosine) for every removed row, in input order."""
        rows = np.flatnonzero(~self.kept)
        return [(self.ids[r], self.ids[self.dup_of[r]], float(self.similarity[r])) for r in rows]

    def detail(self, row: int) -> str:
        if self.rule == "instruction":
            return f"instruction rule: cosine {self.similarity[row]:.4f} > {self.threshold}"
        sig = self.signals.get((row, int(self.dup_of[row])))
        if sig is None:
            return f"row rule: candidate cosine {self.similarity[row]:.4f} (threshold {self.threshold}); second stage passed"
        return f"row rule ({sig['why']}): {describe_signals(sig)}; candidate threshold {self.threshold}"

    def explain(self, row_id: str) -> str:
        index = self.ids.index(row_id)
        if self.kept[index]:
            if self.rule == "instruction":
                return f"{row_id}: kept (no earlier kept row above cosine {self.threshold})"
            return f"{row_id}: kept (no earlier kept row is the same example; candidate cosine >= {self.threshold})"
        return f"{row_id}: removed, cosine {self.similarity[index]:.4f} to kept row {self.ids[self.dup_of[index]]} ({self.detail(index)})"

    def counts_at(self, thresholds: Sequence[float]) -> dict[float, int]:
        """Rows the greedy pass would remove at each threshold (each >= searched_threshold)."""
        current = self.threshold
        counts = {}
        for t in sorted(thresholds):
            if t >= self.searched_threshold - 1e-9:
                counts[t] = self.rethreshold(t).removed_count
        self.rethreshold(current)
        return counts


def first_members(keys: np.ndarray, use: np.ndarray | None, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` rows (input order) of each key among the rows `use` marks: (keys, rows),
    sorted by key then row: the exact-text groups of the row rule."""
    rows = np.arange(len(keys), dtype=np.int64) if use is None else np.flatnonzero(use).astype(np.int64)
    order = np.argsort(keys[rows], kind="stable")
    k, r = keys[rows][order], rows[order]
    if not k.size:
        return k, r
    first = np.concatenate(([0], np.flatnonzero(k[1:] != k[:-1]) + 1))
    rank = np.arange(k.size) - np.repeat(first, np.diff(np.concatenate((first, [k.size]))))
    return k[rank < limit], r[rank < limit]


def group_pairs(queries: np.ndarray, keys: np.ndarray, members: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(q, j): every earlier group member j of each query row q (`keys` are the queries' keys)."""
    mkeys, mrows = members
    lo = np.searchsorted(mkeys, keys, side="left")
    hi = np.searchsorted(mkeys, keys, side="right")
    k, at = _expand(np.concatenate(([0], np.cumsum(hi - lo))), np.arange(len(queries), dtype=np.int64))
    q, j = queries[k], mrows[lo[k] + (at - np.concatenate(([0], np.cumsum(hi - lo)))[k])]
    earlier = j < q
    return q[earlier], j[earlier]


def select_candidates(q: np.ndarray, j: np.ndarray, s: np.ndarray, src: np.ndarray, order: np.ndarray,
                      same_numbers: np.ndarray, max_checks: int):
    """The checks each row gets under the row rule, in the order it gets them.

    Candidate (q, j) pairs come from the cosine search (`src` 0, `order`: the search's order)
    and the exact-text groups (src 1: same prompt, 2: same long output; order: j). One per
    (q, j), the cosine one first; pairs whose numbers differ out; then best cosine first (ties:
    src, then order), at most `max_checks` per q. Returns (indices into the inputs, sorted by q
    then rank; forced: the pair is also an exact-text twin; rank)."""
    if not q.size:
        empty = np.zeros(0, dtype=np.int64)
        return empty, np.zeros(0, dtype=bool), empty
    pair = q * (int(max(q.max(), j.max())) + 1) + j
    by_pair = np.lexsort((order, src, pair))
    p = pair[by_pair]
    starts = np.concatenate(([True], p[1:] != p[:-1]))
    ends = np.concatenate((p[1:] != p[:-1], [True]))
    first = by_pair[starts]
    forced = src[by_pair[ends]] > 0  # the last of a pair's group has the highest src
    keep = same_numbers[first]
    first, forced = first[keep], forced[keep]
    ranked = np.lexsort((order[first], src[first], -s[first], q[first]))
    first, forced = first[ranked], forced[ranked]
    qs = q[first]
    head = np.concatenate(([0], np.flatnonzero(qs[1:] != qs[:-1]) + 1))
    rank = np.arange(qs.size) - np.repeat(head, np.diff(np.concatenate((head, [qs.size]))))
    cut = rank < max_checks
    return first[cut], forced[cut], rank[cut]


def resolve_row_pairs(kept: np.ndarray, dup_of: np.ndarray, similarity: np.ndarray, q: np.ndarray, j: np.ndarray,
                      s: np.ndarray, rank: np.ndarray, max_edges: int):
    """Greedy keep-first over the PASSING pairs of the row rule, sorted by q (input order) then
    rank: a row goes as a duplicate of its first passing candidate that is still kept. Updates
    kept / dup_of / similarity in place; returns (the pair index that removed each removed row
    {row: k}, the indices of the edges kept per row (at most max_edges, in order), the edge
    count per row {row: count}, checks made {row: rank of the last check} for rows that stopped
    early, and the passing pairs counted), as the one-row-at-a-time loop did."""
    qs, js, ss, rs = q.tolist(), j.tolist(), s.tolist(), rank.tolist()
    decisive: dict[int, int] = {}
    edges: list[int] = []
    found_of: dict[int, int] = {}
    stopped: dict[int, int] = {}
    counted = 0
    total, k = len(qs), 0
    while k < total:
        i, end = qs[k], k
        while end < total and qs[end] == i:
            end += 1
        found = 0
        for t in range(k, end):
            counted += 1
            if found < max_edges:
                edges.append(t)
                found += 1
            if kept[i] and kept[js[t]]:
                kept[i], dup_of[i], similarity[i] = False, js[t], ss[t]
                decisive[i] = t
            if found >= max_edges and not kept[i]:
                stopped[i] = rs[t]
                break
        found_of[i] = found
        k = end
    return decisive, edges, found_of, stopped, counted


def stream_dedup(ids: list[str], vectors: np.ndarray, threshold: float, *, rule: str = "row",
                 rows: _Rows | None = None, check: RowCheck | None = None, method: str = "auto", seed: int = 42,
                 track=None, block: int | None = None, max_edges: int | None = None) -> SemanticResult:
    """Greedy keep-first dedup, streamed: query blocks in input order, earlier neighbours only.

    Under the row rule each block is one batch: its candidates (`select_candidates`), the
    second stage on all of them at once (`check_pair_index`), then the greedy pass over the
    passing pairs (`resolve_row_pairs`); the decisions, edges and counters are those of checking
    one row at a time (the check does not depend on which rows are kept).

    Memory: one block's cosine pairs at a time (the n-gram arrays of at most `CHECK_CHUNK`
    pairs), plus at most `max_edges` edges per row.
    """
    check = check or RowCheck()
    n = len(ids)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    method = choose_method(n, method)
    block = block or (BLOCK_IVF if method == "ivf" else BLOCK_EXACT)
    max_edges = max_edges or (check.max_edges if rule == "row" else 32)
    if rule == "row" and rows is None:
        raise ValueError("the row rule needs the rows' texts")
    if method == "ivf":
        index = build_index(vectors, method="ivf", seed=seed)
    else:
        index = build_index(vectors[:0], method="exact", seed=seed)
    kept = np.ones(n, dtype=bool)
    dup_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan, dtype=np.float32)
    counts = np.zeros(n, dtype=np.int64)
    edge_j: list[int] = []
    edge_s: list[float] = []
    edge_f: list[bool] = []
    signals: dict = {}
    if rule == "row":  # the exact-text groups: the first group_limit rows of each prompt / long output
        members = (first_members(rows.prompt_key, None, check.group_limit),
                   first_members(rows.output_key, rows.output_long, check.group_limit))
    # search_truncated: queries whose neighbour list the GPU top-k search cut short (0 on the CPU)
    stats = {"candidate_pairs": 0, "checked_pairs": 0, "passing_pairs": 0, "max_block_pairs": 0, "search_truncated": 0}
    truncated = 0
    starts = range(0, n, block)
    iterator = track(starts, f"near-duplicates ({rule} rule, {method} search)", len(starts)) if track else starts
    for start in iterator:
        stop = min(start + block, n)
        if method != "ivf":
            index.add(vectors[start:stop])
        pairs = range_pairs(index, vectors[start:stop], threshold, method=method)
        stats["max_block_pairs"] = max(stats["max_block_pairs"], int(pairs.ids.size))
        stats["search_truncated"] += int(getattr(pairs, "truncated", 0))
        lims, pj, ps = pairs.lims, pairs.ids, pairs.scores
        if rule == "row":
            queries = np.arange(start, stop, dtype=np.int64)
            qb = np.repeat(queries, np.diff(lims))
            earlier = pj < qb
            position = np.arange(pj.size, dtype=np.int64) - np.repeat(lims[:-1], np.diff(lims))
            q0, j0 = qb[earlier], pj[earlier]
            stats["candidate_pairs"] += int(q0.size)
            qp, jp = group_pairs(queries, rows.prompt_key[start:stop], members[0])
            long_q = queries[rows.output_long[start:stop]]
            qo, jo = group_pairs(long_q, rows.output_key[long_q], members[1])
            cq = np.concatenate([q0, qp, qo])
            cj = np.concatenate([j0, jp, jo])
            cs = np.concatenate([ps[earlier].astype(np.float32), np.full(qp.size + qo.size, np.nan, dtype=np.float32)])
            src = np.concatenate([np.zeros(q0.size, np.int8), np.ones(qp.size, np.int8), np.full(qo.size, 2, np.int8)])
            order = np.concatenate([position[earlier], jp, jo])
            missing = np.flatnonzero(src > 0)  # an exact-text twin's cosine (used when search missed it)
            for t in missing.tolist():
                cs[t] = float(vectors[cq[t]] @ vectors[cj[t]])
            sel, forced, rank = select_candidates(cq, cj, cs, src, order, rows.number_key[cq] == rows.number_key[cj],
                                                  check.max_checks)
            sq, sj, ss = cq[sel], cj[sel], cs[sel]
            selected = np.bincount(sq - start, minlength=stop - start)
            checks = check_pair_index(rows, sj, sq, ss, check)
            ok = np.flatnonzero(checks.passing)
            decisive, edges, found_of, stopped, counted = resolve_row_pairs(kept, dup_of, similarity, sq[ok], sj[ok],
                                                                            ss[ok], rank[ok], max_edges)
            stats["passing_pairs"] += counted
            stats["checked_pairs"] += int(selected.sum()) + sum(r + 1 - int(selected[i - start]) for i, r in stopped.items())
            for i, t in decisive.items():
                signals[(i, int(sj[ok[t]]))] = checks.signals(int(ok[t]))
            edge_j.extend(sj[ok[edges]].tolist())
            edge_s.extend(ss[ok[edges]].tolist())
            edge_f.extend(forced[ok[edges]].tolist())
            for i, found in found_of.items():
                counts[i] = found
            continue
        for q in range(stop - start):
            i = start + q
            js, ss = pj[lims[q]:lims[q + 1]], ps[lims[q]:lims[q + 1]]
            earlier = js < i
            js, ss = js[earlier], ss[earlier]
            stats["candidate_pairs"] += int(js.size)
            order = np.argsort(-ss, kind="stable")
            js, ss = js[order], ss[order]
            above = ss > threshold
            for j, s in zip(js[above].tolist(), ss[above].tolist()):
                if kept[j]:
                    kept[i], dup_of[i], similarity[i] = False, j, s
                    break
            if js.size > max_edges:
                truncated += 1
            edge_j.extend(js[:max_edges].tolist())
            edge_s.extend(ss[:max_edges].tolist())
            edge_f.extend([False] * min(js.size, max_edges))
            counts[i] = min(js.size, max_edges)
    lims_out = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=lims_out[1:])
    result = SemanticResult(
        ids=list(ids), lims=lims_out, edge_j=np.asarray(edge_j, dtype=np.int64), edge_s=np.asarray(edge_s, dtype=np.float32),
        searched_threshold=threshold, rule=rule, edge_forced=np.asarray(edge_f, dtype=bool) if rule == "row" else None,
        truncated=truncated, signals=signals, stats={**stats, "search": method, "block": block},
    )
    result.threshold, result.kept, result.dup_of, result.similarity = threshold, kept, dup_of, similarity
    return result


@dataclass
class SemanticStepResult(StepResult):
    """A StepResult that also carries the `SemanticResult` (to explain and re-threshold)."""

    result: SemanticResult | None = None


@dataclass
class SemanticDedup(Step):
    """Greedy near-duplicate removal under `rule` (`row`: the same example; `instruction`: Platypus).

    threshold None means the calibrated default of the embedder for the rule (row:
    `CANDIDATE_THRESHOLDS`, instruction: `DEFAULT_THRESHOLDS`). `columns` are the embedded
    prompt; `output_column` the answer the row rule compares.
    search: `auto` (exact up to index.EXACT_MAX_ROWS rows, IVF above), `exact` or `ivf`.
    """

    threshold: float | None = None
    embedder: str = "default"
    columns: tuple[str, ...] = ("instruction", "input")
    rule: str = "row"
    search: str = "auto"
    measure_recall: bool = False
    output_column: str = "output"
    prompt_overlap: float = RowCheck.prompt_overlap
    output_overlap: float = RowCheck.output_overlap
    input_overlap: float = RowCheck.input_overlap
    ngram: int = RowCheck.ngram
    name: ClassVar[str] = "semantic-dedup"

    def __post_init__(self):
        self.threshold = check_threshold(self.threshold)
        self.rule = check_rule(self.rule)
        self.columns = tuple(self.columns)
        if self.search not in ("auto", "exact", "ivf"):
            raise InputError(f"--search {self.search}: unknown; use auto, exact or ivf")
        for flag in ("prompt_overlap", "output_overlap", "input_overlap"):
            value = getattr(self, flag)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise InputError(f"{flag} {value!r}: must be a share in [0, 1]")
        if not isinstance(self.ngram, int) or not 1 <= self.ngram <= 12:
            raise InputError(f"ngram {self.ngram!r}: must be a whole number of jamo from 1 to 12 (default 4)")

    def row_check(self) -> RowCheck:
        return RowCheck(ngram=self.ngram, prompt_overlap=self.prompt_overlap, output_overlap=self.output_overlap,
                        input_overlap=self.input_overlap)

    def params(self) -> dict:
        # not dataclasses.asdict: it would deep-copy an Embedder instance passed as `embedder`
        return {f.name: _param(getattr(self, f.name)) for f in fields(self)}

    def embed(self, frame: pl.DataFrame, ctx: RunContext) -> tuple[pl.DataFrame, list[str], np.ndarray, pl.DataFrame, Embedder, dict]:
        """Rows with text, their texts and vectors, the rows without text, the embedder, and the embedding counts."""
        check_columns(frame, self.columns)
        texts = row_texts(frame, self.columns)
        frame, texts, empty = split_empty(frame, texts, self.name, self.columns)
        model = load_embedder(self.embedder)
        counts: dict = {}
        vectors = embed_texts(texts, model, cache_dir=ctx.cache_dir, track=ctx.track if ctx.show_progress else None,
                              stats=counts)
        # rows cut at the embedder's input length, and vectors that came from the cache, for the manifest
        counts = {f"embed_{k}": v for k, v in counts.items() if k in ("truncated", "cached", "max_chars")}
        return frame, texts, vectors, empty, model, counts

    def resolve(self, model: Embedder | str, cache_dir=None) -> dict:
        """The parameters actually used (the manifest records them)."""
        if self.threshold is not None:
            threshold, source = self.threshold, "given"
        else:
            threshold, source = resolve_threshold(model, self.rule, cache_dir)
        name = model.name if isinstance(model, Embedder) else model
        resolved = {"rule": self.rule, "embedder": name, "threshold": threshold, "threshold_from": source}
        if self.rule == "row":
            resolved["second_stage"] = {**self.row_check().describe(), "grams": "jamo (NFD) n-grams of the squashed text"}
        return resolved

    def search_rows(self, frame: pl.DataFrame, vectors: np.ndarray, threshold: float, ctx: RunContext) -> SemanticResult:
        method = choose_method(len(vectors), self.search)
        track = ctx.track if ctx.show_progress else None
        rows = _Rows(frame, self.columns, self.row_check(), self.output_column) if self.rule == "row" else None
        return stream_dedup(frame["id"].to_list(), vectors, threshold, rule=self.rule, rows=rows, check=self.row_check(),
                            method=method, seed=ctx.seed, track=track)

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        if not frame.height:
            return self.keep_all(frame)
        frame, _, vectors, empty, model, embed_counts = self.embed(frame, ctx)
        resolved = self.resolve(model, ctx.cache_dir)
        result = self.search_rows(frame, vectors, resolved["threshold"], ctx)
        stats = {**resolved, **result.stats, **embed_counts,
                 "semantic_duplicates": result.removed_count, "empty_text": empty.height}
        if result.truncated:
            stats["rows_with_edges_cut"] = result.truncated
        if self.measure_recall and result.stats["search"] == "ivf":
            stats["recall_vs_exact"] = round(pair_recall(vectors, resolved["threshold"], seed=ctx.seed), 4)
        kept, removed = self.split(frame, result, empty)
        return SemanticStepResult(kept, removed, stats, result=result)

    def split(self, frame: pl.DataFrame, result: SemanticResult, empty: pl.DataFrame):
        kept_mask = pl.Series(result.kept)
        removed_rows = np.flatnonzero(~result.kept)
        twins = [result.ids[i] for i in result.dup_of[removed_rows]]
        removed = removal_frame(
            frame.filter(~kept_mask), self.name, "semantic-duplicate",
            dup_of=pl.Series(twins, dtype=pl.String),
            similarity=pl.Series(result.similarity[removed_rows].astype(np.float64)),
            detail=pl.Series([result.detail(r) for r in removed_rows.tolist()], dtype=pl.String),
        )
        if empty.height:
            removed = pl.concat([empty, removed], how="diagonal_relaxed")
        return frame.filter(kept_mask), removed


@dataclass
class Analysis:
    """What `--analyze` prints: the nearest-earlier-row cosine distribution and counts per threshold."""

    rows: int
    embedder: str
    histogram: list[tuple[float, float, int]]  # (low, high, rows)
    would_remove: dict[float, int]
    exact_duplicates: int
    empty_text: int
    search: str
    rule: str = "row"
    same_prompt_different_output: int = 0
    #: the threshold `dedup` would use without --threshold, and where it comes from (`resolve_threshold`)
    default_threshold: float = 0.0
    threshold_from: str = ""


def analyze(frame: pl.DataFrame, ctx: RunContext, *, embedder: str = "default",
            columns: Sequence[str] = ("instruction", "input"), thresholds: Sequence[float] | None = None,
            search: str = "auto", exact_step: ExactDedup | None = None, rule: str = "row") -> Analysis:
    """Embed once, stream once at the lowest threshold, and count removals at each threshold."""
    rule = check_rule(rule)
    thresholds = tuple(thresholds or (ROW_ANALYZE_THRESHOLDS if rule == "row" else ANALYZE_THRESHOLDS))
    exact_removed = empty_count = same_prompt = 0
    if exact_step is not None:
        res = exact_step.run(frame, ctx)
        frame = res.kept
        exact_removed = res.stats.get("exact_duplicates", 0)
        empty_count += res.stats.get("empty_text", 0)
        same_prompt = res.stats.get("same_prompt_different_output", 0)
    step = SemanticDedup(threshold=min(thresholds), embedder=embedder, columns=tuple(columns), search=search, rule=rule)
    frame, _, vectors, empty, model, _ = step.embed(frame, ctx)
    empty_count += empty.height
    result = step.search_rows(frame, vectors, min(thresholds), ctx)
    method = result.stats["search"]
    # nearest-neighbour cosine of every row (to any other row) for the distribution
    if len(vectors) > 1:
        scores, _ = nearest(vectors, k=1, method=method, seed=ctx.seed, exclude_self=True)
        best = scores[:, 0]
    else:
        best = np.zeros(len(vectors), dtype=np.float32)
    edges = [-1.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0001]
    counts, _ = np.histogram(best, bins=edges)
    histogram = [(max(lo, -1.0), min(hi, 1.0), int(c)) for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    default, source = resolve_threshold(model, rule, ctx.cache_dir)
    if default >= min(thresholds):  # the default's own count, when it is not one of the listed thresholds
        thresholds = tuple(sorted({*thresholds, default}))
    return Analysis(
        rows=len(vectors), embedder=model.name, histogram=histogram, would_remove=result.counts_at(thresholds),
        exact_duplicates=exact_removed, empty_text=empty_count, search=method, rule=rule,
        same_prompt_different_output=same_prompt, default_threshold=default, threshold_from=source,
    )


__all__ = [
    "ANALYZE_THRESHOLDS", "CANDIDATE_THRESHOLDS", "DEFAULT_THRESHOLDS", "KEEP_POLICIES", "RULES", "Analysis", "ExactDedup",
    "PairChecks", "RowCheck", "RowFeatures", "RowView", "SemanticDedup", "SemanticResult", "SemanticStepResult", "analyze",
    "check_columns", "check_pair_index", "check_pairs", "check_rule", "check_threshold", "compare", "default_threshold",
    "describe_signals", "exact_keys", "first_members", "gram_sets", "group_pairs", "resolve_row_pairs", "resolve_threshold",
    "row_keys",
    "row_texts", "select_candidates", "squash_texts", "stream_dedup",
]
