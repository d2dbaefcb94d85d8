"""Curation steps: normalize, embed, dedup, decontaminate, select, score, cap, recipes."""

from .normalize import DropEmpty
from .pipeline import PipelineResult, RunContext, Step, StepResult, run_pipeline

__all__ = ["DropEmpty", "PipelineResult", "RunContext", "Step", "StepResult", "run_pipeline"]
