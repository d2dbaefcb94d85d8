"""Shared fixtures: the samples, the KoBEST fixture, and tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach the network: models and data come from local folders only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import REPO, SAMPLES, build_gpt_neox, build_llama, build_st_encoder  # noqa: E402


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def kobest_dir() -> Path:
    return SAMPLES / "kobest"


@pytest.fixture(scope="session")
def tiny_gpt_neox(tmp_path_factory) -> Path:
    return build_gpt_neox(tmp_path_factory.mktemp("tiny-gpt-neox"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_st_encoder(tmp_path_factory) -> Path:
    return build_st_encoder(tmp_path_factory.mktemp("tiny-st"))


@pytest.fixture
def lexical_encode_calls(monkeypatch) -> list[int]:
    """Record the batch sizes the lexical embedder encodes (a rerun served from cache records none)."""
    from kocurate.curate.embed import LexicalEmbedder

    calls: list[int] = []
    original = LexicalEmbedder.encode

    def counting(self, texts, *args, **kwargs):
        calls.append(len(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(LexicalEmbedder, "encode", counting)
    return calls


@pytest.fixture(scope="module")
def ray_executor():
    """A local Ray with 2 CPUs, one per test module that asks for it (the Ray tests)."""
    pytest.importorskip("ray")
    from kocurate.curate.engine.ray_data import RayExecutor

    executor = RayExecutor(num_cpus=2, partition_rows=1000, batch_rows=1000, actors=1)
    executor.start()
    yield executor
    executor.close()
