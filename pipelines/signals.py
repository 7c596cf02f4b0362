"""Per-video drift signals: exact sums over the decoded frames that add up across segments."""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Iterator, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class VideoSignals:
    """One segment's (or video's) signal sums, as predict's decode emits them.

    Attributes:
      video_id: the video.
      index: the segment's index (0 for a whole decode).
      sums: `FrameSignals.sums`.
      facts: the probe's header facts (`VideoInfo.facts()`), {} when unknown.
    """

    video_id: str
    index: int
    sums: tuple
    facts: dict


class FrameSignals:
    """Exact integer sums over a segment's decoded frames, which add up across segments.

    Pixels: every value of every frame the segment owns (frames start .. end - 1 of the whole
    decode), so each frame of the video is counted once. Motion: |frame j - frame j-1| over
    every value, counted by the segment that owns frame j-1 (a segment decodes span - 1 frames
    of the next one, so it holds frame end too). All frames decoded count, in windows or not,
    labelled or not: the signals describe the video, not the dataset's windows.

    Args:
      owned: frames this segment owns (end - start); None: all it decodes.
    """

    def __init__(self, owned: Optional[int] = None):
        self.owned = owned
        self.values = self.total = self.sumsq = self.motion_sum = self.motion_values = 0
        self._prev: Optional[np.ndarray] = None
        self._index = 0
        self._buf: dict[str, np.ndarray] = {}

    def _owns(self, i: int) -> bool:
        return self.owned is None or i < self.owned

    def _scratch(self, name: str, like: np.ndarray, dtype) -> np.ndarray:
        buf = self._buf.get(name)
        if buf is None or buf.shape != like.shape:
            buf = self._buf[name] = np.empty(like.shape, dtype)
        return buf

    def add(self, pixels: np.ndarray) -> None:
        """Adds the segment's next decoded frame (uint8, any shape).

        Three passes over the frame in place (sum, squares, |difference|), each summed in uint32
        chunks that cannot wrap: about a tenth of the time the int64 arithmetic takes.
        """
        i = self._index
        x = pixels.reshape(-1)
        if self._owns(i):
            self.values += x.size
            self.total += _exact_sum(x, 255)
            sq = self._scratch("sq", x, np.uint16)
            np.square(x, out=sq, dtype=np.uint16)  # 255 ** 2 < 2 ** 16
            self.sumsq += _exact_sum(sq, 255 ** 2)
        if self._prev is not None and self._owns(i - 1) and self._prev.shape == x.shape:
            hi, lo = self._scratch("hi", x, np.uint8), self._scratch("lo", x, np.uint8)
            np.maximum(x, self._prev, out=hi)
            np.minimum(x, self._prev, out=lo)
            np.subtract(hi, lo, out=hi)  # |a - b| without leaving uint8
            self.motion_sum += _exact_sum(hi, 255)
            self.motion_values += x.size
        self._prev = x if self._owns(i) else None
        self._index += 1

    def watch(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Passes `frames` through, adding each."""
        for pixels in frames:
            self.add(pixels)
            yield pixels

    @property
    def sums(self) -> tuple:
        """(values, sum, sum of squares, motion sum, motion values): add these to combine segments."""
        return (self.values, self.total, self.sumsq, self.motion_sum, self.motion_values)


def _exact_sum(v: np.ndarray, top: int) -> int:
    """The sum of a 1-D unsigned array whose values are at most `top`, in uint32 chunks that cannot wrap."""
    step = (2 ** 32 - 1) // top
    if v.size <= step:
        return int(v.sum(dtype=np.uint32))
    return sum(int(v[k:k + step].sum(dtype=np.uint32)) for k in range(0, v.size, step))


def signal_columns(sums: tuple) -> dict:
    """videos.parquet's pixel_mean, pixel_std, motion_energy (0..255 scale) from `FrameSignals.sums`."""
    if len(sums) != 5 or not sums[0]:
        return {"pixel_mean": None, "pixel_std": None, "motion_energy": None}
    n, s, q, ms, mn = sums
    mean = s / n
    return {"pixel_mean": mean, "pixel_std": math.sqrt(max(q / n - mean * mean, 0.0)),
            "motion_energy": ms / mn if mn else None}


def signal_row(video_id: str, sums: tuple, facts: dict) -> dict:
    """A row with every signal's inputs, as a manifest row holds them (predict's videos)."""
    keys = ("codec", "width", "height", "rotation", "source_fps", "duration")
    return {"video_id": video_id, **{k: (facts or {}).get(k) for k in keys}, **signal_columns(sums)}


def combine(parts: Iterable[VideoSignals]) -> dict:
    """One video's signal row from its segments' sums."""
    parts = sorted(parts, key=lambda p: p.index)
    sums = tuple(sum(v) for v in zip(*[p.sums for p in parts]))
    facts = next((p.facts for p in parts if p.facts), {})
    return signal_row(parts[0].video_id, sums, facts)
