"""`clipforge evaluate`: stream a dataset split through an exported SavedModel into metrics.json and report.html."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from typing import Any, Optional

import numpy as np

from schemas import export as ex
from schemas import features as fk
from schemas.codec import RecordCodec
from schemas.errors import SetupError, exits
from schemas.logs import get_logger
from schemas.metadata import DatasetMetadata
from schemas.tasks import task_of
from trainer.evaluation import metrics as mt
from trainer.evaluation.video_metrics import AGGREGATES, check_aggregate

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
# Window fields that change what the model sees; stride and encoding only change which windows
# exist and how they are stored, so a mismatch there is reported but not refused.
MODEL_SPEC_FIELDS = ("frames", "fps", "height", "width", "channels")
TARGET_FIELDS = ("task", "outputs", "classes", "horizon")
log = get_logger(__name__)


class EvaluationError(SetupError, RuntimeError):
    """A set-up problem that stops evaluation (model and data do not fit, a missing split): exit 2.
    Data that cannot be read is a ShardError (the work failed: exit 1)."""


def check_specs(model_meta: DatasetMetadata, data_meta: DatasetMetadata) -> list[str]:
    """Refuses a dataset whose windows or targets differ from what the model was trained on.

    Returns:
      Notes on harmless differences (stride, encoding) to print.

    Raises:
      EvaluationError: naming the first differing field and both values.
    """
    ms, ds = model_meta.spec, data_meta.spec
    for name in MODEL_SPEC_FIELDS:
        if getattr(ms, name) != getattr(ds, name):
            raise EvaluationError(f"dataset spec.{name}={getattr(ds, name)!r} but the model was trained on "
                                  f"spec.{name}={getattr(ms, name)!r}; ingest the videos with the model's spec")
    mt_, dt = model_meta.target.to_dict(), data_meta.target.to_dict()
    for name in TARGET_FIELDS:
        if mt_.get(name) != dt.get(name):
            raise EvaluationError(f"dataset target.{name}={dt.get(name)!r} but the model predicts "
                                  f"target.{name}={mt_.get(name)!r}")
    return [f"note: dataset spec.{n}={getattr(ds, n)!r}, model trained with {getattr(ms, n)!r}"
            for n in ("stride", "encoding", "jpeg_quality") if getattr(ms, n) != getattr(ds, n)]


def _load_serving_fn(model_dir: str, spec):
    import tensorflow as tf
    try:
        loaded = tf.saved_model.load(model_dir)
    except Exception as e:  # TF raises several types for a damaged SavedModel
        raise EvaluationError(f"cannot load the SavedModel in {model_dir}: {type(e).__name__}: {e}") from e
    if ex.SERVING_SIGNATURE not in loaded.signatures:
        raise EvaluationError(f"{model_dir} has no {ex.SERVING_SIGNATURE!r} signature; "
                              f"it has {sorted(loaded.signatures)}")
    fn = loaded.signatures[ex.SERVING_SIGNATURE]
    inputs = fn.structured_input_signature[1]
    if ex.FRAMES_INPUT not in inputs:
        raise EvaluationError(f"{ex.SERVING_SIGNATURE} takes {sorted(inputs)}, expected {ex.FRAMES_INPUT!r}")
    want = inputs[ex.FRAMES_INPUT]
    if want.dtype != tf.uint8 or not want.shape.is_compatible_with((None,) + spec.window_shape):
        raise EvaluationError(f"{ex.SERVING_SIGNATURE} expects frames {want.dtype.name}{want.shape.as_list()}, "
                              f"the dataset gives uint8[batch, {', '.join(map(str, spec.window_shape))}]")
    return loaded, fn


def _split_dataset(data_dir: str, meta: DatasetMetadata, split: str, batch_size: int):
    import tensorflow as tf
    try:
        paths = meta.shard_paths(data_dir, split)
    except KeyError as e:
        raise EvaluationError(f"{data_dir}: {e.args[0]}") from None
    if not paths or meta.num_windows(split) == 0:
        raise EvaluationError(f"split {split!r} of {data_dir} is empty (0 windows in metadata.json); "
                              "nothing to evaluate. Pick another --split or ingest more videos.")
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise EvaluationError(f"shard(s) listed in {data_dir}/metadata.json are missing: {missing[:3]}")
    codec = RecordCodec(meta.spec, meta.target)
    ds = tf.data.TFRecordDataset(paths, compression_type="GZIP" if meta.compression == "gzip" else "")
    ds = ds.map(codec.parse_fn(), num_parallel_calls=tf.data.AUTOTUNE)
    # No drop_remainder: every window of the split is scored, the last batch may be short.
    return ds.batch(batch_size).prefetch(2)


def _check_prediction(pred: np.ndarray, batch: int, meta: DatasetMetadata) -> None:
    t, s = meta.target, meta.spec
    want = (batch,) + task_of(t).prediction_shape(t, s)
    if tuple(pred.shape) != want:
        raise EvaluationError(f"the model's {ex.PREDICTION!r} has shape {list(pred.shape)}, "
                              f"a {t.task} model on this spec must give {list(want)}")


def score(model_dir: str, data_dir: str, split: str = "test", batch_size: int = 32,
          top_k: int = 2, aggregate: str = "mean") -> tuple[dict, Any, dict, DatasetMetadata]:
    """Scores an export on a dataset split against the task's baselines, per window and per video.

    `aggregate` (mean | max | vote, as the task row allows: vote for classification) is how a video's windows
    combine into the video-level figures.

    Returns:
      (metrics, accumulator, model card, dataset metadata). The accumulator holds the bounded
      samples the report plots. `metrics` (written as metrics.json; NaN/inf are written as null) has:

        task, split, windows, videos, nonfinite_windows, status ("ok" | "nonfinite_predictions"),
        model_dir, data_dir, dataset_fingerprint, model_dataset_fingerprint, architecture,
        aggregate, then per task (every model.* / baseline*.* block also holds "video": the same
        figures per video, each video's windows combined by `aggregate`):

        regression:
          model.{mae, rmse, mse, r2, pearson_r}            mean over outputs (rmse = sqrt of mean mse)
          model.per_output.<name>.{mae, rmse, mse, r2, pearson_r}
          model.per_video.{mae, rmse, mse, r2, pearson_r, per_output}   on per-video mean target vs
                                                                        per-video mean prediction
          baseline.<same keys>                              constant training mean (stats.target_mean);
                                                            its pearson_r is null (constant)
          skill                                             1 - MSE_model / MSE_baseline
          skill_per_output.<name>
          model.video.{videos, mae, rmse, mse, r2, pearson_r, per_output}   per-video mean (max)
                                                            prediction vs per-video mean (max) target
        classification:
          model.{accuracy, top_k_accuracy, k, macro_f1, video_accuracy}
          model.per_class.<class>.{precision, recall, f1, support}
          model.confusion_matrix             [true][predicted] counts
          model.confusion_matrix_normalized  rows divided by the true-class count
          baseline.<same keys>, baseline.majority_class     always the training majority class
                                                            (argmax of stats.class_histogram)
          model.video.{videos, accuracy, macro_f1, confusion_matrix}   one class per video: argmax of
                                                            the mean (max) probabilities, or the vote
        next_frame:
          model.{mse, mae, psnr, ssim}                      over all horizon steps, 0..255 scale
          model.per_step[i].{step, mse, mae, psnr, ssim}    step = 1..horizon
          baseline_copy_last.<same keys>                    last input frame repeated
          baseline_linear.<same keys>                       last + k*(last - previous), clipped; null if T=1
          gain_db_over_copy_last                            model.psnr - baseline_copy_last.psnr
          model.video.{videos, mse, psnr, ssim}             mean over videos of each video's PSNR (of
                                                            its mean window MSE) and mean SSIM; max:
                                                            of its worst window
        multilabel:
          model.{map, map_classes, map_skipped_classes}     mean AP over classes with a positive
          model.{gap, hit_at_1, micro_f1, macro_f1, threshold}   GAP@20 (YouTube-8M), F1s at p >= 0.5
          model.per_class.<class>.{ap, precision, recall, f1, support}
          baseline.<same keys>, baseline.class_frequencies  every window scored with the training
                                                            class frequencies (stats.class_counts)
          model.video.{videos, map, gap, ...}               per-video mean (max) window probabilities
                                                            against the union of its windows' classes

    Raises:
      EvaluationError, MissingMetadataError, SpecError: a wrong set-up, with one clear message.
    """
    import tensorflow as tf

    from trainer.input import ShardError
    model_meta, card = ex.load_export_metadata(model_dir)
    try:
        check_aggregate(model_meta.target.task, aggregate)
    except ValueError as e:
        raise EvaluationError(f"--{e.args[0]}") from None
    data_meta = DatasetMetadata.load(data_dir)
    for note in check_specs(model_meta, data_meta):
        log.warning(note)
    ds = _split_dataset(data_dir, data_meta, split, batch_size)
    _, fn = _load_serving_fn(model_dir, data_meta.spec)
    t = data_meta.target
    try:  # the baseline is what the model could have learnt: its own training split's stats
        check_aggregate(t.task, aggregate)
    except ValueError as e:
        raise EvaluationError(f"--{e.args[0]}") from None
    try:
        acc = mt.make_accumulator(t, model_meta.stats or data_meta.stats, top_k, aggregate)
    except (KeyError, ValueError) as e:
        raise EvaluationError(f"{model_dir}/metadata.json: {e.args[0]}") from None
    videos: set[str] = set()
    try:
        for batch in ds:
            out = fn(**{ex.FRAMES_INPUT: batch[fk.FRAMES]})
            if ex.PREDICTION not in out:
                raise EvaluationError(f"{ex.SERVING_SIGNATURE} returns {sorted(out)}, expected {ex.PREDICTION!r}")
            pred = out[ex.PREDICTION].numpy()
            ids = [v.decode("utf-8", "surrogateescape") for v in batch[fk.VIDEO_ID].numpy()]
            _check_prediction(pred, len(ids), data_meta)
            videos.update(ids)
            acc.update({**{k: v.numpy() for k, v in batch.items() if k != fk.VIDEO_ID}, fk.VIDEO_ID: ids}, pred)
    except tf.errors.OpError as e:  # a damaged shard: the data, not the set-up, failed
        raise ShardError(f"reading split {split!r} of {data_dir} failed: {e.message}; "
                         f"run `clipforge validate {data_dir}`") from None
    if acc.windows == 0:
        raise ShardError(f"split {split!r} of {data_dir} holds no records although metadata.json lists "
                         f"{data_meta.num_windows(split)}; run `clipforge validate {data_dir}`")
    metrics = {"task": t.task, "split": split, "windows": acc.windows, "videos": len(videos),
               "nonfinite_windows": acc.nonfinite,
               "status": "nonfinite_predictions" if acc.nonfinite else "ok",
               "model_dir": os.path.abspath(model_dir), "data_dir": os.path.abspath(data_dir),
               "dataset_fingerprint": data_meta.fingerprint,
               "model_dataset_fingerprint": model_meta.fingerprint,
               "architecture": card.get("architecture"), "aggregate": aggregate}
    metrics.update(acc.result())
    return metrics, acc, card, data_meta


def to_json_safe(value):
    """numpy scalars to Python, NaN and infinities to None: metrics.json stays strict JSON."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_lines(metrics: dict) -> list[str]:
    """A few lines of headline metrics, model vs baseline, for the terminal."""
    row = task_of(metrics["task"])
    keys, base = row.summary_keys, row.baseline.section
    fmt = lambda v: "null" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"
    lines = [f"{'metric':<16}{'model':>12}{base:>20}"]
    lines += [f"{k:<16}{fmt(metrics['model'][k]):>12}{fmt(metrics[base][k]):>20}" for k in keys]
    for key, name in (("skill", "skill"), ("gain_db_over_copy_last", "gain_db")):
        if key in metrics:  # regression's skill, next_frame's gain over copy-last
            lines.append(f"{name:<16}{fmt(metrics[key]):>12}")
    video_keys = row.video_keys
    model_video, base_video = metrics["model"].get("video") or {}, metrics[base].get("video") or {}
    lines += [f"{'video ' + k:<16}{fmt(model_video.get(k)):>12}{fmt(base_video.get(k)):>20}"
              for k in video_keys if model_video]
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge evaluate", description=(
        "Score an exported model on one split of an ingested dataset, beside honest baselines, and write "
        "OUTPUT/metrics.json and a self-contained OUTPUT/report.html."))
    p.add_argument("--model", required=True, metavar="EXPORT_DIR",
                   help="export directory written by `clipforge train` (SavedModel + metadata.json + model_card.json)")
    p.add_argument("--data", required=True, metavar="DATASET_DIR",
                   help="dataset directory written by `clipforge ingest`; its spec must match the model's")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--output", required=True, metavar="DIR", help="directory for metrics.json and report.html")
    p.add_argument("--batch-size", type=int, default=32, help="windows per model call (default: 32)")
    p.add_argument("--top-k", type=int, default=2,
                   help="k of top-k accuracy for classification, clamped to the number of classes (default: 2)")
    p.add_argument("--aggregate", choices=AGGREGATES, default="mean",
                   help="how a video's windows combine into the video-level figures (model.video.*): "
                        "mean or max of the predictions (probabilities for classification, window "
                        "errors for next_frame, where max is each video's worst window), or vote "
                        "(classification only: the most frequent window class). Default: mean")
    p.add_argument("--no-report", action="store_true", help="write metrics.json only")
    return p


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """One evaluation: an export scored on a split of a dataset (the flags of `clipforge evaluate`).

    Attributes:
      model: the export directory written by `clipforge train`.
      data: the dataset directory written by `clipforge ingest`.
      output: where metrics.json (and report.html) go; None writes nothing.
      split, batch_size, top_k, aggregate: as the flags; report: write report.html too.
    """

    model: str
    data: str
    output: Optional[str] = None
    split: str = "test"
    batch_size: int = 32
    top_k: int = 2
    aggregate: str = "mean"
    report: bool = True

    def check(self) -> "EvaluateConfig":
        if self.batch_size < 1 or self.top_k < 1:
            raise SetupError("--batch-size and --top-k must be >= 1")
        return self


def evaluate(config: EvaluateConfig) -> dict:
    """Scores `config.model` on `config.split` of `config.data`; writes metrics.json (NaN/inf as null)
    and report.html under `config.output` when it is set, and returns the metrics (see `score`).

    The library entry point of the stage: `clipforge evaluate`, retrain and the demo call it.

    Raises:
      EvaluationError: model and data do not fit (set-up); ShardError: the data could not be read.
    """
    config.check()
    metrics, acc, card, data_meta = score(config.model, config.data, config.split, config.batch_size,
                                          config.top_k, config.aggregate)
    if config.output is None:
        return metrics
    try:
        os.makedirs(config.output, exist_ok=True)
    except OSError as e:
        raise SetupError(f"--output {config.output} cannot be created: {e.strerror}") from None
    path = os.path.join(config.output, METRICS_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(to_json_safe(metrics), f, indent=2)
    log.info(f"{metrics['task']} on split {config.split!r}: {metrics['windows']} windows from "
             f"{metrics['videos']} videos")
    log.info("\n".join(summary_lines(metrics)))
    log.info(f"metrics: {path}")
    if config.report:
        from trainer.evaluation import report
        log.info(f"report:  {report.write_report(os.path.join(config.output, REPORT_FILE), metrics, acc, card, data_meta)}")
    return metrics


def nonfinite_line(metrics: dict, path: str) -> str:
    """The error line for a model that returned NaN or infinite predictions (metrics.json at PATH)."""
    return (f"clipforge evaluate: error: the model returned NaN or infinite predictions for "
            f"{metrics['nonfinite_windows']} of {metrics['windows']} windows; its metrics are null in {path}")


@exits("clipforge evaluate")
def run(argv: Optional[list[str]] = None) -> int:
    """Entry point of `clipforge evaluate`; returns 0, 1 when the model gave non-finite outputs or the data
    could not be read, 2 on set-up errors (schemas/errors.py)."""
    args = build_parser().parse_args(argv)
    metrics = evaluate(EvaluateConfig(args.model, args.data, args.output, args.split, args.batch_size,
                                      args.top_k, args.aggregate, not args.no_report))
    if metrics["nonfinite_windows"]:
        log.error(nonfinite_line(metrics, os.path.join(args.output, METRICS_FILE)))
        return 1
    return 0
