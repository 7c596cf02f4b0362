"""The per-task functions the task table's rows name: spec checks, record features, predict's Parquet rows."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from schemas import example_proto as ex
from schemas import features as fk
from schemas.errors import ClipforgeError
from schemas.measures import frame_psnr


class TaskValueError(ClipforgeError, ValueError):
    """A target value does not fit its task's spec; the codec turns it into a RecordError."""


# ------------------------------------------------------------------ target spec checks
# Each returns (field, value, expected) for the first field that cannot work, or None.

def check_outputs(t):
    return None if len(t.outputs) >= 1 else ("outputs", t.outputs, "at least one regression output name")


def check_classes(minimum: int):
    def check(t):
        if len(t.classes) < minimum:
            return ("classes", t.classes, f"at least {'two class names' if minimum == 2 else 'one class name'}")
        if len(set(t.classes)) != len(t.classes):
            return ("classes", t.classes, "unique class names")
        return None
    return check


def check_horizon(t):
    ok = isinstance(t.horizon, int) and t.horizon >= 1
    return None if ok else ("horizon", t.horizon, "an integer >= 1")


# ------------------------------------------------------------------ record features (numpy)

def encode_target(t, value, video_id: str, start_frame: int, frames_feature) -> dict:
    vals = np.asarray(value, dtype=np.float64).reshape(-1)
    if vals.shape[0] != len(t.outputs):
        raise TaskValueError(f"target of {video_id} has {vals.shape[0]} values, spec wants {len(t.outputs)} "
                             f"({', '.join(t.outputs)})")
    if not np.all(np.isfinite(vals)):
        raise TaskValueError(f"target of {video_id} at frame {start_frame} is not finite: {vals.tolist()}")
    return {fk.TARGET: ex.float_feature(vals)}


def encode_label(t, value, video_id: str, start_frame: int, frames_feature) -> dict:
    if value is None or not 0 <= int(value) < len(t.classes):
        raise TaskValueError(f"label of {video_id} is {value!r}, spec wants an index in [0, {len(t.classes)})")
    return {fk.LABEL: ex.int64_feature([int(value)])}


def encode_label_set(t, value, video_id: str, start_frame: int, frames_feature) -> dict:
    if value is None:
        raise TaskValueError(f"labels of {video_id} are missing, spec wants class indices in [0, {len(t.classes)})")
    idx = sorted({int(v) for v in np.asarray(value).reshape(-1)})
    if idx and not (0 <= idx[0] and idx[-1] < len(t.classes)):
        raise TaskValueError(f"labels of {video_id} are {idx}, spec wants indices in [0, {len(t.classes)})")
    return {fk.LABELS: ex.int64_feature(idx)}


def encode_next(t, value, video_id: str, start_frame: int, frames_feature) -> dict:
    if value is None or len(value) != t.horizon:
        n = None if value is None else len(value)
        raise TaskValueError(f"next_frames of {video_id} has {n} frames, spec wants horizon {t.horizon}")
    return {fk.NEXT_FRAMES: frames_feature(value)}


def decode_target(t, feats: dict, decode_frames):
    v = np.asarray(feats[fk.TARGET], np.float32)
    if v.shape != (len(t.outputs),):
        raise TaskValueError(f"target has {v.shape[0]} values, expected {len(t.outputs)}")
    return v


def decode_label(t, feats: dict, decode_frames):
    v = int(feats[fk.LABEL][0])
    if not 0 <= v < len(t.classes):
        raise TaskValueError(f"label {v} outside [0, {len(t.classes)})")
    return v


def decode_label_set(t, feats: dict, decode_frames):
    v = np.asarray(feats[fk.LABELS], np.int64)
    if v.size and not (v.min() >= 0 and v.max() < len(t.classes)):
        raise TaskValueError(f"labels {v.tolist()} outside [0, {len(t.classes)})")
    return v


def decode_next(t, feats: dict, decode_frames):
    return decode_frames(feats[fk.NEXT_FRAMES], t.horizon)


# ------------------------------------------------------------------ predict's Parquet rows (numpy)
# Column kinds: int64 | float64 | string | list_float64 | list_string (pipelines/predict/transforms.py maps them).

def reg_window_columns(t):
    return [(f"pred_{n}", "float64") for n in t.outputs]


def reg_window_row(t, pred, truth=None, last=None) -> dict:
    return {f"pred_{n}": float(v) for n, v in zip(t.outputs, pred)}


def reg_video_columns(t):
    return [(f"mean_{n}", "float64") for n in t.outputs]


def reg_video_row(t, rows: list) -> dict:
    return {f"mean_{n}": float(np.mean([r[f"pred_{n}"] for r in rows])) for n in t.outputs}


def cls_window_columns(t):
    return [("class_id", "int64"), ("class_name", "string"), ("probabilities", "list_float64")]


def cls_window_row(t, pred, truth=None, last=None) -> dict:
    k = int(np.argmax(pred))
    return {"class_id": k, "class_name": t.classes[k], "probabilities": [float(p) for p in pred]}


def cls_video_columns(t):
    return [("majority_class", "string"), ("mean_probabilities", "list_float64")]


def cls_video_row(t, rows: list) -> dict:
    probs = np.mean([r["probabilities"] for r in rows], axis=0)
    votes = np.bincount([r["class_id"] for r in rows], minlength=len(t.classes))
    # a tied vote goes to the class with the larger mean probability
    best = max(range(len(votes)), key=lambda k: (votes[k], probs[k]))
    return {"majority_class": t.classes[best], "mean_probabilities": [float(p) for p in probs]}


MULTILABEL_THRESHOLD = 0.5  # a class is predicted when its probability is at least this


def predicted_names(classes: Sequence[str], probs) -> list[str]:
    """The class names whose probability is >= MULTILABEL_THRESHOLD, in class order."""
    return [c for c, p in zip(classes, probs) if p >= MULTILABEL_THRESHOLD]


def ml_window_columns(t):
    return [("probabilities", "list_float64"), ("labels", "list_string")]


def ml_window_row(t, pred, truth=None, last=None) -> dict:
    return {"probabilities": [float(p) for p in pred], "labels": predicted_names(t.classes, pred)}


def ml_video_columns(t):
    return [("mean_probabilities", "list_float64"), ("labels", "list_string")]


def ml_video_row(t, rows: list) -> dict:
    probs = np.mean([r["probabilities"] for r in rows], axis=0)
    return {"mean_probabilities": [float(p) for p in probs], "labels": predicted_names(t.classes, probs)}


def nf_window_columns(t):
    return [("frame_path", "string"), ("psnr", "float64"), ("psnr_copy_last", "float64"),
            ("anomaly_score", "float64")]


def nf_window_row(t, pred, truth=None, last=None) -> dict:
    if truth is None:
        return {"psnr": None, "psnr_copy_last": None}
    return {"psnr": frame_psnr(pred, truth), "psnr_copy_last": frame_psnr(np.repeat(last[None], len(truth), 0), truth)}


def nf_video_columns(t):
    return [("mean_psnr", "float64"), ("mean_psnr_copy_last", "float64")]


def nf_video_row(t, rows: list) -> dict:
    vals = [r["psnr"] for r in rows if r["psnr"] is not None]
    base = [r["psnr_copy_last"] for r in rows if r["psnr_copy_last"] is not None]
    return {"mean_psnr": float(np.mean(vals)) if vals else None,
            "mean_psnr_copy_last": float(np.mean(base)) if base else None}


# ------------------------------------------------------------------ TensorFlow parse (lazy import)

def feature_spec(row, target, window) -> dict:
    """The tf.io feature spec of the row's target feature."""
    import tensorflow as tf
    if row.record_key == fk.TARGET:
        return {fk.TARGET: tf.io.FixedLenFeature([len(target.outputs)], tf.float32)}
    if row.record_key == fk.LABEL:
        return {fk.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    if row.record_key == fk.LABELS:
        return {fk.LABELS: tf.io.VarLenFeature(tf.int64)}
    return {fk.NEXT_FRAMES: tf.io.FixedLenFeature([1 if window.encoding == "raw" else target.horizon], tf.string)}


def parse_target(row, target, parsed: dict, decode_frames) -> None:
    """Turns the parsed target feature into the tensor training reads, in place.

    Class sets become a multi-hot float32 [K] vector; frames are decoded to uint8.
    """
    import tensorflow as tf
    if row.record_key == fk.LABELS:
        k = len(target.classes)
        idx = parsed[fk.LABELS].values
        parsed[fk.LABELS] = tf.ensure_shape(
            tf.minimum(tf.reduce_sum(tf.one_hot(idx, k, dtype=tf.float32), axis=0), 1.0), (k,))
    elif row.target_frames:
        parsed[row.record_key] = decode_frames(parsed[row.record_key], target.horizon)


def multi_hot(indices, k: int) -> np.ndarray:
    """[K] float32 with 1 at each class index (numpy twin of the parser's multi-hot)."""
    out = np.zeros(k, np.float32)
    out[np.asarray(indices, np.int64).reshape(-1)] = 1.0
    return out
