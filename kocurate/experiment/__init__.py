"""`kocurate train-eval`: compare data arms by training adapters and scoring them on KoBEST."""

from .arms import ArmSpec, parse_arm, parse_arms
from .bootstrap import Difference, paired_bootstrap
from .report import write_report
from .runner import ExperimentResult, TrainEvalConfig, run_experiment

__all__ = ["ArmSpec", "Difference", "ExperimentResult", "TrainEvalConfig", "paired_bootstrap", "parse_arm", "parse_arms",
           "run_experiment", "write_report"]
