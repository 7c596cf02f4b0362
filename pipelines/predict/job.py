"""`clipforge predict`: new videos -> the ingest decode and windows -> RunInference on an export -> Parquet."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import drift
from pipelines import staging as out_dir
from pipelines.dead_letters import WriteDeadLetter
from pipelines.decoder import default_decoder, resolve
from pipelines.inputs import VideoRef, list_videos, split_duplicates
from pipelines.predict import report as predict_report
from pipelines.predict.config import PredictConfig, parse_config
from pipelines.predict.transforms import (VIDEOS_FILE, WINDOWS_DIR, CompareDrift, PredictWindows,
                                          WritePredictions)
from pipelines.predict.windows import DecodeWindows
from pipelines.probe import ProbeLimits
from pipelines.runners.options import pipeline_options, run_staged
from pipelines.sources import DEAD_LETTER, SIGNALS, WINDOW, ReadVideos
from schemas.errors import SetupError, exits
from schemas.export import EMBED_SIGNATURE, load_export_metadata
from schemas.logs import get_logger
from schemas.metadata import DatasetMetadata
from schemas.tasks import task_of

log = get_logger(__name__)


@dataclasses.dataclass
class PredictPlan:
    """Everything decided before the pipeline runs: the checked set-up of one predict.

    Attributes:
      config: the checked config.
      meta: the export's dataset metadata (spec, target, the ingest config it was made with).
      card: the export's model card.
      decoder: the decoder name every worker runs (--decoder, else the dataset's).
      videos: the videos to predict (unique video ids).
      reference: the export's drift_reference.json, or None when it has none (no drift check).
      staging: where the outputs are written and where they end up.
    """

    config: PredictConfig
    meta: DatasetMetadata
    card: dict
    decoder: str
    videos: list[VideoRef]
    reference: Optional[dict]
    staging: out_dir.Staging


def limits_of(config: dict) -> ProbeLimits:
    """The --formats/--max-pixels/--max-duration the model's dataset was ingested with."""
    default = ProbeLimits()
    return ProbeLimits(formats=tuple(config.get("formats") or default.formats),
                       max_pixels=int(config.get("max_pixels") or default.max_pixels),
                       max_duration=float(config.get("max_duration") or default.max_duration))


def prepare(config: PredictConfig) -> PredictPlan:
    """Runs every set-up check, cheapest first, then creates the staging directory.

    Raises:
      SetupError: a flag out of range, the export missing or unfinished, --embeddings on an export
        without the embed signature, the decoder missing, no input matched, the output existing
        (without --overwrite) or not writable.
    """
    config.check()
    meta, card = load_export_metadata(config.model)
    if config.embeddings and "embedding_dim" not in card:
        raise SetupError(f"--embeddings: {config.model} has no {EMBED_SIGNATURE!r} signature (its model_card.json "
                         "has no embedding_dim); re-train it with this clipforge version")
    decoder = config.decoder or meta.config.get("decoder") or default_decoder()
    resolve(decoder)  # DecoderError: a set-up error
    refs, _ = list_videos(config.input, config.frame_folders)
    videos, _ = split_duplicates(refs)
    reference = drift.load_reference(config.model)
    staging = out_dir.prepare_output(config.output, config.overwrite)
    return PredictPlan(config, meta, card, decoder, videos, reference, staging)


def build_pipeline(p: beam.Pipeline, plan: PredictPlan) -> None:
    """Adds the predict stages to `p`, writing under `plan.staging.work`."""
    config, meta, work = plan.config, plan.meta, plan.staging.work
    target = meta.target
    decode = DecodeWindows(meta.spec, meta.config.get("resize", "stretch"), task_of(target).horizon(target),
                           config.video_timeout, limits=limits_of(meta.config),
                           segment_seconds=config.segment_seconds, decoder=plan.decoder,
                           short_videos=config.short_videos, source_fps=config.source_fps or 0.0, signals=True)
    decoded = p | "ReadVideos" >> ReadVideos(plan.videos) | "DecodeWindows" >> decode
    rows = decoded[WINDOW] | "Predict" >> PredictWindows(config.model, target, work, config.batch_size,
                                                         config.embeddings)
    _ = rows | "Write" >> WritePredictions(work, target, config.embeddings)
    _ = decoded[DEAD_LETTER] | "WriteDeadLetter" >> WriteDeadLetter(work)
    if plan.reference is not None:
        _ = decoded[SIGNALS] | "Drift" >> CompareDrift(plan.reference, work)


def predict(config: PredictConfig, pipeline: Optional[beam.Pipeline] = None,
            options: Optional[PipelineOptions] = None) -> Optional[str]:
    """Runs one predict and returns the finished output directory.

    The library entry point of the stage (seqio's `run_pipeline` shape): `clipforge predict` calls
    it with the config its flags fill.

    Args:
      config: a PredictConfig (checked here).
      pipeline: a Pipeline to build the job into and run, e.g. `TestPipeline(runner=local_runner())`;
        by default one is created from `options`.
      options: Beam options for the default pipeline (`pipeline_options(flags)`); the local runner
        when None.

    Returns:
      The output directory (windows/, videos.parquet, dead_letter.jsonl, drift.json, report.html),
      or None for a Flex Template launch (the job runs later, on Dataflow).

    Raises:
      SetupError: a wrong set-up, found before any work; ClipforgeError: the work failed.
    """
    start = time.time()
    plan = prepare(config)
    meta, spec = plan.meta, plan.meta.spec
    log.info(f"predict: {len(plan.videos)} video(s) with {plan.card.get('architecture', '?')} ({meta.target.task}); "
             f"windows of {spec.frames} frames at {spec.fps} fps, {spec.height}x{spec.width}")

    def report() -> None:
        if plan.staging.local:
            predict_report.write_report(plan.staging.work, meta.target, plan.card, meta, len(plan.videos),
                                        config.report_videos)

    if not run_staged(plan.staging, lambda p: build_pipeline(p, plan), pipeline, options, finish=report):
        log.info(f"predict: job submitted; {config.output} fills in when it finishes")
        return None
    log.info(summary(plan.staging.final, time.time() - start))
    return plan.staging.final


def summary(output: str, seconds: float) -> str:
    """The closing report: videos and windows predicted, dead letters, where each file is, drift."""
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


@exits("clipforge predict")
def run(argv: list[str]) -> int:
    """Entry point of `clipforge predict`; returns the exit status (schemas/errors.py: 2 for a wrong set-up)."""
    config, beam_args = parse_config(argv)
    predict(config, options=pipeline_options(beam_args))
    return 0
