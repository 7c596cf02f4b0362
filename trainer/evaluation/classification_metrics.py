"""Streaming classification metrics (accuracy, top-k, macro F1, confusion matrix) of a model and of the majority-class baseline."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from schemas import features as fk
from trainer.evaluation.nan import nan_like, nonfinite_rows, ratio
from trainer.evaluation.video_metrics import VideoValues, video_labels


def _class_report(cm: np.ndarray, topk_correct: int, classes: Sequence[str], video_acc: float, k: int) -> dict:
    """Accuracy, macro-F1, per-class precision/recall and the confusion matrix from counts."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    # zero_division=0 as scikit-learn: precision of a never-predicted class is 0.
    precision = np.nan_to_num(ratio(tp, predicted))
    recall = np.nan_to_num(ratio(tp, support))
    f1 = np.nan_to_num(ratio(2 * precision * recall, precision + recall))
    present = (support + predicted) > 0  # macro average over classes seen in truth or prediction
    n = cm.sum()
    return {
        "accuracy": float(ratio(tp.sum(), n)),
        "top_k_accuracy": float(ratio(topk_correct, n)), "k": k,
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_normalized": np.nan_to_num(ratio(cm, support[:, None])).round(6).tolist(),
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
        bad = nonfinite_rows(probs)
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
            model = nan_like(model)
        order = sorted(self.videos)
        truth, pred = video_labels(self.video_truth, self.video_votes, self.video_probs, self.aggregate, order)
        model["video"] = _video_class_report(truth, pred, len(self.classes))
        if self.nonfinite:
            model["video"] = nan_like(model["video"])
        base = _class_report(self.cm_base, self.topk_base, self.classes, video_base, self.top_k)
        base["majority_class"] = self.classes[self.majority]
        base["video"] = _video_class_report(truth, np.full_like(truth, self.majority), len(self.classes))
        return {"model": model, "baseline": base}
