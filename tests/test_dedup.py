"""Exact and semantic dedup: the keep policies, the row and instruction rules, streaming,
re-thresholding, the CLI, the samples, and the templated-article case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.curate import RunContext
from kocurate.curate.dedup import (ExactDedup, RowCheck, RowView, SemanticDedup, SemanticResult, check_threshold, compare,
                                   exact_keys, stream_dedup)
from kocurate.curate.embed import Embedder
from kocurate.curate.index import build_index, pair_recall, range_pairs, search_pairs
from kocurate.errors import InputError


def frame(rows) -> pl.DataFrame:
    return pl.DataFrame(
        [{"id": r[0], "instruction": r[1], "input": r[2] if len(r) > 2 else "", "output": r[3] if len(r) > 3 else "답",
          "source": "test"} for r in rows]
    )


class TableEmbedder(Embedder):
    """Vectors chosen by the test: text -> vector (normalised)."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}
        self.dim = len(next(iter(table.values())))
        self.name = "table-" + str(abs(hash(tuple(sorted(table)))))

    def encode(self, texts, batch_size=256):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def _angle_vectors(*cosines_to_first: float) -> list[list[float]]:
    return [[c, float(np.sqrt(max(0.0, 1 - c * c))), 0.0] for c in cosines_to_first]


# ---------------------------------------------------------------------------------------------- exact


def test_exact_keeps_longest_output_and_points_at_it():
    # the Platypus rule (instruction+input key): the longest output wins
    f = frame([("a", "서울의 궁궐을 알려 주세요", "", "짧다"), ("b", "서울의  궁궐을 알려 주세요 ", "", "훨씬 더 긴 답변입니다"),
               ("c", "서울의 궁궐을 알려 주세요", "", "중간 길이"), ("d", "다른 질문", "", "답")])
    result = ExactDedup(rule="instruction").run(f, RunContext())
    assert result.kept["id"].to_list() == ["b", "d"]
    removed = result.removed.sort("id")
    assert removed["dup_of"].to_list() == ["b", "b"] and removed["similarity"].to_list() == [1.0, 1.0]
    assert set(removed["reason"]) == {"exact-duplicate"}


def test_exact_keep_first_and_nfkc_key():
    f = frame([("a", "ＡＢＣ 회사", "입력", "짧다"), ("b", "ABC 회사", "입력", "훨씬 더 긴 답변"), ("c", "ABC 회사", "다른 입력", "x")])
    result = ExactDedup(keep="first", rule="instruction").run(f, RunContext())
    assert result.kept["id"].to_list() == ["a", "c"]
    assert result.removed["dup_of"].to_list() == ["a"]
    # the row rule keys on the output too: a and b answer differently, so both stay, counted
    row = ExactDedup(keep="first").run(f, RunContext())
    assert row.kept["id"].to_list() == ["a", "b", "c"]
    assert row.stats["same_prompt_different_output"] == 1


def test_exact_row_rule_removes_true_copies_and_reports_other_answers():
    f = frame([("a", "헌법 제10조는 무엇을 규정하나요?", "", "인간의 존엄과 가치를 규정합니다."),
               ("b", "헌법 제10조는  무엇을 규정하나요? ", "", "인간의 존엄과  가치를 규정합니다."),  # the same row retyped
               ("c", "헌법 제10조는 무엇을 규정하나요?", "", "행복추구권을 규정합니다."),  # same prompt, another answer
               ("d", "헌법 제11조는 무엇을 규정하나요?", "", "평등권을 규정합니다.")])
    result = ExactDedup().run(f, RunContext())
    assert result.kept["id"].to_list() == ["a", "c", "d"]
    assert result.removed.select("id", "dup_of").rows() == [("b", "a")]
    assert result.stats["same_prompt_different_output"] == 1 and result.stats["key"] == "instruction+input+output"
    keys = exact_keys(f)
    assert keys[0] == keys[1] != keys[2]
    assert exact_keys(f, ("instruction", "input"))[0] == exact_keys(f, ("instruction", "input"))[2]


def test_row_empty_after_normalisation_is_recorded():
    f = frame([("a", "\u200b \u3000", "", "x"), ("b", "질문", "", "y")])
    result = ExactDedup().run(f, RunContext())
    assert result.kept["id"].to_list() == ["b"]
    assert result.removed.row(0, named=True)["reason"] == "empty-text"
    assert "empty after NFKC" in result.removed["detail"][0]


def test_unknown_keep_policy():
    with pytest.raises(InputError, match="--keep newest: unknown policy"):
        ExactDedup(keep="newest")
    with pytest.raises(InputError, match="--rule prompt: unknown"):
        ExactDedup(rule="prompt")


# ---------------------------------------------------------------------------------------------- semantic


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), "abc"])
def test_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(InputError, match="--threshold"):
        SemanticDedup(threshold=bad)


def test_threshold_one_is_allowed():
    assert check_threshold(1.0) == 1.0


def test_greedy_compares_with_kept_rows_only():
    # A-B 0.95 (B goes), B-C 0.95, A-C 0.8: C stays because its near twin B was removed.
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.95, np.sqrt(1 - 0.95**2), 0.0])
    # c: cos(a, c) = 0.8 and cos(b, c) close to 0.95
    c = np.array([0.8, 0.6, 0.0])
    model = TableEmbedder({"A": a.tolist(), "B": b.tolist(), "C": c.tolist(), "D": [0.0, 0.0, 1.0]})
    f = frame([("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")])
    cos_bc = float(b @ c / np.linalg.norm(c))
    assert cos_bc > 0.9
    step = SemanticDedup(threshold=0.9, embedder=model, rule="instruction")
    result = step.run(f, RunContext())
    assert result.kept["id"].to_list() == ["a", "c", "d"]
    row = result.removed.row(0, named=True)
    assert (row["id"], row["dup_of"], row["reason"]) == ("b", "a", "semantic-duplicate")
    assert row["similarity"] == pytest.approx(0.95, abs=1e-5)
    # the result comes back with the step's result, not kept on the step (issue 11)
    assert "removed, cosine 0.9500 to kept row a" in result.result.explain("b")
    assert not hasattr(step, "result")


def test_dup_of_is_the_most_similar_kept_row():
    # D is near both A (0.91) and C (0.97); both kept; D must point at C.
    model = TableEmbedder({"A": [1, 0, 0], "C": [0, 1, 0], "D": [0.91, 0.97, 0.0], "B": [0, 0, 1]})
    f = frame([("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")])
    result = SemanticDedup(threshold=0.6, embedder=model, rule="instruction").run(f, RunContext())
    assert result.removed["dup_of"].to_list() == ["c"]


def test_rethreshold_equals_a_fresh_run():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    noisy = base[rng.integers(0, 40, 160)] + 0.6 * rng.standard_normal((160, 16)).astype(np.float32)
    vectors = np.vstack([base, noisy])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"r{i}" for i in range(len(vectors))]
    low = SemanticResult.from_pairs(ids, search_pairs(vectors, 0.7), 0.7)
    for t in (0.75, 0.8, 0.9):
        fresh = SemanticResult.from_pairs(ids, search_pairs(vectors, t), t)
        again = low.rethreshold(t)
        assert np.array_equal(again.kept, fresh.kept) and np.array_equal(again.dup_of, fresh.dup_of)
    assert low.counts_at([0.75, 0.9])[0.75] >= low.counts_at([0.75, 0.9])[0.9]
    with pytest.raises(InputError, match="below the searched threshold"):
        low.rethreshold(0.5)


def test_ivf_recall_against_exact_on_planted_clusters():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((2000, 32)).astype(np.float32)
    members = centers[rng.integers(0, 2000, 18000)] + 0.15 * rng.standard_normal((18000, 32)).astype(np.float32)
    vectors = np.vstack([centers, members])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert pair_recall(vectors, 0.9, sample=500) >= 0.99
    exact = range_pairs(build_index(vectors, "exact"), vectors[:300], 0.9)
    assert exact.ids.size > 300  # the planted clusters produce pairs beyond self-matches


def test_semantic_on_korean_paraphrases_with_default_embedder():
    f = frame([
        ("a", "김치찌개를 맛있게 끓이는 방법을 알려 주세요."),
        ("b", "파이썬으로 리스트를 정렬하는 코드를 작성하세요."),
        ("c", "김치찌개를 맛있게 끓이는 방법을 알려주세요!"),
        ("d", "지구의 자전 주기는 얼마인가요?"),
    ])
    result = SemanticDedup().run(f, RunContext())
    assert result.kept["id"].to_list() == ["a", "b", "d"]
    assert result.removed["dup_of"].to_list() == ["a"]


# ---------------------------------------------------------------------------------------------- CLI


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + ("\n" if rows else ""), encoding="utf-8")
    return path


ROWS = [
    {"id": "r1", "instruction": "김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "input": "", "output": "김치를 먼저 볶습니다."},
    {"id": "r2", "instruction": "김치찌개를  맛있게 끓이는 방법을 알려 주세요.", "input": "", "output": "김치와 돼지고기를 먼저 충분히 볶습니다."},
    {"id": "r3", "instruction": "김치찌개를 맛있게 끓이는 방법을 알려주세요!", "input": "", "output": "물을 붓고 끓입니다."},
    {"id": "r4", "instruction": "파이썬으로 리스트를 정렬하는 코드를 작성하세요.", "input": "", "output": "sorted(xs)"},
    {"id": "r5", "instruction": "지구의 자전 주기는 얼마인가요?", "input": "", "output": "약 24시간입니다."},
]


def test_cli_dedup_writes_removed_rows_with_twins_and_explain_shows_them(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out"
    runner = CliRunner()
    # the Platypus rule: r1/r2 share an instruction (r2 has the longer output), r3 is a paraphrase
    result = runner.invoke(main, ["dedup", str(src), "-o", str(out), "--cache-dir", str(tmp_path / "cache"),
                                  "--rule", "instruction"])
    assert result.exit_code == 0, result.output
    assert "semantic-dedup" in result.output and "exact-dedup" in result.output
    kept = pl.read_parquet(next((out / "data").glob("*.parquet")))
    removed = pl.read_parquet(next((out / "removed").glob("*.parquet"))).sort("id")
    assert kept["id"].to_list() == ["r2", "r4", "r5"]
    assert removed.select("id", "reason", "dup_of").rows() == [("r1", "exact-duplicate", "r2"), ("r3", "semantic-duplicate", "r2")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]][-2:] == ["exact-dedup", "semantic-dedup"]
    shown = runner.invoke(main, ["explain", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "r3" in shown.output and "r2" in shown.output and "semantic-duplicate" in shown.output


def test_cli_analyze_writes_nothing(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", ROWS)
    result = CliRunner().invoke(main, ["dedup", str(src), "--analyze", "--embedder", "lexical", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "would remove" in result.output and "0.85" in result.output and "nearest other row" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_cli_bad_threshold_is_one_line(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", ROWS)
    result = CliRunner().invoke(main, ["dedup", str(src), "-o", str(tmp_path / "o"), "--threshold", "1.5"])
    assert result.exit_code == 2
    assert "error: --threshold 1.5: must be in (0, 1]" in result.output
    assert not (tmp_path / "o").exists()


def test_cli_empty_input_is_a_clear_error(tmp_path):
    src = _write_jsonl(tmp_path / "empty.jsonl", [])
    result = CliRunner().invoke(main, ["dedup", str(src), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "empty" in result.output.lower()


def test_cli_unresolvable_embedder(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", ROWS)
    result = CliRunner().invoke(main, ["dedup", str(src), "-o", str(tmp_path / "o"), "--embedder", "st:./nope-model"])
    assert result.exit_code == 2
    assert "error: embedder st:./nope-model did not resolve; tried" in result.output


# ---------------------------------------------------------------------------------------------- samples


def _sample_scores(samples: Path, cache: Path, threshold: float | None, rule: str = "row"):
    from kocurate.curate.pipeline import run_pipeline
    from kocurate.records import load_records

    data, truth = samples / "ko_instructions.jsonl", samples / "ko_instructions.truth.jsonl"
    if not data.is_file() or not truth.is_file():
        pytest.skip("samples/ko_instructions.jsonl not generated yet")
    planted = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = {p["id"]: p["of"] for p in planted if p["kind"] in ("exact", "edit", "reorder", "paraphrase")}
    result = run_pipeline([load_records(data)], [ExactDedup(rule=rule), SemanticDedup(threshold=threshold, rule=rule)], None,
                          ctx=RunContext(cache_dir=cache))
    gone = set(result.removed.filter(pl.col("step").is_in(["exact-dedup", "semantic-dedup"]))["id"].to_list())
    # a planted pair is found when either of its rows goes (greedy keeps the first seen)
    found = sum(1 for a, b in pairs.items() if a in gone or b in gone) / len(pairs)
    false = len(gone - set(pairs) - set(pairs.values())) / result.rows_in
    return found, false


def test_default_embedder_finds_planted_near_duplicates(samples, request):
    """>= 90% of planted near-duplicates found with <= 2% false removals, under the default row rule.

    Measured (benchmarks/results/neardup.md): row rule 96.3% found, 0.13% of rows removed
    wrongly; instruction rule at 0.8: 94.4% / 1.07%. The row rule misses only planted "exact"
    copies whose answer was cut to its first sentence: another (shorter) answer, which the row
    rule keeps by design.
    """
    # pytest's own cache folder keeps the embeddings between runs (the first run embeds ~3000 rows)
    cache = Path(request.config.cache.mkdir("kocurate-embeddings"))
    found, false = _sample_scores(samples, cache, None)
    assert found >= 0.90, f"found {found:.1%}"
    assert false <= 0.02, f"false removals {false:.1%}"
    strict_found, strict_false = _sample_scores(samples, cache, 0.9)
    assert strict_false <= false and strict_found <= found  # a higher candidate threshold removes less


def test_knn_range_fallback_equals_range_search():
    """GPU FAISS has no range search; the top-k fallback must return the same pairs."""
    from kocurate.curate.index import knn_range

    rng = np.random.default_rng(3)
    centers = rng.standard_normal((50, 16)).astype(np.float32)
    vectors = centers[rng.integers(0, 50, 3000)] + 0.2 * rng.standard_normal((3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, "exact")
    lims, scores, ids = index.range_search(vectors[:200], 0.9)
    klims, kscores, kids = knn_range(index, vectors[:200], 0.9, k=8)
    assert np.array_equal(lims, klims)
    for q in range(200):
        assert set(ids[lims[q]:lims[q + 1]]) == set(kids[klims[q]:klims[q + 1]])


def test_cell_index_top_k_matches_exact_on_clusters():
    from kocurate.curate.index import nearest

    rng = np.random.default_rng(5)
    centers = rng.standard_normal((100, 24)).astype(np.float32)
    vectors = centers[rng.integers(0, 100, 4000)] + 0.1 * rng.standard_normal((4000, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact_s, exact_i = nearest(vectors, k=1, method="exact", exclude_self=True)
    ivf_s, ivf_i = nearest(vectors, k=1, method="ivf", exclude_self=True)
    assert np.mean(exact_i[:, 0] == ivf_i[:, 0]) >= 0.99
    assert np.allclose(exact_s[ivf_i == exact_i], ivf_s[ivf_i == exact_i], atol=1e-5)


def test_corrupt_removed_parquet_is_a_one_line_error(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(main, ["dedup", str(src), "-o", str(out), "--embedder", "lexical", "--no-cache", "--rule", "instruction"])
    assert result.exit_code == 0, result.output
    shard = next((out / "removed").glob("train-*.parquet"))
    shard.write_bytes(b"not parquet at all")
    shown = runner.invoke(main, ["explain", str(out)])
    assert shown.exit_code != 0 and "not a readable parquet file" in shown.output and "Traceback" not in shown.output
    again = runner.invoke(main, ["dedup", str(out), "-o", str(tmp_path / "out2"), "--embedder", "lexical", "--no-cache"])
    assert again.exit_code != 0 and "not a readable parquet file" in again.output and "Traceback" not in again.output


# ---------------------------------------------------------------------------------------------- the row rule


LAW = ["인간의 존엄과 가치 및 행복추구권", "법 앞의 평등", "신체의 자유", "형벌불소급과 이중처벌 금지", "거주와 이전의 자유",
       "직업선택의 자유", "주거의 자유", "사생활의 비밀과 자유", "통신의 비밀", "양심의 자유", "종교의 자유", "언론·출판·집회·결사의 자유",
       "학문과 예술의 자유", "재산권 보장", "선거권", "공무담임권", "청원권", "재판을 받을 권리", "형사보상청구권", "국가배상청구권",
       "범죄피해자 구조청구권", "교육을 받을 권리", "근로의 권리", "근로3권", "인간다운 생활을 할 권리", "환경권", "혼인과 가족생활의 보장",
       "기본권 제한의 한계", "납세의 의무", "국방의 의무"]


def _law_rows():
    return frame([(f"art{n}", f"헌법 제{n}조는 무엇을 규정하나요?", "", f"헌법 제{n}조는 {what}을(를) 규정합니다.")
                  for n, what in zip(range(10, 40), LAW)])


def test_templated_law_articles_are_all_kept_by_the_default_rule():
    """One question per constitution article, distinct answers: no distinct row may go.

    The instruction rule (cosine of the question alone) removes most of them: the test would fail
    if the default fell back to it."""
    f = _law_rows()
    ctx = RunContext()
    kept = ExactDedup().run(f, ctx).kept
    result = SemanticDedup().run(kept, ctx)  # default embedder, row rule, default threshold
    assert result.kept.height == f.height, result.removed.select("id", "dup_of", "detail").rows()
    platypus = SemanticDedup(rule="instruction").run(kept, ctx)
    assert platypus.removed.height > f.height // 2


KOREAN = [
    ("k1", "김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "", "잘 익은 김치와 돼지고기를 먼저 볶은 뒤 물을 붓고 푹 끓입니다."),
    ("k2", "김치찌개를 맛있게 끓이는 법을 알려 줘.", "", "잘 익은 김치와 돼지고기를 먼저 볶은 뒤 물을 붓고 푹 끓입니다."),
    ("k3", "질문입니다. 김치찌개를  맛있게 끓이는 방법을 알려 주세요.", "", "잘 익은 김치와 돼지고기를 먼저 볶은 뒤 물을 붓고 푹 끓입니다."),
    ("k4", "김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "", "돼지고기 대신 참치 통조림을 넣고 신김치를 충분히 볶아서 끓이면 됩니다."),
    ("k5", "된장찌개를 맛있게 끓이는 방법을 알려 주세요.", "", "멸치 육수에 된장을 풀고 두부와 애호박을 넣어 끓입니다."),
    ("k6", "한 개에 1,500원인 물건을 4개 사면 모두 얼마인가요?", "", "1,500원 × 4개 = 6,000원입니다."),
    ("k7", "한 개에 1,500원인 물건을 7개 사면 모두 얼마인가요?", "", "1,500원 × 7개 = 10,500원입니다."),
    ("k8", "한 개에 1500원인 물건을 4개 사면 모두 얼마인가요?", "", "1,500원 × 4개 = 6,000원입니다."),
]


@pytest.mark.parametrize("embedder", ["default", "lexical"])
def test_row_rule_removes_surface_edits_and_keeps_other_answers_numbers_and_topics(embedder):
    result = SemanticDedup(embedder=embedder).run(frame(KOREAN), RunContext())
    removed = dict(result.removed.select("id", "dup_of").rows())
    # 주세요 -> 줘 and 방법 -> 법; added framing and a doubled space; the same number written 1500
    assert removed == {"k2": "k1", "k3": "k1", "k8": "k6"}, result.removed.select("id", "dup_of", "detail").rows()
    detail = result.removed.filter(pl.col("id") == "k2")["detail"][0]
    assert detail.startswith("row rule") and "output n-gram" in detail and "cosine" in detail


def test_compare_says_why_a_pair_is_kept():
    check = RowCheck()
    view = lambda r: RowView.of({"instruction": r[1], "input": r[2], "output": r[3]}, check)  # noqa: E731
    rows = {r[0]: view(r) for r in KOREAN}
    assert compare(rows["k6"], rows["k7"], 0.95, check)["why"].startswith("numbers differ")
    assert compare(rows["k1"], rows["k4"], 0.99, check)["why"].startswith("outputs differ")
    same = compare(rows["k1"], rows["k2"], 0.9, check, full=True)
    assert same["duplicate"] and same["path"] == "surface edit" and same["numbers_same"]
    city = lambda c: view(("x", f"{c}은 어느 지역에 속하나요?", "", f"{c}은 강원 지역에 속하는 도시로 바다와 산이 모두 가깝습니다."))  # noqa: E731
    other = compare(city("춘천"), city("강릉"), 0.95, check, full=True)
    assert not other["duplicate"] and other["entity_conflict"] == "춘천 / 강릉" and other["output_overlap"] >= 0.8


def test_streamed_instruction_rule_equals_the_all_pairs_result():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((60, 16)).astype(np.float32)
    noisy = base[rng.integers(0, 60, 240)] + 0.4 * rng.standard_normal((240, 16)).astype(np.float32)
    vectors = np.vstack([base, noisy])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"r{i}" for i in range(len(vectors))]
    whole = SemanticResult.from_pairs(ids, search_pairs(vectors, 0.8), 0.8)
    streamed = stream_dedup(ids, vectors, 0.8, rule="instruction", method="exact", block=37, max_edges=1000)
    assert whole.removed_count > 20
    assert np.array_equal(whole.kept, streamed.kept) and np.array_equal(whole.dup_of, streamed.dup_of)
    # memory is bounded by a block: no block held all the pairs at once
    assert streamed.stats["max_block_pairs"] < streamed.stats["candidate_pairs"]
    for t in (0.85, 0.9):  # re-thresholding the streamed edges equals a fresh search
        fresh = SemanticResult.from_pairs(ids, search_pairs(vectors, t), t)
        assert np.array_equal(streamed.rethreshold(t).kept, fresh.kept)


def test_clustered_rows_keep_at_most_max_edges_per_row():
    rng = np.random.default_rng(3)
    center = rng.standard_normal(32).astype(np.float32)
    vectors = center + 0.05 * rng.standard_normal((400, 32)).astype(np.float32)  # one tight cluster: 80k pairs
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    result = stream_dedup([str(i) for i in range(400)], vectors, 0.9, rule="instruction", method="exact", block=64, max_edges=5)
    assert result.removed_count == 399 and result.kept[0]
    assert int(np.diff(result.lims).max()) <= 5 and result.truncated > 0
    assert result.edge_j.size <= 5 * 400 < result.stats["candidate_pairs"]


def test_cli_row_rule_manifest_records_resolved_parameters(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", [
        {"id": r[0], "instruction": r[1], "input": r[2], "output": r[3]} for r in KOREAN])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["dedup", str(src), "-o", str(out), "--embedder", "lexical", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "same prompt, different output" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    exact, semantic = manifest["steps"][-2:]
    assert exact["params"]["rule"] == "row" and exact["stats"]["same_prompt_different_output"] == 1
    stats = semantic["stats"]
    assert stats["rule"] == "row" and stats["threshold"] == 0.5 and "lexical" in stats["threshold_from"]
    assert stats["second_stage"]["ngram"] == 4 and stats["second_stage"]["output_overlap"] == 0.8
    removed = pl.read_parquet(next((out / "removed").glob("*.parquet")))
    assert sorted(removed["id"].to_list()) == ["k2", "k3", "k8"]


def test_cli_columns_naming_a_missing_or_empty_column(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", ROWS)
    runner = CliRunner()
    missing = runner.invoke(main, ["dedup", str(src), "-o", str(tmp_path / "o"), "--columns", "instruction,question"])
    assert missing.exit_code == 2 and "no column 'question'" in missing.output and "instruction" in missing.output
    assert len([l for l in missing.output.splitlines() if l.strip()]) == 1 and "Traceback" not in missing.output
    empty = runner.invoke(main, ["dedup", str(src), "-o", str(tmp_path / "o"), "--columns", "input"])
    assert empty.exit_code == 2 and "column 'input' is empty in every row" in empty.output
    assert not (tmp_path / "o").exists()


def test_st_embedder_row_rule_is_calibrated_on_the_dev_split_once(tiny_st_encoder, tmp_path, monkeypatch):
    """An st: model under the row rule without --threshold gets a candidate cosine chosen for it
    on the benchmark's dev split (cached per model); the templated articles still all stay."""
    from kocurate.curate import calibrate as cal

    ctx = RunContext(cache_dir=tmp_path / "cache")
    result = SemanticDedup(embedder=f"st:{tiny_st_encoder}").run(_law_rows(), ctx)
    assert result.stats["threshold"] in cal.GRID
    assert result.stats["threshold_from"].startswith("calibrated for this model on the Korean near-duplicate")
    assert result.kept.height == 30
    assert len(list((tmp_path / "cache" / "calibration").glob("row-rule-*.json"))) == 1
    monkeypatch.setattr(cal, "load_pairs", lambda split: pytest.fail("the cached calibration was not used"))
    again = SemanticDedup(embedder=f"st:{tiny_st_encoder}").run(_law_rows(), ctx)
    assert again.stats["threshold"] == result.stats["threshold"]
    given = SemanticDedup(embedder=f"st:{tiny_st_encoder}", threshold=0.9).run(_law_rows(), ctx)
    assert given.stats["threshold_from"] == "given"


def test_calibration_choice_follows_the_cosines():
    """`choose`: the most duplicates found within the limits, the highest such threshold; a model
    that separates the labels gets a high threshold, one that does not gets the most conservative."""
    from kocurate.curate.calibrate import GRID, choose, load_pairs, row_rule_parts

    pairs = load_pairs("dev")
    assert pairs and all(p["split"] == "dev" for p in pairs)
    passing, twins = row_rule_parts(pairs)
    dup = np.array([p["label"] == "dup" for p in pairs])
    separating = choose(pairs, np.where(dup, 0.97, 0.3), passing, twins, "separating")
    assert separating.threshold == GRID[-1] and separating.meets_limits and separating.found >= 0.9
    # every pair at 0.99: the cosine says nothing, the second stage alone decides at any threshold
    flat = choose(pairs, np.full(len(pairs), 0.99), passing, twins, "flat")
    assert flat.threshold == GRID[-1]
    # duplicates at 0.62, must-keep pairs at 0.99: every threshold lets the must-keep pairs in, only
    # 0.6 and below let the duplicates in too: the highest of those, or the most conservative
    inverted = choose(pairs, np.where(dup, 0.62, 0.99), passing, twins, "inverted")
    assert inverted.threshold == (0.6 if inverted.meets_limits else GRID[-1])
    hidden = choose(pairs, np.where(dup, 0.3, 0.99), passing, twins, "hidden")  # duplicates below every threshold
    assert inverted.found > hidden.found


def test_cli_method_minhash_composes_with_exact(tmp_path):
    pytest.importorskip("kocurate.curate.minhash")
    src = _write_jsonl(tmp_path / "in.jsonl", [
        {"id": r[0], "instruction": r[1], "input": r[2], "output": r[3]} for r in KOREAN])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["dedup", str(src), "-o", str(out), "--method", "minhash", "--no-cache"])
    assert result.exit_code == 0, result.output
    steps = [s["name"] for s in json.loads((out / "manifest.json").read_text())["steps"]]
    assert steps[-2:] == ["exact-dedup", "minhash-dedup"] and "semantic-dedup" not in steps


def test_row_rule_rethreshold_removes_less_at_a_higher_candidate_cosine():
    rows = frame(KOREAN + [(f"x{n}", f"헌법 제{n}조는 무엇을 규정하나요?", "", f"제{n}조의 내용입니다.") for n in range(1, 8)])
    result = SemanticDedup(embedder="lexical", threshold=0.3).run(rows, RunContext()).result
    counts = result.counts_at([0.3, 0.5, 0.7, 0.9, 0.99])
    assert list(counts.values()) == sorted(counts.values(), reverse=True) and counts[0.3] >= 3
    # exact-text twins need no cosine: the same long answer (k2, k3), the same squashed prompt (k8)
    assert {r[0] for r in result.rethreshold(0.99).removals()} == {"k2", "k3", "k8"}


# --------------------------------------------------------------------------------------------
# the row rule's second stage as a batch function (check_pairs), and the streamed pass built on it

def _bench_pairs():
    from kocurate.curate.calibrate import load_pairs

    return load_pairs("dev") + load_pairs("test")


def test_check_pairs_decides_every_pair_as_compare_does():
    """On the 1,280 labelled benchmark pairs plus edge cases (empty and one-word answers, numbers,
    characters polars and Python might treat differently), the batch check and the one-pair
    `compare` agree on every decision, and on every signal of the passing pairs."""
    from kocurate.curate.dedup import check_pairs

    pairs = _bench_pairs()
    a, b = [p["a"] for p in pairs], [p["b"] for p in pairs]
    edge = [
        ({"instruction": "", "input": "", "output": ""}, {"instruction": "", "input": "", "output": ""}),
        ({"instruction": "가", "input": "", "output": "네"}, {"instruction": "가", "input": "", "output": "네"}),
        ({"instruction": "Straße 이름은?", "input": "", "output": "STRASSE 입니다 정말로 그렇습니다"},
         {"instruction": "strasse 이름은?", "input": "", "output": "straße 입니다 정말로 그렇습니다"}),
        ({"instruction": "한\u200b국의 수도는?", "input": "", "output": "서울입니다. 인구는 1,000만 명입니다."},
         {"instruction": "한국의 수도는?", "input": "", "output": "서울입니다. 인구는 1000만 명입니다."}),
        ({"instruction": "ｆｕｌｌ ｗｉｄｔｈ 질문", "input": "■ 입력", "output": "답은 ✔ 이것입니다 확실합니다"},
         {"instruction": "full width 질문", "input": "입력", "output": "답은 이것입니다 확실합니다"}),
    ]
    a += [x for x, _ in edge]
    b += [y for _, y in edge]
    cosines = np.linspace(0.5, 1.0, len(a)).astype(np.float32)
    for check in (RowCheck(), RowCheck(ngram=2, output_jaccard=0.1)):
        got = check_pairs(a, b, cosines, check)
        expected = [compare(RowView.of(x, check), RowView.of(y, check), float(c), check) for x, y, c in zip(a, b, cosines)]
        assert [e["duplicate"] for e in expected] == got.passing.tolist()
        assert 300 < int(got.passing.sum()) < len(a)  # both outcomes occur
        for k in np.flatnonzero(got.passing).tolist():
            assert got.signals(k) == expected[k]


def test_squash_texts_matches_python_on_every_character_it_leaves_to_polars():
    from kocurate.curate.dedup import _SAFE_RANGES, squash, squash_texts

    chars = [chr(c) for lo, hi in _SAFE_RANGES for c in range(lo, hi + 1)]
    texts = [f"가{c}A{c}나 {c}1" for c in chars] + [f"ᄀ{c}ᅡ{c}" for c in chars]
    texts += ["straße", "a\u200bb", "ㄱㅏ", "e\u0301", "Ω\u0345"]  # left to Python
    assert squash_texts(texts, 1500) == [squash(t)[:1500] for t in texts]
    assert squash_texts(["가나다라마"], 3) == ["가나다"]


def _reference_row_rule(f: pl.DataFrame, vectors: np.ndarray, threshold: float, check: RowCheck):
    """The row rule one row at a time, written plainly: candidates (cosine >= threshold, the first
    group_limit rows with the same squashed prompt / long output), numbers pre-filter, best cosine
    first, at most max_checks, `compare` each; greedy keep-first."""
    from kocurate.curate.dedup import _Rows, squash

    rows = _Rows(f, ("instruction", "input"), check)
    n = f.height
    kept, dup_of = [True] * n, [-1] * n
    prompts, outputs = {}, {}
    sims = vectors @ vectors.T
    for i in range(n):
        cand = {j: float(sims[i, j]) for j in range(i) if sims[i, j] >= np.float32(threshold) - 1e-6}
        sq_out = squash(rows.outputs[i])[: check.max_chars]
        keys = [(prompts, squash(rows.prompts[i]))] + ([(outputs, sq_out)] if len(sq_out) >= check.min_output_chars else [])
        for groups, key in keys:
            for j in groups.get(key, []):
                cand.setdefault(j, float(sims[i, j]))
        order = sorted((j for j in cand if rows.number_key[j] == rows.number_key[i]), key=lambda j: -cand[j])
        for j in order[: check.max_checks]:
            if kept[j] and compare(rows.view(j), rows.view(i), cand[j], check)["duplicate"]:
                kept[i], dup_of[i] = False, j
                break
        for groups, key in keys:
            members = groups.setdefault(key, [])
            if len(members) < check.group_limit:
                members.append(i)
    return kept, dup_of


def test_streamed_row_rule_decides_as_the_plain_one_row_at_a_time_rule():
    from kocurate.curate.dedup import _Rows
    from kocurate.curate.embed import embed_texts

    f = pl.read_ndjson(Path(__file__).resolve().parents[1] / "samples" / "ko_instructions.jsonl").head(1200)
    vectors = embed_texts([f"{a} {b}" for a, b in zip(f["instruction"], f["input"])], "lexical")
    check = RowCheck()
    kept, dup_of = _reference_row_rule(f, vectors, 0.5, check)
    result = stream_dedup(f["id"].to_list(), vectors, 0.5, rule="row", rows=_Rows(f, ("instruction", "input"), check),
                          check=check, method="exact", block=97)
    assert sum(not k for k in kept) > 20  # the sample's planted near-duplicates
    assert result.kept.tolist() == kept
    assert result.dup_of.tolist() == dup_of


def test_check_pairs_in_small_chunks_decides_the_same(monkeypatch):
    """Memory bounds (pairs per pass, n-grams expanded at once) do not change a decision."""
    import kocurate.curate.dedup as dedup

    pairs = _bench_pairs()[:400]
    a, b = [p["a"] for p in pairs], [p["b"] for p in pairs]
    whole = dedup.check_pairs(a, b)
    monkeypatch.setattr(dedup, "CHECK_CHUNK", 37)
    monkeypatch.setattr(dedup, "OVERLAP_CHUNK", 50)  # smaller than one pair's n-grams: one pair per pass
    parts = dedup.check_pairs(a, b)
    assert whole.passing.any() and parts.passing.tolist() == whole.passing.tolist()
    assert np.array_equal(parts.output_overlap, whole.output_overlap, equal_nan=True)
    assert np.array_equal(parts.prompt_overlap, whole.prompt_overlap, equal_nan=True)
