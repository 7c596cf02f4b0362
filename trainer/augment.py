"""Training-time augmentation of one parsed window: temporal spans, and transforms applied alike to all frames."""
from __future__ import annotations

import tensorflow as tf

from schemas.tasks import task_of


def span_start(frames: int, clip_frames: int, task) -> int:
    """Where the model's K-frame crop starts in a T-frame window: the centre, or the end for frame targets.

    A task whose target is the frames after the window (next_frame) crops the last K frames: the
    span the model sees must end where its target starts. `task`: a row of schemas/tasks.py or its name.
    """
    return frames - clip_frames if task_of(task).target_frames else (frames - clip_frames) // 2


def temporal_span_fn(frames: int, clip_frames: int, strides: tuple[int, ...], task: str):
    """Returns fn(batch, seed) placing a random K-frame span where the model's crop reads it.

    Each window's span starts at a random offset (fixed at the end for next_frame) and steps a
    stride drawn from `strides`; it is written into the window at span_start(), so the model,
    which always crops that position, sees the random span in training and the centre (or last)
    frames at stride 1 when evaluated or served. The other positions hold neighbouring frames and
    are cropped away. The function works on a whole batch [B, T, H, W, C] (one draw per window)
    so the input pipeline pays a few ops per batch, not per window. None when there is nothing to
    draw (K = T at stride 1).
    """
    if clip_frames >= frames and tuple(strides) == (1,):
        return None
    start = span_start(frames, clip_frames, task)
    at_end = task_of(task).target_frames
    choices = tf.constant(strides, tf.int32)

    def apply(batch, seed):
        n = tf.shape(batch)[0]
        seeds = tf.random.experimental.stateless_split(seed, 2)
        stride = tf.gather(choices, tf.random.stateless_uniform([n], seeds[0], 0, len(strides), dtype=tf.int32))
        last_offset = frames - 1 - stride * (clip_frames - 1)
        if at_end:
            offset = last_offset
        else:
            offset = tf.random.stateless_uniform([n], seeds[1], 0, tf.int32.max, dtype=tf.int32) % (last_offset + 1)
        index = offset[:, None] + stride[:, None] * (tf.range(frames) - start)[None, :]
        return tf.gather(batch, tf.clip_by_value(index, 0, frames - 1), batch_dims=1)

    return apply


def augment_fn(names: tuple[str, ...], task: str):
    """Returns fn(frames, target, seed) -> (frames, target) applying the named augmentations.

    Only stateless random ops are used, driven by a per-window seed that the input pipeline
    derives from the epoch's shuffle seed with `scan()` (trainer/input.py; a second source dataset
    such as Dataset.random would break FILE auto-sharding): no random-generator state is captured in the dataset
    graph, which tf.distribute must be able to copy to every worker.

    Args:
      names: any of crop, flip, jitter, brightness (TrainConfig.augmentations()).
      task: the dataset task (row or name); where the target is frames the spatial ones move them too.

    Returns:
      A function of (uint8 frames [T, H, W, C], target, int64 seed [2]), or None when `names`
      is empty.
    """
    if not names:
        return None
    with_target = task_of(task).target_frames

    def apply(frames, target, seed):
        t = frames.shape[0]
        seeds = tf.random.experimental.stateless_split(seed, 4)
        # Spatial changes must hit the window and the frames it predicts alike.
        stack = tf.concat([frames, target], axis=0) if with_target else frames
        if "crop" in names:
            stack = random_shift_crop(stack, seeds[0])
        if "flip" in names:
            flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
            stack = tf.cond(flip, lambda: tf.reverse(stack, axis=[2]), lambda: stack)
        if "brightness" in names:
            delta = tf.random.stateless_uniform([], seeds[2], -20.0, 20.0)
            stack = tf.cast(tf.clip_by_value(tf.cast(stack, tf.float32) + delta, 0, 255), tf.uint8)
        if with_target:
            frames, target = stack[:t], stack[t:]
        else:
            frames = stack
        if "jitter" in names:
            frames = temporal_jitter(frames, seeds[3])
        return frames, target

    return apply


def random_shift_crop(stack, seed, fraction: float = 0.125):
    """Pads H and W by `fraction` with edge pixels, then crops back at a random offset."""
    h, w = stack.shape[1], stack.shape[2]
    ph, pw = max(1, int(h * fraction)), max(1, int(w * fraction))
    padded = tf.pad(stack, [[0, 0], [ph, ph], [pw, pw], [0, 0]], mode="SYMMETRIC")
    return tf.image.stateless_random_crop(padded, tf.shape(stack), seed)


def temporal_jitter(frames, seed):
    """Shifts the window by -1, 0 or +1 frame, repeating the edge frame into the gap.

    The window's target belongs to its last frame; a one-frame shift teaches tolerance to the
    frame-level misalignment that resampling to a fixed fps introduces.
    """
    t = frames.shape[0]
    if t < 3:
        return frames
    shift = tf.random.stateless_uniform([], seed, -1, 2, dtype=tf.int32)
    index = tf.clip_by_value(tf.range(t) + shift, 0, t - 1)
    return tf.gather(frames, index)
