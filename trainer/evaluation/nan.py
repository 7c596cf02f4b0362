"""NaN as the value of a figure that is undefined: a ratio over zero, a model's non-finite outputs.

Every accumulator shares these three rules, so metrics.json spells "undefined" one way (NaN, written as null).
"""
from __future__ import annotations

import numpy as np


def ratio(num, den):
    """num / den, NaN where den is 0 (an undefined metric, written as null in metrics.json)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def nonfinite_rows(pred: np.ndarray) -> np.ndarray:
    """[B] True where a window's prediction holds a NaN or an infinity."""
    return ~np.isfinite(pred.reshape(pred.shape[0], -1)).all(axis=1)


def nan_like(tree):
    """The same keys with every number NaN: how a model with non-finite outputs is reported."""
    if isinstance(tree, dict):
        return {k: nan_like(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [nan_like(v) for v in tree]
    return float("nan") if isinstance(tree, float) else tree
