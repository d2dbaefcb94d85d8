"""kocurate's engine against lm-evaluation-harness's own HF backend (PyPI lm-eval), same model object.

Parity is by design (lm-eval owns tasks, prompts, draws and metrics; kocurate replaces only
`_loglikelihood_tokens`); these tests check that the replacement returns lm-eval's numbers:
token by token on hand-made requests (shared contexts, multi-token continuations, left
truncation, greedy flags), and metric by metric on all five KoBEST tasks at 0 and 5 shots.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from kocurate.evaluate import EvalConfig, evaluate

lm_eval = pytest.importorskip("lm_eval")


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _pair(path, batch_size=4):
    from lm_eval.models.huggingface import HFLM

    from kocurate.evaluate.engine import KocurateLM

    model, tok = _load(path)
    return HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size), KocurateLM(pretrained=model, tokenizer=tok,
                                                                                   batch_size=batch_size)


def _requests(tok, max_length):
    """Docs with 2-4 choices sharing a context; some contexts too long for the model (left truncation)."""
    texts = ["서울은 한국의 수도이다. 질문: 서울은 수도인가? 답변:", "문장: 그는 냄비에 물을 붓고", "비가 많이 왔다.  그래서",
             "문장: 정말 재미없는 영화였다. 긍부정:"]
    choices = [[" 예", " 아니오"], [" 불을 켰다.", " 하늘을 날았다.", " 잠들었다.", " 노래했다."],
               [" 길이 젖었다.", " 해가 떴다."], [" 부정", " 긍정"]]
    long = " ".join(texts * 40)
    assert len(tok(long)["input_ids"]) > max_length
    out = []
    for ctx, conts in list(zip(texts, choices)) + [(long, choices[1]), (long[:400], choices[0])]:
        ids = tok(ctx)["input_ids"]
        for c in conts:
            out.append(((ctx, c), ids, tok(ctx + c)["input_ids"][len(ids):] or tok(c)["input_ids"]))
    return out


@pytest.mark.parametrize("arch,pack", [("tiny_gpt_neox", True), ("tiny_llama", True), ("tiny_gpt_neox", False)])
def test_engine_returns_lmevals_loglikelihoods_token_for_token(arch, pack, request):
    """pack: all choices of a context in one row under a 4D mask; else the cache copied per choice."""
    theirs, ours = _pair(request.getfixturevalue(arch))
    assert ours.pack_choices  # SDPA: the packed path is the default
    ours.pack_choices = pack
    reqs = _requests(ours.tokenizer, ours.max_length)
    expected = theirs._loglikelihood_tokens(reqs, disable_tqdm=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ours._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in expected]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], abs=1e-4)
    # the shared path ran (fewer tokens than one row per choice) and so did the truncation path
    stats = ours.stats
    assert stats["shared_groups"] >= 4 and stats["full_rows"] >= 4
    assert stats["tokens"] < stats["tokens_one_row_per_choice"]
    assert not [w for w in caught if "deprecat" in str(w.message).lower()], [str(w.message) for w in caught]


def test_engine_without_sharing_is_lmevals_path(tiny_gpt_neox):
    theirs, ours = _pair(tiny_gpt_neox)
    ours.share_context = False
    reqs = _requests(ours.tokenizer, ours.max_length)
    got = ours._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert ours.stats["shared_groups"] == 0
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in theirs._loglikelihood_tokens(reqs, disable_tqdm=True)],
                                                  abs=1e-4)


@pytest.fixture(scope="module")
def both(tiny_gpt_neox, kobest_dir):
    theirs, ours = _pair(tiny_gpt_neox, batch_size=8)
    config = EvalConfig(model=str(tiny_gpt_neox), tasks=["kobest"], shots=[0, 5], data_dir=str(kobest_dir), limit=6)
    return evaluate(config, lm=theirs), evaluate(config, lm=ours)


@pytest.mark.parametrize("config", ["boolq", "copa", "hellaswag", "sentineg", "wic"])
@pytest.mark.parametrize("shots", [0, 5])
def test_scores_equal_lmevals_hf_backend(both, config, shots):
    theirs, ours = both
    task = f"kobest_{config}"
    mine, peer = ours.results["results"][task][str(shots)], theirs.results["results"][task][str(shots)]
    assert mine["n"] == peer["n"] == 6
    metrics = ("acc", "f1") + (("acc_norm",) if config == "hellaswag" else ())
    for metric in metrics:
        assert ours.metric(task, shots, metric) == pytest.approx(peer[metric], abs=1e-6), metric
    assert mine["acc_stderr"] == pytest.approx(peer["acc_stderr"], abs=1e-9)
    a, b = ours.predictions(task, shots), theirs.predictions(task, shots)
    assert [(p["doc_id"], p["gold"], p["pred"]) for p in a] == [(p["doc_id"], p["gold"], p["pred"]) for p in b]
    for x, y in zip(a, b):
        assert x["loglikelihoods"] == pytest.approx(y["loglikelihoods"], abs=1e-4)


def test_kobest_group_average_is_lmevals(both):
    theirs, ours = both
    for shots in ("0", "5"):
        assert ours.results["groups"]["kobest"][shots]["acc"] == pytest.approx(theirs.results["groups"]["kobest"][shots]["acc"],
                                                                             abs=1e-6)


def test_polyglot_tasks_encode_context_and_continuation_apart(tiny_gpt_neox):
    from lm_eval.api.instance import Instance

    _, ours = _pair(tiny_gpt_neox)
    seen = []
    ours._loglikelihood_tokens = lambda reqs, **kw: seen.extend(reqs) or [(0.0, False)] * len(reqs)
    args = ("문장: 정말 재미없는 영화였다. 긍부정: ", " 긍정")
    for name in ("kobest_sentineg", "polyglot_kobest_sentineg"):
        ours.loglikelihood([Instance("loglikelihood", {}, args, 0, metadata=(name, 0, 1))], disable_tqdm=True)
    tok = ours.tokenizer
    (_, joint_ctx, joint_cont), (_, ctx, cont) = seen
    assert ctx == tok(args[0], add_special_tokens=False)["input_ids"]
    assert cont == tok(args[1], add_special_tokens=False)["input_ids"]
    # lm-eval's own rule for its tasks: trailing space moved, pair encoded jointly
    whole = tok(args[0] + args[1])["input_ids"]
    assert joint_ctx == tok(args[0].rstrip())["input_ids"] and joint_cont == whole[len(joint_ctx):]
