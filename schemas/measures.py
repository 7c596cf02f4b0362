"""Numpy metric definitions both halves share, so predict's Parquet and evaluate's metrics.json agree."""
from __future__ import annotations

import numpy as np

MAX_PIXEL = 255.0
# A perfect frame has an infinite PSNR. Both predict and evaluate cap it at PSNR_CAP dB by flooring
# the MSE at the value that gives exactly that cap, so metrics.json stays finite and the two agree.
PSNR_CAP = 100.0
MSE_FLOOR = MAX_PIXEL ** 2 / 10.0 ** (PSNR_CAP / 10.0)


def psnr(mse, max_val: float = MAX_PIXEL):
    """Peak signal-to-noise ratio in dB of a mean squared error on the 0..max_val scale.

    10 * log10(max_val**2 / mse), at most PSNR_CAP (100 dB) for a perfect prediction.
    """
    floor = max_val ** 2 / 10.0 ** (PSNR_CAP / 10.0)  # MSE_FLOOR for the 0..255 scale
    return 10.0 * np.log10(max_val ** 2 / np.maximum(np.asarray(mse, np.float64), floor))


def frame_psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """PSNR of predicted frames against true ones, the prediction clipped to 0..255 first."""
    err = np.clip(np.asarray(pred, np.float64), 0.0, MAX_PIXEL) - np.asarray(truth, np.float64)
    return float(psnr(np.mean(err ** 2)))
