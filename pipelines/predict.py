"""`clipforge predict`: new videos -> the ingest decode and windows -> RunInference on an export -> Parquet."""
from __future__ import annotations

import argparse
import io
import json
import os
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from pipelines import drift
from pipelines import staging as out_dir
from pipelines.runners.options import create_pipeline, is_template_launch, pipeline_options
from schemas.errors import SetupError
from pipelines.decoder import DECODERS, default_decoder, resolve
from pipelines.inputs import list_videos, split_duplicates
from pipelines.predict_report import anomaly_scores
from pipelines.probe import ProbeLimits
from pipelines.predict_windows import VideoWindow
from pipelines.signals import combine as signals_row
from pipelines.sources import DEAD_LETTER, SIGNALS, WINDOW, ReadVideos
from pipelines.predict_windows import DecodeWindows
from pipelines.dead_letters import WriteDeadLetter
from schemas.export import EMBED_SIGNATURE, EMBEDDING, PREDICTION, SERVING_SIGNATURE, load_export_metadata
from schemas.errors import exits
from schemas.measures import frame_psnr as psnr  # noqa: F401 - the one PSNR, also evaluate's
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


def limits_of(config: dict) -> ProbeLimits:
    """The --formats/--max-pixels/--max-duration the model's dataset was ingested with."""
    default = ProbeLimits()
    return ProbeLimits(formats=tuple(config.get("formats") or default.formats),
                       max_pixels=int(config.get("max_pixels") or default.max_pixels),
                       max_duration=float(config.get("max_duration") or default.max_duration))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clipforge predict",
        description="Run an exported model over new videos. Videos are decoded and windowed exactly as at "
                    "ingest, with the spec stored beside the model (its metadata.json), and run through Beam's "
                    "RunInference. Writes OUTPUT/windows/*.parquet (one row per window), OUTPUT/videos.parquet "
                    "(one row per video), OUTPUT/dead_letter.jsonl (videos that could not be decoded), "
                    "OUTPUT/drift.json (the videos' signals against the model's training split), "
                    "OUTPUT/report.html (what was read and a timeline per video) and, for "
                    "next_frame models, OUTPUT/frames/<video>/<start_frame>.png. Other flags go to Beam "
                    "(--runner, --direct_num_workers, cloud runner flags).")
    p.add_argument("--model", required=True, help="export directory written by `clipforge train` (WORKDIR/export)")
    p.add_argument("--input", required=True, help="a directory of videos, a glob, or a text file listing paths")
    p.add_argument("--output", required=True, help="directory to create for the predictions")
    p.add_argument("--batch-size", type=int, default=16, help="largest batch of windows per model call (default 16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output (atomically)")
    p.add_argument("--video-timeout", type=float, default=600.0, help="seconds allowed to decode one video")
    p.add_argument("--segment-seconds", type=float, default=300.0,
                   help="decode local videos longer than ~1.5x this as segments of about this length, in parallel "
                        "on several workers, with exactly the windows of a whole decode (default 300; 0 never splits)")
    p.add_argument("--decoder", choices=DECODERS,
                   help="bundled (the imageio-ffmpeg wheel's static ffmpeg) or system (ffmpeg/ffprobe from PATH); "
                        "default: the one the model's dataset was ingested with")
    p.add_argument("--short-videos", choices=("drop", "pad"), default="drop",
                   help="a video shorter than one window: drop it (dead letter too_short) or pad it, repeating its "
                        "last frame until one window fits; the window's row says how many in padded_frames "
                        "(default drop)")
    p.add_argument("--frame-folders", action="store_true",
                   help="a folder under --input that directly holds images (jpg, jpeg, png, bmp, webp) and no video "
                        "file is one video (id: its path), its frames in natural order at --source-fps, as at ingest")
    p.add_argument("--source-fps", type=float,
                   help="--frame-folders: the rate the frames were taken at; resampled to the model's fps")
    p.add_argument("--report-videos", type=int, default=50, metavar="N",
                   help="timelines drawn in OUTPUT/report.html: the first N videos by name (default 50; 0: none)")
    p.add_argument("--embeddings", action="store_true",
                   help="also write each window's backbone feature vector (the export's embed signature) as an "
                        "`embedding` column, and each video's mean as `mean_embedding` in videos.parquet")
    return p


@exits("clipforge predict")
def run(argv: list[str]) -> int:
    """Entry point of `clipforge predict`; returns the exit status (schemas/errors.py: 2 for a wrong set-up)."""
    start = time.time()
    args, beam_args = build_parser().parse_known_args(argv)
    if args.batch_size < 1:
        raise SetupError(f"--batch-size={args.batch_size}: expected an integer >= 1")
    if args.report_videos < 0:
        raise SetupError(f"--report-videos={args.report_videos}: expected an integer >= 0")
    if not args.segment_seconds >= 0:
        raise SetupError(f"--segment-seconds={args.segment_seconds}: expected 0 (never split) or a positive "
                         "number of seconds")
    if args.frame_folders and not (args.source_fps is not None and args.source_fps > 0):
        raise SetupError(f"--source-fps={args.source_fps}: expected a positive frame rate with --frame-folders "
                         "(the rate the frames were taken at)")
    meta, card = load_export_metadata(args.model)
    if args.embeddings and "embedding_dim" not in card:
        raise SetupError(f"--embeddings: {args.model} has no {EMBED_SIGNATURE!r} signature (its model_card.json "
                         "has no embedding_dim); re-train it with this clipforge version")
    decoder = args.decoder or meta.config.get("decoder") or default_decoder()
    resolve(decoder)  # DecoderError: a set-up error
    options = pipeline_options(beam_args)
    refs, missing = list_videos(args.input, args.frame_folders)
    videos, _ = split_duplicates(refs)
    staging = out_dir.prepare_output(args.output, args.overwrite)
    reference = drift.load_reference(args.model)
    target, resize = meta.target, meta.config.get("resize", "stretch")
    limits = limits_of(meta.config)
    horizon = task_of(target).horizon(target)
    print(f"predict: {len(videos)} video(s) with {card.get('architecture', '?')} ({target.task}); "
          f"windows of {meta.spec.frames} frames at {meta.spec.fps} fps, {meta.spec.height}x{meta.spec.width}")
    try:
        with create_pipeline(options) as p:
            decoded = (p | "ReadVideos" >> ReadVideos(videos)
                       | "DecodeWindows" >> DecodeWindows(meta.spec, resize, horizon, args.video_timeout,
                                                          limits=limits, segment_seconds=args.segment_seconds,
                                                          decoder=decoder, short_videos=args.short_videos,
                                                          source_fps=args.source_fps or 0.0, signals=True))
            rows = decoded[WINDOW] | "Predict" >> PredictWindows(args.model, target, staging.work, args.batch_size,
                                                                 args.embeddings)
            _ = rows | "Write" >> WritePredictions(staging.work, target, args.embeddings)
            _ = decoded[DEAD_LETTER] | "WriteDeadLetter" >> WriteDeadLetter(staging.work)
            if reference is not None:
                _ = decoded[SIGNALS] | "Drift" >> CompareDrift(reference, staging.work)
        if is_template_launch(options):
            print(f"predict: job submitted; {args.output} fills in when it finishes")
            return 0
        if staging.local:
            from pipelines import predict_report
            predict_report.write_report(staging.work, target, card, meta, len(videos),
                                        args.report_videos)
        out_dir.publish(staging)
    except BaseException:
        out_dir.discard(staging)
        raise
    print(_summary(staging.final, time.time() - start))
    return 0


def _summary(output: str, seconds: float) -> str:
    lines = [f"clipforge predict: done in {seconds:.1f}s -> {output}"]
    if FileSystems.get_scheme(output) is None:
        import pyarrow.parquet as pq
        videos = pq.read_table(os.path.join(output, VIDEOS_FILE))
        dead_path = os.path.join(output, "dead_letter.jsonl")
        dead = [json.loads(l) for l in open(dead_path, encoding="utf-8")] if os.path.exists(dead_path) else []
        lines.append(f"  {videos.num_rows} video(s), {sum(videos.column('windows').to_pylist())} window(s) predicted; "
                     f"{len(dead)} dead-lettered -> {dead_path}")
        lines.append(f"  per window: {os.path.join(output, WINDOWS_DIR)}/*.parquet; per video: "
                     f"{os.path.join(output, VIDEOS_FILE)}; report: {os.path.join(output, 'report.html')}")
        found = drift.load_drift(output)
        lines.append(drift.summary_line(found) + f" -> {os.path.join(output, drift.DRIFT_FILE)}" if found else
                     f"  drift: not checked: the model has no {drift.DRIFT_REFERENCE_FILE} "
                     "(exported before drift checks)")
    return "\n".join(lines)
