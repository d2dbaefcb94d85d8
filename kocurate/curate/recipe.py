"""YAML recipes: named inputs, then an ordered list of steps, each writing a dataset folder.

```yaml
name: koquality
seed: 42
output: out/koquality            # step i writes out/koquality/NN-<step>/; the last one is the result
engine: local                    # or ray (with ray_address: ray://head:10001; absent: a local Ray)
inputs:
  - {name: koalpaca, source: beomi/KoAlpaca-v1.1a, preset: koalpaca}
steps:
  - drop-empty
  - score: {model: EleutherAI/polyglot-ko-1.3b, metric: ppl}
  - select: {ratio: 0.01, length_groups: 5, clusters: 100, method: ppl}
```

A step is looked up by its `name` among the `Step` subclasses of `kocurate.curate` (modules
are imported when a recipe is built, so `kocurate --help` stays fast); its parameters are the
dataclass's fields. Every step's key is the hash of its input's fingerprint, its name, its
parameters, the seed and the tool version; `recipe-state.json` in the output folder remembers
the key and data fingerprint of each finished step, so a rerun (after a crash, or after editing
a later step) reuses every folder whose key is unchanged and runs only the rest.

`engine: local|ray` (and `ray_address:`) chooses the executor (curate/engine); `--engine` and
`--ray-address` on the command line win over them. Both engines keep the same rows, so the
engine is not part of a step's key: a folder built on one is reused by the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..errors import InputError
from ..records import Loaded, check_output, load_records, output_guard, read_manifest, write_json_atomic
from .pipeline import PipelineResult, RunContext, Step, _jsonable, run_pipeline

TOP_KEYS = ("name", "description", "seed", "output", "engine", "ray_address", "inputs", "steps")
INPUT_KEYS = ("name", "source", "preset", "map", "split")
STATE_FILE = "recipe-state.json"


# --------------------------------------------------------------------------------------------
# the step registry


def step_registry() -> dict[str, type[Step]]:
    """{name: Step subclass} over every module of kocurate.curate (imported on first use)."""
    from .. import curate

    for info in pkgutil.iter_modules(curate.__path__):
        if info.name in ("recipe",) or info.name.startswith("_"):
            continue
        importlib.import_module(f"{curate.__name__}.{info.name}")
    found: dict[str, type[Step]] = {}
    stack = list(Step.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if dataclasses.is_dataclass(cls) and cls.name != Step.name:
            found.setdefault(cls.name, cls)
    return dict(sorted(found.items()))


def step_parameters(cls: type[Step]) -> list[str]:
    """The step's parameters, its own first, then those it shares with other steps (KMeansParams)."""
    names = [f.name for f in dataclasses.fields(cls)]
    own = [n for n in names if n in vars(cls).get("__annotations__", {})]
    return own + [n for n in names if n not in own]


# --------------------------------------------------------------------------------------------
# parsing with line numbers


@dataclass
class StepSpec:
    name: str
    params: dict[str, Any]
    line: int
    param_lines: dict[str, tuple[int, int]] = field(default_factory=dict)
    column: int = 3


@dataclass
class InputSpec:
    name: str
    source: str
    preset: str | None = None
    map: dict[str, str] = field(default_factory=dict)
    split: str = "train"


@dataclass
class Recipe:
    path: str
    name: str
    seed: int
    output: str | None
    inputs: list[InputSpec]
    steps: list[StepSpec]
    description: str = ""
    #: the executor: `local` (one process) or `ray` (Ray Data); `ray_address` None starts a local Ray
    engine: str = "local"
    ray_address: str | None = None

    def build_steps(self) -> list[Step]:
        registry = step_registry()
        return [make_step(spec, registry, self.path) for spec in self.steps]


def _where(path: str, node) -> str:
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _plain(node):
    return yaml.safe_load(yaml.serialize(node)) if node is not None else None


def load_recipe(path: str | Path) -> Recipe:
    """Parse a recipe file; every mistake is an InputError naming file:line:column and the fix."""
    path = resolve_recipe(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 (byte {exc.start}); save the recipe as UTF-8") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise InputError(f"{loc}: not valid YAML ({getattr(exc, 'problem', None) or exc}); fix the indentation or quoting there") from None
    if not isinstance(root, yaml.MappingNode):
        raise InputError(f"{where}: a recipe is a mapping with keys {', '.join(TOP_KEYS)}")
    top: dict[str, Any] = {}
    for key_node, value_node in root.value:
        key = key_node.value
        if key not in TOP_KEYS:
            raise InputError(f"{_where(where, key_node)}: unknown recipe key '{key}'; use {', '.join(TOP_KEYS)}")
        top[key] = (key_node, value_node)
    if "steps" not in top:
        raise InputError(f"{where}: the recipe has no 'steps:' list; add one (e.g. steps: [select: {{ratio: 0.01}}])")

    inputs: list[InputSpec] = []
    if "inputs" in top:
        node = top["inputs"][1]
        if not isinstance(node, yaml.SequenceNode):
            raise InputError(f"{_where(where, node)}: 'inputs' must be a list of {{name, source, preset}}")
        for item in node.value:
            if isinstance(item, yaml.ScalarNode):
                value = item.value
                inputs.append(InputSpec(name=Path(value).stem or value, source=value))
                continue
            if not isinstance(item, yaml.MappingNode):
                raise InputError(f"{_where(where, item)}: an input is a source string or a mapping with {', '.join(INPUT_KEYS)}")
            spec: dict[str, Any] = {}
            for k, v in item.value:
                if k.value not in INPUT_KEYS:
                    raise InputError(f"{_where(where, k)}: unknown input key '{k.value}'; use {', '.join(INPUT_KEYS)}")
                spec[k.value] = _plain(v)
            if not spec.get("source"):
                raise InputError(f"{_where(where, item)}: input has no 'source' (a Hub id, file or folder)")
            spec.setdefault("name", Path(str(spec["source"])).stem)
            spec["map"] = dict(spec.get("map") or {})
            inputs.append(InputSpec(**{k: (str(v) if k in ("name", "source") else v) for k, v in spec.items()}))

    steps_node = top["steps"][1]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise InputError(f"{_where(where, steps_node)}: 'steps' must be a non-empty list of `- STEP: {{param: value}}`")
    steps: list[StepSpec] = []
    for item in steps_node.value:
        line = item.start_mark.line + 1
        if isinstance(item, yaml.ScalarNode):
            steps.append(StepSpec(item.value, {}, line, {}, item.start_mark.column + 1))
            continue
        if not isinstance(item, yaml.MappingNode) or len(item.value) != 1:
            raise InputError(f"{_where(where, item)}: write each step as `- NAME: {{param: value, ...}}` (one name per item)")
        name_node, params_node = item.value[0]
        params: dict[str, Any] = {}
        lines: dict[str, tuple[int, int]] = {}
        if isinstance(params_node, yaml.MappingNode):
            for k, v in params_node.value:
                params[k.value] = _plain(v)
                lines[k.value] = (k.start_mark.line + 1, k.start_mark.column + 1)
        elif not (isinstance(params_node, yaml.ScalarNode) and params_node.value in ("", "~", "null")):
            raise InputError(f"{_where(where, params_node)}: parameters of step '{name_node.value}' must be a mapping")
        steps.append(StepSpec(name_node.value, params, name_node.start_mark.line + 1, lines,
                              name_node.start_mark.column + 1))

    seed = _plain(top["seed"][1]) if "seed" in top else 42
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"{_where(where, top['seed'][1])}: seed must be an integer of 0 or more, e.g. seed: 42")
    name = str(_plain(top["name"][1])) if "name" in top else path.stem
    output = str(_plain(top["output"][1])) if "output" in top else None
    description = str(_plain(top["description"][1]) or "") if "description" in top else ""
    engine, ray_address = _engine_keys(where, top)
    recipe = Recipe(where, name, seed, output, inputs, steps, description, engine, ray_address)
    recipe.build_steps()  # validate names and parameters now, before anything runs
    return recipe


def _engine_keys(where: str, top: dict) -> tuple[str, str | None]:
    """`engine:` (local or ray) and `ray_address:` (a string, only with engine: ray)."""
    from .engine import ENGINES

    engine = "local"
    if "engine" in top:
        node = top["engine"][1]
        value = _plain(node)
        if not isinstance(value, str) or value.strip().lower() not in ENGINES:
            raise InputError(f"{_where(where, node)}: engine must be one of {', '.join(ENGINES)}, not {value!r}; "
                             f"e.g. engine: ray")
        engine = value.strip().lower()
    address = None
    if "ray_address" in top:
        node = top["ray_address"][1]
        value = _plain(node)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{_where(where, node)}: ray_address must be a cluster address such as ray://head:10001 "
                             f"or auto; drop the key to start a local Ray")
        if engine != "ray":
            raise InputError(f"{_where(where, top['ray_address'][0])}: ray_address is only used with engine: ray; "
                             f"add `engine: ray` or drop ray_address")
        address = value.strip()
    return engine, address


def resolve_recipe(path: str | Path) -> Path:
    """A recipe file, or the name of a bundled one (`koquality` -> recipes/koquality.yaml)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    from ..resources import resource_dir

    try:
        bundled = resource_dir("recipes")
    except FileNotFoundError:
        bundled = None
    if bundled is not None and not candidate.suffix and (bundled / f"{candidate.name}.yaml").is_file():
        return bundled / f"{candidate.name}.yaml"
    names = ", ".join(sorted(p.stem for p in bundled.glob("*.yaml"))) if bundled is not None else ""
    raise InputError(f"{path}: no such recipe file; pass a YAML path or a bundled recipe name ({names})")


def make_step(spec: StepSpec, registry: dict[str, type[Step]], where: str) -> Step:
    col = spec.column
    if spec.name not in registry:
        raise InputError(
            f"{where}:{spec.line}:{col}: unknown step '{spec.name}'; known steps: {', '.join(registry)}"
        )
    cls = registry[spec.name]
    allowed = step_parameters(cls)
    tuples = {f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type)}
    params = {}
    for key, value in spec.params.items():
        line, column = spec.param_lines.get(key, (spec.line, col))
        if key not in allowed:
            raise InputError(
                f"{where}:{line}:{column}: step '{spec.name}' has no parameter '{key}'; its parameters: {', '.join(allowed)}"
            )
        if key in tuples and isinstance(value, list):
            value = tuple(value)
        problem = _type_problem(cls, key, value)
        if problem:
            raise InputError(f"{where}:{line}:{column}: step '{spec.name}' parameter '{key}': {problem}")
        params[key] = value
    try:
        return cls(**params)
    except InputError as exc:
        raise InputError(f"{where}:{spec.line}:{col}: step '{spec.name}': {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}:{spec.line}:{col}: step '{spec.name}': bad parameter value ({exc})") from None


_SCALAR_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _type_problem(cls: type[Step], key: str, value) -> str | None:
    """What is wrong with `value` for a scalar field (YAML gives "10" for a quoted 10), or None."""
    declared = next(str(f.type) for f in dataclasses.fields(cls) if f.name == key)
    optional = "None" in declared
    base = declared.replace(" | None", "").replace("None | ", "").strip()
    if value is None:
        return None if optional else f"needs a value ({base})"
    allowed = _SCALAR_TYPES.get(base)
    if allowed is None:
        return None
    if isinstance(value, bool) and base != "bool":
        return f"{value!r} is a yes/no value; write a {base}"
    if not isinstance(value, allowed):
        example = {"int": "10", "float": "0.01", "str": "a word", "bool": "true"}[base]
        return f"{value!r} is not {'an' if base == 'int' else 'a'} {base}; write e.g. {example} (unquoted for numbers)"
    return None


# --------------------------------------------------------------------------------------------
# overrides from the command line


def apply_overrides(
    recipe: Recipe,
    *,
    sources: tuple[str, ...] = (),
    model: str | None = None,
    embedder: str | None = None,
    sets: tuple[str, ...] = (),
    output: str | None = None,
    seed: int | None = None,
    engine: str | None = None,
    ray_address: str | None = None,
) -> Recipe:
    """--source [NAME=]PATH, --model, --embedder, --set STEP.PARAM=VALUE, -o, --seed, --engine,
    --ray-address (None: the recipe's own value; a flag given wins over the recipe)."""
    bare = [s for s in sources if "=" not in s or Path(s).exists()]
    named = [s for s in sources if s not in bare]
    if bare:
        # bare paths replace every input; the recipe's presets no longer apply to them
        recipe.inputs = [InputSpec(name=Path(p).stem, source=p) for p in bare]
    for item in named:
        key, value = item.split("=", 1)
        match = [i for i in recipe.inputs if i.name == key]
        if not match:
            raise InputError(
                f"--source {item}: the recipe has no input named '{key}'; its inputs: "
                f"{', '.join(i.name for i in recipe.inputs) or '(none)'} (or pass a bare PATH to replace them all)"
            )
        match[0].source = value
    registry = step_registry()
    for spec in recipe.steps:
        fields = step_parameters(registry[spec.name]) if spec.name in registry else []
        if model is not None:
            if "model" in fields:
                spec.params["model"] = model
            if "scorer" in fields and spec.params.get("scorer"):
                prefix = "ifd:" if str(spec.params["scorer"]).startswith("ifd:") else ""
                spec.params["scorer"] = prefix + model
        if embedder is not None and "embedder" in fields:
            spec.params["embedder"] = embedder
    for item in sets:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise InputError(f"--set {item}: write STEP.PARAM=VALUE, e.g. --set select.clusters=10")
        target, value = item.split("=", 1)
        step_name, param = target.split(".", 1)
        match = [s for s in recipe.steps if s.name == step_name]
        if not match:
            raise InputError(f"--set {item}: the recipe has no step '{step_name}'; its steps: {', '.join(s.name for s in recipe.steps)}")
        for spec in match:
            spec.params[param] = yaml.safe_load(value)
            spec.param_lines.pop(param, None)
    if output is not None:
        recipe.output = output
    if seed is not None:
        recipe.seed = seed
    if engine is not None:
        from .engine import ENGINES

        name = engine.strip().lower()
        if name not in ENGINES:
            raise InputError(f"--engine {engine}: unknown engine; use one of {', '.join(ENGINES)}")
        if name != recipe.engine:
            recipe.ray_address = None  # the recipe's cluster belongs to its own engine
        recipe.engine = name
    if ray_address is not None:
        if recipe.engine != "ray":
            raise InputError(f"--ray-address {ray_address}: only used with --engine ray (the recipe's engine is "
                             f"{recipe.engine}); add --engine ray or drop it")
        recipe.ray_address = ray_address
    recipe.build_steps()
    return recipe


# --------------------------------------------------------------------------------------------
# running


@dataclass
class StepOutcome:
    index: int
    name: str
    folder: Path
    reused: bool
    rows_in: int
    rows_out: int
    removed: dict[str, int]
    seconds: float
    result: PipelineResult | None = None


@dataclass
class BuildResult:
    recipe: Recipe
    output: Path
    steps: list[StepOutcome]

    @property
    def final(self) -> Path:
        return self.steps[-1].folder


def step_key(input_fingerprints: list[str], step: Step, seed: int) -> str:
    payload = json.dumps(
        {"inputs": input_fingerprints, "step": step.name, "params": _jsonable(step.params()), "seed": seed,
         "tool_version": __version__},
        sort_keys=True, ensure_ascii=False, default=str,
    )
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _read_state(out: Path) -> dict:
    path = out / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}


def _write_state(out: Path, state: dict) -> None:
    write_json_atomic(out / STATE_FILE, state)


def check_build_output(out: Path, recipe: Recipe, overwrite: bool) -> None:
    """A build writes into its own folder only: a folder that holds something other than an
    earlier build of this recipe is refused without --overwrite, and never inside an input."""
    check_output(out, [i.source for i in recipe.inputs], overwrite=True)  # the input checks only
    if not out.is_dir() or not any(out.iterdir()) or overwrite:
        return
    state = _read_state(out)
    if not state:
        raise InputError(f"{out}: folder exists and holds no earlier build (no {STATE_FILE}); pass --overwrite to "
                         f"replace it, or choose another -o")
    if state.get("_recipe", recipe.name) != recipe.name:
        raise InputError(f"{out}: holds a build of recipe '{state['_recipe']}', not '{recipe.name}'; pass --overwrite "
                         f"to replace it, or choose another -o")


def build(recipe: Recipe, *, ctx: RunContext | None = None, rerun: bool = False, overwrite: bool = False,
          on_step=None) -> BuildResult:
    """Run the recipe's steps in order, reusing each folder whose key is unchanged.

    `rerun` runs every step again; `overwrite` replaces an output folder that holds something
    else (an earlier build of the same recipe is resumed without it)."""
    if not recipe.inputs:
        raise InputError(f"{recipe.path}: the recipe has no inputs; add an 'inputs:' list or pass --source PATH")
    if not recipe.output:
        raise InputError(f"{recipe.path}: the recipe has no 'output:' folder; add one or pass -o FOLDER")
    ctx = ctx or RunContext(seed=recipe.seed)
    ctx.seed = recipe.seed
    if recipe.engine == "ray":  # refused before anything is written: Ray reads files and folders as they are
        fingerprints = [_ray_input_fingerprint(recipe, i) for i in recipe.inputs]
    out = Path(recipe.output)
    check_build_output(out, recipe, overwrite)
    if overwrite and out.is_dir() and not _read_state(out).get("_recipe") == recipe.name:
        # an empty folder swapped in atomically: the old one stays whole until that instant
        with output_guard(out, [i.source for i in recipe.inputs], overwrite=True):
            pass
    out.mkdir(parents=True, exist_ok=True)
    state = _read_state(out)
    state["_recipe"] = recipe.name
    steps = recipe.build_steps()

    executor = None
    if recipe.engine == "ray":
        from .engine import get_executor

        sources: list = []
        executor = get_executor("ray", recipe.ray_address)
    else:
        sources = [load_records(i.source, preset=i.preset, mapping=i.map, split=i.split) for i in recipe.inputs]
        fingerprints = [s.info.fingerprint for s in sources]
    try:
        return _build_steps(recipe, steps, out, state, sources, fingerprints, ctx, rerun, on_step, executor)
    finally:
        if executor is not None:
            executor.close()


def _ray_input_fingerprint(recipe: Recipe, spec: InputSpec) -> str:
    """What load_records would fingerprint (file bytes, a folder's data fingerprint), without
    loading the rows: engine: ray reads canonical files and dataset folders as they are."""
    from ..records import data_files
    from ..records.load import file_sha256, files_fingerprint

    path = Path(spec.source).expanduser()
    if spec.preset or spec.map or not path.exists():
        what = "a preset or map" if (spec.preset or spec.map) else "a source that is not a local file or folder"
        raise InputError(f"{recipe.path}: input '{spec.name}' has {what}; engine: ray reads canonical files and dataset "
                         f"folders: run `kocurate normalize {spec.source} -o FOLDER` (with its --preset) and use FOLDER "
                         f"as the source, or use engine: local")
    if path.is_dir():
        manifest = read_manifest(path) or {}
        return manifest.get("data_fingerprint") or files_fingerprint(data_files(path, "train"))
    return file_sha256(path)


def _build_steps(recipe: Recipe, steps: list[Step], out: Path, state: dict, sources: list, fingerprints: list[str],
                 ctx: RunContext, rerun: bool, on_step, executor) -> BuildResult:
    outcomes: list[StepOutcome] = []
    previous: Path | None = None
    for index, step in enumerate(steps, 1):
        folder = out / f"{index:02d}-{step.name}"
        key = step_key(fingerprints, step, recipe.seed)
        manifest = read_manifest(folder) if folder.is_dir() else None
        saved = state.get(folder.name, {})
        if (not rerun and manifest and saved.get("key") == key
                and saved.get("data_fingerprint") == manifest.get("data_fingerprint")):
            last = (manifest.get("steps") or [{}])[-1]
            outcome = StepOutcome(index, step.name, folder, True, int(last.get("rows_in", 0)), int(manifest.get("rows", 0)),
                                  dict(last.get("removed") or {}), 0.0)
        else:
            label = f"{recipe.name} ({recipe.path})"
            if executor is not None:  # engine: ray, over the files and folders themselves
                paths = [i.source for i in recipe.inputs] if previous is None else [previous]
                result = executor.run(paths, [step], folder, ctx=ctx, overwrite=True, recipe=label)
                rows_out = result.rows_out
            else:
                inputs = sources if previous is None else [load_records(previous)]
                result = run_pipeline(inputs, [step], folder, ctx=ctx, overwrite=True, recipe=label)
                rows_out = result.kept.height
            manifest = read_manifest(folder) or {}
            state[folder.name] = {"key": key, "data_fingerprint": manifest.get("data_fingerprint"), "step": step.name}
            _write_state(out, state)
            outcome = StepOutcome(index, step.name, folder, False, result.rows_in, rows_out,
                                  result.removed_by_reason(), sum(r.seconds for r in result.records), result)
        outcomes.append(outcome)
        if on_step:
            on_step(outcome)
        fingerprints = [manifest.get("data_fingerprint") or key]
        previous = folder
    return BuildResult(recipe, out, outcomes)


__all__ = [
    "BuildResult", "InputSpec", "Recipe", "StepOutcome", "StepSpec", "apply_overrides", "build", "load_recipe",
    "make_step", "resolve_recipe", "step_key", "step_registry",
]
