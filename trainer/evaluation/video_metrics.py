"""Per-video aggregation of window-level outputs: what `evaluate --aggregate mean|max|vote` combines."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from schemas.tasks import TASKS, task_of

AGGREGATES = ("mean", "max", "vote")


def check_aggregate(task, aggregate: str) -> None:
    """Raises ValueError naming the rule when it does not apply to the task (row, name or TargetSpec)."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r}: expected one of {' | '.join(AGGREGATES)}")
    row = task_of(task)
    if aggregate not in row.aggregates:
        takers = [name for name, r in TASKS.items() if aggregate in r.aggregates]
        raise ValueError(f"aggregate={aggregate} applies to {' | '.join(takers)} only, not {row.name}; "
                         f"use {' or '.join(row.aggregates)}")


class VideoValues:
    """Per-video count, sum and max of [D] vectors (targets and predictions alike).

    Args:
      width: D, the length of each vector.
    """

    def __init__(self, width: int):
        self.width = width
        self.videos: dict[str, list] = {}  # video -> [count, sum [D], max [D]]

    def update(self, video_ids: Sequence[str], values: np.ndarray) -> None:
        values = np.asarray(values, np.float64).reshape(len(video_ids), self.width)
        for vid, v in zip(video_ids, values):
            acc = self.videos.setdefault(vid, [0, np.zeros(self.width), np.full(self.width, -np.inf)])
            acc[0] += 1
            acc[1] += v
            acc[2] = np.maximum(acc[2], v)

    def aggregated(self, how: str, order: Sequence[str]) -> np.ndarray:
        """[videos, D] per-video mean (mean, vote) or max (max), videos in `order`."""
        if how == "max":
            return np.array([self.videos[v][2] for v in order]).reshape(len(order), self.width)
        return np.array([self.videos[v][1] / self.videos[v][0] for v in order]).reshape(len(order), self.width)


def video_labels(truth_counts: VideoValues, votes: VideoValues, probs: VideoValues, how: str,
                 order: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true class, predicted class) per video in `order`.

    The true class is the video's majority window label. mean: argmax of the mean probabilities;
    max: argmax of each class's highest window probability; vote: the most-voted window class, a
    tie going to the larger summed probability.
    """
    truth = truth_counts.aggregated("mean", order).argmax(1)
    if how == "vote":
        counts, summed = votes.aggregated("mean", order), probs.aggregated("mean", order)
        pred = []
        for c, s in zip(counts, summed):
            tied = np.flatnonzero(c == c.max())
            pred.append(int(tied[np.argmax(s[tied])]))
        return truth, np.array(pred, np.int64)
    return truth, probs.aggregated(how, order).argmax(1)


class VideoFrameErrors:
    """Per-video window MSE and SSIM of one next_frame predictor, combined per video then averaged."""

    def __init__(self):
        self.mse = VideoValues(1)
        self.neg_ssim = VideoValues(1)  # negated, so max() is the worst window

    def update(self, video_ids: Sequence[str], mse: np.ndarray, ssim: np.ndarray) -> None:
        self.mse.update(video_ids, mse)
        self.neg_ssim.update(video_ids, -np.asarray(ssim, np.float64))

    def result(self, how: str, psnr) -> dict:
        """mean: each video's PSNR (from its mean window MSE) and mean SSIM; max: its worst window's
        (highest MSE, lowest SSIM). Then the mean over videos, each video weighing the same."""
        order = sorted(self.mse.videos)
        mse = self.mse.aggregated(how, order)[:, 0]
        ssim = -self.neg_ssim.aggregated(how, order)[:, 0]
        return {"videos": len(order), "mse": float(mse.mean()), "psnr": float(np.mean(psnr(mse))),
                "ssim": float(ssim.mean())}
