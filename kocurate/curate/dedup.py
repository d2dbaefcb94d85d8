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

Greedy keep-first in input order in both: a row stays unless an earlier KEPT row is its
duplicate; `dup_of` is the most similar such row. The pass streams: query blocks are searched
in input order and each row needs only its neighbours among earlier rows, so memory holds one
block's pairs plus, per row, at most a few qualifying earlier neighbours (`SemanticResult`
keeps them to explain each removal and to re-threshold without searching again).

`ExactDedup` (same rule names): ``row`` keys on the normalised instruction+input+output and
counts, but keeps, rows that share an instruction+input with a different output; ``instruction``
keys on instruction+input (the longest output wins).
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
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
#: benchmarks/neardup (benchmarks/results/neardup.md). st: is not calibrated (no Korean
#: sentence-transformers model offline here): a conservative value.
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
    """The calibrated default for an embedder spec or instance under `rule`."""
    table = CANDIDATE_THRESHOLDS if rule == "row" else DEFAULT_THRESHOLDS
    return table[embedder_family(embedder)]


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


class _Rows:
    """The texts of a frame for the second stage: keys for all rows, views on demand (LRU)."""

    def __init__(self, frame: pl.DataFrame, columns: Sequence[str], check: RowCheck, output_column: str = "output"):
        self.check = check
        get = lambda c: frame[c].fill_null("").to_list() if c in frame.columns else [""] * frame.height  # noqa: E731
        self.prompts = [" ".join(parts) for parts in zip(*(get(c) for c in columns))] if columns else [""] * frame.height
        self.inputs = get("input") if "input" in columns else [""] * frame.height
        self.outputs = get(output_column)
        # candidate keys and the numbers pre-filter for every row, vectorised (compare re-checks)
        prompts = pl.Series(self.prompts, dtype=pl.String)
        outputs = pl.Series(self.outputs, dtype=pl.String)
        sq_prompt, sq_output = _squash_series(prompts), _squash_series(outputs).str.slice(0, check.max_chars)
        self.prompt_key = sq_prompt.hash(seed=7).to_numpy()
        self.output_key = sq_output.hash(seed=7).to_numpy()
        self.output_long = (sq_output.str.len_chars() >= check.min_output_chars).to_numpy()

        def number_list(texts: pl.Series) -> pl.Series:
            found = texts.fill_null("").str.normalize("NFKC").str.extract_all(_NUMBER.pattern)
            return found.list.eval(pl.element().str.replace_all(",", "")).list.sort().list.join("\x1f")

        self.number_key = (number_list(prompts) + "\x1e" + number_list(outputs)).hash(seed=7).to_numpy()
        self._views: OrderedDict[int, RowView] = OrderedDict()
        self.limit = 65536

    def view(self, i: int) -> RowView:
        v = self._views.get(i)
        if v is None:
            v = RowView(self.prompts[i], self.inputs[i], self.outputs[i], self.check)
            self._views[i] = v
            if len(self._views) > self.limit:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(i)
        return v


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


def stream_dedup(ids: list[str], vectors: np.ndarray, threshold: float, *, rule: str = "row",
                 rows: _Rows | None = None, check: RowCheck | None = None, method: str = "auto", seed: int = 42,
                 track=None, block: int | None = None, max_edges: int | None = None) -> SemanticResult:
    """Greedy keep-first dedup, streamed: query blocks in input order, earlier neighbours only.

    Memory: one block's cosine pairs at a time, plus at most `max_edges` edges per row.
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
    prompt_groups: dict[int, list[int]] = {}
    output_groups: dict[int, list[int]] = {}
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
        for q in range(stop - start):
            i = start + q
            js, ss = pj[lims[q]:lims[q + 1]], ps[lims[q]:lims[q + 1]]
            earlier = js < i
            js, ss = js[earlier], ss[earlier]
            stats["candidate_pairs"] += int(js.size)
            if rule == "instruction":
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
                continue
            # row rule: cosine candidates + exact-text groups, numbers pre-filtered, then compare
            cand = dict(zip(js.tolist(), ss.tolist()))
            forced = set()
            for groups, key, use in ((prompt_groups, rows.prompt_key[i], True), (output_groups, rows.output_key[i], rows.output_long[i])):
                if not use:
                    continue
                for j in groups.get(int(key), ()):
                    forced.add(j)  # an exact-text twin is a candidate at any threshold
                    if j not in cand:
                        cand[j] = float(vectors[i] @ vectors[j])
            if cand:
                cj = np.fromiter(cand.keys(), dtype=np.int64, count=len(cand))
                cs = np.fromiter(cand.values(), dtype=np.float32, count=len(cand))
                same = rows.number_key[cj] == rows.number_key[i]
                cj, cs = cj[same], cs[same]
                order = np.argsort(-cs, kind="stable")[: check.max_checks]
                mine = rows.view(i)
                found = 0
                for j, s in zip(cj[order].tolist(), cs[order].tolist()):
                    stats["checked_pairs"] += 1
                    sig = compare(rows.view(j), mine, s, check)
                    if not sig["duplicate"]:
                        continue
                    stats["passing_pairs"] += 1
                    if found < max_edges:  # kept for re-thresholding and explain
                        edge_j.append(j)
                        edge_s.append(s)
                        edge_f.append(j in forced)
                        found += 1
                    if kept[i] and kept[j]:
                        kept[i], dup_of[i], similarity[i] = False, j, s
                        signals[(i, j)] = sig
                    if found >= max_edges and not kept[i]:
                        break
                counts[i] = found
            for groups, key, use in ((prompt_groups, rows.prompt_key[i], True), (output_groups, rows.output_key[i], rows.output_long[i])):
                if use:
                    members = groups.setdefault(int(key), [])
                    if len(members) < check.group_limit:
                        members.append(i)
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

    def resolve(self, model: Embedder | str) -> dict:
        """The parameters actually used (the manifest records them)."""
        threshold = self.threshold if self.threshold is not None else default_threshold(model, self.rule)
        name = model.name if isinstance(model, Embedder) else model
        resolved = {"rule": self.rule, "embedder": name, "threshold": threshold,
                    "threshold_from": "given" if self.threshold is not None
                    else f"default of the {self.rule} rule for {embedder_family(model)} embedders"}
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
        resolved = self.resolve(model)
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
    return Analysis(
        rows=len(vectors), embedder=model.name, histogram=histogram, would_remove=result.counts_at(thresholds),
        exact_duplicates=exact_removed, empty_text=empty_count, search=method, rule=rule,
        same_prompt_different_output=same_prompt,
    )


__all__ = [
    "ANALYZE_THRESHOLDS", "CANDIDATE_THRESHOLDS", "DEFAULT_THRESHOLDS", "KEEP_POLICIES", "RULES", "Analysis", "ExactDedup",
    "RowCheck", "RowView", "SemanticDedup", "SemanticResult", "SemanticStepResult", "analyze", "check_columns", "check_rule",
    "check_threshold", "compare", "default_threshold", "describe_signals", "exact_keys", "row_texts", "stream_dedup",
]
