"""`kocurate train-eval`: compare data arms by training adapters and scoring them on KoBEST."""

from .arms import ArmSpec, parse_arm, parse_arms
from .bootstrap import Difference, paired_bootstrap
from .config import ExperimentConfig, build_config
from .report import write_report
from .runner import ExperimentResult, Tick, run_experiment
from .verdict import Comparison, compare, headline, holm, plan

__all__ = ["ArmSpec", "Comparison", "Difference", "ExperimentConfig", "ExperimentResult", "Tick", "build_config", "compare", "headline",
           "holm", "paired_bootstrap", "parse_arm", "parse_arms", "plan", "run_experiment", "write_report"]
