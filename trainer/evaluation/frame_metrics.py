"""Streaming next-frame metrics (MSE, MAE, PSNR, SSIM per horizon step) of a model and of the copy-last and linear baselines."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from schemas import features as fk
from schemas.measures import MAX_PIXEL, psnr
from trainer.evaluation.nan import nan_like, nonfinite_rows
from trainer.evaluation.video_metrics import VideoFrameErrors


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
        self.nonfinite += int(nonfinite_rows(pred).sum())
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
            model["video"] = nan_like(model["video"])
        copy = self.copy.result(self.aggregate)
        linear = self.linear.result(self.aggregate) if self.linear.frames else None
        return {"model": model, "baseline_copy_last": copy, "baseline_linear": linear,
                "gain_db_over_copy_last": model["psnr"] - copy["psnr"]}
