"""Curation steps: normalize, embed, dedup, decontaminate, select, score, cap, recipes."""

from .cap import Cap
from .decontam import Decontaminate
from .dedup import ExactDedup, SemanticDedup
from .normalize import DropEmpty
from .pipeline import PipelineResult, RunContext, Step, StepResult, run_pipeline

__all__ = ["Cap", "Decontaminate", "DropEmpty", "ExactDedup", "PipelineResult", "RunContext", "SemanticDedup", "Step", "StepResult", "run_pipeline"]
