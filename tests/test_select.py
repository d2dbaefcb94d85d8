"""Select: length groups, FAISS k-means per group, the six per-cluster methods, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.curate import RunContext
from kocurate.curate.select import (
    Select, kmeans, koquality_count, length_groups, pick, quotas, systematic,
)
from kocurate.errors import InputError

TOPICS = ["김치찌개", "서울 여행", "파이썬 함수", "한국 역사", "축구 경기", "주식 투자", "감기 증상", "영어 공부",
          "우주 탐사", "커피 맛집"]
ASKS = ["{t}에 대해 알려 주세요.", "{t}의 장점과 단점을 자세히 비교하고 초보자가 알아야 할 점을 세 가지로 정리해 주세요.",
        "{t} 관련 질문입니다: 무엇부터 시작하면 좋을까요?", "{t}", "친구가 {t}에 관심이 많은데 선물로 무엇이 좋을지 추천해 줄래?"]


def korean_frame(n: int = 300, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t, a = TOPICS[i % len(TOPICS)], ASKS[(i // len(TOPICS)) % len(ASKS)]
        rows.append({"id": f"ko-{i:04d}", "instruction": a.format(t=t) + f" ({i}번)", "input": "",
                     "output": f"{t}에 대한 답변입니다.", "source": "test", "ppl": float(rng.uniform(1, 50))})
    return pl.DataFrame(rows)


def blobs(n_per: int, centres: int, dim: int = 16, seed: int = 0, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    truth = np.repeat(np.arange(centres), n_per)
    x = c[truth] + spread * rng.standard_normal((len(truth), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


@pytest.fixture
def frame_and_npy(tmp_path):
    frame = korean_frame(300)
    x, _ = blobs(30, 10, seed=1)
    path = tmp_path / "emb.npy"
    np.save(path, x)
    return frame, path


# -------------------------------------------------------------------- building blocks


def test_length_groups_match_pandas_qcut():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 400, size=2000)
    ours, edges = length_groups(lengths, 5)
    theirs = pd.qcut(pd.Series(lengths), q=5, labels=False, duplicates="drop").to_numpy()
    assert (ours == theirs).all()
    assert len(edges) == 6


def test_length_groups_merge_equal_cut_points():
    lengths = np.array([5] * 90 + [6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
    groups, edges = length_groups(lengths, 5)
    assert groups.max() + 1 < 5 and len(edges) - 1 == groups.max() + 1


def test_kmeans_recovers_blobs_and_is_seeded():
    from sklearn.metrics import adjusted_rand_score

    x, truth = blobs(40, 6, seed=2)
    a, d2, centres = kmeans(x, 6, seed=7, n_init=2)
    b, _, _ = kmeans(x, 6, seed=7, n_init=2)
    assert adjusted_rand_score(truth, a) == pytest.approx(1.0)
    assert (a == b).all()
    assert centres.shape == (6, 16) and (d2 >= 0).all()


def test_kmeans_group_smaller_than_k_gets_one_cluster_per_row():
    x, _ = blobs(1, 7)
    labels, d2, _ = kmeans(x, 100, seed=0)
    assert sorted(labels.tolist()) == list(range(7)) and (d2 == 0).all()


def test_quotas_are_proportional_and_exact():
    q = quotas(np.array([50, 30, 15, 5]), 10)
    assert q.tolist() == [5, 3, 2, 0]  # 1.5 and 0.5: the larger remainder wins
    assert quotas(np.array([3, 2]), 100).tolist() == [3, 2]


def test_koquality_systematic_positions_and_count():
    assert systematic(250, 100).tolist() == [0, 100, 200]
    assert koquality_count(np.array([250, 100, 101, 1]), 0.01) == 3 + 1 + 2 + 1


def test_ppl_method_takes_every_step_th_row_by_ascending_ppl():
    n = 250
    scores = np.random.default_rng(0).permutation(n).astype(float)  # ranks 0..249
    idx = np.arange(n)
    got = pick("ppl", idx, ratio=0.01, quota=None, scores=scores, dist=np.zeros(n), emb=np.zeros((n, 2)),
               texts=[str(i) for i in range(n)], rng=np.random.default_rng(0), tau=0.9)
    assert sorted(scores[got].tolist()) == [0.0, 100.0, 200.0]


def test_ppl_h_sorts_descending_and_drops_duplicate_instructions():
    scores = np.array([9.0, 8.0, 7.0, 6.0] * 50)
    texts = ["a", "a", "b", "c"] * 50
    got = pick("ppl-h", np.arange(200), ratio=0.01, quota=None, scores=scores, dist=np.zeros(200),
               emb=np.zeros((200, 2)), texts=texts, rng=np.random.default_rng(0), tau=0.9)
    # int(0.01 * 200) = 2 rows: the highest score, then the next distinct instruction
    assert [texts[i] for i in got] == ["a", "b"]


def test_centroid_hard_and_diverse():
    dist = np.array([0.5, 0.1, 0.9, 0.3])
    kw = dict(ratio=None, scores=np.array([4.0, 3.0, 2.0, 1.0]), dist=dist, texts=list("abcd"),
              rng=np.random.default_rng(0), tau=0.9)
    emb = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    assert pick("centroid", np.arange(4), quota=2, emb=emb, **kw).tolist() == [1, 3]
    assert pick("hard", np.arange(4), quota=2, emb=emb, **kw).tolist() == [2, 0]
    # diverse: by ascending score 3, 2, 1, 0; 2 duplicates 3 (cosine 1 > tau), 1 is new
    assert pick("diverse", np.arange(4), quota=3, emb=emb, **kw).tolist() == [3, 1]


# -------------------------------------------------------------------- the step


def run(frame, **kw):
    seed = kw.pop("seed", 42)
    return Select(**kw).run(frame, RunContext(seed=seed))


def test_select_keeps_koquality_columns_and_explains_removals(frame_and_npy):
    frame, npy = frame_and_npy
    result = run(frame, ratio=0.05, clusters=4, embeddings=str(npy))
    kept = result.kept
    for col in ("len", "len_group", "cluster", "ppl"):
        assert col in kept.columns
    assert kept.height + result.removed.height == frame.height
    assert set(result.removed["reason"].unique()) == {"not-selected"}
    # KoQuality's formula per (group, cluster): ceil(n / int(1/ratio))
    sizes = frame.join(pl.concat([kept, result.removed], how="diagonal_relaxed").select("id", "len_group", "cluster"),
                       on="id").group_by("len_group", "cluster").len()["len"].to_numpy()
    assert kept.height == koquality_count(sizes, 0.05)
    assert kept["len"].to_list() == [len(t) for t in kept["instruction"]]


@pytest.mark.parametrize("method", ["ppl", "ppl-h", "random", "centroid", "hard", "diverse"])
def test_size_gives_exactly_that_many_rows(frame_and_npy, method):
    frame, npy = frame_and_npy
    result = run(frame, size=37, method=method, clusters=5, embeddings=str(npy), tau=1.0)
    assert result.kept.height == 37
    assert result.kept["id"].n_unique() == 37


def test_same_seed_same_rows_other_seed_other_sample(frame_and_npy):
    frame, npy = frame_and_npy
    a = run(frame, ratio=0.1, method="random", clusters=5, embeddings=str(npy), seed=1).kept
    b = run(frame, ratio=0.1, method="random", clusters=5, embeddings=str(npy), seed=1).kept
    c = run(frame, ratio=0.1, method="random", clusters=5, embeddings=str(npy), seed=2).kept
    assert a["id"].to_list() == b["id"].to_list()
    assert a["id"].to_list() != c["id"].to_list()


def test_diverse_respects_tau(frame_and_npy):
    frame, npy = frame_and_npy
    result = run(frame, size=40, method="diverse", clusters=3, embeddings=str(npy), tau=0.5)
    x = np.load(npy)
    pos = {rid: i for i, rid in enumerate(frame["id"])}
    kept = result.kept.select("id", "len_group", "cluster").to_dicts()
    for key in {(r["len_group"], r["cluster"]) for r in kept}:
        rows = [pos[r["id"]] for r in kept if (r["len_group"], r["cluster"]) == key]
        sims = x[rows] @ x[rows].T - np.eye(len(rows)) * 10
        assert sims.max() <= 0.5 + 1e-6


def test_embeddings_from_a_column(frame_and_npy):
    frame, npy = frame_and_npy
    x = np.load(npy)
    with_col = frame.with_columns(pl.Series("vec", x.tolist()))
    a = run(with_col, size=20, method="centroid", clusters=4, embeddings="vec").kept["id"].to_list()
    b = run(frame, size=20, method="centroid", clusters=4, embeddings=str(npy)).kept["id"].to_list()
    assert a == b


def test_lexical_embedder_end_to_end(tmp_path):
    frame = korean_frame(120).drop("ppl")
    result = Select(size=12, method="centroid", clusters=3, embedder="lexical").run(frame, RunContext(cache_dir=tmp_path))
    assert result.kept.height == 12 and "ppl" not in result.kept.columns


def test_scorer_charlm_scores_on_the_fly():
    frame = korean_frame(120).drop("ppl")
    x, _ = blobs(12, 10)
    result = Select(ratio=0.1, clusters=3, embeddings="vec", scorer="charlm").run(
        frame.with_columns(pl.Series("vec", x.tolist())), RunContext())
    assert result.kept["ppl"].null_count() == 0 and result.stats["scored_on_the_fly"] == 120


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.1])
def test_ratio_outside_open_unit_interval(ratio):
    with pytest.raises(InputError, match=r"outside \(0, 1\)"):
        Select(ratio=ratio)


def test_ratio_and_size_exclusive():
    with pytest.raises(InputError, match="exactly one of --ratio"):
        Select(ratio=0.1, size=10)
    with pytest.raises(InputError, match="exactly one of --ratio"):
        Select()


def test_more_clusters_than_rows(frame_and_npy):
    frame, npy = frame_and_npy
    with pytest.raises(InputError, match=r"--clusters 1000 is more than the 300 input rows; pass --clusters \d+"):
        run(frame, ratio=0.1, clusters=1000, embeddings=str(npy))


def test_scores_missing_for_some_rows_names_the_row_and_the_fix(frame_and_npy):
    frame, npy = frame_and_npy
    holes = frame.with_columns(pl.when(pl.int_range(pl.len()) == 41).then(None).otherwise(pl.col("ppl")).alias("ppl"))
    with pytest.raises(InputError) as err:
        run(holes, ratio=0.1, clusters=4, embeddings=str(npy))
    msg = str(err.value)
    assert "1 of 300 rows" in msg and "row 42" in msg and "ko-0041" in msg and "kocurate score" in msg
    assert "\n" not in msg


def test_no_score_column_lists_columns_and_names_the_command(frame_and_npy):
    frame, npy = frame_and_npy
    with pytest.raises(InputError, match=r"needs a 'ppl' score column.*columns: id, instruction.*kocurate score"):
        run(frame.drop("ppl"), ratio=0.1, clusters=4, embeddings=str(npy))


def test_embeddings_of_the_wrong_shape(frame_and_npy, tmp_path):
    frame, _ = frame_and_npy
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 4), dtype=np.float32))
    with pytest.raises(InputError, match=r"shape \(10, 4\) but the input has 300 rows"):
        run(frame, ratio=0.1, clusters=4, embeddings=str(bad))


# -------------------------------------------------------------------- CLI


def test_cli_select_writes_folder_and_prints_group_table(tmp_path):
    src = tmp_path / "ko.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in korean_frame(200).drop("ppl").to_dicts()),
                   encoding="utf-8")
    out = tmp_path / "sel"
    res = CliRunner().invoke(main, ["select", str(src), "-o", str(out), "--ratio", "0.05", "--clusters", "4",
                                    "--scorer", "charlm", "--embedder", "lexical", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "selection by length group" in res.output and "not-selected" in res.output
    kept = pl.read_parquet(next((out / "data").glob("*.parquet")))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"][-1]["name"] == "select" and manifest["seed"] == 42
    assert kept.height == manifest["rows"] and {"len", "len_group", "cluster", "ppl"} <= set(kept.columns)


def test_cli_select_bad_ratio_is_one_line(tmp_path):
    src = tmp_path / "ko.jsonl"
    src.write_text(json.dumps({"instruction": "안녕", "output": "네"}, ensure_ascii=False), encoding="utf-8")
    res = CliRunner().invoke(main, ["select", str(src), "-o", str(tmp_path / "o"), "--ratio", "2"])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "--ratio 2.0 is outside (0, 1)" in res.output


def test_scorer_fills_only_the_missing_scores(frame_and_npy):
    frame, npy = frame_and_npy
    holes = frame.with_columns(pl.when(pl.int_range(pl.len()) % 10 == 0).then(None).otherwise(pl.col("ppl")).alias("ppl"))
    result = Select(ratio=0.5, clusters=2, embeddings=str(npy), scorer="charlm").run(holes, RunContext())
    assert result.stats["scored_on_the_fly"] == 30
    both = result.kept.join(frame.select("id", pl.col("ppl").alias("orig")), on="id")
    kept_scored = both.filter(~pl.col("id").is_in(holes.filter(pl.col("ppl").is_null())["id"].implode()))
    assert (kept_scored["ppl"] == kept_scored["orig"]).all()


def test_sklearn_backend_is_koqualitys_kmeans():
    from sklearn.cluster import KMeans

    x, _ = blobs(20, 5, seed=4, spread=0.3)
    ours, _, _ = kmeans(x, 5, seed=42, n_init=10, backend="sklearn")
    theirs = KMeans(5, n_init=10, random_state=42).fit(x).labels_
    assert ours.tolist() == theirs.tolist()
    with pytest.raises(InputError, match="--kmeans annoy: unknown"):
        Select(ratio=0.1, kmeans="annoy")


def test_kmeans_plusplus_seeding_finds_small_clusters_beside_a_big_one():
    from sklearn.metrics import adjusted_rand_score

    from kocurate.curate.select import kmeans_plusplus

    rng = np.random.default_rng(5)
    centres = np.eye(16, dtype=np.float32)[:8] * 3
    truth = np.concatenate([np.zeros(900, dtype=int), np.repeat(np.arange(1, 8), 15)])
    x = (centres[truth] + 0.05 * rng.standard_normal((len(truth), 16))).astype(np.float32)
    seeds = kmeans_plusplus(x, 8, np.random.default_rng(0))
    assert len({tuple(np.round(s, 4)) for s in seeds}) == 8
    labels, _, _ = kmeans(x, 8, seed=0)  # k-means++ is the default
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)


# -------------------------------------------------------------------- review fixes: score column, cache


def test_score_column_follows_the_scorer():
    assert Select(ratio=0.1).score_column == "ppl"
    assert Select(ratio=0.1, scorer="charlm").score_column == "ppl"
    assert Select(ratio=0.1, scorer="ifd:some/model").score_column == "ifd"
    assert Select(ratio=0.1, scorer="ifd:some/model", score_column="mine").score_column == "mine"
    assert Select(ratio=0.1, scorer="ifd:some/model").params()["score_column"] == "ifd"


def test_ifd_scorer_writes_an_ifd_column_not_ppl(frame_and_npy, monkeypatch):
    import kocurate.curate.score as score_mod

    frame, npy = frame_and_npy
    calls = []

    def fake_scores(rows, model, metric, **kw):
        calls.append((model, metric))
        return np.arange(rows.height, dtype=np.float64) + 1.0, {"scored": rows.height, "cached": 0}

    monkeypatch.setattr(score_mod, "compute_scores", fake_scores)
    result = Select(ratio=0.1, clusters=4, embeddings=str(npy), scorer="ifd:tiny").run(frame, RunContext())
    assert calls == [("tiny", "ifd")]
    assert result.kept["ifd"].null_count() == 0
    # the ppl column the input had is untouched
    both = result.kept.join(frame.select("id", pl.col("ppl").alias("orig")), on="id")
    assert (both["ppl"] == both["orig"]).all()


def test_cli_select_score_column_defaults_to_ifd_with_an_ifd_scorer(tmp_path, monkeypatch):
    import kocurate.curate.score as score_mod

    monkeypatch.setattr(score_mod, "compute_scores",
                        lambda rows, model, metric, **kw: (np.linspace(1, 2, rows.height), {"scored": rows.height}))
    src = tmp_path / "ko.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in korean_frame(100).to_dicts()), encoding="utf-8")
    out = tmp_path / "sel"
    res = CliRunner().invoke(main, ["select", str(src), "-o", str(out), "--ratio", "0.1", "--clusters", "2",
                                    "--scorer", "ifd:tiny", "--embedder", "lexical", "--no-cache"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"][-1]["params"]["score_column"] == "ifd"
    assert "ifd" in pl.read_parquet(next((out / "data").glob("*.parquet"))).columns

def test_cli_select_reuses_cached_embeddings_and_no_cache_skips_them(tmp_path, monkeypatch, lexical_encode_calls):
    calls = lexical_encode_calls
    monkeypatch.setenv("KOCURATE_CACHE", str(tmp_path / "default-cache"))
    src = tmp_path / "ko.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in korean_frame(120).to_dicts()), encoding="utf-8")
    cache = tmp_path / "c"
    args = ["select", str(src), "--ratio", "0.1", "--clusters", "3", "--embedder", "lexical", "--overwrite"]

    res = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a"), "--cache-dir", str(cache)])
    assert res.exit_code == 0, res.output
    assert sum(calls) == 120 and list((cache / "embeddings").rglob("*.npy"))
    calls.clear()
    res = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b"), "--cache-dir", str(cache)])
    assert res.exit_code == 0, res.output
    assert calls == []  # every embedding came from the cache

    res = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "c2"), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert sum(calls) == 120 and not (tmp_path / "default-cache").exists()

    # without --cache-dir the default folder ($KOCURATE_CACHE) is the cache
    calls.clear()
    res = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert sum(calls) == 120 and list((tmp_path / "default-cache" / "embeddings").rglob("*.npy"))


def test_select_without_a_cache_dir_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("KOCURATE_CACHE", str(tmp_path / "default-cache"))
    frame = korean_frame(60).drop("ppl")
    Select(size=6, method="centroid", clusters=2, embedder="lexical").run(frame, RunContext())
    assert not (tmp_path / "default-cache").exists()
