"""kocurate evaluate: prompts, few-shot draws, tokenization, scoring paths, adapters, tables, errors.

The score-for-score comparison with lm-evaluation-harness itself is in test_evaluate_lmeval.py.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.errors import InputError
from kocurate.evaluate import EvalConfig, evaluate
from kocurate.evaluate.fewshot import draw_fewshot
from kocurate.evaluate.metrics import macro_f1, predict
from kocurate.evaluate.report import compare, markdown
from kocurate.evaluate.tasks import PROTOCOL_DEFS, get_task, parse_shots, parse_tasks

# -- a KoBEST-format folder for when samples/kobest is not there (Korean written here; wic test
# contexts ending in a tab, as the real data's sometimes do) ---------------------------------
CONFIGS = ("boolq", "copa", "hellaswag", "sentineg", "wic")
_PEOPLE = ["민수", "지영", "할머니", "선생님", "동생", "친구", "아버지", "학생"]
_PLACES = ["시장", "학교", "공원", "도서관", "바닷가", "병원", "회사", "산"]
_ACTS = ["밥을 먹었다", "책을 읽었다", "노래를 불렀다", "편지를 썼다", "운동을 했다", "잠을 잤다", "청소를 했다", "사진을 찍었다"]
_FEEL = ["정말 재미있었다", "너무 지루했다", "아주 훌륭했다", "최악이었다", "감동적이었다", "실망스러웠다"]
_WORDS = [("배", "배가 아프다.", "배를 타고 섬에 갔다."), ("눈", "눈이 많이 내렸다.", "눈이 부시다."),
          ("밤", "밤이 깊었다.", "군밤을 사 먹었다."), ("말", "말이 빨리 달린다.", "그의 말이 옳다.")]


def _sentence(rnd: random.Random) -> str:
    return f"{rnd.choice(_PEOPLE)}는 {rnd.choice(_PLACES)}에서 {rnd.choice(_ACTS)}."


def _row(config: str, rnd: random.Random, i: int, split: str) -> dict:
    if config == "boolq":
        para = " ".join(_sentence(rnd) for _ in range(rnd.randint(2, 4)))
        return {"paragraph": para, "question": f"{rnd.choice(_PEOPLE)}는 {rnd.choice(_PLACES)}에 갔는가?", "label": i % 2}
    if config == "copa":
        return {"premise": _sentence(rnd), "question": rnd.choice(["원인", "결과"]),
                "alternative_1": _sentence(rnd), "alternative_2": _sentence(rnd), "label": rnd.randint(0, 1)}
    if config == "hellaswag":
        return {"context": _sentence(rnd) + " " + _sentence(rnd), **{f"ending_{j}": _sentence(rnd) for j in range(1, 5)},
                "label": rnd.randint(0, 3)}
    if config == "sentineg":
        return {"sentence": f"이 영화는 {rnd.choice(_FEEL)}.", "label": rnd.randint(0, 1)}
    word, a, b = rnd.choice(_WORDS)
    tail = "\t" if split == "test" and i % 3 == 0 else ""
    return {"word": word, "context_1": a + tail, "context_2": (a if i % 2 else b) + tail, "label": i % 2}


def write_kobest(folder: Path, sizes: dict[str, int] | None = None, seed: int = 7) -> Path:
    sizes = sizes or {"train": 24, "validation": 4, "test": 16}
    for config in CONFIGS:
        rnd = random.Random(f"{seed}-{config}")
        (folder / config).mkdir(parents=True, exist_ok=True)
        for split, n in sizes.items():
            with open(folder / config / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for i in range(n):
                    handle.write(json.dumps(_row(config, rnd, i, split), ensure_ascii=False) + "\n")
    return folder


def kobest_folder(samples_dir: Path, tmp: Path) -> Path:
    """samples/kobest when complete, else a folder written here."""
    if all((samples_dir / c / f"{s}.jsonl").is_file() for c in CONFIGS for s in ("train", "test")):
        return samples_dir
    return write_kobest(tmp)


DOCS = {
    "boolq": {"paragraph": "서울은 한국의 수도이다.", "question": "서울은 수도인가?", "label": 1},
    "copa": {"premise": "비가 많이 왔다.", "question": "결과", "alternative_1": "길이 젖었다.",
             "alternative_2": "해가 떴다.", "label": 0},
    "copa_cause": {"premise": "길이 젖었다.", "question": "원인", "alternative_1": "비가 왔다.",
                   "alternative_2": "해가 떴다.", "label": 0},
    "hellaswag": {"context": "그는 냄비에 물을 붓고", "ending_1": "불을 켰다.", "ending_2": "하늘을 날았다.",
                  "ending_3": "잠들었다.", "ending_4": "노래했다.", "label": 0},
    "sentineg": {"sentence": "정말 재미없는 영화였다.", "label": 0},
    "wic": {"word": "배", "context_1": "배가 아프다.\t", "context_2": "배를 타고 갔다.", "label": 0},
}

# (task, protocol) -> (context, continuations), written out by hand from shared/specs/kobest.md
EXPECTED = {
    ("boolq", "harness"): ("서울은 한국의 수도이다. 질문: 서울은 수도인가? 답변: ", [" 아니오", " 예"]),
    ("copa", "harness"): ("비가 많이 왔다.  그래서", [" 길이 젖었다.", " 해가 떴다."]),
    ("copa_cause", "harness"): ("길이 젖었다.  왜냐하면", [" 비가 왔다.", " 해가 떴다."]),
    ("hellaswag", "harness"): ("문장: 그는 냄비에 물을 붓고", [" 불을 켰다.", " 하늘을 날았다.", " 잠들었다.", " 노래했다."]),
    ("sentineg", "harness"): ("문장: 정말 재미없는 영화였다. 긍부정:", [" 부정", " 긍정"]),
    ("wic", "harness"): ("문장1: 배가 아프다.\t 문장2: 배를 타고 갔다. 두 문장에서 배가 같은 뜻으로 쓰였나?", [" 아니오", " 예"]),
    ("boolq", "polyglot"): ("서울은 한국의 수도이다. 질문: 서울은 수도인가? 답변: ", [" 아니오", " 예"]),
    ("copa", "polyglot"): ("비가 많이 왔다. 그래서", [" 길이 젖었다.", " 해가 떴다."]),
    ("copa_cause", "polyglot"): ("길이 젖었다. 왜냐하면", [" 비가 왔다.", " 해가 떴다."]),
    ("hellaswag", "polyglot"): ("문장: 그는 냄비에 물을 붓고", [" 불을 켰다.", " 하늘을 날았다.", " 잠들었다.", " 노래했다."]),
    ("sentineg", "polyglot"): ("문장: 정말 재미없는 영화였다. 긍부정:", [" 부정", " 긍정"]),
    ("wic", "polyglot"): ("문장1: 배가 아프다.\t 문장2: 배를 타고 갔다. 두 문장에서 배가 같은 뜻으로 쓰였나?", [" 아니오", " 예"]),
}


@pytest.fixture(scope="module")
def data(samples, tmp_path_factory) -> Path:
    return kobest_folder(samples / "kobest", tmp_path_factory.mktemp("kobest"))


@pytest.fixture(scope="module")
def big_train(tmp_path_factory) -> Path:
    """A folder whose train split holds 60 rows, enough for a 50-shot prompt."""
    return write_kobest(tmp_path_factory.mktemp("kobest60"), sizes={"train": 60, "validation": 2, "test": 4})


@pytest.fixture(scope="module")
def loaded(tiny_gpt_neox):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_gpt_neox).eval(), AutoTokenizer.from_pretrained(tiny_gpt_neox)


def _run(model_path, data, **kw):
    kw.setdefault("tasks", ["kobest_copa"])
    kw.setdefault("shots", [0])
    kw.setdefault("batch_size", 4)
    return evaluate(EvalConfig(model=str(model_path), data_dir=str(data), **kw))


# -- prompts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_prompt_is_byte_exact(key):
    name, protocol = key
    task = get_task(name.removesuffix("_cause"), protocol)
    doc = DOCS[name]
    context, continuations = EXPECTED[key]
    assert task.prompt(doc, []) == context
    assert task.continuations(doc) == continuations


def test_harness_copa_has_two_spaces_and_polyglot_one():
    assert "  그래서" in get_task("copa", "harness").doc_to_text(DOCS["copa"])
    assert "  " not in get_task("copa", "polyglot").doc_to_text(DOCS["copa"])


@pytest.mark.parametrize("protocol", ["harness", "polyglot"])
def test_fewshot_prompt_joins_shots_with_blank_lines(protocol):
    task = get_task("sentineg", protocol)
    shots = [{"sentence": "좋았다.", "label": 1}, {"sentence": "나빴다.", "label": 0}]
    assert task.prompt(DOCS["sentineg"], shots) == (
        "문장: 좋았다. 긍부정: 긍정\n\n문장: 나빴다. 긍부정: 부정\n\n문장: 정말 재미없는 영화였다. 긍부정:")
    boolq = get_task("boolq", protocol)
    # the shot's answer follows the context's own trailing space plus the target delimiter
    assert boolq.shot_text(DOCS["boolq"]).endswith("답변:  예\n\n")


# -- tokenization ----------------------------------------------------------------------------------

def test_harness_moves_trailing_space_into_continuation(loaded):
    from kocurate.evaluate.scorer import Scorer

    model, tok = loaded
    ctx = EXPECTED[("boolq", "harness")][0]
    enc = Scorer(model, tok, joint_encoding=True, move_trailing_space=True).encode([(ctx, [" 예"])])[0]
    assert enc.ctx == tok(ctx.rstrip())["input_ids"]
    whole = tok(ctx.rstrip() + "  예")["input_ids"]
    assert enc.conts[0] == whole[len(enc.ctx):]
    assert tok.decode(enc.conts[0]) == "  예"


def test_polyglot_encodes_context_and_continuation_apart(loaded):
    from kocurate.evaluate.scorer import Scorer

    model, tok = loaded
    ctx = EXPECTED[("boolq", "polyglot")][0]
    enc = Scorer(model, tok, joint_encoding=False, move_trailing_space=False).encode([(ctx, [" 예"])])[0]
    assert enc.ctx == tok(ctx, add_special_tokens=False)["input_ids"]
    assert enc.conts[0] == tok(" 예", add_special_tokens=False)["input_ids"]


# -- few-shot draws --------------------------------------------------------------------------------

def test_harness_draws_follow_one_rng_in_dataset_order():
    draws = draw_fewshot(PROTOCOL_DEFS["harness"], 10, 30, 5, limit=6)
    rnd = random.Random(1234)
    assert [d.doc_index for d in draws] == list(range(6))
    assert [list(d.shot_indices) for d in draws] == [rnd.sample(range(30), 5) for _ in range(6)]


def test_polyglot_draws_shuffle_docs_first_with_the_same_rng():
    draws = draw_fewshot(PROTOCOL_DEFS["polyglot"], 10, 30, 5, limit=4)
    rnd = random.Random()
    rnd.seed(42)
    docs = [{"i": i} for i in range(10)]
    rnd.shuffle(docs)
    train = [{"t": t} for t in range(30)]
    expected = [(doc["i"], [s["t"] for s in rnd.sample(train, 5)]) for doc in docs[:4]]
    assert [(d.doc_index, list(d.shot_indices)) for d in draws] == expected


def test_zero_shot_draws_nothing_and_seed_overrides():
    assert all(d.shot_indices == () for d in draw_fewshot(PROTOCOL_DEFS["harness"], 5, 0, 0))
    a = draw_fewshot(PROTOCOL_DEFS["harness"], 5, 30, 3, seed=7)
    assert [list(d.shot_indices) for d in a] != [list(d.shot_indices) for d in draw_fewshot(PROTOCOL_DEFS["harness"], 5, 30, 3)]


# -- metrics ---------------------------------------------------------------------------------------

def test_metrics_match_numpy_and_sklearn():
    from sklearn.metrics import f1_score

    golds, preds = [0, 1, 1, 0, 2], [0, 1, 0, 0, 1]
    assert macro_f1(golds, preds) == pytest.approx(f1_score(golds, preds, average="macro"))
    # acc_norm divides by the choice's length in characters (no leading space)
    assert predict([-10.0, -12.0], ["가", "가나다"]) == (0, 1)


# -- the engine ------------------------------------------------------------------------------------

def test_shared_context_gives_the_harness_path_numbers(tiny_gpt_neox, data):
    kw = dict(tasks=["kobest_copa", "kobest_hellaswag"], shots=[0, 2], limit=8)
    shared = _run(tiny_gpt_neox, data, **kw)
    full = _run(tiny_gpt_neox, data, share_context=False, **kw)
    assert shared.results["engine"]["shared_docs"] > 0 and full.results["engine"]["shared_docs"] == 0
    for task in kw["tasks"]:
        for k in kw["shots"]:
            a, b = shared.predictions(task, k), full.predictions(task, k)
            assert [r["pred"] for r in a] == [r["pred"] for r in b]
            for ra, rb in zip(a, b):
                assert ra["loglikelihoods"] == pytest.approx(rb["loglikelihoods"], abs=1e-4)


def test_result_api_and_files(tiny_gpt_neox, data, tmp_path):
    out = tmp_path / "res"
    result = _run(tiny_gpt_neox, data, tasks=["kobest_hellaswag", "wic"], shots=[0, 1], limit=5, output_dir=str(out))
    stored = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert stored["protocol"] == "harness" and stored["seed"] == 1234 and stored["adapter"] is None
    assert stored["data"]["fingerprint"]["kobest_wic"]["test"]
    assert set(stored["results"]["kobest_hellaswag"]["1"]) == {"acc", "acc_norm", "f1", "n"}
    assert result.metric("hellaswag", 1, "acc_norm") == stored["results"]["kobest_hellaswag"]["1"]["acc_norm"]
    preds = result.predictions("kobest_wic", 0)
    assert len(preds) == 5 and {"doc_index", "gold", "pred", "loglikelihoods"} <= set(preds[0])
    assert len(preds[0]["loglikelihoods"]) == 2
    acc = sum(p["gold"] == p["pred"] for p in preds) / 5
    assert result.metric("kobest_wic", 0, "acc") == pytest.approx(acc)
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| Model | 0-shot | 1-shot |" in md and "## kobest_wic: macro F1" in md


def test_truncated_50_shot_prompt_scores(tiny_gpt_neox, big_train):
    result = _run(tiny_gpt_neox, big_train, tasks=["kobest_boolq"], shots=[50], limit=2)
    assert result.results["engine"]["full_docs"] == 2  # both prompts far past 256 tokens
    assert all(ll < 0 for p in result.predictions("boolq", 50) for ll in p["loglikelihoods"])


def test_polyglot_protocol_runs_and_is_named(tiny_gpt_neox, data):
    result = _run(tiny_gpt_neox, data, protocol="polyglot", tasks=["sentineg"], shots=[0, 2], limit=6)
    assert result.results["protocol"] == "polyglot" and result.results["seed"] == 42
    rnd = random.Random(42)
    order = list(range(result.results["data"]["test_rows"]["kobest_sentineg"]))
    rnd.shuffle(order)
    assert [p["doc_index"] for p in result.predictions("sentineg", 0)] == order[:6]


# -- adapters --------------------------------------------------------------------------------------

def _lora(base: Path, folder: Path, target: list[str]) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=target, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def test_adapter_changes_scores(tiny_gpt_neox, data, tmp_path):
    adapter = _lora(tiny_gpt_neox, tmp_path / "lora", ["query_key_value", "dense_4h_to_h"])
    base = _run(tiny_gpt_neox, data, tasks=["copa"], limit=6)
    tuned = _run(tiny_gpt_neox, data, tasks=["copa"], limit=6, adapter=str(adapter))
    assert tuned.results["adapter"] == str(adapter)
    a = [p["loglikelihoods"] for p in base.predictions("copa", 0)]
    b = [p["loglikelihoods"] for p in tuned.predictions("copa", 0)]
    assert all(abs(x - y) > 1e-3 for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def test_adapter_for_another_base_is_one_line_error(tiny_gpt_neox, tiny_llama, data, tmp_path):
    adapter = _lora(tiny_llama, tmp_path / "llama-lora", ["q_proj", "v_proj"])
    with pytest.raises(InputError, match="does not match") as err:
        _run(tiny_gpt_neox, data, adapter=str(adapter), limit=2)
    assert "\n" not in str(err.value)


# -- bad input -------------------------------------------------------------------------------------

def _cli(*args):
    return CliRunner().invoke(main, ["evaluate", *map(str, args)])


def test_unknown_task_is_one_line_error(tiny_gpt_neox, data, tmp_path):
    res = _cli(tiny_gpt_neox, "--tasks", "kobest_copa,kobest_nli", "--data-dir", data, "-o", tmp_path / "o")
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "unknown KoBEST task 'kobest_nli'" in res.output


def test_missing_split_names_the_file(tiny_gpt_neox, data, tmp_path):
    broken = tmp_path / "kb"
    shutil.copytree(data, broken)
    (broken / "wic" / "train.jsonl").unlink()
    with pytest.raises(InputError, match=r"wic/train\.jsonl: missing"):
        _run(tiny_gpt_neox, broken, tasks=["wic"], shots=[0, 1])


def test_missing_field_names_the_field(tiny_gpt_neox, data, tmp_path):
    broken = tmp_path / "kb"
    shutil.copytree(data, broken)
    path = broken / "copa" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "alternative_2"}, ensure_ascii=False) + "\n"
                            for r in rows), encoding="utf-8")
    res = _cli(tiny_gpt_neox, "--tasks", "copa", "--shots", "0", "--data-dir", broken, "-o", tmp_path / "o")
    assert res.exit_code == 2 and "missing field(s) alternative_2" in res.output
    assert not (tmp_path / "o").exists()


def test_more_shots_than_train_rows(tiny_gpt_neox, data, tmp_path):
    res = _cli(tiny_gpt_neox, "--tasks", "sentineg", "--shots", "0,5000", "--data-dir", data, "-o", tmp_path / "o")
    assert res.exit_code == 2 and "5000-shot asks for more examples than" in res.output and "lower --shots" in res.output


@pytest.mark.parametrize("spec, message", [("0,x", "not a whole number"), ("-1", "negative")])
def test_bad_shots(spec, message):
    with pytest.raises(InputError, match=message):
        parse_shots(spec)


def test_task_names_accept_prefix_and_all():
    assert parse_tasks("copa,kobest_copa,wic") == ["kobest_copa", "kobest_wic"]
    assert len(parse_tasks("all")) == 5
    with pytest.raises(InputError, match="unknown protocol"):
        get_task("copa", "mmlu")


# -- the command -----------------------------------------------------------------------------------

def test_cli_run_then_compare(tiny_gpt_neox, data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    res = _cli(tiny_gpt_neox, "--tasks", "copa", "--shots", "0,1", "--limit", "4", "--batch-size", "2",
               "--data-dir", data, "-o", a)
    assert res.exit_code == 0, res.output
    assert (a / "results.json").is_file() and "| Model | 0-shot | 1-shot |" in res.output
    res = _cli(tiny_gpt_neox, "--tasks", "copa", "--shots", "0,1", "--limit", "4", "--protocol", "polyglot",
               "--data-dir", data, "-o", b)
    assert res.exit_code == 0, res.output
    res = _cli("--compare", a / "results.json", b / "results.json")
    assert res.exit_code == 0, res.output
    assert "different protocols" in res.output and res.output.count("| tiny-gpt-neox") >= 2 and "Δ" in res.output


def test_compare_rejects_a_foreign_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}", encoding="utf-8")
    res = _cli("--compare", bad, bad)
    assert res.exit_code == 2 and "not a kocurate evaluate results file" in res.output


def test_help_teaches():
    res = CliRunner().invoke(main, ["evaluate", "--help"])
    assert res.exit_code == 0
    for word in ("--adapter", "--protocol", "polyglot", "--compare", "results.json", "Examples"):
        assert word in res.output


def test_cli_module_imports_no_torch_and_engine_respects_layers(repo):
    code = "import sys, kocurate.cli.evaluate; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)
    for path in (repo / "kocurate" / "evaluate").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for other in ("curate", "train", "publish", "cli", "experiment"):
            assert f"from ..{other}" not in text and f"kocurate.{other}" not in text, (path, other)


def test_polyglot_loglikelihood_by_hand(tiny_gpt_neox, data, loaded):
    """One polyglot doc scored by a plain forward pass: separate encodings, nothing moved."""
    import torch

    from kocurate.records.kobest import load_split

    model, tok = loaded
    result = _run(tiny_gpt_neox, data, protocol="polyglot", tasks=["boolq"], shots=[0], limit=1, batch_size="auto")
    row = result.predictions("boolq", 0)[0]
    doc = load_split("boolq", "test", data)[row["doc_index"]]
    ctx = tok(f"{doc['paragraph']} 질문: {doc['question']} 답변: ", add_special_tokens=False)["input_ids"]
    expected = []
    for answer in (" 아니오", " 예"):
        cont = tok(answer, add_special_tokens=False)["input_ids"]
        ids = (ctx + cont)[-257:][:-1]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        expected.append(sum(float(logp[len(ids) - len(cont) + t, c]) for t, c in enumerate(cont)))
    assert row["loglikelihoods"] == pytest.approx(expected, abs=1e-4)
    assert row["pred"] == (0 if expected[0] >= expected[1] else 1)


def test_tables_in_the_seeds_form(tmp_path):
    def run(model, f1s):
        return {"protocol": "polyglot", "model": model, "adapter": None, "limit": None,
                "data": {"source": "skt/kobest_v1", "test_rows": {"kobest_copa": 1000}},
                "results": {"kobest_copa": {str(k): {"acc": v, "f1": v, "n": 1000} for k, v in zip((0, 5, 10, 50), f1s)}}}

    a = run("EleutherAI/polyglot-ko-1.3b", (0.7196, 0.7193, 0.7204, 0.7206))
    md = markdown([a])
    assert "| Model | 0-shot | 5-shot | 10-shot | 50-shot |" in md
    assert "| EleutherAI/polyglot-ko-1.3b | 0.7196 | 0.7193 | 0.7204 | 0.7206 |" in md
    paths = []
    for name, r in (("a", a), ("b", run("me/tuned", (0.73, 0.72, 0.72, 0.74)))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r), encoding="utf-8")
        paths.append(tmp_path / name)
    side = compare(paths)
    assert "| me/tuned | 0.7300 | 0.7200 | 0.7200 | 0.7400 |" in side and "| Δ (second − first) | +0.0104 |" in side
