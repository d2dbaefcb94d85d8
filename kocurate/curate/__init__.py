"""Curation steps: normalize, embed, dedup, minhash, decontaminate, score, cluster, select, cap, recipes."""

from .cap import Cap
from .cluster import Cluster, Embed
from .decontam import Decontaminate
from .dedup import ExactDedup, SemanticDedup
from .minhash import MinHashDedup
from .normalize import DropEmpty
from .pipeline import PipelineResult, RunContext, Step, StepResult, run_pipeline

__all__ = ["Cap", "Cluster", "Decontaminate", "DropEmpty", "Embed", "ExactDedup", "MinHashDedup", "PipelineResult",
           "RunContext", "SemanticDedup", "Step", "StepResult", "run_pipeline"]
