"""Named presets: how known datasets map onto the canonical columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from ..errors import InputError


@dataclass(frozen=True)
class Preset:
    """How one known dataset's columns become canonical ones."""

    name: str
    hub_id: str
    #: canonical column -> the dataset's column
    columns: dict[str, str]
    #: extra derivation after renaming (e.g. CoT output = rationale [RESULT] target)
    derive: Callable[[pl.DataFrame], pl.DataFrame] | None = None
    license: str | None = None
    citation: str | None = None
    notes: str = ""
    keep: tuple[str, ...] = field(default_factory=tuple)


def _cot_output(frame: pl.DataFrame) -> pl.DataFrame:
    # The CoT-Collection paper's training text: "{rationale} [RESULT] {target}".
    return frame.with_columns(
        pl.concat_str([pl.col("rationale"), pl.lit(" [RESULT] "), pl.col("target")]).alias("output")
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "open-platypus",
            "garage-bAInd/Open-Platypus",
            {"instruction": "instruction", "input": "input", "output": "output", "source": "data_source"},
            citation="Lee et al., Platypus: Quick, Cheap, and Powerful Refinement of LLMs (arXiv:2308.07317)",
        ),
        Preset(
            "kopen-platypus",
            "kyujinpy/KOpen-platypus",
            {"instruction": "instruction", "input": "input", "output": "output"},
            citation="Lee et al., Platypus (arXiv:2308.07317); KOpen-Platypus Korean translation by kyujinpy",
        ),
        Preset(
            "koalpaca",
            "beomi/KoAlpaca-v1.1a",
            {"instruction": "instruction", "output": "output"},
            citation="Beomi, KoAlpaca: Korean Alpaca model based on Stanford Alpaca",
        ),
        Preset(
            "kullm",
            "nlpai-lab/kullm-v2",
            {"id": "id", "instruction": "instruction", "input": "input", "output": "output"},
            citation="NLP & AI Lab, Korea University: KULLM (구름)",
        ),
        Preset(
            "oig-ko",
            "heegyu/OIG-small-chip2-ko",
            {"instruction": "user_translated", "output": "chip2_translated"},
            citation="LAION OIG small-chip2, Korean translation by heegyu",
        ),
        Preset(
            "cot-collection",
            "kaist-ai/CoT-Collection",
            {"instruction": "source", "rationale": "rationale", "target": "target", "task": "task"},
            derive=_cot_output,
            citation="Kim et al., The CoT Collection (arXiv:2305.14045)",
            keep=("type",),
        ),
        Preset(
            "koquality",
            "DILAB-HYU/KoQuality",
            {"instruction": "instruction", "output": "output"},
            citation="Na et al., KoQuality (HCLT 2023)",
            keep=("ppl", "len", "len_group", "cluster", "group"),
        ),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset '{name}'; known presets: {', '.join(PRESETS)}") from None


def preset_for_hub_id(hub_id: str) -> Preset | None:
    for preset in PRESETS.values():
        if preset.hub_id.lower() == hub_id.lower():
            return preset
    return None


def parse_mapping(spec: str | None) -> dict[str, str]:
    """Parse `--map instruction=question,output=answer` into {canonical: column}."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise InputError(f"--map entry '{part}' is not CANONICAL=COLUMN (e.g. --map instruction=question,output=answer)")
        key, value = (s.strip() for s in part.split("=", 1))
        if not key or not value:
            raise InputError(f"--map entry '{part}' is not CANONICAL=COLUMN (e.g. --map instruction=question,output=answer)")
        mapping[key] = value
    return mapping
