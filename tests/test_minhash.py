"""MinHash-LSH dedup: planted Korean near-duplicates go, distinct rows stay, the removed/ contract,
determinism, the manifest, streaming batches, and composition with exact and semantic dedup."""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import pytest

from kocurate.curate import RunContext, run_pipeline
from kocurate.curate.dedup import ExactDedup, SemanticDedup
from kocurate.curate.minhash import (
    MinHashDedup,
    candidate_probability,
    lsh_shape,
    shingle_sets,
    shingle_text,
    shingle_tokens,
)
from kocurate.errors import InputError
from kocurate.records import Loaded

BASE = [
    ("서울에서 가볼 만한 궁궐을 추천해 주세요.", "", "경복궁은 조선의 법궁으로 근정전과 경회루가 유명합니다. 창덕궁은 후원이 아름다워 "
     "유네스코 세계유산에 올랐습니다. 덕수궁은 돌담길 산책과 함께 둘러보기 좋습니다."),
    ("김치찌개를 맛있게 끓이는 방법을 알려 주세요.", "", "잘 익은 김치를 돼지고기와 함께 충분히 볶은 뒤 물을 붓습니다. 고춧가루와 "
     "다진 마늘을 넣고 중불에서 이십 분 정도 끓이면 깊은 맛이 납니다. 마지막에 두부와 대파를 넣으세요."),
    ("다음 글을 세 문장으로 요약하세요.", "광합성은 식물이 빛 에너지를 이용해 이산화탄소와 물로 포도당을 만드는 과정이다. 이 과정에서 "
     "산소가 부산물로 나온다. 엽록체의 엽록소가 빛을 흡수한다.", "식물은 빛으로 포도당을 만든다. 재료는 이산화탄소와 물이다. "
     "산소가 함께 생긴다."),
    ("면접에서 좋은 인상을 남기는 방법은 무엇인가요?", "", "약속 시간보다 조금 일찍 도착하고 밝은 표정으로 인사하세요. 질문의 의도를 "
     "파악한 뒤 경험을 근거로 간결하게 답하는 것이 좋습니다. 마지막에는 회사에 대한 관심을 담은 질문을 준비하세요."),
]

# Edits a Korean reader calls the same example: (edited copy of BASE[i], kind)
PLANTED = [
    (("서울에서 가볼 만한 궁궐을 추천해 줘.", "", BASE[0][2]), "ending"),
    (("김치찌개를  맛있게 끓이는 법을 알려주세요.", "", BASE[1][2]), "spacing+synonym"),
    ((BASE[2][0], BASE[2][1].replace("식물이", "식물은"), BASE[2][2]), "particle"),
    ((BASE[3][0] + " 질문입니다.", "", BASE[3][2]), "appended sentence"),
    ((BASE[0][0], "", BASE[0][2].replace("아름다워", "아릅다워")), "typo"),
]

# Rows that must stay: one template about other entities / numbers, a different answer.
DISTINCT = [
    ("부산에서 가볼 만한 해수욕장을 추천해 주세요.", "", "해운대는 넓은 백사장과 고층 건물이 어우러진 풍경이 유명합니다. 광안리는 "
     "광안대교 야경이 아름답습니다. 송정은 서핑을 배우기 좋은 한적한 해변입니다."),
    ("된장찌개를 맛있게 끓이는 방법을 알려 주세요.", "", "멸치 육수를 먼저 내고 된장을 체에 걸러 풀어 줍니다. 애호박과 감자, "
     "양파를 넣고 끓이다가 두부와 청양고추를 넣으면 칼칼한 맛이 납니다."),
    ("면접에서 좋은 인상을 남기는 방법은 무엇인가요?", "", "복장은 지원하는 회사의 분위기에 맞추고 이력서 내용을 다시 읽어 두세요. "
     "대답이 막히면 잠시 생각할 시간을 달라고 정중히 말해도 괜찮습니다."),
]


def frame(rows, prefix="r") -> pl.DataFrame:
    return pl.DataFrame([{"id": f"{prefix}{i}", "instruction": r[0], "input": r[1], "output": r[2], "source": "test"}
                         for i, r in enumerate(rows)])


def planted_frame() -> pl.DataFrame:
    return frame(BASE + [row for row, _ in PLANTED] + DISTINCT)


def exact_jaccard(a: str, b: str, n: int = 3) -> float:
    """Jaccard of character n-gram sets, written plainly (independent of the vectorised code)."""
    def grams(t):
        return {t[i:i + n] for i in range(max(len(t) - n + 1, 1))}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


def joined(row) -> str:
    from kocurate.curate.embed import normalize_text

    return shingle_text(normalize_text(" ".join(row)))


# ---------------------------------------------------------------------------------------------- decisions


def test_planted_korean_near_duplicates_are_removed_with_their_twin_and_jaccard():
    f = planted_frame()
    result = MinHashDedup().run(f, RunContext())
    removed = {r["id"]: r for r in result.removed.iter_rows(named=True)}
    planted_ids = [f"r{len(BASE) + k}" for k in range(len(PLANTED))]
    assert set(removed) == set(planted_ids), [kind for (row, kind), i in zip(PLANTED, planted_ids) if i not in removed]
    sources = [0, 1, 2, 3, 0]
    for k, rid in enumerate(planted_ids):
        row = removed[rid]
        assert row["step"] == "minhash-dedup" and row["reason"] == "minhash-duplicate"
        assert row["dup_of"] == f"r{sources[k]}"
        expected = exact_jaccard(joined(PLANTED[k][0]), joined(BASE[sources[k]]))
        assert row["similarity"] == pytest.approx(expected) and expected >= MinHashDedup().threshold
        assert "3-char shingle Jaccard" in row["detail"]
    assert result.stats["minhash_duplicates"] == len(PLANTED)
    assert result.stats["pairs_verified"] >= len(PLANTED)


def test_distinct_rows_of_one_template_and_different_answers_stay():
    f = planted_frame()
    result = MinHashDedup().run(f, RunContext())
    kept = set(result.kept["id"].to_list())
    assert {f"r{len(BASE) + len(PLANTED) + k}" for k in range(len(DISTINCT))} <= kept
    assert {f"r{k}" for k in range(len(BASE))} <= kept


def test_same_request_with_a_different_short_answer_stays_unless_the_output_check_is_off():
    passage = ("전자기 유도는 코일을 지나는 자기장이 변할 때 전류가 생기는 현상입니다. 발전기와 변압기, 무선 충전기가 모두 "
               "이 원리를 이용합니다. 단위와 정의를 정확히 구분해 두면 문제 풀이에서 실수가 줄어듭니다.")
    rows = [("다음 글의 주제 분야를 한 단어로 답하세요.", passage, "과학"),
            ("다음 글의 주제 분야를 한 단어로 답하세요.", passage, "기술")]
    assert exact_jaccard(joined(rows[0]), joined(rows[1])) >= MinHashDedup().threshold  # the shared request dominates
    f = frame(rows)
    checked = MinHashDedup().run(f, RunContext())
    assert checked.kept["id"].to_list() == ["r0", "r1"]
    assert checked.stats["pairs_answer_differs"] == 1
    unchecked = MinHashDedup(output_overlap=None).run(f, RunContext())
    assert unchecked.kept["id"].to_list() == ["r0"] and unchecked.removed["dup_of"].to_list() == ["r0"]


def test_keep_longest_output_mirrors_exact_dedup():
    short = ("서울에서 가볼 만한 궁궐을 추천해 주세요.", "", BASE[0][2])
    longer = ("서울에서 가볼 만한 궁궐을 추천해 줘.", "", BASE[0][2] + " 경희궁도 있습니다.")
    f = frame([short, longer])
    assert MinHashDedup(keep="first").run(f, RunContext()).kept["id"].to_list() == ["r0"]
    result = MinHashDedup(keep="longest-output").run(f, RunContext())
    assert result.kept["id"].to_list() == ["r1"]
    assert result.removed["dup_of"].to_list() == ["r1"]


def test_a_chain_does_not_remove_through_a_removed_row():
    sentences = ["경복궁은 조선의 법궁입니다.", "근정전은 정전입니다.", "경회루는 연못 위 누각입니다.", "향원정은 후원의 정자입니다.",
                 "광화문은 정문입니다.", "교태전은 왕비의 침전입니다.", "강녕전은 왕의 침전입니다.", "자경전은 대비의 처소입니다.",
                 "집옥재는 서재입니다.", "건청궁은 고종의 거처입니다.", "동십자각은 망루입니다.", "흥례문은 두 번째 문입니다."]
    a = " ".join(sentences)
    b = a + " 수정전은 집현전 자리입니다."
    c = b + " 사정전은 편전입니다."
    ab, bc, ac = exact_jaccard(joined(("", "", a)), joined(("", "", b))), exact_jaccard(joined(("", "", b)), joined(("", "", c))), \
        exact_jaccard(joined(("", "", a)), joined(("", "", c)))
    threshold = round((min(ab, bc) + ac) / 2, 4)
    assert min(ab, bc) >= threshold > ac  # the chain the test needs
    result = MinHashDedup(threshold=threshold, output_overlap=None).run(frame([("", "", a), ("", "", b), ("", "", c)]), RunContext())
    assert result.kept["id"].to_list() == ["r0", "r2"]
    assert result.removed["dup_of"].to_list() == ["r0"]


def test_rows_empty_after_normalisation_go_to_removed_as_in_the_other_steps():
    f = pl.DataFrame({"id": ["a", "b", "c"], "instruction": ["\u200b \u3000", "질문", None], "input": ["", "", None],
                      "output": ["", "답", None], "source": ["t"] * 3})
    result = MinHashDedup().run(f, RunContext())
    assert result.kept["id"].to_list() == ["b"]
    assert sorted(result.removed["id"].to_list()) == ["a", "c"]
    assert set(result.removed["reason"]) == {"empty-text"}
    assert "empty after NFKC" in result.removed["detail"][0]
    assert result.stats["empty_text"] == 2


def test_empty_frame():
    f = pl.DataFrame(schema={"id": pl.String, "instruction": pl.String, "input": pl.String,
                                                           "output": pl.String, "source": pl.String})
    result = MinHashDedup().run(f, RunContext())
    assert result.kept.height == 0 and result.removed.height == 0


# ---------------------------------------------------------------------------------------------- agreement with brute force


def synthetic_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    pool = [s + "." for s in (
        "처음에는 기본 개념부터 익히는 것이 중요합니다 꾸준히 연습하는 습관이 실력을 결정합니다 주변 사람들과 함께하면 도움이 됩니다 "
        "최근에는 온라인 강의도 많습니다 구체적인 목표를 세우면 효과적입니다 작은 성공 경험을 쌓는 것이 비결입니다 모르는 부분은 바로 "
        "확인하세요 안전 수칙은 반드시 지켜야 합니다 관련 용어를 정리해 두면 편리합니다 여러 방식을 시도해 보세요 중간 점검으로 부족한 "
        "부분을 보완하세요 가족에게 배운 내용을 설명해 보세요 결국 즐기는 마음이 중요합니다 실패한 경험도 기록해 두세요"
    ).split("니다 ")]
    topics = ["수영", "피아노", "파이썬", "요리", "등산", "영어", "저축", "명상", "글쓰기", "사진"]
    rows = []
    for i in range(n):
        if rows and rng.random() < 0.3:  # a near-duplicate of an earlier row: one or two syllables changed
            ins, inp, out = rows[rng.randrange(len(rows))]
            chars = list(out)
            for _ in range(rng.randint(1, 4)):
                chars[rng.randrange(len(chars))] = chr(0xAC00 + rng.randrange(11172))
            rows.append((ins, inp, "".join(chars)))
        else:
            rows.append((f"{rng.choice(topics)}을 {rng.randint(2, 9)}주 동안 배우는 방법을 알려 주세요.", "",
                         " ".join(rng.sample(pool, 4))))
    return rows


def brute_force_kept(texts: list[str], threshold: float) -> np.ndarray:
    kept = np.ones(len(texts), dtype=bool)
    for i in range(len(texts)):
        for j in range(i):
            if kept[j] and exact_jaccard(texts[i], texts[j]) >= threshold:
                kept[i] = False
                break
    return kept


def test_decisions_match_exact_all_pairs_greedy():
    rows = synthetic_rows(250, seed=3)
    result = MinHashDedup(output_overlap=None).run(frame(rows), RunContext(seed=7))
    kept_ids = set(result.kept["id"].to_list())
    ours = np.array([f"r{i}" in kept_ids for i in range(len(rows))])
    truth = brute_force_kept([joined(r) for r in rows], MinHashDedup().threshold)
    assert (~truth).sum() >= 40  # the set has duplicates to find
    assert (ours == truth).mean() >= 0.99
    assert ((~ours) & truth).sum() == 0  # never removes a row exact Jaccard keeps (verification is exact)


def test_streaming_batches_give_the_same_result_as_one_batch():
    f = frame(synthetic_rows(120, seed=5))
    one = MinHashDedup(batch_size=10_000).run(f, RunContext(seed=1))
    small = MinHashDedup(batch_size=7).run(f, RunContext(seed=1))
    assert one.kept["id"].to_list() == small.kept["id"].to_list()
    assert one.removed.equals(small.removed)


def test_deterministic_given_the_seed():
    f = frame(synthetic_rows(150, seed=11))
    first = MinHashDedup().run(f, RunContext(seed=5))
    again = MinHashDedup().run(f, RunContext(seed=5))
    assert first.removed.equals(again.removed) and first.stats == again.stats
    assert first.stats["seed"] == 5


def test_the_seed_reaches_the_sketch():
    from kocurate.curate.minhash import signatures

    tokens, offsets = shingle_tokens(["서울에서 가볼 만한 궁궐"], 3)
    a = signatures(tokens, offsets, 64, seed=1)
    b = signatures(tokens, offsets, 64, seed=2)
    assert a.shape == (1, 64) and not np.array_equal(a, b)
    assert np.array_equal(a, signatures(tokens, offsets, 64, seed=1))


# ---------------------------------------------------------------------------------------------- shingles and LSH shape


def test_shingles_stay_inside_their_row_and_short_rows_give_one():
    tokens, offsets = shingle_tokens(["가나다라", "마바", ""], 3)
    assert offsets.tolist() == [0, 2, 3, 3]
    alone = [shingle_tokens([t], 3)[0] for t in ("가나다라", "마바")]
    assert np.array_equal(tokens[:2], alone[0]) and np.array_equal(tokens[2:], alone[1])
    # the window "다라마" across the row boundary is not a shingle of either row
    assert not set(shingle_tokens(["다라마"], 3)[0].tolist()) & set(tokens.tolist())


def test_shingle_sets_are_unique_and_sized_like_python_sets():
    texts = ["가나다가나다가나다", "abcabc", "서울 서울 서울"]
    tokens, offsets = shingle_sets([shingle_text(t) for t in texts], 3)
    for k, t in enumerate(texts):
        t = shingle_text(t)
        assert offsets[k + 1] - offsets[k] == len({t[i:i + 3] for i in range(len(t) - 2)})
    assert shingle_text("Seoul 서울  TOUR") == "seoul서울tour"
    assert shingle_text("서울 시내", spaces=True) == "서울 시내"


def test_long_ngrams_are_packed_without_losing_characters():
    a, _ = shingle_sets(["가나다라마바"], 5)
    b, _ = shingle_sets(["가나다라마사"], 5)  # differs only in the 6th character
    assert a.size == 2 and b.size == 2 and len(set(a.tolist()) & set(b.tolist())) == 1


def test_lsh_shape_meets_the_recall_target_with_fewest_bands():
    bands, rows = lsh_shape(0.8, 128)
    assert bands * rows <= 128
    assert candidate_probability(0.8, bands, rows) >= 0.98
    assert candidate_probability(0.8, 128 // (rows + 1), rows + 1) < 0.98  # one more row per band misses the target
    assert candidate_probability(0.3, bands, rows) < 0.01
    step = MinHashDedup(bands=16)
    assert step.shape == (16, 8)


def test_bad_parameters_are_one_line_input_errors():
    for kwargs, text in (({"threshold": 0}, "--threshold 0"), ({"threshold": "x"}, "not a number"),
                         ({"ngram": 0}, "--ngram 0"), ({"keep": "newest"}, "--keep newest"),
                         ({"bands": 500}, "--bands 500"), ({"num_perm": 3}, "--num-perm 3"),
                         ({"columns": ()}, "--columns"), ({"output_overlap": 2}, "--output-overlap 2")):
        with pytest.raises(InputError, match=text) as info:
            MinHashDedup(**kwargs)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- pipeline


def loaded(f: pl.DataFrame, tmp_path) -> Loaded:
    from kocurate.records import load_records

    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in f.drop("source").iter_rows(named=True)) + "\n",
                    encoding="utf-8")
    return load_records(str(path))


def test_params_and_stats_reach_the_manifest(tmp_path):
    out = tmp_path / "out"
    result = run_pipeline([loaded(planted_frame(), tmp_path)], [MinHashDedup()], out, ctx=RunContext(seed=9))
    manifest = json.loads((out / "manifest.json").read_text())
    step = next(s for s in manifest["steps"] if s["name"] == "minhash-dedup")
    params = step["params"]
    assert params["threshold"] == 0.8 and params["ngram"] == 3 and params["num_perm"] == 128
    assert params["output_overlap"] == 0.8 and params["spaces"] is False
    assert (params["bands"], params["rows_per_band"]) == lsh_shape(0.8, 128)
    assert params["columns"] == ["instruction", "input", "output"] and params["keep"] == "first"
    assert step["stats"]["minhash_duplicates"] == len(PLANTED) and step["stats"]["seed"] == 9
    assert step["removed"] == {"minhash-duplicate": len(PLANTED)}
    removed = pl.read_parquet(sorted((out / "removed").glob("*.parquet"))[0])
    assert set(removed.filter(pl.col("step") == "minhash-dedup")["dup_of"]) <= set(result.kept["id"].to_list())


def test_composes_with_exact_and_semantic_dedup(tmp_path):
    rows = BASE + [row for row, _ in PLANTED] + DISTINCT + [BASE[1]]  # the last one an exact copy
    steps = [ExactDedup(columns=("instruction", "input", "output")), MinHashDedup(),
             SemanticDedup(embedder="lexical", threshold=0.95)]
    result = run_pipeline([loaded(frame(rows), tmp_path)], steps, tmp_path / "out", ctx=RunContext(seed=1))
    names = [r.name for r in result.records]
    assert names[-3:] == ["exact-dedup", "minhash-dedup", "semantic-dedup"]
    by_step = dict(zip(names, result.records))
    assert by_step["exact-dedup"].removed == {"exact-duplicate": 1}
    assert by_step["minhash-dedup"].removed == {"minhash-duplicate": len(PLANTED)}
    assert by_step["minhash-dedup"].rows_in == len(rows) - 1
    assert by_step["semantic-dedup"].rows_in == len(rows) - 1 - len(PLANTED)
    assert result.kept.height + result.removed.height == len(rows)
    assert set(result.removed["id"]).isdisjoint(result.kept["id"])


def test_exact_jaccard_and_containment_match_python_sets():
    from kocurate.curate.minhash import containment, jaccard

    rng = np.random.default_rng(0)
    for _ in range(300):
        a = np.unique(rng.integers(0, 40, rng.integers(0, 25))).astype(np.uint64)
        b = np.unique(rng.integers(0, 40, rng.integers(0, 25))).astype(np.uint64)
        sa, sb = set(a.tolist()), set(b.tolist())
        assert jaccard(a, b) == pytest.approx(len(sa & sb) / len(sa | sb) if sa | sb else 1.0)
        if sa and sb:
            assert containment(a, b) == pytest.approx(len(sa & sb) / min(len(sa), len(sb)))


def test_templated_rows_over_the_candidate_cap_are_counted_and_duplicates_still_found():
    rng = random.Random(0)

    def tail():  # a distinct part: the rows share about half their shingles (Jaccard ~0.5)
        return "".join(chr(0xAC00 + rng.randrange(11172)) for _ in range(12))

    rows = [(f"다음 숫자 {n}에 대해 설명해 주세요. 숫자의 성질과 쓰임을 자세히 알려 주세요. {tail()}", "", "네") for n in range(100, 180)]
    twin = (rows[5][0].replace("설명해 주세요.", "설명해 줘."), "", "네")
    result = MinHashDedup(max_candidates=3).run(frame(rows + [twin]), RunContext())
    assert result.stats["rows_over_candidate_cap"] > 0 and result.stats["bucket_insertions_skipped"] > 0
    assert result.removed["id"].to_list() == ["r80"] and result.removed["dup_of"].to_list() == ["r5"]
