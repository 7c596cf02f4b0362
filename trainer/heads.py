"""The task model: uint8 frames -> preprocessing -> an architecture's backbone -> the task head.

One head per task, shared by every architecture. Preprocessing (cropping the K-frame span of
clip_frames, uint8 to float, standardising with the dataset's pixel stats) is the model's first
layers and de-standardising its last, so the SavedModel takes raw T-frame windows and returns
values in the data's units. The backbone's feature vector is the output of the layer named
EMBEDDING_LAYER (the export's `embed` signature).
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from schemas.metadata import DatasetMetadata
from schemas.tasks import task_of
from trainer import TrainerError
from trainer.archs import ARCHS, build_backbone
from trainer.augment import span_start
from trainer.losses import safe_std

EMBEDDING_LAYER = "embedding"


def build_model(meta: DatasetMetadata, cfg) -> keras.Model:
    """Builds the full model for the dataset's task.

    Args:
      meta: the dataset metadata (window spec, target spec, stats).
      cfg: the TrainConfig (arch, arch_options, dropout).

    Returns:
      A keras.Model from uint8 frames [batch, T, H, W, C] to the float32 prediction:
      regression [batch, D]; classification [batch, K] probabilities (softmax); multilabel
      [batch, K] probabilities (sigmoids); next_frame [batch, horizon, H, W, C] pixels on the
      0..255 scale.
    """
    spec, task, stats = meta.spec, task_of(meta.target), meta.stats
    for key in ("pixel_mean", "pixel_std"):
        if len(stats.get(key) or []) != spec.channels:
            raise TrainerError(f"metadata.json stats.{key}={stats.get(key)!r}: expected "
                               f"{spec.channels} value(s), one per channel")
    frames = keras.Input(spec.window_shape, dtype="uint8", name="frames")
    clip = clip_shape(meta, cfg)
    seen = frames
    if clip[0] < spec.frames:
        # The span the input pipeline put there in training; the centre (the end for
        # next_frame) of the window otherwise.
        start = span_start(spec.frames, clip[0], task)
        seen = layers.Cropping3D(((start, spec.frames - clip[0] - start), (0, 0), (0, 0)),
                                 name="clip_frames")(frames)
    # float32 whatever the mixed-precision policy: next_frame adds residuals to these pixels.
    pixels = layers.Rescaling(1.0, dtype="float32", name="pixels")(seen)
    std = safe_std(stats["pixel_std"], floor=1.0)
    mean = [float(m) for m in stats["pixel_mean"]]
    standardized = layers.Rescaling([1.0 / s for s in std], [-m / s for m, s in zip(mean, std)],
                                    name="standardize")(seen)
    backbone = build_backbone(cfg.arch, clip, cfg.arch_options)
    features = backbone(pixels if ARCHS[cfg.arch].takes_pixels else standardized)
    # float32 so the exported embedding has one dtype whatever the precision policy.
    features = layers.Identity(dtype="float32", name=EMBEDDING_LAYER)(features)
    features = layers.Dropout(cfg.dropout, name="head_dropout")(features)
    prediction = HEADS[task.head](features, pixels, standardized, meta, std)
    return keras.Model(frames, prediction, name=f"{cfg.arch}_{task.name}")


def clip_shape(meta: DatasetMetadata, cfg) -> tuple[int, int, int, int]:
    """(K, H, W, C): the window shape the backbone sees after the clip_frames crop."""
    t, h, w, c = meta.spec.window_shape
    k = cfg.clip_length(t) if hasattr(cfg, "clip_length") else t
    return (k, h, w, c)


def embedding_model(model: keras.Model) -> keras.Model:
    """The model from the same uint8 frames to the backbone's feature vector [batch, D]."""
    return keras.Model(model.inputs, model.get_layer(EMBEDDING_LAYER).output, name=f"{model.name}_embed")


def regression_head(features, pixels, standardized, meta: DatasetMetadata, std):
    """D linear outputs, de-standardised with the target stats so they come out in data units."""
    d = len(meta.target.outputs)
    mean = meta.stats.get("target_mean") or [0.0] * d
    std = safe_std(meta.stats.get("target_std") or [1.0] * d)
    if len(mean) != d or len(std) != d:
        raise TrainerError(f"metadata.json stats.target_mean/target_std have {len(mean)}/{len(std)} "
                           f"values, expected {d} ({', '.join(meta.target.outputs)})")
    x = layers.Dense(d, dtype="float32", name="regression_dense")(features)
    # An untrained model predicts roughly the training mean instead of roughly zero.
    return layers.Rescaling(std, [float(m) for m in mean], dtype="float32", name="prediction")(x)


def classification_head(features, pixels, standardized, meta: DatasetMetadata, std):
    """K-way softmax (float32 even under mixed precision, so probabilities sum to 1)."""
    logits = layers.Dense(len(meta.target.classes), dtype="float32", name="logits")(features)
    return layers.Softmax(dtype="float32", name="prediction")(logits)


def multilabel_head(features, pixels, standardized, meta: DatasetMetadata, std):
    """One logit per class through a sigmoid: independent probabilities, one per class.

    The bias starts at the log-odds of each class's training frequency (stats.class_counts), so
    an untrained model predicts the class-frequency baseline rather than 0.5 everywhere.
    """
    k = len(meta.target.classes)
    counts = meta.stats.get("class_counts") or []
    windows = meta.stats.get("windows") or 0
    bias = "zeros"
    if len(counts) == k and windows:
        freq = np.clip(np.asarray(counts, np.float64) / windows, 1e-3, 1 - 1e-3)
        bias = keras.initializers.Constant(np.log(freq / (1 - freq)).tolist())
    logits = layers.Dense(k, dtype="float32", bias_initializer=bias, name="logits")(features)
    return layers.Activation("sigmoid", dtype="float32", name="prediction")(logits)


def next_frame_head(features, pixels, standardized, meta: DatasetMetadata, std):
    """Decodes `horizon` frames as a residual over the window's last frame.

    The last conv is zero-initialised, so before training the prediction is exactly the last
    input frame repeated (the copy-last baseline) and training only has to learn the change.
    """
    t, h, w, c = pixels.shape[1:]  # t is K, the frames left after the clip_frames crop
    horizon = meta.target.horizon
    # Upsample x2 per step from a coarse grid, at most 3 steps, fewer for tiny frames.
    steps = max(0, min(3, int(math.log2(max(1, min(h, w)))) - 2))
    gh, gw, width = math.ceil(h / 2 ** steps), math.ceil(w / 2 ** steps), 32
    x = layers.Dense(gh * gw * width, activation="relu", name="decoder_dense")(features)
    x = layers.Reshape((gh, gw, width), name="decoder_grid")(x)
    for i in range(steps):
        x = layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu",
                                   name=f"decoder_up{i}")(x)
    extra_h, extra_w = gh * 2 ** steps - h, gw * 2 ** steps - w
    if extra_h or extra_w:
        x = layers.Cropping2D(((0, extra_h), (0, extra_w)), name="decoder_crop")(x)
    # The last frames at full resolution give the decoder the detail the feature vector lacks:
    # with two or more of them a few local convolutions can see where the motion goes.
    k = min(t, 3)
    recent = layers.Cropping3D(((t - k, 0), (0, 0), (0, 0)), name="recent_frames_std")(standardized)
    recent = layers.Permute((2, 3, 1, 4), name="recent_frames_hwtc")(recent)
    recent = layers.Reshape((h, w, k * c), name="recent_frames_2d")(recent)
    x = layers.Concatenate(axis=-1, name="decoder_skip")([x, recent])
    # Dilated convolutions widen the view to ~15 px at full resolution, enough for objects that
    # move several pixels per frame, without pooling away their position.
    for i, rate in enumerate((1, 2, 4)):
        x = layers.Conv2D(width, 3, padding="same", dilation_rate=rate, activation="relu",
                          name=f"decoder_conv{i}")(x)
    x = layers.Conv2D(horizon * c, 3, padding="same", kernel_initializer="zeros",
                      bias_initializer="zeros", dtype="float32", name="decoder_residual")(x)
    x = layers.Reshape((h, w, horizon, c), name="residual_split")(x)
    x = layers.Permute((3, 1, 2, 4), name="residual_frames")(x)          # [batch, horizon, H, W, C]
    residual = layers.Rescaling(std, dtype="float32", name="residual_to_pixels")(x)
    last = layers.Cropping3D(((t - 1, 0), (0, 0), (0, 0)), name="last_frame")(pixels)
    if horizon > 1:
        last = layers.UpSampling3D((horizon, 1, 1), name="repeat_last_frame")(last)
    return layers.Add(dtype="float32", name="prediction")([last, residual])


# The head of each task row (schemas/tasks.py `head`).
HEADS = {"linear": regression_head, "softmax": classification_head, "sigmoid": multilabel_head,
         "residual_frames": next_frame_head}
