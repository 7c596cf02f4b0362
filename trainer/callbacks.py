"""The run's callbacks: resumable backups, NaN failure, checkpoints, logs, timing."""
from __future__ import annotations

import csv
import json
import math
import os
import time
from typing import Optional

import keras
import numpy as np

from schemas.logs import get_logger
from trainer import TrainerError

log = get_logger(__name__)


class TrainingDiverged(TrainerError):
    """The loss became NaN or infinite; the run stops with no export."""


class FailOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises TrainingDiverged at the first batch whose loss is NaN or infinite.

    Keras' TerminateOnNaN only sets stop_training, so the epoch still ends and BackupAndRestore
    and ModelCheckpoint save the NaN weights, which a restart would then resume from. Raising
    out of fit() skips those epoch-end saves, so the last backup stays the last good epoch.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(np.asarray(loss))):
            raise TrainingDiverged(
                f"loss became {float(np.asarray(loss))} at epoch {self.epoch + 1}, batch {batch + 1}; "
                f"stopping with no export. Lower --learning-rate, or check the dataset stats.")


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that says when it resumes, and keeps the previous backup too.

    double_checkpoint keeps the epoch before the latest, so a backup corrupted by a kill in the
    middle of writing falls back to the one before instead of failing the restart.
    """

    def __init__(self, backup_dir: str):
        super().__init__(backup_dir, save_freq="epoch", double_checkpoint=True,
                         delete_checkpoint=True)
        self.resumed_epoch = 0

    def on_train_begin(self, logs=None):
        try:
            try:
                self._load_model()
            except OSError as e:
                if not os.path.exists(self._prev_weights_path):
                    raise
                # BackupAndRestore falls back on its own, silently; say so, and from which epoch.
                log.info(f"the latest backup in {self.backup_dir} is unreadable "
                         f"({str(e).splitlines()[0][:200]}); falling back to the previous backup "
                         f"(epoch {_backup_epoch(self._prev_training_metadata_path)})")
                super().on_train_begin(logs)
        except (OSError, ValueError) as e:
            raise TrainerError(f"cannot restore the backup in {self.backup_dir}: {e}. Delete that "
                               f"folder to start this run from scratch.") from None
        self.resumed_epoch = int(getattr(self.model, "_initial_epoch", 0) or 0)
        if self.resumed_epoch:
            log.info(f"resuming from backup at epoch {self.resumed_epoch} ({self.backup_dir})")


def _backup_epoch(metadata_path: str) -> str:
    """The epoch a BackupAndRestore metadata file records, or "unknown"."""
    try:
        with open(metadata_path, encoding="utf-8") as f:
            return str(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


class EpochTimer(keras.callbacks.Callback):
    """Times the training part of each epoch (validation excluded) and counts its steps."""

    def __init__(self):
        super().__init__()
        self.train_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self.steps: list[int] = []
        self._start = self._train_end = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end, self._steps = time.perf_counter(), None, 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        self.train_seconds.append((self._train_end or end) - self._start)
        self.epoch_seconds.append(end - self._start)
        self.steps.append(self._steps)

    def windows_per_second(self, global_batch: int) -> float:
        """Training throughput, leaving out the first epoch (graph tracing) when there are more."""
        skip = 1 if len(self.steps) > 1 else 0
        seconds = sum(self.train_seconds[skip:])
        return sum(self.steps[skip:]) * global_batch / seconds if seconds > 0 else 0.0


def best_logged(csv_path: str, monitor: str, mode: str) -> Optional[float]:
    """The best `monitor` value in a CSVLogger file, or None (no file, no such column)."""
    if not os.path.exists(csv_path):
        return None
    with open(csv_path, newline="", encoding="utf-8") as f:
        values = [float(r[monitor]) for r in csv.DictReader(f) if r.get(monitor) not in (None, "")]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return min(values) if mode == "min" else max(values)


def make_callbacks(paths, monitor: str, mode: str, resuming: bool, patience: int,
                   early_monitor: str) -> list:
    """The callback list of one run (order matters where noted).

    Args:
      paths: RunPaths of this worker.
      monitor, mode: the checkpoint metric (e.g. val_mae, min).
      resuming: a backup exists; the CSV log is appended to and the checkpoint keeps its best.
      patience: EarlyStopping patience in epochs; 0 turns it off.
      early_monitor: the EarlyStopping metric (val_loss, or loss without a validation split).
    """
    callbacks = [
        # First, so a NaN batch stops the run before any other callback saves anything.
        FailOnNonFiniteLoss(),
        ResumableBackup(paths.backup),
        # A resumed run must only replace the best checkpoint with something better than the
        # best of the epochs before the interruption, which the CSV log remembers.
        keras.callbacks.ModelCheckpoint(
            paths.best_weights, monitor=monitor, mode=mode, save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_logged(paths.csv_log, monitor, mode) if resuming else None),
        keras.callbacks.CSVLogger(paths.csv_log, append=resuming),
        keras.callbacks.TensorBoard(paths.tensorboard, write_graph=False),
        EpochTimer(),
    ]
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=early_monitor, patience=patience,
                                                       mode="min"))
    return callbacks
