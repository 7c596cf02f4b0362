"""The task table: per task, everything that differs between tasks, read by both halves.

Adding a task is one `Task` row here and the functions it names. Rows hold plain data and numpy
functions (record encoding, stats, predict's Parquet rows; in schemas/task_functions.py); what needs TensorFlow or Beam (heads,
losses, Keras metrics, evaluation accumulators, report sections) is named by a string that
trainer/ or pipelines/ looks up in its own registry keyed the same way. No code outside this
module compares a task name (tests/test_task_table.py checks that).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional, Sequence

from schemas import features as fk
from schemas import task_functions as fn
from schemas.errors import SetupError
from schemas.task_functions import (  # noqa: F401 - re-exported: the table's users need only this module
    MULTILABEL_THRESHOLD, TaskValueError, feature_spec, multi_hot, parse_target, predicted_names)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """metrics.json `<section>.<metric>` is the baseline `model.<metric>` must beat (the promotion gate)."""

    name: str
    section: str
    metric: str
    label: str
    lower_is_better: bool = False


@dataclasses.dataclass(frozen=True)
class DemoPreset:
    """`clipforge demo --task NAME` settings, chosen so the defaults finish in minutes on 2 CPU cores.

    Attributes:
      arch: the architecture trained.
      ingest: IngestConfig fields besides task, input, labels, output and the demo's shared window
        fields (clipforge/demo.py WINDOWS).
      train: TrainConfig fields besides data, workdir, arch, epochs and seed.
      epochs: training epochs.
      what: what the model learns on the synthetic corpus (for --help).
      extra_shapes: shapes the corpus adds to each clip beside the moving one (0..extra_shapes).
    """

    arch: str
    ingest: Mapping[str, Any] = dataclasses.field(hash=False)
    train: Mapping[str, Any] = dataclasses.field(hash=False)
    epochs: int
    what: str
    extra_shapes: int = 0


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: its target, record features, stats, model, metrics, predict columns and report.

    Attributes:
      name: the --task value.
      help: one line for --help.
      fields: the TargetSpec fields the task uses (to_dict writes only these).
      record_key: the record feature holding the target.
      value_arg: which RecordCodec.serialize argument carries the target (target | label | encoded_next).
      labels: "" (targets come from the video itself), or the flag naming the labels columns
        (--target-columns | --label-column).
      label_column: default of --label-column.
      label_kind: how a labels cell is read: numbers | class | class_set.
      label_shapes: label-file shapes the task accepts (video, segments, series).
      target_frames: the target is the frames after the window (spans end there, spatial
        augmentation moves them too, no temporal jitter).
      stats: what the ingest sums per training window: moments (target mean/std) | histogram
        (class_histogram) | class_counts (per-class window counts) | "" (nothing).
      class_weights: where class_weights=balanced goes: sample (Keras class_weight from
        class_histogram) | loss (per-class positive weights in the loss, from class_counts) | "" (n/a).
      head: trainer/heads.py HEADS key.
      losses: the --loss names, the first one the default.
      train_metrics: trainer/losses.py METRICS keys, reported every epoch.
      checkpoint_metric, checkpoint_mode: the Keras metric the best checkpoint keeps, min | max.
      promotion_metric: the metrics.json model.<key> retrain promotes on by default.
      accumulator: trainer/evaluation/metrics.py ACCUMULATORS key (one update(batch, prediction) for every task).
      baseline: the baseline of the promotion gate and of every summary.
      aggregates: evaluate --aggregate values that apply.
      summary_keys: model.<key> lines evaluate prints; video_keys: the model.video.<key> ones.
      report: trainer/evaluation/report.py SECTIONS key; report_sections: the plot section ids it writes.
      headline: the demo's rows, (label, model key, baseline key).
      probabilities: the SavedModel returns probabilities (rows of a softmax or sigmoids).
      demo: the `clipforge demo` preset.
    """

    name: str
    help: str
    fields: tuple[str, ...]
    record_key: str
    value_arg: str
    labels: str
    label_column: str
    label_kind: str
    label_shapes: tuple[str, ...]
    target_frames: bool
    stats: str
    class_weights: str
    head: str
    losses: tuple[str, ...]
    train_metrics: tuple[str, ...]
    checkpoint_metric: str
    checkpoint_mode: str
    promotion_metric: str
    accumulator: str
    baseline: Baseline
    aggregates: tuple[str, ...]
    summary_keys: tuple[str, ...]
    video_keys: tuple[str, ...]
    report: str
    report_sections: tuple[str, ...]
    headline: tuple[tuple[str, str, str], ...]
    probabilities: bool
    demo: DemoPreset
    check: Callable
    encode: Callable
    decode: Callable
    window_columns: Callable
    window_row: Callable
    video_columns: Callable
    video_row: Callable

    def width(self, target) -> int:
        """Width of the model's output vector (regression D, classes K); 0 for frame targets."""
        return len(target.outputs) if "outputs" in self.fields else len(target.classes) if "classes" in self.fields else 0

    def prediction_shape(self, target, window) -> tuple[int, ...]:
        """The prediction of one window: (width,) or (horizon, H, W, C)."""
        return (target.horizon,) + window.frame_shape if self.target_frames else (self.width(target),)

    def horizon(self, target) -> int:
        """Frames stored after each window (0 unless the target is frames)."""
        return target.horizon if self.target_frames else 0


# ------------------------------------------------------------------ the table

_ROWS = (
    Task(name="regression", help="D float outputs per window from --target-columns",
         fields=("outputs",), record_key=fk.TARGET, value_arg="target",
         labels="--target-columns", label_column="label", label_kind="numbers",
         label_shapes=("video", "segments", "series"), target_frames=False, stats="moments", class_weights="",
         head="linear", losses=("mse", "huber", "mae"), train_metrics=("mae", "rmse"),
         checkpoint_metric="mae", checkpoint_mode="min", promotion_metric="r2", accumulator="moments",
         baseline=Baseline("training-mean baseline", "baseline", "mse", "MSE", lower_is_better=True),
         aggregates=("mean", "max"), summary_keys=("r2", "mae", "rmse", "pearson_r"), video_keys=("r2", "mae"),
         report="moments", report_sections=("plot-pred-vs-true", "plot-residuals", "plot-error-time"),
         headline=(("R2", "model.r2", "baseline.r2"), ("MAE", "model.mae", "baseline.mae"),
                   ("RMSE", "model.rmse", "baseline.rmse")),
         probabilities=False,
         # Speed needs motion between frames: 3D filters see it directly. 10 epochs at a higher peak LR
         # beat the R2 that 30 epochs at 1e-3 did (0.89 vs 0.86) in under 3 min on a 2-core AVX2 CPU.
         demo=DemoPreset("conv3d", {"target_columns": ("speed",), "frames": 6, "stride": 3},
                         {"batch_size": 16, "learning_rate": 0.002, "augment": "none"}, 10,
                         "object speed (px/s)"),
         check=fn.check_outputs, encode=fn.encode_target, decode=fn.decode_target,
         window_columns=fn.reg_window_columns, window_row=fn.reg_window_row,
         video_columns=fn.reg_video_columns, video_row=fn.reg_video_row),
    Task(name="classification", help="one class per window from --label-column (softmax)",
         fields=("classes",), record_key=fk.LABEL, value_arg="label",
         labels="--label-column", label_column="label", label_kind="class",
         label_shapes=("video", "segments"), target_frames=False, stats="histogram", class_weights="sample",
         head="softmax", losses=("crossentropy",), train_metrics=("accuracy",),
         checkpoint_metric="accuracy", checkpoint_mode="max", promotion_metric="accuracy",
         accumulator="confusion",
         baseline=Baseline("majority-class baseline", "baseline", "accuracy", "accuracy"),
         aggregates=("mean", "max", "vote"),
         summary_keys=("accuracy", "macro_f1", "top_k_accuracy", "video_accuracy"),
         video_keys=("accuracy", "macro_f1"),
         report="confusion", report_sections=("plot-confusion-counts", "plot-confusion-normalized"),
         headline=(("accuracy", "model.accuracy", "baseline.accuracy"),
                   ("macro F1", "model.macro_f1", "baseline.macro_f1")),
         probabilities=True,
         # Direction is easy once frames are stacked as channels: the fastest model is enough; random
         # crops (never flips: they would swap left and right) keep it from keying on backgrounds.
         demo=DemoPreset("frames_as_channels", {"label_column": "direction", "frames": 6, "stride": 3},
                         {"batch_size": 16, "learning_rate": 0.002, "augment": "crop"}, 30,
                         "direction of motion (4 classes)"),
         check=fn.check_classes(2), encode=fn.encode_label, decode=fn.decode_label,
         window_columns=fn.cls_window_columns, window_row=fn.cls_window_row,
         video_columns=fn.cls_video_columns, video_row=fn.cls_video_row),
    Task(name="next_frame", help="the `horizon` frames after each window (no labels file)",
         fields=("horizon",), record_key=fk.NEXT_FRAMES, value_arg="encoded_next",
         labels="", label_column="label", label_kind="", label_shapes=(), target_frames=True, stats="", class_weights="",
         head="residual_frames", losses=("mse", "mae"), train_metrics=("mae", "rmse"),
         checkpoint_metric="mae", checkpoint_mode="min", promotion_metric="psnr", accumulator="frames",
         baseline=Baseline("copy-last baseline", "baseline_copy_last", "psnr", "PSNR"),
         aggregates=("mean", "max"), summary_keys=("psnr", "ssim", "mse", "mae"), video_keys=("psnr", "ssim"),
         report="frames", report_sections=("plot-frame-grid", "plot-step-metrics"),
         headline=(("PSNR dB", "model.psnr", "baseline_copy_last.psnr"),
                   ("SSIM", "model.ssim", "baseline_copy_last.ssim"),
                   ("MSE", "model.mse", "baseline_copy_last.mse")),
         probabilities=False,
         demo=DemoPreset("frames_as_channels", {"horizon": 1, "frames": 4, "stride": 2},
                         {"batch_size": 16, "learning_rate": 0.002}, 8, "the clip's next frame"),
         check=fn.check_horizon, encode=fn.encode_next, decode=fn.decode_next,
         window_columns=fn.nf_window_columns, window_row=fn.nf_window_row,
         video_columns=fn.nf_video_columns, video_row=fn.nf_video_row),
    Task(name="multilabel", help="a set of classes per window from --label-column, `;`-separated (sigmoids)",
         fields=("classes",), record_key=fk.LABELS, value_arg="label",
         labels="--label-column", label_column="labels", label_kind="class_set",
         label_shapes=("video", "segments", "series"), target_frames=False, stats="class_counts", class_weights="loss",
         head="sigmoid", losses=("bce",), train_metrics=("auc_pr",),
         checkpoint_metric="auc_pr", checkpoint_mode="max", promotion_metric="map", accumulator="ranking",
         baseline=Baseline("class-frequency baseline", "baseline", "map", "mAP"),
         aggregates=("mean", "max"), summary_keys=("map", "gap", "hit_at_1", "micro_f1", "macro_f1"),
         video_keys=("map", "micro_f1"),
         report="ranking", report_sections=("plot-per-class-ap", "plot-pr-curves"),
         headline=(("mAP", "model.map", "baseline.map"), ("GAP@20", "model.gap", "baseline.gap"),
                   ("micro F1", "model.micro_f1", "baseline.micro_f1")),
         probabilities=True,
         # Shapes are spatial: frames as channels is enough. ~42 training clips overfit within 6
         # epochs with crops alone (mAP 0.57); flips (shapes are symmetric), more dropout and no early
         # stop on the noisy val_loss reach mAP 0.84 in 30 epochs; conv3d 0.96 but in 277 s, not 114 s.
         demo=DemoPreset("frames_as_channels", {"label_column": "shapes", "frames": 6, "stride": 3},
                         {"batch_size": 16, "learning_rate": 0.002, "augment": "crop,flip", "dropout": 0.3,
                          "early_stopping_patience": 0}, 30,
                         "which shapes appear (disc, square, ring, cross; 1 to 3 per clip)", extra_shapes=2),
         check=fn.check_classes(1), encode=fn.encode_label_set, decode=fn.decode_label_set,
         window_columns=fn.ml_window_columns, window_row=fn.ml_window_row,
         video_columns=fn.ml_video_columns, video_row=fn.ml_video_row),
)
TASKS: dict[str, Task] = {row.name: row for row in _ROWS}
NAMES = tuple(TASKS)
REGRESSION, CLASSIFICATION, NEXT_FRAME, MULTILABEL = _ROWS  # for code that needs one row by name


class UnknownTask(SetupError, KeyError):
    """A task name that is not in the table (a wrong --task or metadata.json: exit 2)."""

    def __str__(self) -> str:  # the message itself, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""


def task_of(target_or_name) -> Task:
    """The row of a TargetSpec, a task name or a row itself; raises UnknownTask listing the valid names."""
    if isinstance(target_or_name, Task):
        return target_or_name
    name = getattr(target_or_name, "task", target_or_name)
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTask(f"task {name!r} is not one of {' | '.join(NAMES)}") from None


def choices_help() -> str:
    """`name: help` of every task, for --task help texts."""
    return "; ".join(f"{r.name}: {r.help}" for r in _ROWS)


def stats_widths(target) -> tuple[int, int]:
    """(outputs, classes) the ingest's per-video stats accumulator sums."""
    row = task_of(target)
    return (len(target.outputs) if row.stats == "moments" else 0,
            len(target.classes) if row.stats in ("histogram", "class_counts") else 0)


def target_stats(row: Task, windows: int, target_sum: Sequence[float], target_sumsq: Sequence[float],
                 class_hist: Sequence[int], outputs: int, classes: int) -> dict:
    """The task's part of metadata.json `stats` from sums over the training windows."""
    if row.stats == "moments":
        w = max(windows, 1)
        mean = [s / w for s in target_sum] or [0.0] * outputs
        std = [math.sqrt(max(q / w - m * m, 0.0)) for q, m in zip(target_sumsq, mean)] or [0.0] * outputs
        return {"target_mean": mean, "target_std": std}
    if row.stats == "histogram":
        return {"class_histogram": list(class_hist) or [0] * classes}
    if row.stats == "class_counts":
        return {"class_counts": list(class_hist) or [0] * classes}
    return {}


def baseline_needs(row: Task) -> Optional[str]:
    """The stats key an evaluation baseline reads, or None."""
    return {"moments": "target_mean", "histogram": "class_histogram", "class_counts": "class_counts"}.get(row.stats)
