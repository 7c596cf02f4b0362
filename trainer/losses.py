"""Task losses and metrics, computed in standardised units so one learning rate suits every dataset."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# The metric each task is judged and checkpointed by, and whether higher is better.
PRIMARY_METRIC = {"regression": ("mae", "min"), "classification": ("accuracy", "max"),
                  "next_frame": ("mae", "min")}


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


def frame_ssim(y_true, y_pred):
    """Mean SSIM per sample of frames [batch, horizon, H, W, C] on the 0..255 scale."""
    shape = tf.shape(y_true)
    h, w, c = y_true.shape[-3], y_true.shape[-2], y_true.shape[-1]
    flat = lambda t: tf.reshape(t, (-1, h, w, c))
    # The default 11x11 window does not fit tiny frames; SSIM needs the window inside the image.
    size = min(11, h, w)
    s = tf.image.ssim(flat(y_true), flat(y_pred), max_val=255.0, filter_size=size)
    return tf.reduce_mean(tf.reshape(s, (shape[0], -1)), axis=1)


def task_loss(task: str, kind: str, stats: dict, ssim_weight: float = 0.0):
    """The compiled loss for `task` with dataset `stats` (metadata.json "stats")."""
    if task == "classification":
        return keras.losses.SparseCategoricalCrossentropy(name="crossentropy")
    if task == "regression":
        return StandardizedLoss(kind, safe_std(stats.get("target_std")))
    return StandardizedLoss(kind, safe_std(stats["pixel_std"], floor=1.0), ssim_weight=ssim_weight)


def task_metrics(task: str) -> list:
    """Metrics reported every epoch; the first one is PRIMARY_METRIC[task]."""
    if task == "classification":
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    # In data units: regression outputs, or pixel values on the 0..255 scale.
    return [keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.RootMeanSquaredError(name="rmse")]


def safe_std(std, floor: float = 1e-3) -> list[float]:
    """Standard deviations with a floor: a constant channel or target must not divide by zero."""
    if std is None:
        return [1.0]
    return [max(float(s), floor) if np.isfinite(s) else 1.0 for s in np.ravel(std)]
