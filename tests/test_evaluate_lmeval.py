"""Our scores against lm-evaluation-harness itself (PyPI lm-eval), on the same tiny model and data.

lm-eval reads the local KoBEST folder through task configs that `include` its own kobest_*.yaml
and point `dataset_path: json` at our files, so its templates, sampler and tokenizer code are the
ones under test, not a copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_evaluate import CONFIGS, kobest_folder
from kocurate.evaluate import EvalConfig, evaluate

lm_eval = pytest.importorskip("lm_eval")

SHOTS = (0, 5)


def lmeval_task_dir(data: Path, folder: Path) -> Path:
    """Task configs `local_kobest_{config}` = lm-eval's kobest_{config} reading `data` from disk."""
    source = Path(lm_eval.__file__).parent / "tasks" / "kobest"
    folder.mkdir(parents=True, exist_ok=True)
    for config in CONFIGS:
        files = "\n".join(f"    {split}: {data / config / f'{split}.jsonl'}"
                          for split in ("train", "validation", "test") if (data / config / f"{split}.jsonl").is_file())
        (folder / f"local_kobest_{config}.yaml").write_text(
            f"include: {source / f'kobest_{config}.yaml'}\ntask: local_kobest_{config}\n"
            f"dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n{files}\n", encoding="utf-8")
    return folder


def run_lmeval(model_path: Path, data: Path, task_dir: Path, shots: int, batch_size: int = 8, limit: int | None = None):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    lm = HFLM(pretrained=str(model_path), batch_size=batch_size, device="cpu")
    return lm_eval.simple_evaluate(model=lm, tasks=[f"local_kobest_{c}" for c in CONFIGS], num_fewshot=shots,
                                   task_manager=manager, log_samples=True, limit=limit)


@pytest.fixture(scope="module")
def data(samples, tmp_path_factory) -> Path:
    return kobest_folder(samples / "kobest", tmp_path_factory.mktemp("kobest"))


@pytest.fixture(scope="module", params=SHOTS)
def both(request, tiny_gpt_neox, data, tmp_path_factory):
    shots = request.param
    task_dir = lmeval_task_dir(data, tmp_path_factory.mktemp("lmeval-tasks"))
    theirs = run_lmeval(tiny_gpt_neox, data, task_dir, shots)
    ours = evaluate(EvalConfig(model=str(tiny_gpt_neox), tasks=list(CONFIGS), shots=[shots], data_dir=str(data),
                               batch_size=8))
    return shots, ours, theirs


@pytest.mark.parametrize("config", CONFIGS)
def test_scores_equal_lmeval(both, config):
    shots, ours, theirs = both
    mine = ours.results["results"][f"kobest_{config}"][str(shots)]
    peer = theirs["results"][f"local_kobest_{config}"]
    assert mine["n"] == len(theirs["samples"][f"local_kobest_{config}"])
    for metric in ("acc", "f1") + (("acc_norm",) if config == "hellaswag" else ()):
        assert mine[metric] == pytest.approx(peer[f"{metric},none"], abs=1e-6), metric


@pytest.mark.parametrize("config", CONFIGS)
def test_prompts_and_loglikelihoods_equal_lmeval(both, config):
    shots, ours, theirs = both
    from kocurate.evaluate.tasks import get_task
    from kocurate.records.kobest import load_split

    task = get_task(config)
    test, train = load_split(config, "test", ours.results["data"]["source"]), load_split(config, "train", ours.results["data"]["source"])
    mine = {p["doc_index"]: p for p in ours.predictions(config, shots)}
    for sample in theirs["samples"][f"local_kobest_{config}"]:
        row = mine[sample["doc_id"]]
        context = task.prompt(test[row["doc_index"]], [train[i] for i in row["shots"]])
        assert [list(a) for a in sample["arguments"]] == [[context, c] for c in task.continuations(test[row["doc_index"]])]
        peer_lls = [r[0][0] for r in sample["resps"]]
        assert row["loglikelihoods"] == pytest.approx(peer_lls, abs=1e-4)
        assert row["pred"] == max(range(len(peer_lls)), key=lambda i: (peer_lls[i], -i))
