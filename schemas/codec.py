"""One codec per (window spec, target spec): the numpy encoder and the TensorFlow parser.

Both halves are built here from the same spec so a dataset cannot be written one way and read
another. The encoder needs only numpy, Pillow and isal (Beam workers never import TensorFlow); the
parser imports TensorFlow lazily.
"""
from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from schemas import example_proto as ex
from schemas import features as fk
from schemas.errors import ClipforgeError
from schemas.png import encode_png
from schemas.spec import TargetSpec, WindowSpec
from schemas.tasks import TaskValueError, feature_spec, parse_target, task_of


class RecordError(ClipforgeError, ValueError):
    """A record or frame does not match the dataset spec."""


class RecordCodec:
    """Encodes windows to serialized tf.train.Example bytes and parses them back.

    Args:
      window: the WindowSpec of the dataset.
      target: the TargetSpec of the dataset.
    """

    def __init__(self, window: WindowSpec, target: TargetSpec):
        self.window = window
        self.target = target
        self.task = task_of(target)

    # ---------------- encode (numpy in, bytes out) ----------------
    def encode_frame(self, frame: np.ndarray) -> bytes:
        """Encodes one uint8 frame of shape (H, W, C) as the spec's encoding."""
        w = self.window
        if frame.shape != w.frame_shape or frame.dtype != np.uint8:
            raise RecordError(f"frame has shape {frame.shape} {frame.dtype}, spec wants {w.frame_shape} uint8")
        if w.encoding == "raw":
            return np.ascontiguousarray(frame).tobytes()
        if w.encoding == "png":
            return encode_png(frame)
        img = Image.fromarray(frame[:, :, 0] if w.channels == 1 else frame, "L" if w.channels == 1 else "RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=w.jpeg_quality)
        return buf.getvalue()

    def _frames_feature(self, encoded: Sequence[bytes]) -> bytes:
        if self.window.encoding == "raw":
            return ex.bytes_feature([b"".join(encoded)])
        return ex.bytes_feature(encoded)

    def serialize(self, video_id: str, start_frame: int, start_time: float,
                  encoded_frames: Sequence[bytes], target: Optional[Sequence[float]] = None,
                  label: Optional[int] = None,
                  encoded_next: Optional[Sequence[bytes]] = None, padded_frames: int = 0) -> bytes:
        """Builds one record from frames already passed through `encode_frame`.

        Taking encoded frames lets ingest encode each frame once even when windows overlap.
        padded_frames: how many of the window's last frames (horizon included) repeat its last
        real frame (--short-videos pad); 0 for a normal window.
        """
        w, t = self.window, self.target
        if len(encoded_frames) != w.frames:
            raise RecordError(f"window of {video_id} has {len(encoded_frames)} frames, spec wants {w.frames}")
        feats = {
            fk.VIDEO_ID: ex.bytes_feature([video_id.encode("utf-8", "surrogateescape")]),
            fk.START_FRAME: ex.int64_feature([start_frame]),
            fk.START_TIME: ex.float_feature([start_time]),
            fk.FRAMES: self._frames_feature(encoded_frames),
            fk.PADDED_FRAMES: ex.int64_feature([int(padded_frames)]),
        }
        value = {"target": target, "label": label, "encoded_next": encoded_next}[self.task.value_arg]
        try:
            feats.update(self.task.encode(t, value, video_id, start_frame, self._frames_feature))
        except TaskValueError as e:
            raise RecordError(str(e)) from None
        return ex.serialize_example(feats)

    def encode_window(self, video_id: str, start_frame: int, frames: np.ndarray,
                      target=None, label=None, next_frames: Optional[np.ndarray] = None) -> bytes:
        """Convenience: encodes a (T, H, W, C) uint8 window and serializes it."""
        enc = [self.encode_frame(f) for f in frames]
        nxt = None if next_frames is None else [self.encode_frame(f) for f in next_frames]
        return self.serialize(video_id, start_frame, start_frame / self.window.fps, enc, target, label, nxt)

    # ---------------- decode without TensorFlow (validate, tests) ----------------
    def _decode_frames_np(self, values: list, count: int) -> np.ndarray:
        w = self.window
        if w.encoding == "raw":
            if len(values) != 1:
                raise RecordError(f"raw frames feature holds {len(values)} buffers, expected 1")
            arr = np.frombuffer(values[0], np.uint8)
            if arr.size != count * w.height * w.width * w.channels:
                raise RecordError(f"raw buffer has {arr.size} bytes, expected {count}x{w.frame_shape}")
            return arr.reshape((count,) + w.frame_shape)
        if len(values) != count:
            raise RecordError(f"record holds {len(values)} frames, expected {count}")
        out = np.empty((count,) + w.frame_shape, np.uint8)
        for i, b in enumerate(values):
            img = np.asarray(Image.open(io.BytesIO(b)).convert("L" if w.channels == 1 else "RGB"))
            if img.shape[:2] != (w.height, w.width):
                raise RecordError(f"frame {i} decodes to {img.shape[:2]}, expected {(w.height, w.width)}")
            out[i] = img.reshape(w.frame_shape)
        return out

    def decode_numpy(self, record: bytes) -> dict:
        """Parses and decodes one record with numpy/Pillow only; raises RecordError on a mismatch."""
        try:
            feats = ex.parse_example(record)
        except ValueError as e:
            raise RecordError(f"record is not a valid tf.train.Example: {e}") from e
        required = [fk.VIDEO_ID, fk.START_FRAME, fk.START_TIME, fk.FRAMES]
        required.append(self.task.record_key)
        missing = [k for k in required if k not in feats]
        if missing:
            raise RecordError(f"record lacks feature(s) {missing}")
        out = {
            fk.VIDEO_ID: feats[fk.VIDEO_ID][0].decode("utf-8", "surrogateescape"),
            fk.START_FRAME: int(feats[fk.START_FRAME][0]),
            fk.START_TIME: float(feats[fk.START_TIME][0]),
            fk.FRAMES: self._decode_frames_np(feats[fk.FRAMES], self.window.frames),
            # datasets written before --short-videos have no padded_frames: none is padded
            fk.PADDED_FRAMES: int(feats[fk.PADDED_FRAMES][0]) if fk.PADDED_FRAMES in feats else 0,
        }
        try:
            out[self.task.record_key] = self.task.decode(self.target, feats, self._decode_frames_np)
        except TaskValueError as e:
            raise RecordError(str(e)) from None
        return out

    # ---------------- parse with TensorFlow (trainer, serving signature) ----------------
    def feature_spec(self, with_target: bool = True) -> dict:
        """The tf.io feature spec for tf.io.parse_example / parse_single_example.

        with_target=False leaves the target out, for records of unlabelled windows (serving).
        """
        import tensorflow as tf
        spec = {
            fk.VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
            fk.START_FRAME: tf.io.FixedLenFeature([], tf.int64),
            fk.START_TIME: tf.io.FixedLenFeature([], tf.float32),
            fk.FRAMES: tf.io.FixedLenFeature([1 if self.window.encoding == "raw" else self.window.frames], tf.string),
            fk.PADDED_FRAMES: tf.io.FixedLenFeature([], tf.int64, default_value=0),  # absent in older datasets
        }
        if not with_target:
            return spec
        spec.update(feature_spec(self.task, self.target, self.window))
        return spec

    def _decode_frames_tf(self, encoded, count: int):
        import tensorflow as tf
        w = self.window
        shape = (count,) + w.frame_shape
        if w.encoding == "raw":
            frames = tf.reshape(tf.io.decode_raw(encoded[0], tf.uint8), shape)
        else:
            if w.encoding == "png":
                decode = lambda b: tf.io.decode_png(b, channels=w.channels)
            else:  # the accurate IDCT, as Pillow uses, so both readers see the same pixels
                decode = lambda b: tf.io.decode_jpeg(b, channels=w.channels, dct_method="INTEGER_ACCURATE")
            frames = tf.map_fn(decode, encoded,
                               fn_output_signature=tf.TensorSpec((None, None, w.channels), tf.uint8))
        return tf.ensure_shape(frames, shape)

    def parse_fn(self, with_target: bool = True):
        """Returns fn(serialized scalar string) -> dict of tensors, frames decoded to uint8.

        Keys: video_id, start_frame, start_time, padded_frames () int64 (0 when the record has
        none), frames (T, H, W, C) uint8, and the target:
        target (D,) float32 | label () int64 | labels (K,) float32 multi-hot |
        next_frames (horizon, H, W, C) uint8
        (with_target=False: no target key, and records without one parse).
        """
        import tensorflow as tf
        spec = self.feature_spec(with_target)

        def parse(serialized):
            f = tf.io.parse_single_example(serialized, spec)
            f[fk.FRAMES] = self._decode_frames_tf(f[fk.FRAMES], self.window.frames)
            if self.task.record_key in f:
                parse_target(self.task, self.target, f, self._decode_frames_tf)
            return f

        return parse
