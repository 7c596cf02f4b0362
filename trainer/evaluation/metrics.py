"""The evaluation accumulator of each task row: streaming metrics in numpy, update() per batch, result() a dict.

The accumulators live one per kind of figure (regression_metrics, classification_metrics,
frame_metrics, ranking_metrics); this module is their registry and names them in one place.
"""
from __future__ import annotations

from typing import Optional

from schemas.measures import MAX_PIXEL, psnr  # one PSNR for predict and evaluate
from schemas.tasks import task_of
from trainer.evaluation.classification_metrics import ClassificationMetrics
from trainer.evaluation.frame_metrics import NextFrameMetrics, copy_last, linear_extrapolation, ssim
from trainer.evaluation.ranking_metrics import RankingMetrics, make_ranking
from trainer.evaluation.regression_metrics import RegressionMetrics
from trainer.evaluation.video_metrics import check_aggregate

__all__ = ["ACCUMULATORS", "ClassificationMetrics", "MAX_PIXEL", "NextFrameMetrics", "RankingMetrics",
           "RegressionMetrics", "copy_last", "linear_extrapolation", "make_accumulator", "psnr", "ssim"]


def _moments(target, stats: dict, top_k: int, aggregate: str) -> RegressionMetrics:
    if "target_mean" not in stats:
        raise KeyError("metadata stats lack 'target_mean' (the training-mean baseline)")
    return RegressionMetrics(target.outputs, stats["target_mean"], aggregate=aggregate)


def _confusion(target, stats: dict, top_k: int, aggregate: str) -> ClassificationMetrics:
    if "class_histogram" not in stats:
        raise KeyError("metadata stats lack 'class_histogram' (the majority-class baseline)")
    return ClassificationMetrics(target.classes, stats["class_histogram"], top_k, aggregate=aggregate)


def _frames(target, stats: dict, top_k: int, aggregate: str) -> NextFrameMetrics:
    return NextFrameMetrics(target.horizon, aggregate=aggregate)


# The evaluation accumulator of each task row (schemas/tasks.py `accumulator`); every one takes
# update(batch, prediction) with batch the parsed records as numpy (video ids as str).
ACCUMULATORS = {"moments": _moments, "confusion": _confusion, "frames": _frames, "ranking": make_ranking}


def make_accumulator(target, stats: Optional[dict] = None, top_k: int = 2, aggregate: str = "mean"):
    """The accumulator for a TargetSpec's task, its baseline taken from the training split's stats.

    `aggregate` (mean | max | vote, as the task row allows) combines a video's windows.

    Raises:
      KeyError: the stats lack the field the baseline needs (target_mean, class_histogram, ...).
      ValueError: the aggregate does not apply to the task.
    """
    check_aggregate(target, aggregate)
    return ACCUMULATORS[task_of(target).accumulator](target, stats or {}, top_k, aggregate)
