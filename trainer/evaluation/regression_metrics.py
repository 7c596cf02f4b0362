"""Streaming regression metrics (MAE, RMSE, R2, Pearson r) of a model and of the training-mean baseline."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from schemas import features as fk
from trainer.evaluation.nan import nan_like, nonfinite_rows, ratio
from trainer.evaluation.video_metrics import VideoValues

SERIES_POINTS = 1000  # windows kept per video for the error-along-time plot


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
        mse = ratio(s["se"], n)
        sst = s["yy"] - ratio(s["y"] ** 2, n)
        spp = s["pp"] - ratio(s["p"] ** 2, n)
        cov = s["yp"] - ratio(s["y"] * s["p"], n)
        # A constant prediction (the baseline) has spp == 0 up to rounding: r is undefined there.
        spp = np.where(spp > 1e-12 * np.maximum(s["pp"], 1.0), spp, 0.0)
        per = {"mae": ratio(s["ae"], n), "rmse": np.sqrt(mse), "mse": mse,
               "r2": 1.0 - ratio(s["se"], sst), "pearson_r": ratio(cov, np.sqrt(sst * spp))}
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
        self.nonfinite += int(nonfinite_rows(p).sum())
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
            model = nan_like(model)
        base["per_video"] = per_video_base.result(self.outputs)
        base["video"] = {"videos": len(order), **video_base.result(self.outputs)}
        skill = {n: 1.0 - float(ratio(model["per_output"][n]["mse"], base["per_output"][n]["mse"]))
                 for n in self.outputs}
        return {"model": model, "baseline": base, "skill": 1.0 - float(ratio(model["mse"], base["mse"])),
                "skill_per_output": skill}
