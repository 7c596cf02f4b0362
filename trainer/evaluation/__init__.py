"""`clipforge evaluate`: an export scored on a dataset split against the task's baselines (stage.py),
the streaming accumulators of each task (metrics.py and the *_metrics modules) and report.html (report.py).

The library entry point of the stage is `evaluate(EvaluateConfig(...)) -> metrics`; `run(argv)` is the CLI.
"""
from trainer.evaluation.stage import EvaluateConfig, EvaluationError, build_parser, evaluate, run, score

__all__ = ["EvaluateConfig", "EvaluationError", "build_parser", "evaluate", "run", "score"]
