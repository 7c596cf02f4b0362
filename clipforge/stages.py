"""The stages as library calls for the demo and retrain: a typed config in, the stage's result out.

Each call shows a stage's error on the line its subcommand prints (`clipforge train: error: ...`)
and raises it on, so the chain's log reads as it did when it ran the subcommands. Beam and
TensorFlow are imported here, by the call that needs them: TensorFlow only after trainer/cpu.py
has chosen its settings for the architecture trained.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Iterator

from pipelines.ingest.config import IngestConfig
from schemas.errors import ClipforgeError, error_line
from schemas.logs import get_logger
from schemas.metadata import DatasetMetadata
from trainer import cpu
from trainer.config import TrainConfig

if TYPE_CHECKING:  # importing it starts TensorFlow
    from trainer.train import TrainResult

log = get_logger(__name__)


@contextlib.contextmanager
def shown_as(prog: str) -> Iterator[None]:
    """Logs a ClipforgeError raised inside as subcommand PROG prints it, then raises it on."""
    try:
        yield
    except ClipforgeError as e:
        log.error(error_line(prog, e))
        raise


def ingest(config: IngestConfig) -> DatasetMetadata:
    """Runs `pipelines.ingest.ingest(config)` (an append when config.append) on the local runner.

    Args:
      config: a checked IngestConfig.

    Raises:
      SetupError: refused before any work; ClipforgeError: the work failed.
    """
    from pipelines.ingest import ingest as run_ingest  # Beam: only for the runs that ingest
    with shown_as("clipforge ingest"):
        return run_ingest(config)


def train(config: TrainConfig) -> "TrainResult":
    """Trains and exports as `clipforge train` does, and logs its summary line.

    Raises:
      ClipforgeError: the dataset does not fit the config, a shard is unreadable, the loss diverged.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cpu.choose(config.arch)  # before trainer.train imports TensorFlow: it reads the settings once
    from trainer.train import train as run_train
    with shown_as("clipforge train"):
        result = run_train(config)
    log.info(result.summary())
    return result


def evaluate(model: str, data: str, output: str, split: str = "test") -> dict:
    """Scores export MODEL on SPLIT of DATA into OUTPUT/metrics.json and report.html.

    Returns:
      The metrics as metrics.json holds them (NaN and infinities as null), which is what the gate
      and decision.json read. Non-finite predictions are logged as `clipforge evaluate` logs them
      (its exit 1) and left to the caller.

    Raises:
      SetupError: model and data do not fit; ClipforgeError: the data could not be read.
    """
    from trainer.evaluation import EvaluateConfig, evaluate as run_evaluate
    from trainer.evaluation.stage import METRICS_FILE, nonfinite_line
    with shown_as("clipforge evaluate"):
        metrics = run_evaluate(EvaluateConfig(model=model, data=data, output=output, split=split))
    path = os.path.join(output, METRICS_FILE)
    if metrics["nonfinite_windows"]:
        log.error(nonfinite_line(metrics, path))
    with open(path, encoding="utf-8") as f:
        return json.load(f)
