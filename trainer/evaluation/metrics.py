"""Streaming evaluation metrics in numpy: accumulators take batches with update() and give a dict with result()."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from schemas import features as fk
from schemas.measures import MAX_PIXEL, MSE_FLOOR, psnr  # noqa: F401 - one PSNR for predict and evaluate
from schemas.tasks import task_of
from trainer.evaluation.ranking_metrics import RankingMetrics, make_ranking  # noqa: F401 - RankingMetrics re-exported beside the others
from trainer.evaluation.video_metrics import VideoFrameErrors, VideoValues, check_aggregate, video_labels

SERIES_POINTS = 1000  # windows kept per video for the error-along-time plot


def _ratio(num, den):
    """num / den, NaN where den is 0 (an undefined metric, written as null in metrics.json)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def _gaussian(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _blur(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of [N, H, W, C] along H then W."""
    k = len(g)
    x = np.lib.stride_tricks.sliding_window_view(x, k, axis=1) @ g
    return np.lib.stride_tricks.sliding_window_view(x, k, axis=2) @ g


def ssim(a: np.ndarray, b: np.ndarray, max_val: float = MAX_PIXEL, window: int = 11,
         sigma: float = 1.5) -> np.ndarray:
    """Structural similarity of image pairs, as tf.image.ssim computes it.

    Args:
      a, b: images [N, H, W, C] on the 0..max_val scale.
      max_val: dynamic range of the pixels.
      window: side of the Gaussian window; shrunk to min(H, W) for frames smaller than it.
      sigma: standard deviation of the Gaussian window.

    Returns:
      [N] SSIM per image, the mean over pixels and channels ('valid' filtering, K1=0.01, K2=0.03).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    g = _gaussian(min(window, a.shape[1], a.shape[2]), sigma)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    var_a = _blur(a * a, g) - mu_a ** 2
    var_b = _blur(b * b, g) - mu_b ** 2
    cov = _blur(a * b, g) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(axis=(1, 2, 3))


def _nonfinite_rows(pred: np.ndarray) -> np.ndarray:
    return ~np.isfinite(pred.reshape(pred.shape[0], -1)).all(axis=1)


# ------------------------------------------------------------------ regression

class _Moments:
    """Running sums of a (truth, prediction) stream per output, enough for MAE/RMSE/R2/Pearson r."""

    def __init__(self, dims: int, shift: np.ndarray):
        # Sums are taken of values minus `shift` (the training mean): that keeps the
        # sum-of-squares formulas for variance clear of catastrophic cancellation.
        self.shift = shift
        self.n = 0
        self.s = {k: np.zeros(dims) for k in ("y", "p", "yy", "pp", "yp", "ae", "se")}

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        y = np.asarray(y, np.float64) - self.shift
        p = np.asarray(p, np.float64) - self.shift
        s = self.s
        self.n += y.shape[0]
        s["y"] += y.sum(0)
        s["p"] += p.sum(0)
        s["yy"] += (y * y).sum(0)
        s["pp"] += (p * p).sum(0)
        s["yp"] += (y * p).sum(0)
        s["ae"] += np.abs(y - p).sum(0)
        s["se"] += ((y - p) ** 2).sum(0)

    def result(self, names: Sequence[str]) -> dict:
        s, n = self.s, self.n
        mse = _ratio(s["se"], n)
        sst = s["yy"] - _ratio(s["y"] ** 2, n)
        spp = s["pp"] - _ratio(s["p"] ** 2, n)
        cov = s["yp"] - _ratio(s["y"] * s["p"], n)
        # A constant prediction (the baseline) has spp == 0 up to rounding: r is undefined there.
        spp = np.where(spp > 1e-12 * np.maximum(s["pp"], 1.0), spp, 0.0)
        per = {"mae": _ratio(s["ae"], n), "rmse": np.sqrt(mse), "mse": mse,
               "r2": 1.0 - _ratio(s["se"], sst), "pearson_r": _ratio(cov, np.sqrt(sst * spp))}
        out = {"mae": float(np.mean(per["mae"])), "rmse": float(np.sqrt(np.mean(mse))),
               "mse": float(np.mean(mse)), "r2": float(np.mean(per["r2"])),
               "pearson_r": float(np.mean(per["pearson_r"]))}
        out["per_output"] = {name: {k: float(v[i]) for k, v in per.items()} for i, name in enumerate(names)}
        return out


class RegressionMetrics:
    """Window-level and per-video regression metrics of a model and of the training-mean baseline.

    Args:
      outputs: names of the D regression outputs.
      train_mean: [D] mean target of the training split (metadata stats target_mean): the baseline.
      sample_size: windows kept (reservoir sample) for the predicted-vs-true plot.
      series_videos: videos whose every window is kept for the error-along-time plot.
      seed: seed of the reservoir sample.
      aggregate: how a video's windows combine into its "video" figures: mean | max (of the
        predictions and of the targets alike).
    """

    def __init__(self, outputs: Sequence[str], train_mean: Sequence[float], sample_size: int = 2000,
                 series_videos: int = 4, seed: int = 0, aggregate: str = "mean"):
        self.aggregate = aggregate
        self.outputs = list(outputs)
        self.train_mean = np.asarray(train_mean, np.float64).reshape(-1)
        if self.train_mean.shape[0] != len(self.outputs):
            raise ValueError(f"target_mean has {self.train_mean.shape[0]} values for {len(self.outputs)} outputs")
        d = len(self.outputs)
        self.model = _Moments(d, self.train_mean)
        self.baseline = _Moments(d, self.train_mean)
        self.videos: dict[str, list] = {}  # video -> [count, sum truth [D], sum prediction [D]]
        self.video_truth, self.video_pred = VideoValues(d), VideoValues(d)
        self.windows = 0
        self.nonfinite = 0
        self._rng = np.random.default_rng(seed)
        self.sample_size = sample_size
        self.sample_true = np.zeros((sample_size, d))
        self.sample_pred = np.zeros((sample_size, d))
        self.sampled = 0
        self.series_videos = series_videos
        self.series: dict[str, list] = {}  # video -> [(start_time, truth [D], prediction [D])]

    def update(self, batch: dict, prediction: np.ndarray) -> None:
        """Adds a batch of parsed records (numpy) and the model's [B, D] prediction."""
        self.add(batch[fk.VIDEO_ID], batch[fk.START_TIME], batch[fk.TARGET], prediction)

    def add(self, video_ids: Sequence[str], start_times: np.ndarray, y_true: np.ndarray,
            y_pred: np.ndarray) -> None:
        """Adds windows: y_true and y_pred are [B, D]."""
        y = np.asarray(y_true, np.float64).reshape(len(video_ids), -1)
        p = np.asarray(y_pred, np.float64).reshape(len(video_ids), -1)
        self.windows += y.shape[0]
        self.nonfinite += int(_nonfinite_rows(p).sum())
        self.model.update(y, p)
        self.baseline.update(y, np.broadcast_to(self.train_mean, y.shape))
        self.video_truth.update(video_ids, y)
        self.video_pred.update(video_ids, p)
        for i, vid in enumerate(video_ids):
            acc = self.videos.setdefault(vid, [0, np.zeros(y.shape[1]), np.zeros(y.shape[1])])
            acc[0] += 1
            acc[1] += y[i]
            acc[2] += p[i]
            if len(self.series.get(vid, ())) < SERIES_POINTS and (
                    vid in self.series or len(self.series) < self.series_videos):
                self.series.setdefault(vid, []).append((float(start_times[i]), y[i], p[i]))
        self._reservoir(y, p)

    def _reservoir(self, y: np.ndarray, p: np.ndarray) -> None:
        """Keeps a uniform sample of at most sample_size windows (Algorithm R)."""
        seen_before = self.windows - y.shape[0]
        for i in range(y.shape[0]):
            j = self.sampled if self.sampled < self.sample_size else self._rng.integers(0, seen_before + i + 1)
            if j < self.sample_size:
                self.sample_true[j], self.sample_pred[j] = y[i], p[i]
                self.sampled = min(self.sampled + 1, self.sample_size)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(truth, prediction) [n, D] of the sampled windows, for plots."""
        return self.sample_true[: self.sampled], self.sample_pred[: self.sampled]

    def result(self) -> dict:
        """{"model": {...}, "baseline": {...}, "skill": x, "skill_per_output": {...}}."""
        model = self.model.result(self.outputs)
        base = self.baseline.result(self.outputs)
        counts = np.array([v[0] for v in self.videos.values()], np.float64)[:, None]
        video_true = np.array([v[1] for v in self.videos.values()]) / counts
        video_pred = np.array([v[2] for v in self.videos.values()]) / counts
        d = len(self.outputs)
        per_video, per_video_base = _Moments(d, self.train_mean), _Moments(d, self.train_mean)
        per_video.update(video_true, video_pred)
        per_video_base.update(video_true, np.broadcast_to(self.train_mean, video_true.shape))
        model["per_video"] = per_video.result(self.outputs)
        order = sorted(self.videos)
        truth, pred = (v.aggregated(self.aggregate, order) for v in (self.video_truth, self.video_pred))
        video, video_base = _Moments(d, self.train_mean), _Moments(d, self.train_mean)
        video.update(truth, pred)
        video_base.update(truth, np.broadcast_to(self.train_mean, truth.shape))
        model["video"] = {"videos": len(order), **video.result(self.outputs)}
        if self.nonfinite:
            model = _nan_like(model)
        base["per_video"] = per_video_base.result(self.outputs)
        base["video"] = {"videos": len(order), **video_base.result(self.outputs)}
        skill = {n: 1.0 - float(_ratio(model["per_output"][n]["mse"], base["per_output"][n]["mse"]))
                 for n in self.outputs}
        return {"model": model, "baseline": base, "skill": 1.0 - float(_ratio(model["mse"], base["mse"])),
                "skill_per_output": skill}


def _nan_like(tree):
    """The same keys with every number NaN: how a model with non-finite outputs is reported."""
    if isinstance(tree, dict):
        return {k: _nan_like(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_nan_like(v) for v in tree]
    return float("nan") if isinstance(tree, float) else tree


# ------------------------------------------------------------------ classification

def _class_report(cm: np.ndarray, topk_correct: int, classes: Sequence[str], video_acc: float, k: int) -> dict:
    """Accuracy, macro-F1, per-class precision/recall and the confusion matrix from counts."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    # zero_division=0 as scikit-learn: precision of a never-predicted class is 0.
    precision = np.nan_to_num(_ratio(tp, predicted))
    recall = np.nan_to_num(_ratio(tp, support))
    f1 = np.nan_to_num(_ratio(2 * precision * recall, precision + recall))
    present = (support + predicted) > 0  # macro average over classes seen in truth or prediction
    n = cm.sum()
    return {
        "accuracy": float(_ratio(tp.sum(), n)),
        "top_k_accuracy": float(_ratio(topk_correct, n)), "k": k,
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_normalized": np.nan_to_num(_ratio(cm, support[:, None])).round(6).tolist(),
        "video_accuracy": video_acc,
    }


def _video_class_report(truth: np.ndarray, pred: np.ndarray, k: int) -> dict:
    """Accuracy, macro F1 and the confusion matrix of one class per video."""
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (truth, pred), 1)
    report = _class_report(cm, 0, [str(i) for i in range(k)], float("nan"), 1)
    return {"videos": int(len(truth)), "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "confusion_matrix": report["confusion_matrix"]}


class ClassificationMetrics:
    """Window-level and per-video (majority vote) classification metrics, model and majority-class baseline.

    Args:
      classes: the K class names, in label-index order.
      train_histogram: [K] window counts per class in the training split; its argmax is the baseline.
      top_k: k of top-k accuracy, clamped to K.
      aggregate: how a video's windows combine into its "video" figures: mean | max of the
        probabilities, or vote (see video_metrics.video_labels).
    """

    def __init__(self, classes: Sequence[str], train_histogram: Sequence[float], top_k: int = 2,
                 aggregate: str = "mean"):
        self.aggregate = aggregate
        self.classes = list(classes)
        k = len(self.classes)
        hist = np.asarray(train_histogram, np.float64).reshape(-1)
        if hist.shape[0] != k:
            raise ValueError(f"class_histogram has {hist.shape[0]} counts for {k} classes")
        self.top_k = max(1, min(int(top_k), k))
        self.majority = int(np.argmax(hist))
        self.baseline_topk = np.argsort(-hist, kind="stable")[: self.top_k]
        self.cm = np.zeros((k, k), np.int64)
        self.cm_base = np.zeros((k, k), np.int64)
        self.topk_correct = self.topk_base = 0
        self.videos: dict[str, np.ndarray] = {}  # video -> [3, K]: true counts, votes, summed probabilities
        self.video_truth, self.video_votes, self.video_probs = (VideoValues(k) for _ in range(3))
        self.windows = self.nonfinite = 0

    def update(self, batch: dict, prediction: np.ndarray) -> None:
        """Adds a batch of parsed records (numpy) and the model's [B, K] probabilities."""
        self.add(batch[fk.VIDEO_ID], batch[fk.LABEL], prediction)

    def add(self, video_ids: Sequence[str], labels: np.ndarray, probs: np.ndarray) -> None:
        """Adds windows: labels [B] class indices, probs [B, K] probabilities (or scores)."""
        labels = np.asarray(labels, np.int64).reshape(-1)
        probs = np.asarray(probs, np.float64).reshape(labels.shape[0], -1)
        bad = _nonfinite_rows(probs)
        self.windows += labels.shape[0]
        self.nonfinite += int(bad.sum())
        probs = np.where(np.isfinite(probs), probs, -np.inf)
        pred = probs.argmax(1)
        np.add.at(self.cm, (labels, pred), 1)
        np.add.at(self.cm_base, (labels, np.full_like(labels, self.majority)), 1)
        topk = np.argsort(-probs, axis=1, kind="stable")[:, : self.top_k]
        self.topk_correct += int((topk == labels[:, None]).any(1).sum())
        self.topk_base += int(np.isin(labels, self.baseline_topk).sum())
        k = len(self.classes)
        finite = np.nan_to_num(probs, neginf=0.0)
        self.video_truth.update(video_ids, np.eye(k)[labels])
        self.video_votes.update(video_ids, np.eye(k)[pred])
        self.video_probs.update(video_ids, finite)
        for vid, lab, pr, p in zip(video_ids, labels, pred, finite):
            acc = self.videos.setdefault(vid, np.zeros((3, len(self.classes))))
            acc[0, lab] += 1
            acc[1, pr] += 1
            acc[2] += p

    def _video_accuracy(self) -> tuple[float, float]:
        hits = base_hits = 0
        for acc in self.videos.values():
            truth = int(np.argmax(acc[0]))
            tied = np.flatnonzero(acc[1] == acc[1].max())
            vote = int(tied[np.argmax(acc[2][tied])])  # a tied vote goes to the larger summed probability
            hits += vote == truth
            base_hits += self.majority == truth
        n = max(len(self.videos), 1)
        return hits / n, base_hits / n

    def result(self) -> dict:
        """{"model": {...}, "baseline": {..., "majority_class": name}}."""
        video_acc, video_base = self._video_accuracy()
        model = _class_report(self.cm, self.topk_correct, self.classes, video_acc, self.top_k)
        if self.nonfinite:
            model = _nan_like(model)
        order = sorted(self.videos)
        truth, pred = video_labels(self.video_truth, self.video_votes, self.video_probs, self.aggregate, order)
        model["video"] = _video_class_report(truth, pred, len(self.classes))
        if self.nonfinite:
            model["video"] = _nan_like(model["video"])
        base = _class_report(self.cm_base, self.topk_base, self.classes, video_base, self.top_k)
        base["majority_class"] = self.classes[self.majority]
        base["video"] = _video_class_report(truth, np.full_like(truth, self.majority), len(self.classes))
        return {"model": model, "baseline": base}


# ------------------------------------------------------------------ next frame

class _FrameErrors:
    """Per-horizon-step sums of squared/absolute error and SSIM for one predictor."""

    def __init__(self, horizon: int):
        self.se = np.zeros(horizon)
        self.ae = np.zeros(horizon)
        self.ssim = np.zeros(horizon)
        self.frames = 0  # windows seen; each contributes one frame per step
        self.pixels = 0  # values per frame (H * W * C)
        self.video = VideoFrameErrors()

    def update(self, truth: np.ndarray, pred: np.ndarray, video_ids: Optional[Sequence[str]] = None) -> None:
        err = pred - truth
        self.frames += truth.shape[0]
        self.pixels = int(np.prod(truth.shape[2:]))
        self.se += (err ** 2).sum(axis=(0, 2, 3, 4))
        self.ae += np.abs(err).sum(axis=(0, 2, 3, 4))
        window_ssim = np.zeros(truth.shape[0])
        for step in range(truth.shape[1]):
            s = ssim(truth[:, step], pred[:, step])
            self.ssim[step] += s.sum()
            window_ssim += s / truth.shape[1]
        if video_ids is not None:
            self.video.update(video_ids, (err ** 2).mean(axis=(1, 2, 3, 4)), window_ssim)

    def result(self, aggregate: str = "mean") -> dict:
        n = self.frames * self.pixels
        mse, mae = self.se / n, self.ae / n
        per_step = [{"step": i + 1, "mse": float(mse[i]), "mae": float(mae[i]), "psnr": float(psnr(mse[i])),
                     "ssim": float(self.ssim[i] / self.frames)} for i in range(len(mse))]
        out = {"mse": float(mse.mean()), "mae": float(mae.mean()), "psnr": float(psnr(mse.mean())),
               "ssim": float(self.ssim.sum() / (self.frames * len(mse))), "per_step": per_step}
        if self.video.mse.videos:
            out["video"] = self.video.result(aggregate, psnr)
        return out


def copy_last(frames: np.ndarray, horizon: int) -> np.ndarray:
    """Baseline: the window's last frame repeated for every step. frames [B, T, H, W, C]."""
    last = frames[:, -1:].astype(np.float64)
    return np.repeat(last, horizon, axis=1)


def linear_extrapolation(frames: np.ndarray, horizon: int) -> np.ndarray:
    """Baseline: last + k * (last - previous) for step k, clipped to 0..255."""
    last = frames[:, -1:].astype(np.float64)
    delta = last - frames[:, -2:-1].astype(np.float64)
    steps = np.arange(1, horizon + 1, dtype=np.float64).reshape(1, -1, 1, 1, 1)
    return np.clip(last + steps * delta, 0.0, MAX_PIXEL)


class NextFrameMetrics:
    """Per-step MSE/MAE/PSNR/SSIM of a model and of the copy-last and linear-extrapolation baselines.

    Predictions are clipped to 0..255 first, as any image must be, so every predictor is scored
    on the same scale. Linear extrapolation needs two input frames; with T=1 it is reported as null.

    Args:
      horizon: frames predicted per window.
      sample_windows: windows kept (inputs, truth, prediction) for the frame-grid plot.
      aggregate: how a video's windows combine into its "video" figures: mean (the video's PSNR
        from its mean window MSE, its mean SSIM) | max (its worst window). Needs video ids.
    """

    def __init__(self, horizon: int, sample_windows: int = 4, aggregate: str = "mean"):
        self.aggregate = aggregate
        self.horizon = horizon
        self.model, self.copy, self.linear = (_FrameErrors(horizon) for _ in range(3))
        self.windows = self.nonfinite = 0
        self.sample_windows = sample_windows
        self.samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def update(self, batch: dict, prediction: np.ndarray) -> None:
        """Adds a batch of parsed records (numpy) and the model's [B, h, H, W, C] predicted frames."""
        self.add(batch[fk.FRAMES], batch[fk.NEXT_FRAMES], prediction, batch[fk.VIDEO_ID])

    def add(self, frames: np.ndarray, truth: np.ndarray, pred: np.ndarray,
            video_ids: Optional[Sequence[str]] = None) -> None:
        """Adds windows: frames [B, T, H, W, C] uint8, truth [B, h, H, W, C] uint8, pred same shape, float.

        With the windows' `video_ids`, the results also hold per-video figures ("video")."""
        truth = np.asarray(truth, np.float64)
        pred = np.clip(np.asarray(pred, np.float64).reshape(truth.shape), 0.0, MAX_PIXEL)
        self.windows += truth.shape[0]
        self.nonfinite += int(_nonfinite_rows(pred).sum())
        self.model.update(truth, pred, video_ids)
        self.copy.update(truth, copy_last(frames, self.horizon), video_ids)
        if frames.shape[1] >= 2:
            self.linear.update(truth, linear_extrapolation(frames, self.horizon), video_ids)
        for i in range(min(truth.shape[0], self.sample_windows - len(self.samples))):
            self.samples.append((np.asarray(frames[i]), truth[i].astype(np.uint8), pred[i].astype(np.float32)))

    def result(self) -> dict:
        """{"model", "baseline_copy_last", "baseline_linear", "gain_db_over_copy_last"}."""
        model = self.model.result(self.aggregate)
        if self.nonfinite and "video" in model:
            model["video"] = _nan_like(model["video"])
        copy = self.copy.result(self.aggregate)
        linear = self.linear.result(self.aggregate) if self.linear.frames else None
        return {"model": model, "baseline_copy_last": copy, "baseline_linear": linear,
                "gain_db_over_copy_last": model["psnr"] - copy["psnr"]}


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
