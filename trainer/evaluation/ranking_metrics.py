"""Multi-label evaluation in numpy: AP, mAP, GAP@20 (YouTube-8M), hit@1 and F1 at 0.5, per window and per video."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from schemas import features as fk
from schemas.tasks import MULTILABEL_THRESHOLD
from trainer.evaluation.nan import nan_like
from trainer.evaluation.video_metrics import VideoValues, check_aggregate

GAP_TOP_K = 20
PR_POINTS = 200  # points kept per class for the precision-recall plot


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one class: sum over thresholds of (R_n - R_{n-1}) * P_n.

    As scikit-learn's average_precision_score: windows with equal scores form one threshold
    (so a constant score gets AP = the prevalence). NaN when the class has no positive.
    """
    truth = np.asarray(truth, np.float64).reshape(-1) > 0
    scores = np.asarray(scores, np.float64).reshape(-1)
    positives = truth.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_recall_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each distinct score, highest first (empty when no positive)."""
    truth = np.asarray(truth, np.float64).reshape(-1) > 0
    scores = np.asarray(scores, np.float64).reshape(-1)
    if truth.sum() == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(t)[last]
    return tp / truth.sum(), tp / (last + 1)


def gap_at_k(truth: np.ndarray, probs: np.ndarray, k: int = GAP_TOP_K) -> float:
    """Global average precision at k, as YouTube-8M's `eval_util.calculate_gap`.

    Each window's k highest-scoring classes go into one list of (score, is-positive) pairs,
    ranked by score; GAP = sum over the list of precision@i at each positive, divided by the
    number of positive (window, class) pairs in `truth` (also those outside a window's top k).
    Ties are ranked in input order (YouTube-8M shuffles them). 0 when there is no positive.
    """
    truth = np.asarray(truth, np.float64) > 0
    probs = np.asarray(probs, np.float64)
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(probs, top, axis=1).reshape(-1)
    hits = np.take_along_axis(truth, top, axis=1).reshape(-1)
    positives = truth.sum()
    if positives == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = hits[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision_at[hits]) / positives)


def hit_at_1(truth: np.ndarray, probs: np.ndarray) -> float:
    """Share of windows whose highest-scoring class is one of theirs (YouTube-8M `calculate_hit_at_one`)."""
    truth = np.asarray(truth, np.float64) > 0
    top = np.argmax(np.asarray(probs, np.float64), axis=1)
    return float(truth[np.arange(len(top)), top].mean()) if len(top) else float("nan")


def _f1(tp, fp, fn):
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(tp / (tp + fp))
        recall = np.nan_to_num(tp / (tp + fn))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return precision, recall, f1


def ranking_report(truth: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    """map, map_classes, map_skipped_classes, gap, hit_at_1, micro_f1, macro_f1 and per_class.

    mAP averages AP over the classes with at least one positive; the others are skipped and
    counted. F1s are at probability >= MULTILABEL_THRESHOLD; macro F1 averages over classes
    present in the truth or the prediction (zero_division=0, as scikit-learn).
    """
    truth = np.asarray(truth, np.float64).reshape(len(probs), len(classes)) > 0
    probs = np.asarray(probs, np.float64).reshape(len(truth), len(classes))
    ap = np.array([average_precision(truth[:, i], probs[:, i]) for i in range(len(classes))])
    scored = np.isfinite(ap)
    pred = probs >= MULTILABEL_THRESHOLD
    tp = (pred & truth).sum(0).astype(np.float64)
    fp = (pred & ~truth).sum(0).astype(np.float64)
    fn = (~pred & truth).sum(0).astype(np.float64)
    precision, recall, f1 = _f1(tp, fp, fn)
    present = (truth.sum(0) + pred.sum(0)) > 0
    _, _, micro = _f1(tp.sum(), fp.sum(), fn.sum())
    return {
        "map": float(ap[scored].mean()) if scored.any() else float("nan"),
        "map_classes": int(scored.sum()), "map_skipped_classes": int((~scored).sum()),
        "gap": gap_at_k(truth, probs), "hit_at_1": hit_at_1(truth, probs),
        "micro_f1": float(micro), "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "threshold": MULTILABEL_THRESHOLD,
        "per_class": {c: {"ap": float(ap[i]), "precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "support": int(truth[:, i].sum())} for i, c in enumerate(classes)},
    }


class RankingMetrics:
    """Multi-label metrics of a model and of the class-frequency baseline, per window and per video.

    Window scores are kept (windows x K floats): AP needs the whole ranking.

    Args:
      classes: the K class names.
      class_counts: [K] training windows holding each class (stats.class_counts).
      train_windows: training windows (stats.windows); counts / windows is the baseline's score.
      aggregate: how a video's windows combine: mean | max of the probabilities (its truth is
        the union of its windows' labels).
    """

    def __init__(self, classes: Sequence[str], class_counts: Sequence[float], train_windows: int,
                 aggregate: str = "mean"):
        self.classes = list(classes)
        k = len(self.classes)
        counts = np.asarray(class_counts, np.float64).reshape(-1)
        if counts.shape[0] != k:
            raise ValueError(f"class_counts has {counts.shape[0]} counts for {k} classes")
        self.aggregate = aggregate
        self.prior = counts / max(float(train_windows), 1.0)
        self.truth: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.video_truth, self.video_probs = VideoValues(k), VideoValues(k)
        self.windows = self.nonfinite = 0

    def update(self, batch: dict, prediction: np.ndarray) -> None:
        """Adds a batch: batch[labels] [B, K] multi-hot, prediction [B, K] probabilities."""
        ids = batch[fk.VIDEO_ID]
        truth = np.asarray(batch[fk.LABELS], np.float64).reshape(len(ids), -1)
        probs = np.asarray(prediction, np.float64).reshape(truth.shape)
        bad = ~np.isfinite(probs).all(axis=1)
        self.windows += len(ids)
        self.nonfinite += int(bad.sum())
        probs = np.nan_to_num(probs, nan=0.0, posinf=1.0, neginf=0.0)
        self.truth.append(truth)
        self.probs.append(probs)
        self.video_truth.update(ids, truth)
        self.video_probs.update(ids, probs)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(truth, probabilities) [windows, K] of every window seen."""
        k = len(self.classes)
        if not self.truth:
            return np.zeros((0, k)), np.zeros((0, k))
        return np.concatenate(self.truth), np.concatenate(self.probs)

    def result(self) -> dict:
        """{"model": {..., "video": {...}}, "baseline": {..., "video": {...}, "class_frequencies"}}."""
        truth, probs = self.arrays()
        order = sorted(self.video_truth.videos)
        v_truth = self.video_truth.aggregated("max", order)
        v_probs = self.video_probs.aggregated(self.aggregate, order)
        model = ranking_report(truth, probs, self.classes)
        model["video"] = {"videos": len(order), **ranking_report(v_truth, v_probs, self.classes)}
        prior = lambda n: np.broadcast_to(self.prior, (n, len(self.classes)))
        base = ranking_report(truth, prior(len(truth)), self.classes)
        base["video"] = {"videos": len(order), **ranking_report(v_truth, prior(len(order)), self.classes)}
        base["class_frequencies"] = {c: float(p) for c, p in zip(self.classes, self.prior)}
        if self.nonfinite:
            model = nan_like(model)
        return {"model": model, "baseline": base}

    def pr_curves(self, max_points: int = PR_POINTS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{class: (recall, precision)} of the model, thinned to at most max_points each."""
        truth, probs = self.arrays()
        out = {}
        for i, c in enumerate(self.classes):
            r, p = precision_recall_curve(truth[:, i], probs[:, i])
            step = max(1, len(r) // max_points)
            out[c] = (r[::step], p[::step])
        return out


def make_ranking(target, stats: dict, top_k: int = 2, aggregate: str = "mean") -> RankingMetrics:
    """The multilabel accumulator from metadata stats; raises KeyError naming a missing field."""
    check_aggregate(target, aggregate)
    for key in ("class_counts", "windows"):
        if key not in stats:
            raise KeyError(f"metadata stats lack {key!r} (the class-frequency baseline)")
    return RankingMetrics(target.classes, stats["class_counts"], stats["windows"], aggregate)
