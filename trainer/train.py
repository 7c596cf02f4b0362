"""One training run: precision, model, fit with callbacks, best weights, export (the strategy: trainer/distribute.py)."""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from schemas.configs import ConfigError
from schemas.logs import get_logger
from schemas.metadata import DatasetMetadata
from trainer import TrainerError, cpu
from trainer.callbacks import EpochTimer, ResumableBackup, TrainingDiverged, make_callbacks
from trainer.config import TrainConfig
from trainer.distribute import PEER_ERRORS, WorkerRole, lost_peer, select_strategy, worker_role
from trainer.export import export_model, model_card
from trainer.heads import build_model
from trainer.input import ShardError, count_mismatches, decoded_bytes, find_bad_shards, fits_cache, make_dataset
from schemas.tasks import task_of
from trainer.losses import checkpoint_metric, task_loss, task_metrics

VAL_SPLIT_NAMES = ("validation", "val", "valid", "eval")
INPUT_ERRORS = (tf.errors.DataLossError, tf.errors.InvalidArgumentError,
                tf.errors.FailedPreconditionError, tf.errors.NotFoundError)
log = get_logger(__name__)


@dataclasses.dataclass
class RunPaths:
    """Where one worker writes. Non-chief workers of a multi-worker run get their own folder."""

    root: str

    @property
    def backup(self) -> str:
        return os.path.join(self.root, "backup")

    @property
    def best_weights(self) -> str:
        return os.path.join(self.root, "checkpoints", "best.weights.h5")

    @property
    def csv_log(self) -> str:
        return os.path.join(self.root, "training_log.csv")

    @property
    def tensorboard(self) -> str:
        return os.path.join(self.root, "tensorboard")

    @property
    def export(self) -> str:
        return os.path.join(self.root, "export")


@dataclasses.dataclass
class TrainResult:
    """What a finished run reports (also the model card's timing and metric fields)."""

    epochs_run: int
    resumed_at: int
    monitor: str
    best_value: Optional[float]
    final_metrics: dict
    windows_per_second: float
    seconds_per_epoch: float
    train_seconds: float
    parameters: int
    export_dir: Optional[str]
    model: Optional[keras.Model] = dataclasses.field(default=None, repr=False)

    def summary(self) -> str:
        best = "n/a" if self.best_value is None else f"{self.best_value:.6g}"
        resumed = f" (resumed at epoch {self.resumed_at})" if self.resumed_at else ""
        return (f"done: {self.epochs_run} epochs{resumed}, best {self.monitor}={best}, "
                f"{self.windows_per_second:.1f} windows/s, {self.train_seconds:.1f} s, "
                f"export: {self.export_dir or 'none (not the chief worker)'}")


def precision_policy(mixed_precision: bool, flags: Optional[frozenset] = None) -> str:
    """The Keras dtype policy: mixed_float16 on GPU, mixed_bfloat16 on a CPU that has bf16 units.

    A CPU without AVX512_BF16 or AMX emulates bfloat16 in float32 arithmetic plus conversions, so
    mixed precision there is slower than float32 (BENCHMARKS.md): it falls back with a warning.
    """
    if not mixed_precision:
        return "float32"
    # float16 needs GPU tensor cores to pay off; CPUs (and TPUs) do bfloat16 natively.
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    if cpu.has_native_bf16(flags):
        return "mixed_bfloat16"
    log.warning(f"warning: --mixed-precision ignored: this CPU has no native bfloat16 (no AVX512_BF16 or "
                f"AMX: {cpu.cpu_summary()}), where mixed_bfloat16 is slower than float32; training in "
                f"float32")
    return "float32"


def configure_runtime(cfg: TrainConfig) -> str:
    """Seeds, op determinism and the dtype policy; returns the policy name."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = precision_policy(cfg.mixed_precision)
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def resolve_splits(cfg: TrainConfig, meta: DatasetMetadata) -> Optional[str]:
    """Checks the train split and returns the validation split name (None for none)."""
    if cfg.train_split not in meta.splits:
        raise ConfigError(f"train config: train_split={cfg.train_split!r} is not in the dataset; "
                          f"it has {sorted(meta.splits)}")
    if cfg.val_split == "none":
        return None
    if cfg.val_split == "auto":
        found = [s for s in VAL_SPLIT_NAMES if meta.num_windows(s) > 0]
        return found[0] if found else None
    if cfg.val_split not in meta.splits:
        raise ConfigError(f"train config: val_split={cfg.val_split!r} is not in the dataset; "
                          f"it has {sorted(meta.splits)}")
    return cfg.val_split


def class_weights(meta: DatasetMetadata, how: str) -> Optional[dict]:
    """balanced: weight_k = N / (K * n_k) from stats.class_histogram (1 for absent classes)."""
    if how != "balanced" or task_of(meta.target).class_weights != "sample":
        return None  # a row whose weights go in the loss (multilabel) has them there
    hist = meta.stats.get("class_histogram")
    if not hist or len(hist) != len(meta.target.classes):
        raise ConfigError(f"class_weights=balanced needs stats.class_histogram with "
                          f"{len(meta.target.classes)} counts in metadata.json, got {hist!r}")
    total, k = float(sum(hist)), len(hist)
    return {i: (total / (k * n) if n else 1.0) for i, n in enumerate(hist)}


def train(cfg: TrainConfig) -> TrainResult:
    """Trains cfg.arch on cfg.data and exports it to WORKDIR/export.

    The library entry point of the train stage: `clipforge train` and `python -m trainer`
    (trainer/main.py) build the TrainConfig from their flags and call it. Progress lines go to the
    `clipforge.trainer` loggers (schemas/logs.py); `schemas.logs.console()` shows them as the CLI does.

    Args:
      cfg: a validated TrainConfig.

    Returns:
      The TrainResult (its summary() is the final log line).

    Raises:
      MissingMetadataError: cfg.data is not a finished dataset.
      ConfigError: a setting does not fit the dataset.
      ShardError: a shard cannot be read (the message names it).
      TrainingDiverged: the loss became NaN or infinite (nothing is exported).
    """
    meta = DatasetMetadata.load(cfg.data)
    task = meta.target.task
    cfg.check_task(task)
    cfg.clip_length(meta.spec.frames)  # clip_frames / clip_strides must fit the dataset's windows
    val_split = resolve_splits(cfg, meta)
    n_train = meta.num_windows(cfg.train_split)
    steps = n_train // cfg.batch_size
    if steps < 1:
        raise ConfigError(f"train config: batch_size={cfg.batch_size} is larger than the "
                          f"{n_train} windows of split {cfg.train_split!r}")
    strategy = select_strategy(cfg.strategy, cfg.collective_timeout)  # before any other TF op: multi-worker needs that
    role = worker_role(strategy)
    log.info(cpu.chosen_line())
    policy = configure_runtime(cfg)
    paths = RunPaths(cfg.workdir if role.is_chief else os.path.join(cfg.workdir, "workers", role.name))
    os.makedirs(paths.root, exist_ok=True)
    primary, mode = checkpoint_metric(task)
    monitor = f"val_{primary}" if val_split else primary
    log.info(f"training {cfg.arch} on {cfg.data} ({task}, {n_train} windows, {steps} steps/epoch) with "
             f"{type(strategy).__name__} x{strategy.num_replicas_in_sync}, policy {policy}")
    decoded = decoded_bytes(meta, cfg.train_split) / 2 ** 20
    log.info(f"input: {cfg.train_split} split decoded once and cached in memory ({decoded:.1f} MiB)"
             if fits_cache(meta, cfg.train_split, cfg.cache_mb) else f"input: streamed from the shards ({decoded:.0f} MiB decoded is over "
             f"cache_mb={cfg.cache_mb})")

    with strategy.scope():
        model = compile_model(meta, cfg, steps * cfg.epochs)
    train_ds = split_dataset(cfg, meta, cfg.train_split, True, role)
    val_ds = split_dataset(cfg, meta, val_split, False, role) if val_split else None
    resuming = os.path.exists(os.path.join(paths.backup, "training_metadata.json"))
    if not resuming and os.path.exists(paths.best_weights):
        os.remove(paths.best_weights)  # an earlier run's best must not be exported for this one
    callbacks = make_callbacks(paths, monitor, mode, resuming, cfg.early_stopping_patience,
                               "val_loss" if val_split else "loss")
    started = time.perf_counter()
    try:
        history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks,
                            class_weight=class_weights(meta, cfg.class_weights), shuffle=False,
                            verbose=2)  # shuffle=False: the dataset shuffles itself
    except PEER_ERRORS as e:
        if role.num_workers == 1:
            raise
        raise lost_peer(e, cfg.workdir) from None
    except INPUT_ERRORS as e:
        explained = _explain_input_error(e, cfg, meta, [cfg.train_split] + [val_split] * bool(val_split))
        if explained is e:
            raise
        raise explained from None
    train_seconds = time.perf_counter() - started
    losses = history.history.get("loss", []) + history.history.get("val_loss", [])
    if not np.all(np.isfinite(losses)):
        raise TrainingDiverged(f"a loss of the run is not finite ({losses}); nothing exported")

    if os.path.exists(paths.best_weights):
        model.load_weights(paths.best_weights)  # export the best epoch, not the last
    eval_ds = val_ds if val_ds is not None else split_dataset(cfg, meta, cfg.train_split, False, role)
    final = model.evaluate(eval_ds, return_dict=True, verbose=0)
    final = {k: float(v) for k, v in final.items()}
    timer = next(c for c in callbacks if isinstance(c, EpochTimer))
    backup = next(c for c in callbacks if isinstance(c, ResumableBackup))
    epochs_run = backup.resumed_epoch + len(timer.epoch_seconds)
    result = TrainResult(
        epochs_run=epochs_run, resumed_at=backup.resumed_epoch, monitor=monitor,
        best_value=final.get(primary), final_metrics=final,
        windows_per_second=timer.windows_per_second(cfg.batch_size),
        seconds_per_epoch=float(np.mean(timer.epoch_seconds)) if timer.epoch_seconds else 0.0,
        train_seconds=train_seconds, parameters=int(model.count_params()), export_dir=None,
        model=model)
    card = model_card(cfg, meta, model, result, strategy, policy, val_split)
    # Every worker runs the export (saving reads distributed variables collectively);
    # only the chief's copy lands in WORKDIR/export.
    try:
        export_model(model, meta, cfg.data, paths.export, card)
    except (OSError, tf.errors.OpError) as e:  # e.g. a full disk; an earlier export stays
        raise TrainerError(f"export to {paths.export} failed ({_first_line(e)}); an earlier "
                           f"export there, if any, is unchanged") from None
    if role.is_chief:
        result.export_dir = paths.export
    else:
        shutil.rmtree(paths.export, ignore_errors=True)
    return result


def compile_model(meta: DatasetMetadata, cfg: TrainConfig, total_steps: int) -> keras.Model:
    """Builds and compiles the task model (call inside the strategy's scope)."""
    task = meta.target.task
    model = build_model(meta, cfg)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total_steps)
    balanced = cfg.class_weights == "balanced" and task_of(task).class_weights == "loss"
    try:
        loss = task_loss(task, cfg.task_loss(task), meta.stats, cfg.ssim_weight, balanced, meta.target.num_outputs)
    except ValueError as e:
        raise ConfigError(f"{cfg.data}/metadata.json: {e}") from None
    model.compile(optimizer=keras.optimizers.Adam(schedule, weight_decay=cfg.weight_decay or None),
                  loss=loss,
                  metrics=task_metrics(task), jit_compile=bool(cfg.jit))
    if cfg.warm_start:
        warm_start(model, cfg.warm_start)
    # Creating the optimizer's slots now, not inside the first traced step, spares the train
    # function a second trace (tf.function traces again after creating variables).
    model.optimizer.build(model.trainable_variables)
    return model


def split_dataset(cfg: TrainConfig, meta: DatasetMetadata, split: str, training: bool,
                  role: WorkerRole) -> tf.data.Dataset:
    """The input pipeline of one split for this worker."""
    ds = make_dataset(cfg.data, meta, split, cfg.batch_size, training, seed=cfg.seed,
                      shuffle_buffer=cfg.shuffle_buffer,
                      augment=cfg.augmentations(meta.target.task) if training else (),
                      num_workers=role.num_workers, worker_index=role.index,
                      pixel_dtype=tf.int32 if role.num_workers > 1 else tf.uint8,
                      cache=fits_cache(meta, split, cfg.cache_mb),
                      clip_frames=cfg.clip_length(meta.spec.frames), clip_strides=cfg.clip_strides)
    if role.num_workers == 1:
        # A known length: Keras shows progress, and shards holding fewer records than
        # metadata.json says fail loudly instead of silently shortening every epoch.
        n = meta.num_windows(split)
        ds = ds.apply(tf.data.experimental.assert_cardinality(
            n // cfg.batch_size if training else -(-n // cfg.batch_size)))
    return ds


def warm_start(model: keras.Model, path: str) -> None:
    """Loads the weights of an earlier model of the same architecture and window spec."""
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as e:
        raise ConfigError(f"train config: warm_start={path!r} does not fit {model.name}: "
                          f"{str(e).splitlines()[0][:300]}") from None
    log.info(f"warm-started from {path}")


def _first_line(error: Exception) -> str:
    """The first non-empty line of a TensorFlow error's message (they run to pages)."""
    lines = [line for line in str(getattr(error, "message", error)).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def _explain_input_error(error, cfg: TrainConfig, meta: DatasetMetadata, splits) -> Exception:
    """Turns an input error into a ShardError naming the shard(s), or returns it unchanged."""
    if "IteratorGetNext" not in str(error):
        return error  # not raised by the input pipeline: no shard to blame
    if "expected to contain" in str(error):
        problems = [p for s in splits for p in count_mismatches(cfg.data, meta, s)]
        return ShardError("the shards do not hold the windows metadata.json lists: " +
                          "; ".join(problems or [str(error).splitlines()[0]]))
    problems = [p for s in splits for p in find_bad_shards(cfg.data, meta, s)]
    if problems:
        return ShardError("unreadable shard(s): " + "; ".join(problems))
    return error
