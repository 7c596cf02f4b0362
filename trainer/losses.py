"""Task losses and metrics, computed in standardised units so one learning rate suits every dataset."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from schemas.tasks import task_of


@keras.saving.register_keras_serializable(package="clipforge")
class StandardizedLoss(keras.losses.Loss):
    """mse | mae | huber of (y_true - y_pred) / scale, plus an optional (1 - SSIM) term.

    Regression outputs and next-frame pixels are predicted in the data's own units (the
    SavedModel contract), but their scales differ by orders of magnitude between datasets.
    Dividing by the dataset's std makes the loss, and so the useful learning rate, comparable.

    Args:
      kind: mse | mae | huber (huber's delta is 1 std).
      scale: per-channel (last axis) std, broadcast over the other axes.
      ssim_weight: weight of (1 - SSIM) over frames [batch, horizon, H, W, C] on the 0..255 scale.
    """

    def __init__(self, kind: str = "mse", scale=(1.0,), ssim_weight: float = 0.0,
                 name: str = "standardized_loss", reduction: str = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.kind = kind
        self.scale = [float(s) for s in np.ravel(scale)]
        self.ssim_weight = float(ssim_weight)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        diff = (y_true - y_pred) / ops.convert_to_tensor(self.scale, "float32")
        if self.kind == "mse":
            err = ops.square(diff)
        elif self.kind == "mae":
            err = ops.abs(diff)
        else:  # huber, delta 1
            a = ops.abs(diff)
            err = ops.where(a <= 1.0, 0.5 * ops.square(a), a - 0.5)
        axes = tuple(range(1, len(err.shape)))
        loss = ops.mean(err, axis=axes) if axes else err
        if self.ssim_weight:
            loss = loss + self.ssim_weight * (1.0 - frame_ssim(y_true, y_pred))
        return loss

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "scale": self.scale,
                "ssim_weight": self.ssim_weight}


@keras.saving.register_keras_serializable(package="clipforge")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy of multi-hot targets, each class's positives weighted by pos_weight[k].

    Args:
      pos_weight: [K] weight of a positive of class k (1 everywhere: plain BCE).
    """

    def __init__(self, pos_weight=(1.0,), name: str = "bce", reduction: str = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.pos_weight = [float(w) for w in np.ravel(pos_weight)]

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
        w = ops.convert_to_tensor(self.pos_weight, "float32")
        err = -(w * y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        return ops.mean(err, axis=-1)

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight}


def balanced_pos_weight(stats: dict, k: int) -> list[float]:
    """Per-class positive weights (windows without the class / windows with it), in [1, 100].

    From stats.class_counts and stats.windows; a class with no positive gets 1.
    """
    counts = stats.get("class_counts") or []
    n = float(stats.get("windows") or 0)
    if len(counts) != k or n <= 0:
        raise ValueError(f"class_weights=balanced needs stats.class_counts with {k} counts and stats.windows, "
                         f"got {counts!r}")
    return [float(np.clip((n - c) / c, 1.0, 100.0)) if c else 1.0 for c in counts]


def frame_ssim(y_true, y_pred):
    """Mean SSIM per sample of frames [batch, horizon, H, W, C] on the 0..255 scale."""
    shape = tf.shape(y_true)
    h, w, c = y_true.shape[-3], y_true.shape[-2], y_true.shape[-1]
    flat = lambda t: tf.reshape(t, (-1, h, w, c))
    # The default 11x11 window does not fit tiny frames; SSIM needs the window inside the image.
    size = min(11, h, w)
    s = tf.image.ssim(flat(y_true), flat(y_pred), max_val=255.0, filter_size=size)
    return tf.reduce_mean(tf.reshape(s, (shape[0], -1)), axis=1)


def checkpoint_metric(task) -> tuple[str, str]:
    """(Keras metric name, min | max) the best checkpoint of `task` keeps (schemas/tasks.py)."""
    row = task_of(task)
    return row.checkpoint_metric, row.checkpoint_mode


def _standardized(kind: str, stats: dict, ssim_weight: float, balanced: bool, k: int):
    return StandardizedLoss(kind, safe_std(stats.get("target_std")))


def _frames(kind: str, stats: dict, ssim_weight: float, balanced: bool, k: int):
    return StandardizedLoss(kind, safe_std(stats["pixel_std"], floor=1.0), ssim_weight=ssim_weight)


def _crossentropy(kind: str, stats: dict, ssim_weight: float, balanced: bool, k: int):
    return keras.losses.SparseCategoricalCrossentropy(name="crossentropy")


def _bce(kind: str, stats: dict, ssim_weight: float, balanced: bool, k: int):
    return WeightedBinaryCrossentropy(balanced_pos_weight(stats, k) if balanced else [1.0] * k)


# Per task row (by its head), the loss builder for its --loss names.
LOSS_BUILDERS = {"linear": _standardized, "residual_frames": _frames, "softmax": _crossentropy,
                 "sigmoid": _bce}
# The Keras metrics a task row names in train_metrics; in data units (regression outputs, or
# pixel values on the 0..255 scale) for mae/rmse.
METRICS = {
    "mae": lambda: keras.metrics.MeanAbsoluteError(name="mae"),
    "rmse": lambda: keras.metrics.RootMeanSquaredError(name="rmse"),
    "accuracy": lambda: keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
    # Area under the precision-recall curve over every (window, class) pair: close to mAP.
    "auc_pr": lambda: keras.metrics.AUC(curve="PR", multi_label=False, name="auc_pr"),
}


def task_loss(task, kind: str, stats: dict, ssim_weight: float = 0.0, balanced: bool = False, width: int = 1):
    """The compiled loss for `task` (row or name) with dataset `stats` (metadata.json "stats").

    balanced: class-balanced positive weights, for a row whose class_weights go in the loss;
    width: the model's output width (K classes).
    """
    return LOSS_BUILDERS[task_of(task).head](kind, stats, ssim_weight, balanced, width)


def task_metrics(task) -> list:
    """Metrics reported every epoch (the task row's train_metrics)."""
    return [METRICS[name]() for name in task_of(task).train_metrics]


def safe_std(std, floor: float = 1e-3) -> list[float]:
    """Standard deviations with a floor: a constant channel or target must not divide by zero."""
    if std is None:
        return [1.0]
    return [max(float(s), floor) if np.isfinite(s) else 1.0 for s in np.ravel(std)]
