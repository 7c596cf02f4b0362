"""Dataset statistics: exact per-video sums combined into per-split counts and training-split stats."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from pipelines.ingest.leakage import merge_signatures
from schemas.tasks import target_stats, task_of


@dataclasses.dataclass
class VideoSummary:
    """What one video contributed; summed over videos by `DatasetStats`.

    Attributes:
      video_id, split: the video and the split it went to.
      windows: records written.
      frames_decoded: frames read off ffmpeg (after fps resampling).
      unlabelled_windows: windows dropped because no label row covered their last frame.
      padded_windows: windows written with repeated last frames (--short-videos pad).
      partial: "" or what went wrong in a decode that still gave windows (they are kept).
      pixel_count, pixel_sum, pixel_sumsq: over every frame stored (each frame once), per channel.
      target_sum, target_sumsq: regression, over windows; class_hist: windows per class
        (classification; multilabel: windows holding each class).
      path: the video's file.
      facts: its header facts (`VideoInfo.facts()`), for videos.parquet.
      sha256: of its bytes ("" when not hashed).
      signature: its content signature (pipelines/ingest/leakage.py): per segment, (frame, thumbnail bytes)
        samples; after `merge_summaries`, thumbnail bytes in frame order.
      signals: the drift signals' exact sums over every decoded frame (`signals.FrameSignals.sums`).
    """

    video_id: str
    split: str
    windows: int = 0
    frames_decoded: int = 0
    unlabelled_windows: int = 0
    padded_windows: int = 0
    partial: str = ""
    pixel_count: int = 0
    pixel_sum: tuple = ()
    pixel_sumsq: tuple = ()
    target_sum: tuple = ()
    target_sumsq: tuple = ()
    class_hist: tuple = ()
    path: str = ""
    facts: dict = dataclasses.field(default_factory=dict)
    sha256: str = ""
    signature: tuple = ()
    signals: tuple = ()


class VideoStatsAccumulator:
    """Accumulates one video's pixel and target sums exactly (integers for pixels).

    Args:
      channels: frame channels.
      outputs: regression outputs (0 otherwise).
      classes: classes counted per window (classification, multilabel; 0 otherwise).
    """

    def __init__(self, channels: int, outputs: int = 0, classes: int = 0):
        self.count = 0
        self.sum = np.zeros(channels, np.uint64)
        self.sumsq = np.zeros(channels, np.uint64)
        self.target_sum = np.zeros(outputs, np.float64)
        self.target_sumsq = np.zeros(outputs, np.float64)
        self.class_hist = np.zeros(classes, np.int64)

    def add_frame(self, pixels: np.ndarray) -> None:
        """Adds an (H, W, C) uint8 frame: one vectorised pass, no float rounding."""
        x = pixels.reshape(-1, pixels.shape[-1])
        self.count += x.shape[0]
        self.sum += x.sum(axis=0, dtype=np.uint64)
        x32 = x.astype(np.uint32)
        self.sumsq += np.einsum("ij,ij->j", x32, x32, dtype=np.uint64)

    def add_target(self, target) -> None:
        if self.class_hist.size:  # one class index, or a multilabel window's set of them
            self.class_hist[np.asarray(target, np.int64).reshape(-1)] += 1
        elif self.target_sum.size:
            t = np.asarray(target, np.float64)
            self.target_sum += t
            self.target_sumsq += t * t

    def summary(self, video_id: str, split: str, **counts) -> VideoSummary:
        return VideoSummary(video_id=video_id, split=split, pixel_count=int(self.count),
                            pixel_sum=tuple(int(v) for v in self.sum),
                            pixel_sumsq=tuple(int(v) for v in self.sumsq),
                            target_sum=tuple(self.target_sum.tolist()),
                            target_sumsq=tuple(self.target_sumsq.tolist()),
                            class_hist=tuple(int(v) for v in self.class_hist), **counts)


def _add(a: list, b) -> list:
    return [x + y for x, y in zip(a, b)] if a else list(b)


@dataclasses.dataclass
class SplitTotals:
    videos: int = 0
    windows: int = 0
    frames_decoded: int = 0
    pixel_count: int = 0
    pixel_sum: list = dataclasses.field(default_factory=list)
    pixel_sumsq: list = dataclasses.field(default_factory=list)
    target_sum: list = dataclasses.field(default_factory=list)
    target_sumsq: list = dataclasses.field(default_factory=list)
    class_hist: list = dataclasses.field(default_factory=list)

    def merge(self, o: "SplitTotals") -> None:
        self.videos += o.videos
        self.windows += o.windows
        self.frames_decoded += o.frames_decoded
        self.pixel_count += o.pixel_count
        for name in ("pixel_sum", "pixel_sumsq", "target_sum", "target_sumsq", "class_hist"):
            setattr(self, name, _add(getattr(self, name), getattr(o, name)))


@dataclasses.dataclass
class DatasetStats:
    """The sum of VideoSummary records: per-split totals plus partial/unlabelled counts."""

    splits: dict = dataclasses.field(default_factory=dict)
    partial: int = 0
    unlabelled_windows: int = 0
    padded_windows: int = 0

    def add(self, s: VideoSummary) -> "DatasetStats":
        t = SplitTotals(videos=int(s.windows > 0), windows=s.windows, frames_decoded=s.frames_decoded,
                        pixel_count=s.pixel_count, pixel_sum=list(s.pixel_sum),
                        pixel_sumsq=list(s.pixel_sumsq), target_sum=list(s.target_sum),
                        target_sumsq=list(s.target_sumsq), class_hist=list(s.class_hist))
        self.splits.setdefault(s.split, SplitTotals()).merge(t)
        self.partial += int(bool(s.partial))
        self.unlabelled_windows += s.unlabelled_windows
        self.padded_windows += s.padded_windows
        return self

    def merge(self, o: "DatasetStats") -> "DatasetStats":
        for name, t in o.splits.items():
            self.splits.setdefault(name, SplitTotals()).merge(t)
        self.partial += o.partial
        self.unlabelled_windows += o.unlabelled_windows
        self.padded_windows += o.padded_windows
        return self

    def to_stats(self, task: str, channels: int, outputs: int = 0, classes: int = 0,
                 train: str = "train") -> dict:
        """metadata.json `stats`: over the training split, or every split when it is empty.

        Pixel mean/std are per channel on the 0..255 scale over every stored frame (each
        once); the task's part (schemas/tasks.py `target_stats`: target mean/std, the class
        histogram, per-class counts) is over windows.
        """
        src: Optional[SplitTotals] = self.splits.get(train)
        name = train
        if src is None or src.windows == 0:
            src, name = SplitTotals(), "all"
            for t in self.splits.values():
                src.merge(t)
        n = max(src.pixel_count, 1)
        mean = [s / n for s in src.pixel_sum] or [0.0] * channels
        std = [math.sqrt(max(q / n - m * m, 0.0)) for q, m in zip(src.pixel_sumsq, mean)] or [0.0] * channels
        out = {"split": name, "videos": src.videos, "windows": src.windows, "pixels": src.pixel_count,
               "pixel_mean": mean, "pixel_std": std,
               "frames_decoded": sum(t.frames_decoded for t in self.splits.values()),
               "partial_videos": self.partial, "unlabelled_windows": self.unlabelled_windows,
               "padded_windows": self.padded_windows}
        out.update(target_stats(task_of(task), src.windows, src.target_sum, src.target_sumsq, src.class_hist,
                                outputs, classes))
        return out


def merge_summaries(parts: list[VideoSummary]) -> VideoSummary:
    """One video's summary from its segments' (in segment order): counts and sums add up."""
    def add(name):
        vals = [getattr(p, name) for p in parts if getattr(p, name)]
        return tuple(sum(v) for v in zip(*vals)) if vals else ()

    first = parts[0]
    return VideoSummary(
        video_id=first.video_id, split=first.split, windows=sum(p.windows for p in parts),
        frames_decoded=sum(p.frames_decoded for p in parts),
        unlabelled_windows=sum(p.unlabelled_windows for p in parts),
        padded_windows=sum(p.padded_windows for p in parts),
        partial=next((p.partial for p in parts if p.partial), ""), pixel_count=sum(p.pixel_count for p in parts),
        pixel_sum=add("pixel_sum"), pixel_sumsq=add("pixel_sumsq"), target_sum=add("target_sum"),
        target_sumsq=add("target_sumsq"), class_hist=add("class_hist"), path=first.path,
        facts=next((p.facts for p in parts if p.facts), {}), sha256=next((p.sha256 for p in parts if p.sha256), ""),
        signature=merge_signatures(p.signature for p in parts), signals=add("signals"))
