"""MinHash-LSH near-duplicate removal on Korean character shingles: the fast lexical path.

`MinHashDedup` removes a row when an earlier kept row has nearly the same characters and the
same answer:

1. Text. The `columns` (instruction, input and output by default: what makes two rows the
   same example) are joined and normalised as every dedup step does (`normalize_text`: NFKC,
   zero-width characters dropped, whitespace folded), then case-folded and, unless
   `spaces=True`, stripped of spaces: Korean spacing (띄어쓰기) varies from writer to writer and
   "알려 주세요" / "알려주세요" are the same request.
2. Shingles. Every run of `ngram` consecutive characters (Hangul syllables, mostly) is one
   shingle; a text shorter than `ngram` is one shingle. Code points are packed three to a
   64-bit word in numpy and the words hashed to one 64-bit token by polars.
3. Sketch and candidates. `rensa` (Rust R-MinHash, seeded by the run's seed) computes
   `num_perm` MinHash values per row; they are cut into `bands` bands of `rows_per_band`
   values, and rows sharing any band's values are candidates (LSH). By default the band shape
   is the narrowest one whose chance of making a pair at exactly `threshold` a candidate is
   >= 0.98 (`lsh_shape`): 25 x 5 at 0.7, 18 x 7 at 0.8.
4. Verification. A candidate's MinHash estimate screens it (>= threshold - ESTIMATE_MARGIN),
   then the pair is checked on the exact Jaccard of the two shingle sets (no sketch noise in
   the decision), and, when the output is compared, on its answer: the two outputs must share
   >= `output_overlap` of the shorter one's shingles, so rows with the same request and a
   different answer stay (a one-word label, a number), however much of the text they share.
5. The decision. Greedy, in the order `keep` gives (input order for `first`; longest output
   first for `longest-output`, as ExactDedup): a row is removed when an earlier *kept* row
   passes; `dup_of` is the most similar such row, `similarity` that exact Jaccard. A removed
   row always points at a row that stays, and chains (A~B, B~C, A!~C) do not remove C through B.

Defaults (ngram 3, threshold 0.8, output_overlap 0.8) were chosen on the dev splits of the
project's benchmark (benchmarks/neardup/pairs.jsonl) and of benchmarks/bench_minhash.py's
instruction-length pairs (within 1% false removals and no must-keep kind above 2% on both),
with no removal beyond the planted duplicates of samples/ko_instructions.jsonl (templated rows:
0.7 and 0.75 remove distinct e-mails that share a boilerplate answer), most duplicates found.
Test-split figures: benchmarks/results/minhash.md.

Scale: rows are sketched in batches of `batch_size`; for the whole run memory holds, per row,
the band keys (8 bytes x bands) and the low 16 bits of each MinHash value (2 bytes x num_perm,
for the screen); texts and full signatures exist one batch at a time. Rows that share a band
with another row get their shingle sets built again, 50k rows at a time (4 bytes a shingle), and
only (band, key)s another row shares are stored. Templated data makes big buckets: a bucket keeps
at most `max_candidates` kept rows and a row verifies at most `max_candidates` candidates (those
sharing most bands first); both are counted in the stats (`rows_over_candidate_cap`,
`bucket_insertions_skipped`). 1M synthetic rows: benchmarks/results/minhash.md.
"""

from __future__ import annotations

import itertools
from array import array
from collections import Counter
from dataclasses import dataclass, fields
from typing import ClassVar, Sequence

import numpy as np
import polars as pl

from ..errors import InputError
from ..records import removal_frame
from .dedup import KEEP_POLICIES, row_texts, split_empty
from .pipeline import RunContext, Step, StepResult

#: P(candidate | Jaccard = threshold) the automatic band shape guarantees.
LSH_RECALL_TARGET = 0.98
#: Seed of the polars hash that turns packed shingles into 64-bit tokens (fixed: shingle
#: identity never depends on the run's seed; the MinHash permutations do).
_TOKEN_SEED = 0x6B6F6375
_MAX_NGRAM = 12
#: A candidate pair is checked exactly only if its MinHash estimate is >= threshold - this margin
#: (4.2 standard errors of a 128-value estimate at Jaccard 0.8, 3.7 at 0.7: a pair at the threshold
#: is screened out with probability <= 1e-4, while template twins far below it skip the exact check).
ESTIMATE_MARGIN = 0.15


def lsh_shape(threshold: float, num_perm: int, target: float = LSH_RECALL_TARGET) -> tuple[int, int]:
    """(bands, rows per band) with bands * rows <= num_perm: the most rows per band (fewest
    false candidates) whose probability 1 - (1 - t**r)**b of making a pair at Jaccard t a
    candidate is >= target; one row per band if none reaches it."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= target:
            return bands, rows
    return num_perm, 1


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """The LSH S-curve: the chance a pair with this Jaccard shares at least one band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def shingle_text(text: str, spaces: bool = False) -> str:
    """The string shingles are cut from: case-folded, spaces dropped unless `spaces`."""
    text = text.casefold()
    return text if spaces else text.replace(" ", "")


def shingle_tokens(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's character `ngram`-shingles as 64-bit tokens: (flat tokens, row offsets).

    Rows are cut from one UTF-32 buffer in numpy; each shingle's code points are packed three
    to a 64-bit word and the words hashed by polars (so any n works; collisions ~2**-64).
    A non-empty text shorter than `ngram` gives one shingle (itself); an empty text none.
    Tokens repeat when a row repeats a shingle (MinHash ignores repeats; `shingle_sets` drops them).
    """
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    counts = np.where(lengths > 0, np.maximum(lengths - ngram + 1, 1), 0)
    offsets = np.zeros(len(texts) + 1, dtype=np.uint64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    if total == 0:
        return np.zeros(0, dtype=np.uint64), offsets
    pad = "\0" * (ngram - 1)  # each row ends in n-1 NULs: windows never cross into the next row
    joined = pad.join(texts) + pad
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lengths[:-1] + (ngram - 1), out=starts[1:])
    first = np.repeat(offsets[:-1].astype(np.int64), counts)
    positions = np.repeat(starts, counts) + (np.arange(total, dtype=np.int64) - first)
    words = {}
    for w, chunk_start in enumerate(range(0, ngram, 3)):
        word = np.zeros(total, dtype=np.uint64)
        for k in range(chunk_start, min(chunk_start + 3, ngram)):
            word = (word << np.uint64(21)) | cps[positions + k]
        words[f"w{w}"] = word
    tokens = pl.DataFrame(words).hash_rows(seed=_TOKEN_SEED).to_numpy()
    return np.ascontiguousarray(tokens, dtype=np.uint64), offsets


def shingle_sets(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's shingle set for exact Jaccard: (flat uint32 tokens, int64 row offsets), each
    row's tokens sorted and unique. Tokens here are the top 32 bits of `shingle_tokens`' hashes
    (two different shingles of a pair of rows match by chance with probability ~1e-5 per pair:
    at most one shingle's difference to the Jaccard), so one sort of row-prefixed keys does every
    row at once and a set costs 4 bytes per shingle."""
    tokens, offsets = shingle_tokens(texts, ngram)
    counts = np.diff(offsets.astype(np.int64))
    rows = np.repeat(np.arange(len(texts), dtype=np.uint64), counts)
    keys = np.sort((rows << np.uint64(32)) | (tokens >> np.uint64(32)))
    if keys.size > 1:
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    new_offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.bincount((keys >> np.uint64(32)).astype(np.int64), minlength=len(texts)), out=new_offsets[1:])
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), new_offsets


def _common(a: np.ndarray, b: np.ndarray) -> int:
    """How many values two sorted, unique arrays share (binary search of the shorter in the longer)."""
    if a.size > b.size:
        a, b = b, a
    if not a.size:
        return 0
    at = np.searchsorted(b, a)
    np.minimum(at, b.size - 1, out=at)
    return int(np.count_nonzero(b[at] == a))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted, unique token arrays (1.0 if both are empty)."""
    if not a.size and not b.size:
        return 1.0
    inter = _common(a, b)
    return inter / (a.size + b.size - inter)


def containment(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the smaller of two sorted, unique token arrays found in the other (1.0 if both empty)."""
    if not a.size or not b.size:
        return 1.0 if a.size == b.size else 0.0
    return _common(a, b) / min(a.size, b.size)


def signatures(tokens: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """rensa R-MinHash signatures of every row: (rows, num_perm) uint32."""
    import rensa

    if offsets.size <= 1:
        return np.zeros((0, num_perm), dtype=np.uint32)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(tokens, offsets, num_perm, seed)
    flat = array("I", itertools.chain.from_iterable(matrix.to_rows()))  # the fastest way out of rensa's lists
    return np.frombuffer(flat, dtype=np.uint32).reshape(-1, num_perm)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (row, band): the band's `rows` MinHash values hashed by polars."""
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    frame = pl.DataFrame(sig[:, :bands * rows], schema=[f"v{i}" for i in range(bands * rows)], orient="row")
    for b in range(bands):
        keys[:, b] = frame.select(frame.columns[b * rows:(b + 1) * rows]).hash_rows(seed=b).to_numpy()
    return keys


def _check_threshold(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"--threshold {value!r}: not a number; give a Jaccard similarity in (0, 1], e.g. 0.8") from None
    if not (0.0 < number <= 1.0):
        raise InputError(f"--threshold {value}: must be in (0, 1] (Jaccard similarity of character shingles); e.g. --threshold 0.8")
    return number


@dataclass
class MinHashDedup(Step):
    """Fuzzy dedup: drop a row whose character-shingle Jaccard to an earlier kept row is >= threshold.

    threshold: exact Jaccard of the two rows' shingle sets, checked for every LSH candidate.
    ngram: characters per shingle (Hangul syllables; 3 by default, see the module docstring).
    columns: the text compared (instruction + input + output: rows with different answers stay).
    keep: `first` (input order) or `longest-output` (ties: the first), as ExactDedup.
    num_perm / bands: MinHash size and LSH bands (None: `lsh_shape(threshold, num_perm)`).
    spaces: keep spaces in the shingled text (False: spacing differences are ignored).
    output_overlap: when `output` is compared, the share of the shorter output's shingles the
        other must contain (None: no answer check).
    max_candidates: kept rows per LSH bucket and candidates verified per row (templated data).
    batch_size: rows sketched at a time (memory; results do not depend on it).
    """

    threshold: float = 0.8
    ngram: int = 3
    columns: tuple[str, ...] = ("instruction", "input", "output")
    keep: str = "first"
    num_perm: int = 128
    bands: int | None = None
    spaces: bool = False
    output_overlap: float | None = 0.8
    max_candidates: int = 64
    batch_size: int = 20_000
    name: ClassVar[str] = "minhash-dedup"

    def __post_init__(self):
        self.threshold = _check_threshold(self.threshold)
        self.columns = tuple(self.columns)
        if not self.columns:
            raise InputError("--columns is empty; name the columns to compare, e.g. --columns instruction,input,output")
        if self.keep not in KEEP_POLICIES:
            raise InputError(f"--keep {self.keep}: unknown policy; use one of {', '.join(KEEP_POLICIES)}")
        if not (isinstance(self.ngram, int) and 1 <= self.ngram <= _MAX_NGRAM):
            raise InputError(f"--ngram {self.ngram}: must be a whole number from 1 to {_MAX_NGRAM} (characters per shingle); e.g. --ngram 3")
        if not (isinstance(self.num_perm, int) and 8 <= self.num_perm <= 1024):
            raise InputError(f"--num-perm {self.num_perm}: must be a whole number from 8 to 1024; e.g. --num-perm 128")
        if self.bands is not None and not (isinstance(self.bands, int) and 1 <= self.bands <= self.num_perm):
            raise InputError(f"--bands {self.bands}: must be a whole number from 1 to --num-perm ({self.num_perm}); or leave it out for the automatic shape")
        if self.output_overlap is not None and not (0.0 <= float(self.output_overlap) <= 1.0):
            raise InputError(f"--output-overlap {self.output_overlap}: must be in [0, 1] (share of the shorter output's shingles); or leave it out")
        if not (isinstance(self.max_candidates, int) and self.max_candidates >= 1):
            raise InputError(f"max_candidates {self.max_candidates}: must be a positive whole number, e.g. 64")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise InputError(f"batch_size {self.batch_size}: must be a positive whole number")

    @property
    def shape(self) -> tuple[int, int]:
        """(bands, rows per band) actually used."""
        if self.bands is None:
            return lsh_shape(self.threshold, self.num_perm)
        return self.bands, self.num_perm // self.bands

    def params(self) -> dict:
        params = {f.name: getattr(self, f.name) for f in fields(self)}
        params["columns"] = list(self.columns)
        params["bands"], params["rows_per_band"] = self.shape
        return params

    # ---------------------------------------------------------------------------------------

    def _texts(self, frame: pl.DataFrame, columns: Sequence[str] | None = None) -> list[str]:
        return [shingle_text(t, self.spaces) for t in row_texts(frame, columns or self.columns)]

    def _checks_output(self, frame: pl.DataFrame) -> bool:
        return self.output_overlap is not None and "output" in self.columns and "output" in frame.columns

    def _sketch(self, frame: pl.DataFrame, ctx: RunContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Band keys of every row, batch by batch, the low 16 bits of every MinHash value (for the
        estimate that screens candidates: 2 bytes x num_perm per row), and a mask of rows empty
        after normalisation."""
        bands, rows = self.shape
        n = frame.height
        keys = np.zeros((n, bands), dtype=np.uint64)
        low = np.zeros((n, self.num_perm), dtype=np.uint16)
        empty = np.zeros(n, dtype=bool)
        starts = range(0, n, self.batch_size)
        iterator = ctx.track(starts, "minhash: sketching", total=len(starts)) if ctx.show_progress else starts
        for start in iterator:
            texts = self._texts(frame.slice(start, self.batch_size))
            stop = start + len(texts)
            empty[start:stop] = [not t for t in texts]
            tokens, offsets = shingle_tokens(texts, self.ngram)
            sig = signatures(tokens, offsets, self.num_perm, ctx.seed)
            keys[start:stop] = band_keys(sig, bands, rows)
            low[start:stop] = sig.astype(np.uint16)  # keeps the low bits
        return keys, low, empty

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        bands, rows = self.shape
        base = {"threshold": self.threshold, "ngram": self.ngram, "num_perm": self.num_perm, "bands": bands,
                "rows_per_band": rows, "seed": ctx.seed}
        if not frame.height:
            return self.keep_all(frame, **base, candidates=0, pairs_screened_out=0, pairs_verified=0, pairs_answer_differs=0,
                                 rows_over_candidate_cap=0, bucket_insertions_skipped=0, minhash_duplicates=0, empty_text=0)
        keys, sketch, empty_mask = self._sketch(frame, ctx)
        # rows empty after normalisation go to removed/ as in the other dedup steps
        frame, _, empty = split_empty(frame, ["" if e else "x" for e in empty_mask], self.name, self.columns)
        if empty_mask.any():
            keys, sketch = keys[~empty_mask], sketch[~empty_mask]
        n = frame.height

        order = self._order(frame)
        shared_band = np.zeros((n, bands), dtype=bool)  # this row's key in band b is some other row's too
        for b in range(bands):
            shared_band[:, b] = pl.Series(keys[:, b]).is_duplicated().to_numpy()
        cand_rows = order[shared_band[order].any(axis=1)]  # rows sharing a band with another row, in keep order

        kept = np.ones(n, dtype=bool)
        dup_of = np.full(n, -1, dtype=np.int64)
        similarity = np.full(n, np.nan, dtype=np.float64)
        pairs = answer_differs = capped_rows = full_buckets = screened = 0
        if cand_rows.size:
            check_output = self._checks_output(frame)
            tokens, offsets, out_tokens, out_offsets = self._candidate_sets(frame, cand_rows, check_output)
            slot = np.full(n, -1, dtype=np.int64)
            slot[cand_rows] = np.arange(cand_rows.size)
            slot_of, starts = slot.tolist(), offsets.tolist()
            sets = lambda r: tokens[starts[slot_of[r]]:starts[slot_of[r] + 1]]  # noqa: E731
            if check_output:
                out_starts = out_offsets.tolist()
                outputs = lambda r: out_tokens[out_starts[slot_of[r]]:out_starts[slot_of[r] + 1]]  # noqa: E731
            # a vectorised MinHash estimate (low 16 bits: a false match per value ~1.5e-5) screens
            # pairs before the exact check
            screen = int(np.ceil((self.threshold - ESTIMATE_MARGIN) * self.num_perm))  # agreeing values needed
            # only (band, key)s some other row shares are ever looked up or stored
            tables: list[dict[int, list[int]]] = [{} for _ in range(bands)]
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            rank_of = rank.tolist()
            cap = self.max_candidates
            rows_iter = self._shared_keys(cand_rows, keys, shared_band)
            if ctx.show_progress:
                rows_iter = ctx.track(rows_iter, "minhash: verifying", total=int(cand_rows.size))
            for row, row_keys in rows_iter:
                shared: Counter = Counter()  # kept row -> bands shared with this row
                for b, key in row_keys:
                    bucket = tables[b].get(key)
                    if bucket:
                        shared.update(bucket)
                best, best_sim = -1, -1.0
                if shared:
                    if len(shared) > cap:  # most shared bands first, then keep order
                        capped_rows += 1
                        ranked = sorted(shared, key=lambda o: (-shared[o], rank_of[o]))[:cap]
                        ranked.sort(key=rank_of.__getitem__)
                    else:
                        ranked = sorted(shared, key=rank_of.__getitem__)
                    agree = (sketch[ranked] == sketch[row]).sum(axis=1)
                    likely = np.flatnonzero(agree >= screen)
                    screened += len(ranked) - likely.size
                    if likely.size:
                        mine = sets(row)
                        # highest estimate first, then keep order
                        for k in likely[np.argsort(-agree[likely], kind="stable")].tolist():
                            other = ranked[k]
                            pairs += 1
                            sim = jaccard(mine, sets(other))
                            if sim >= self.threshold and sim > best_sim:
                                if check_output and containment(outputs(row), outputs(other)) < self.output_overlap:
                                    answer_differs += 1
                                    continue
                                best, best_sim = other, sim
                if best >= 0:
                    kept[row], dup_of[row], similarity[row] = False, best, best_sim
                else:
                    for b, key in row_keys:
                        bucket = tables[b].setdefault(key, [])
                        if len(bucket) < cap:
                            bucket.append(row)
                        else:
                            full_buckets += 1

        ids = frame["id"].to_list()
        removed_idx = np.flatnonzero(~kept)
        kept_mask = pl.Series(kept)
        removed = removal_frame(
            frame.filter(~kept_mask), self.name, "minhash-duplicate",
            dup_of=pl.Series([ids[i] for i in dup_of[removed_idx]], dtype=pl.String),
            similarity=pl.Series(similarity[removed_idx]),
            detail=pl.lit(self.describe(frame)),
        )
        if empty.height:
            removed = pl.concat([empty, removed], how="diagonal_relaxed")
        stats = {**base, "candidates": int(cand_rows.size), "pairs_screened_out": screened, "pairs_verified": pairs,
                 "pairs_answer_differs": answer_differs,
                 "rows_over_candidate_cap": capped_rows, "bucket_insertions_skipped": full_buckets,
                 "minhash_duplicates": int(removed_idx.size), "empty_text": empty.height}
        return StepResult(frame.filter(kept_mask), removed, stats)

    def _candidate_sets(self, frame: pl.DataFrame, cand_rows: np.ndarray, check_output: bool, chunk: int = 50_000):
        """Shingle sets (and output shingle sets) of the candidate rows, in `cand_rows` order, built
        `chunk` rows at a time so that only the compact 4-byte tokens are held."""
        parts, out_parts = [], []
        for start in range(0, cand_rows.size, chunk):
            rows = frame[cand_rows[start:start + chunk].tolist()]
            parts.append(shingle_sets(self._texts(rows), self.ngram))
            if check_output:
                out_parts.append(shingle_sets(self._texts(rows.select("output"), ("output",)), self.ngram))

        def join(chunks):
            if not chunks:
                return None, None
            tokens = np.concatenate([t for t, _ in chunks])
            sizes = np.concatenate([np.diff(o) for _, o in chunks])
            offsets = np.zeros(sizes.size + 1, dtype=np.int64)
            np.cumsum(sizes, out=offsets[1:])
            return tokens, offsets

        return (*join(parts), *join(out_parts))

    @staticmethod
    def _shared_keys(cand_rows: np.ndarray, keys: np.ndarray, shared_band: np.ndarray, chunk: int = 20_000):
        """(row, [(band, key) for the bands whose key another row shares]) for each candidate row."""
        for start in range(0, cand_rows.size, chunk):
            rows = cand_rows[start:start + chunk]
            for row, row_keys, mask in zip(rows.tolist(), keys[rows].tolist(), shared_band[rows].tolist()):
                yield row, [(b, k) for b, (k, m) in enumerate(zip(row_keys, mask)) if m]

    def describe(self, frame: pl.DataFrame) -> str:
        """The rule behind a removal, as removed/'s `detail` records it."""
        text = (f"{self.ngram}-char shingle Jaccard >= {self.threshold} on {'+'.join(self.columns)} "
                f"(NFKC, casefold, spaces {'kept' if self.spaces else 'dropped'})")
        if self._checks_output(frame):
            text += f"; outputs share >= {self.output_overlap} of their shingles"
        return text + f"; keep={self.keep}"

    def _order(self, frame: pl.DataFrame) -> np.ndarray:
        """Row positions in the order rows claim to stay: input order, or longest output first."""
        if self.keep == "first" or "output" not in frame.columns:
            return np.arange(frame.height, dtype=np.int64)
        lengths = frame["output"].fill_null("").str.len_chars().to_numpy()
        return np.lexsort((np.arange(frame.height), -lengths.astype(np.int64)))


__all__ = ["LSH_RECALL_TARGET", "MinHashDedup", "candidate_probability", "jaccard", "lsh_shape", "shingle_sets",
           "shingle_text", "shingle_tokens", "signatures"]
