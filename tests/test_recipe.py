"""build: recipes parse with line numbers, run in order, and resume where they changed."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.curate.recipe import apply_overrides, build, load_recipe, step_registry
from kocurate.errors import InputError
from kocurate.resources import resource_dir

TOPICS = ["김치찌개", "서울 여행", "파이썬 함수", "한국 역사", "축구 경기", "주식 투자"]


def write_rows(path, n=120):
    rows = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        rows.append({"instruction": f"{t}에 대해 {'자세히 ' * (i % 7)}알려 주세요 ({i}번)", "output": f"{t} 답변 {i}",
                     "task": t if i % 2 else "기타"})
    rows.append({"instruction": "", "output": "빈 지시문"})
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


def recipe_file(tmp_path, body: str):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def two_step(tmp_path):
    data = write_rows(tmp_path / "ko.jsonl")
    return recipe_file(tmp_path, f"""
        name: two-step
        seed: 7
        output: {tmp_path / 'out'}
        inputs:
          - {{name: ko, source: {data}}}
        steps:
          - cap:
              per_task: 30
          - select:
              size: 20
              method: centroid
              clusters: 3
              embedder: lexical
        """)


def test_bundled_recipes_parse_and_know_every_step():
    registry = step_registry()
    for name in ("kopen-platypus", "koquality", "cot-capped"):
        recipe = load_recipe(name)
        assert recipe.steps and all(s.name in registry for s in recipe.steps)
        assert (resource_dir("recipes") / f"{name}.yaml").is_file()
    koq = load_recipe("koquality")
    cluster, select = koq.build_steps()[-2:]
    assert (cluster.length_groups, cluster.clusters) == (5, 100)
    assert (select.ratio, select.method) == (0.01, "ppl")
    assert koq.build_steps()[1].model == "EleutherAI/polyglot-ko-1.3b"
    assert [i.preset for i in koq.inputs] == ["koalpaca", "kullm", "oig-ko"]


def test_unknown_step_names_the_line(tmp_path):
    path = recipe_file(tmp_path, """
        inputs: [data.jsonl]
        steps:
          - cap: {per_task: 10}
          - selekt: {ratio: 0.1}
        """)
    with pytest.raises(InputError, match=rf"^{path}:4:5: unknown step 'selekt'; known steps: .*select") as err:
        load_recipe(path)
    assert "\n" not in str(err.value)


def test_unknown_parameter_names_its_line_and_lists_the_parameters(tmp_path):
    path = recipe_file(tmp_path, """
        steps:
          - select:
              ratio: 0.1
              clusterz: 5
        """)
    with pytest.raises(InputError, match=rf"^{path}:4:7: step 'select' has no parameter 'clusterz'; its parameters: ratio, size"):
        load_recipe(path)


def test_bad_parameter_value_names_the_step_line(tmp_path):
    path = recipe_file(tmp_path, """
        steps:
          - select: {ratio: 2}
        """)
    with pytest.raises(InputError, match=rf"^{path}:2:5: step 'select': --ratio 2 is outside \(0, 1\)"):
        load_recipe(path)


def test_unknown_top_key_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match=r":1:1: unknown recipe key 'stepz'"):
        load_recipe(recipe_file(tmp_path, "stepz: []\n"))
    with pytest.raises(InputError, match=r":2:\d+: not valid YAML"):
        load_recipe(recipe_file(tmp_path, "steps:\n\t- cap\n"))


def test_build_runs_in_order_then_reuses_then_reruns_only_what_changed(two_step, tmp_path):
    first = build(load_recipe(two_step))
    assert [(o.name, o.reused) for o in first.steps] == [("cap", False), ("select", False)]
    assert first.steps[0].removed == {"empty": 1, "over-cap": 30}  # 기타: 60 -> 30
    assert first.final.name == "02-select" and first.steps[-1].rows_out == 20
    manifest = json.loads((first.final / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == ["drop-empty", "cap", "select"] and manifest["seed"] == 7

    again = build(load_recipe(two_step))
    assert [o.reused for o in again.steps] == [True, True]
    assert again.steps[-1].rows_out == 20

    changed = build(apply_overrides(load_recipe(two_step), sets=("select.size=10",)))
    assert [o.reused for o in changed.steps] == [True, False] and changed.steps[-1].rows_out == 10

    reseeded = build(load_recipe(two_step), rerun=True)
    assert [o.reused for o in reseeded.steps] == [False, False]


def test_build_resumes_after_a_failed_step(two_step):
    broken = apply_overrides(load_recipe(two_step), sets=("select.clusters=1000",))
    with pytest.raises(InputError, match="--clusters 1000 is more than"):
        build(broken)
    fixed = build(load_recipe(two_step))
    assert [o.reused for o in fixed.steps] == [True, False]


def test_source_override_by_name_keeps_the_preset(tmp_path):
    rows = [{"source": f"문제 {i}", "rationale": "근거", "target": "답", "task": f"t{i % 3}", "type": "CoT"} for i in range(30)]
    data = tmp_path / "cot.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    recipe = apply_overrides(load_recipe("cot-capped"), sources=(f"cot={data}",), output=str(tmp_path / "o"),
                             sets=("cap.per_task=4",))
    assert recipe.inputs[0].preset == "cot-collection"
    result = build(recipe)
    assert result.steps[-1].rows_out == 12
    with pytest.raises(InputError, match="no input named 'nope'; its inputs: cot"):
        apply_overrides(load_recipe("cot-capped"), sources=("nope=x.jsonl",))


def test_cli_build_koquality_offline(tmp_path):
    data = write_rows(tmp_path / "ko.jsonl", 150)
    res = CliRunner().invoke(main, [
        "build", "koquality", "--source", str(data), "--model", "charlm", "--embedder", "lexical",
        "--set", "cluster.clusters=4", "--set", "select.ratio=0.05", "-o", str(tmp_path / "kq"),
        "--cache-dir", str(tmp_path / "cache"),
    ])
    assert res.exit_code == 0, res.output
    assert "build koquality" in res.output and "03 cluster" in res.output and "04 select" in res.output and "result:" in res.output
    res = CliRunner().invoke(main, ["build", "koquality", "--source", str(data), "--model", "charlm", "--embedder",
                                    "lexical", "--set", "cluster.clusters=4", "--set", "select.ratio=0.05",
                                    "-o", str(tmp_path / "kq"), "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0 and res.output.count("reused") >= 4


def test_cli_build_unknown_recipe_is_one_line(tmp_path):
    res = CliRunner().invoke(main, ["build", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "no such recipe file" in res.output and "koquality" in res.output


def test_cli_build_rerun_embeds_nothing_with_the_default_cache(tmp_path, monkeypatch, lexical_encode_calls):
    """build uses the default cache folder like dedup does: a forced rerun finds every embedding cached."""
    calls = lexical_encode_calls
    monkeypatch.setenv("KOCURATE_CACHE", str(tmp_path / "cache"))
    data = write_rows(tmp_path / "ko.jsonl", 150)
    args = ["build", "koquality", "--source", str(data), "--model", "charlm", "--embedder", "lexical",
            "--set", "cluster.clusters=4", "--set", "select.ratio=0.05", "-o", str(tmp_path / "kq"), "--rerun"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert sum(calls) > 0 and list((tmp_path / "cache" / "embeddings").rglob("*.npy"))
    calls.clear()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "reused" not in res.output and calls == []
    res = CliRunner().invoke(main, [*args, "--no-cache"])
    assert res.exit_code == 0, res.output
    assert sum(calls) > 0


def test_recipe_mistakes_are_one_line_errors_naming_the_place(tmp_path):
    bad_bytes = tmp_path / "latin1.yaml"
    bad_bytes.write_bytes("name: x\nsteps: [cap]\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin1.yaml: not UTF-8.*save the recipe as UTF-8"):
        load_recipe(bad_bytes)
    wrong_type = recipe_file(tmp_path, """
        name: x
        inputs: [a.jsonl]
        steps:
          - cap: {per_task: "ten"}
        """)
    with pytest.raises(InputError, match=r":4:\d+: step 'cap' parameter 'per_task': 'ten' is not an int"):
        load_recipe(wrong_type)
    negative_seed = recipe_file(tmp_path, """
        name: x
        seed: -3
        steps: [cap]
        """)
    with pytest.raises(InputError, match="seed must be an integer of 0 or more"):
        load_recipe(negative_seed)


def test_build_refuses_a_folder_that_holds_something_else(tmp_path):
    data = write_rows(tmp_path / "ko.jsonl", 40)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    recipe = apply_overrides(load_recipe("cot-capped"), sources=(str(data),), output=str(out))
    with pytest.raises(InputError, match="holds no earlier build.*--overwrite"):
        build(recipe)
    assert (out / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------
# engine: local|ray and ray_address: (the flags win over them)


def engine_recipe(tmp_path, extra: str):
    data = write_rows(tmp_path / "ko.jsonl")
    path = tmp_path / "r.yaml"
    path.write_text(f"name: on-ray\noutput: {tmp_path / 'out'}\n{extra}\ninputs:\n  - {{name: ko, source: {data}}}\n"
                    f"steps:\n  - cap: {{per_task: 30}}\n", encoding="utf-8")
    return path


def test_recipe_engine_keys_parse(tmp_path):
    recipe = load_recipe(engine_recipe(tmp_path, "engine: ray\nray_address: ray://head:10001"))
    assert (recipe.engine, recipe.ray_address) == ("ray", "ray://head:10001")
    plain = load_recipe(engine_recipe(tmp_path, ""))
    assert (plain.engine, plain.ray_address) == ("local", None)


@pytest.mark.parametrize("extra, message", [
    ("engine: spark", r"r\.yaml:3:9: engine must be one of local, ray, not 'spark'; e\.g\. engine: ray"),
    ("engine: [ray]", r"r\.yaml:3:9: engine must be one of local, ray"),
    ("ray_address: ray://head:10001", r"r\.yaml:3:1: ray_address is only used with engine: ray; add `engine: ray`"),
    ("engine: ray\nray_address: 10001", r"r\.yaml:4:14: ray_address must be a cluster address"),
])
def test_recipe_engine_keys_are_validated(tmp_path, extra, message):
    with pytest.raises(InputError, match=message) as info:
        load_recipe(engine_recipe(tmp_path, extra))
    assert "\n" not in str(info.value)


def test_engine_flag_wins_over_the_recipe(tmp_path):
    path = engine_recipe(tmp_path, "engine: ray\nray_address: ray://head:10001")
    kept = apply_overrides(load_recipe(path))
    assert (kept.engine, kept.ray_address) == ("ray", "ray://head:10001")
    local = apply_overrides(load_recipe(path), engine="local")
    assert (local.engine, local.ray_address) == ("local", None)  # the recipe's cluster went with its engine
    other = apply_overrides(load_recipe(path), ray_address="auto")
    assert (other.engine, other.ray_address) == ("ray", "auto")
    ray = apply_overrides(load_recipe(engine_recipe(tmp_path, "")), engine="ray")
    assert (ray.engine, ray.ray_address) == ("ray", None)
    with pytest.raises(InputError, match="--ray-address auto: only used with --engine ray"):
        apply_overrides(load_recipe(engine_recipe(tmp_path, "")), ray_address="auto")
    with pytest.raises(InputError, match="--engine spark: unknown engine"):
        apply_overrides(load_recipe(path), engine="spark")


def test_ray_recipe_refuses_a_preset_input_before_writing(tmp_path):
    data = write_rows(tmp_path / "ko.jsonl")
    path = recipe_file(tmp_path, f"""
        name: on-ray
        output: {tmp_path / 'out'}
        engine: ray
        inputs:
          - {{name: ko, source: {data}, preset: koalpaca}}
        steps:
          - cap: {{per_task: 30}}
        """)
    with pytest.raises(InputError, match=r"r\.yaml: input 'ko' has a preset or map; engine: ray reads canonical files"):
        build(load_recipe(path))
    assert not (tmp_path / "out").exists()


def test_ray_recipe_runs_each_step_through_the_executor(tmp_path, monkeypatch):
    """engine: ray hands each step's input paths to the executor (the recipe's file first, then
    the previous step's folder) and closes it; its folders are reused like local ones."""
    from types import SimpleNamespace

    import kocurate.curate.engine as engine
    from kocurate.curate.pipeline import run_pipeline
    from kocurate.records import load_records

    calls = []

    class Recording:  # runs locally, records what the Ray executor would be given
        closed = False

        def run(self, paths, steps, out, *, ctx, overwrite, recipe):
            calls.append(([str(p) for p in paths], [s.name for s in steps], str(out)))
            result = run_pipeline([load_records(str(p)) for p in paths], steps, out, ctx=ctx, overwrite=overwrite,
                                  recipe=recipe)
            return SimpleNamespace(rows_in=result.rows_in, rows_out=result.kept.height, records=result.records,
                                   removed_by_reason=result.removed_by_reason)

        def close(self):
            Recording.closed = True

    got = {}

    def fake_get_executor(name, address=None):
        got["args"] = (name, address)
        return Recording()

    monkeypatch.setattr(engine, "get_executor", fake_get_executor)
    data = write_rows(tmp_path / "ko.jsonl")
    path = recipe_file(tmp_path, f"""
        name: on-ray
        output: {tmp_path / 'out'}
        engine: ray
        ray_address: ray://head:10001
        inputs:
          - {{name: ko, source: {data}}}
        steps:
          - cap: {{per_task: 30}}
          - exact-dedup
        """)
    result = build(load_recipe(path))
    assert got["args"] == ("ray", "ray://head:10001") and Recording.closed
    assert calls == [([str(data)], ["cap"], str(tmp_path / "out" / "01-cap")),
                     ([str(tmp_path / "out" / "01-cap")], ["exact-dedup"], str(tmp_path / "out" / "02-exact-dedup"))]
    assert [o.reused for o in result.steps] == [False, False] and result.steps[0].rows_out < result.steps[0].rows_in
    calls.clear()
    again = build(load_recipe(path))  # unchanged: both folders reused, nothing sent to the executor
    assert calls == [] and [o.reused for o in again.steps] == [True, True]


def test_build_cli_passes_engine_flags_to_the_recipe(tmp_path):
    """`kocurate build --ray-address` reaches apply_overrides: without an engine it is refused in
    one line, before anything is written."""
    path = engine_recipe(tmp_path, "")
    res = CliRunner().invoke(main, ["build", str(path), "--ray-address", "auto", "-o", str(tmp_path / "out")])
    assert res.exit_code != 0
    assert "--ray-address auto: only used with --engine ray" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()
