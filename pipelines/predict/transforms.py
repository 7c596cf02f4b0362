"""predict's transforms: RunInference on an export, the Parquet sinks and the drift check, with their row schemas."""
from __future__ import annotations

import io
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from pipelines import drift
from pipelines.predict.report import anomaly_scores
from pipelines.predict.windows import VideoWindow
from pipelines.signals import combine as signals_row
from schemas.export import EMBED_SIGNATURE, EMBEDDING, PREDICTION, SERVING_SIGNATURE
from schemas.spec import TargetSpec
from schemas.tasks import task_of

WINDOWS_DIR = "windows"      # OUTPUT/windows/part-*.parquet: one row per window
VIDEOS_FILE = "videos.parquet"  # OUTPUT/videos.parquet: one row per video
FRAMES_DIR = "frames"        # next_frame: OUTPUT/frames/<video_id>/<start_frame>.png


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """Beam RunInference handler for a clipforge export: calls its serving_default signature.

    Beam's own TFModelHandlerNumpy loads through keras.models.load_model and TF Hub, which
    cannot load a Keras 3 SavedModel export; this one uses tf.saved_model.load, so it serves
    any export that follows schemas/export.py, whatever code built it.
    """

    def __init__(self, export_dir: str, batch_size: int = 16, embeddings: bool = False):
        super().__init__()
        self.export_dir, self.batch_size, self.embeddings = export_dir, batch_size, embeddings

    def load_model(self):
        import tensorflow as tf
        return _LoadedExport(tf.saved_model.load(self.export_dir))

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args=None) -> Iterable[PredictionResult]:
        import tensorflow as tf
        frames = tf.constant(np.stack(batch))
        preds = model.serve(frames=frames)[PREDICTION].numpy()
        if not self.embeddings:
            return [PredictionResult(x, p) for x, p in zip(batch, preds)]
        # The same frames through the export's embed signature: its backbone features.
        embedded = model.loaded.signatures[EMBED_SIGNATURE](frames=frames)[EMBEDDING].numpy()
        return [PredictionResult(x, {PREDICTION: p, EMBEDDING: e}) for x, p, e in zip(batch, preds, embedded)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(x.nbytes for x in batch)

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.batch_size}

    def get_metrics_namespace(self) -> str:
        return "clipforge_predict"


class _LoadedExport:
    """A loaded SavedModel and its serving signature (Beam's shared cache needs a weak-referenceable object)."""

    def __init__(self, loaded):
        self.loaded = loaded  # the signature needs the loaded object alive
        self.serve = loaded.signatures[SERVING_SIGNATURE]


# The Parquet type of each column kind a task row's columns use (schemas/tasks.py).
COLUMN_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(),
                "list_float64": pa.list_(pa.float64()), "list_string": pa.list_(pa.string())}


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image
    img = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, format="PNG")
    return buf.getvalue()


def window_schema(target: TargetSpec, embeddings: bool = False) -> pa.Schema:
    """The Parquet schema of OUTPUT/windows/*.parquet for a task (with --embeddings, an embedding column)."""
    fields = [("video", pa.string()), ("path", pa.string()), ("start_frame", pa.int64()), ("start_time", pa.float64()),
              ("padded_frames", pa.int64())]
    fields += [(name, COLUMN_TYPES[kind]) for name, kind in task_of(target).window_columns(target)]
    if embeddings:
        fields.append((EMBEDDING, pa.list_(pa.float32())))
    return pa.schema(fields)


def video_schema(target: TargetSpec, embeddings: bool = False) -> pa.Schema:
    """The Parquet schema of OUTPUT/videos.parquet for a task (with --embeddings, mean_embedding)."""
    fields = [("video", pa.string()), ("windows", pa.int64())]
    fields += [(name, COLUMN_TYPES[kind]) for name, kind in task_of(target).video_columns(target)]
    if embeddings:
        fields.append(("mean_embedding", pa.list_(pa.float32())))
    return pa.schema(fields)


class _ToRowFn(beam.DoFn):
    """(key, PredictionResult) -> one Parquet row; next_frame also writes the predicted PNG."""

    def __init__(self, target: TargetSpec, output_dir: str):
        self.target, self.output_dir = target, output_dir

    def process(self, item):
        (video_id, path, start_frame, start_time, truth, padded), result = item
        row = {"video": video_id, "path": path, "start_frame": int(start_frame), "start_time": float(start_time),
               "padded_frames": int(padded)}
        inference = result.inference
        if isinstance(inference, dict):  # --embeddings
            row[EMBEDDING] = [float(v) for v in np.asarray(inference[EMBEDDING], np.float32)]
            inference = inference[PREDICTION]
        pred = np.asarray(inference, np.float64)
        task = task_of(self.target)
        if task.target_frames:
            name = f"{FRAMES_DIR}/{video_id}/{int(start_frame):08d}.png"
            with FileSystems.create(f"{self.output_dir}/{name}") as f:
                f.write(_png(pred[0]))
            row["frame_path"] = name
        row.update(task.window_row(self.target, pred, truth, result.example[-1]))
        yield row


def summarize_video(video: str, rows: Iterable[dict], target: TargetSpec) -> dict:
    """One videos.parquet row from the video's window rows."""
    rows = sorted(rows, key=lambda r: r["start_frame"])
    out: dict[str, Any] = {"video": video, "windows": len(rows)}
    out.update(task_of(target).video_row(target, rows))
    if rows and EMBEDDING in rows[0]:
        out["mean_embedding"] = [float(v) for v in np.mean([r[EMBEDDING] for r in rows], axis=0, dtype=np.float64)]
    return out


def _keyed(w: VideoWindow):
    return (w.video_id, w.path, w.start_frame, w.start_time, w.next_frames, w.padded_frames), w.frames


class PredictWindows(beam.PTransform):
    """PCollection[VideoWindow] -> RunInference on the export -> PCollection[row dict]."""

    def __init__(self, export_dir: str, target: TargetSpec, output_dir: str, batch_size: int,
                 embeddings: bool = False):
        super().__init__()
        self.handler = KeyedModelHandler(SavedModelHandler(export_dir, batch_size, embeddings))
        self.target, self.output_dir = target, output_dir

    def expand(self, windows):
        return (windows
                | "Key" >> beam.Map(_keyed)
                | "RunInference" >> RunInference(self.handler)
                | "ToRows" >> beam.ParDo(_ToRowFn(self.target, self.output_dir)))


class WritePredictions(beam.PTransform):
    """Writes OUTPUT/windows/part-*.parquet and the per-video summary OUTPUT/videos.parquet."""

    def __init__(self, output_dir: str, target: TargetSpec, embeddings: bool = False):
        super().__init__()
        self.output_dir, self.target, self.embeddings = output_dir, target, embeddings

    def expand(self, rows):
        target = self.target
        by_video = (rows
                    | "ByVideo" >> beam.Map(lambda r: (r["video"], r))
                    | "Group" >> beam.GroupByKey())
        if task_of(target).target_frames:
            # The score is relative to the video's own median error: it needs all of its windows.
            rows = by_video | "AnomalyScore" >> beam.FlatMap(lambda kv: anomaly_scores(kv[1]))
        _ = rows | "WriteWindows" >> beam.io.WriteToParquet(
            f"{self.output_dir}/{WINDOWS_DIR}/part", window_schema(target, self.embeddings),
            file_name_suffix=".parquet")
        return (by_video
                | "Summarize" >> beam.Map(lambda kv: summarize_video(kv[0], kv[1], target))
                | "WriteVideos" >> beam.io.WriteToParquet(
                    f"{self.output_dir}/{VIDEOS_FILE}", video_schema(target, self.embeddings), num_shards=1,
                    shard_name_template=""))


class CompareDrift(beam.PTransform):
    """PCollection[VideoSignals] (per segment) -> a row per video -> OUTPUT/drift.json against `reference`."""

    def __init__(self, reference: dict, output_dir: str):
        super().__init__()
        self.reference, self.output_dir = reference, output_dir

    def expand(self, signals):
        ref, out = self.reference, self.output_dir
        return (signals
                | "ByVideo" >> beam.Map(lambda s: (s.video_id.encode("utf-8", "surrogateescape"), s))
                | "Group" >> beam.GroupByKey()
                | "Combine" >> beam.Map(lambda kv: signals_row(kv[1]))
                | "All" >> beam.combiners.ToList()
                | "Write" >> beam.Map(lambda rows: drift.write_json(drift.compare(ref, rows), out, drift.DRIFT_FILE)))
