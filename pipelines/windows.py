"""Windows over a frame stream: a ring buffer that yields each window as soon as it fills."""
from __future__ import annotations

import collections
from typing import Callable, Iterable, Iterator, Optional

import numpy as np


class Frame:
    """One decoded frame in the ring buffer, with its encoding computed at most once.

    Overlapping windows (stride < frames) share Frame objects, so a frame that lands in
    several windows is still encoded once.

    Attributes:
      index: the frame's position in the resampled stream (0-based).
      pixels: uint8 array (H, W, C).
    """

    __slots__ = ("index", "pixels", "_encoded")

    def __init__(self, index: int, pixels: np.ndarray):
        self.index = index
        self.pixels = pixels
        self._encoded: Optional[bytes] = None

    @property
    def is_encoded(self) -> bool:
        return self._encoded is not None

    def encoded(self, encode: Callable[[np.ndarray], bytes]) -> bytes:
        """The frame's bytes from `encode`, computed on first use and cached."""
        if self._encoded is None:
            self._encoded = encode(self.pixels)
        return self._encoded


def iter_windows(frames: Iterable[np.ndarray], length: int, stride: int,
                 horizon: int = 0, pad: bool = False) -> Iterator[tuple[int, list[Frame]]]:
    """Yields (start_frame, frames) for every complete window, as soon as its last frame arrives.

    A window starting at frame s holds frames s .. s+length-1 and, when horizon > 0, the next
    `horizon` frames s+length .. s+length+horizon-1 (the next_frame target) after them. Starts
    are 0, stride, 2*stride, ...; a window whose frames (horizon included) run past the end of
    the stream is not produced. Only the last length+horizon frames are held, so memory does
    not grow with the video's length.

    Args:
      frames: the stream of decoded frames.
      length: frames per window (T).
      stride: frames between consecutive window starts.
      horizon: extra frames after each window.
      pad: a stream of at least one frame but shorter than length+horizon yields one window at
        frame 0 whose last frames repeat its last frame (the same Frame object, so it is
        encoded and counted once); `padded_frames` tells how many.

    Yields:
      (start_frame, list of length+horizon Frame objects).
    """
    span = length + horizon
    ring: collections.deque[Frame] = collections.deque(maxlen=span)
    for i, pixels in enumerate(frames):
        ring.append(Frame(i, pixels))
        start = i - span + 1
        if start >= 0 and start % stride == 0:
            yield start, list(ring)
    if pad and 0 < len(ring) < span:
        yield 0, list(ring) + [ring[-1]] * (span - len(ring))


def padded_frames(start: int, window: list[Frame]) -> int:
    """How many of a window's frames (horizon included) repeat its last real frame: 0 unless padded."""
    return start + len(window) - 1 - window[-1].index


def count_windows(num_frames: int, length: int, stride: int, horizon: int = 0) -> int:
    """How many windows `iter_windows` yields for a stream of `num_frames` frames."""
    span = length + horizon
    return 0 if num_frames < span else (num_frames - span) // stride + 1


def last_frame_time(start_frame: int, length: int, fps: float) -> float:
    """Time in seconds of a window's last input frame: the time its label is read at."""
    return (start_frame + length - 1) / fps
