"""`clipforge ingest`: videos -> windows -> sharded TFRecords, dead_letter.jsonl, metadata.json last."""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Optional

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import staging as staging_dir
from pipelines.dead_letters import DeadLetter, WriteDeadLetter
from pipelines.decode import ffmpeg_args
from pipelines.decoder import Decoder, resolve
from pipelines.drift import dataset_lines as drift_lines
from pipelines.ingest import corpus
from pipelines.ingest import dataset_dir as out_dir
from pipelines.ingest.config import SPLIT_NAMES, IngestConfig, parse_config
from pipelines.ingest.engine import VideoJob
from pipelines.ingest.join import rekey
from pipelines.ingest.label_columns import CLASS_SEPARATOR
from pipelines.ingest.labels import check_training_classes, load_labels
from pipelines.ingest.leakage import summary_line as leakage_line
from pipelines.ingest.manifest import dead_row, filter_graph, label_hash, provenance, summary_row
from pipelines.ingest.transforms import MakeRecords, WriteMetadata, WriteShards
from pipelines.inputs import VideoRef, fingerprint, is_local, list_videos, split_duplicates, video_id_of
from pipelines.probe import ProbeLimits, VideoError, probe_video
from pipelines.runners.options import pipeline_options, resolve_options, run_staged
from pipelines.sources import DEAD_LETTER, SUMMARY, ReadVideos
from schemas.errors import exits
from schemas.logs import get_logger
from schemas.metadata import DatasetMetadata
from schemas.tasks import task_of

# Probing a few videos before the run estimates the corpus length for automatic shard counts.
SHARD_SAMPLE = 8
ASSUMED_BYTES_PER_SECOND = 250_000  # ~2 Mbit/s, when no sample can be probed (remote inputs)
log = get_logger(__name__)


@dataclasses.dataclass
class IngestPlan:
    """Everything decided before the pipeline runs: the checked set-up of one ingest.

    Attributes:
      config: the checked config.
      job: what each worker needs per video.
      videos: the videos to decode (unique video ids).
      rejected: dead letters found while listing (duplicate ids, listed files that are missing).
      staging: where shards are written and where the dataset ends up.
      num_shards: {split: shard count}.
      fingerprint: hash of inputs and config.
      decoder: the decoder resolved here, which every worker must also run (metadata.json names it).
      static: {video_id: {"size", "mtime", "group", "label", "split"}} for videos.parquet.
      provenance: metadata.json `provenance`.
    """

    config: IngestConfig
    job: VideoJob
    videos: list[VideoRef]
    rejected: list[DeadLetter]
    staging: staging_dir.Staging
    num_shards: dict[str, int]
    fingerprint: str
    decoder: Decoder
    static: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)


def _corpus_seconds(videos: list[VideoRef], timeout: float, limits: ProbeLimits, decoder: Decoder) -> float:
    """Estimates the corpus duration from a few probed videos and every video's size."""
    local = [v for v in videos if is_local(v.path) and not v.frames_root]
    step = max(1, len(local) // SHARD_SAMPLE)
    seconds = size = 0.0
    for v in local[::step][:SHARD_SAMPLE]:
        try:
            info = probe_video(v.path, min(timeout, 30), limits, decoder)
        except VideoError:
            continue
        if info.duration and v.size:
            seconds, size = seconds + info.duration, size + v.size
    total = sum(v.size for v in videos)
    return total * seconds / size if size else total / ASSUMED_BYTES_PER_SECOND


def prepare(config: IngestConfig) -> IngestPlan:
    """Runs every set-up check, cheapest first, then creates the staging directory.

    Raises:
      SetupError: the decoder missing, no input matched, labels unreadable or inconsistent, output
        existing (without --overwrite) or not writable.
    """
    decoder = resolve(config.decoder)  # DecoderError: a set-up error
    refs, listed_missing = list_videos(config.input, config.frame_folders)
    videos, dups = split_duplicates(refs)
    rejected = [DeadLetter(d.path, d.video_id, "read", f"video id {d.video_id!r} is also {kept.path}, "
                           "which is used instead", "duplicate_video_id") for d, kept in dups]
    rejected += [DeadLetter(p, video_id_of(p), "read", "listed in the input list but not found",
                            "missing_file") for p in listed_missing]
    classes, labels, table = (), None, None
    if config.labels_from_folders:
        table = corpus.folder_labels(videos)
        log.info(f"labels: {len(table.classes)} classes from folders: {', '.join(table.classes[:8])}"
                 + (", ..." if len(table.classes) > 8 else ""))
    elif config.labels:
        table = rekey(load_labels(config.labels, config.task, config.target_columns, config.label_column), videos)
        log.info(f"labels: {table.shape} rows of {len(table.videos)} videos joined on {table.join_column!r}"
                 + (f"; ignoring column(s) {table.ignored}" if table.ignored else ""))
    if table is not None:
        classes, labels = table.classes, table.videos
    assigned = dict(table.splits) if table is not None else {}
    if config.split_lists is not None:
        listed = corpus.read_split_lists(config.split_list_files, videos)
        assigned.update(listed)
        rejected += [DeadLetter(v.path, v.video_id, "read", "in none of the --split-lists files", "not_in_split_lists")
                     for v in videos if v.video_id not in listed]
        videos = [v for v in videos if v.video_id in listed]
    groups = corpus.video_groups(videos, table.groups if table is not None else None, config.group_pattern)
    if config.dedupe:
        for same in corpus.exact_duplicates(videos):
            rejected += [DeadLetter(d.path, d.video_id, "read", f"the same bytes as {same[0].video_id!r}, which is "
                                    "used instead (--dedupe)", "duplicate_content") for d in same[1:]]
        dropped = {d.video_id for d in rejected if d.kind == "duplicate_content"}
        videos = [v for v in videos if v.video_id not in dropped]
    names = [n for n in SPLIT_NAMES if n in set(assigned.values()) | set(
        () if config.split_lists is not None else config.split_names)]
    fractions = tuple(dict(zip(config.split_names, config.splits)).get(n, 0.0) for n in names)
    if not any(fractions):  # every video is assigned: the hash split is never used
        fractions = (1.0,) + (0.0,) * (len(names) - 1)
    spec, target = config.window_spec(), config.target_spec(classes)
    limits = ProbeLimits(formats=tuple(config.formats), max_pixels=config.max_pixels,
                         max_duration=config.max_duration)
    job = VideoJob(spec=spec, target=target, resize=config.resize, split_names=tuple(names),
                   split_fractions=fractions, labels=labels, timeout=config.video_timeout,
                   threads=config.ffmpeg_threads, limits=limits, segment_seconds=config.segment_seconds,
                   decoder=config.decoder, assigned=assigned or None, groups=groups or None,
                   short_videos=config.short_videos, source_fps=config.source_fps or 0.0, folder_fps=(table.fps or None) if table is not None else None)
    if task_of(target).label_kind == "class_set" and table is not None:
        check_training_classes(table, job.split_of, {v.video_id for v in videos})
    if config.append:  # pipelines/ingest/append.py counts the shards of the videos it decodes
        counts = [0] * len(names)
    elif config.num_shards:
        counts = [config.num_shards] * len(names)
    else:  # each split's share of the videos, known exactly: a split never depends on the others
        placed = collections.Counter(job.split_of(v.video_id) for v in videos)
        shares = tuple(placed[n] / max(len(videos), 1) for n in names)
        counts = out_dir.estimate_num_shards(_corpus_seconds(videos, config.video_timeout, limits, decoder), spec,
                                             job.horizon, shares, config.compression)
    static = {r.video_id: {"size": r.size, "mtime": r.mtime, "group": groups.get(r.video_id),
                           "label": _label_text(labels.get(r.video_id) if labels else None, target),
                           "split": job.split_of(r.video_id), "label_hash": None if labels is None else label_hash(
                               labels.get(r.video_id), (table.fps or {}).get(r.video_id))} for r in refs}
    graph = filter_graph(ffmpeg_args("input", spec, config.resize, formats=tuple(config.formats)))
    prov = provenance(decoder.describe(), graph, decoder.ffprobe or None)
    # an append stages its own output (pipelines/ingest/append.py): the dataset already exists
    staging = None if config.append else staging_dir.prepare_output(config.output, config.overwrite)
    return IngestPlan(config, job, videos, rejected, staging, dict(zip(names, counts)),
                      fingerprint(refs, config.to_dict(data_only=True), config.labels, config.split_list_files),
                      decoder, static, prov)


def _label_text(labels, target) -> Optional[str]:
    """A per-video label as the manifest shows it: the class name, the class set, or the regression values."""
    if labels is None or labels.shape != "video":
        return None
    kind = task_of(target).label_kind
    if kind == "class":
        return target.classes[int(labels.values[0])]
    if kind == "class_set":
        return CLASS_SEPARATOR.join(target.classes[k] for k in np.flatnonzero(labels.values[0]))
    return ",".join(f"{v:g}" for v in labels.values[0])


def dataset_fingerprint(config: IngestConfig) -> str:
    """The fingerprint ingest would write for this config, without running it.

    It hashes the input videos (paths, sizes, mtimes), the labels file and the settings that
    shape the data (not those in config.NON_DATA_FIELDS, such as --output), so callers can reuse a
    finished dataset made from the same inputs and settings.

    Raises:
      ConfigError, SetupError: as `run` would report them.
    """
    refs, _ = list_videos(config.input, config.frame_folders)
    return fingerprint(refs, config.to_dict(data_only=True), config.labels, config.split_list_files)


def build_pipeline(p: beam.Pipeline, plan: IngestPlan) -> None:
    """Adds the ingest stages to `p`, writing under `plan.staging.work`."""
    work = plan.staging.work
    videos = p | "ReadVideos" >> ReadVideos(plan.videos)
    made = videos | "MakeRecords" >> MakeRecords(plan.job, plan.decoder.describe())
    shards = made["records"] | "WriteShards" >> WriteShards(work, plan.num_shards, plan.config.compression)
    rejected = p | "ListingRejects" >> beam.Create(plan.rejected)
    dead = (made[DEAD_LETTER], rejected) | "AllDeadLetters" >> beam.Flatten()
    dead_out = dead | "WriteDeadLetter" >> WriteDeadLetter(work)
    rows = ((made[SUMMARY] | "OkRows" >> beam.Map(summary_row), dead | "DeadRows" >> beam.Map(dead_row))
            | "ManifestRows" >> beam.Flatten())
    finished = {SUMMARY: made[SUMMARY], "dead_counts": dead_out["counts"], "dead_files": dead_out["files"],
                "manifest": rows, **{f"shards/{s}": files for s, files in shards.items()}}
    _ = finished | "WriteMetadata" >> WriteMetadata(work, plan.job.spec, plan.job.target, plan.config.to_dict(),
                                                    plan.fingerprint, plan.decoder.describe(), plan.static,
                                                    plan.provenance)


def summary(plan: IngestPlan, meta: DatasetMetadata, seconds: float) -> str:
    """The closing report: videos, windows per split, dead letters by reason, size, time."""
    stats = meta.stats
    windows = sum(s["windows"] for s in meta.splits.values())
    lines = [f"clipforge ingest: {len(plan.videos) + len(plan.rejected)} videos read in {seconds:.1f}s "
             f"-> {plan.staging.final}"]
    for name, s in meta.splits.items():
        lines.append(f"  {name:<10} {s['videos']:>6} videos {s['windows']:>8} windows  {len(s['shards'])} shard(s)")
    reasons = ", ".join(f"{k}: {v}" for k, v in meta.dead_letter.get("reasons", {}).items())
    lines.append(f"  dead-lettered {meta.dead_letter['count']}" + (f" ({reasons})" if reasons else "")
                 + f" -> {meta.dead_letter['path']}")
    if stats.get("partial_videos"):
        lines.append(f"  {stats['partial_videos']} video(s) decoded with errors (e.g. truncated); their windows kept")
    if meta.leakage:
        lines.append(leakage_line(meta.leakage))
    lines += drift_lines(plan.staging.final)
    if stats.get("unlabelled_windows"):
        lines.append(f"  {stats['unlabelled_windows']} window(s) skipped: no label at their last frame's time")
    if stats.get("padded_windows"):
        lines.append(f"  {stats['padded_windows']} window(s) padded: videos shorter than one window, their last "
                     "frame repeated (--short-videos pad)")
    size = out_dir.dir_size(plan.staging.final)
    size_text = f"{size / 2 ** 20:.1f} MiB" if size >= 2 ** 20 else f"{size / 1024:.1f} KiB"
    lines.append(f"  output {size_text}; {windows / seconds:.1f} windows/s, "
                 f"{stats.get('frames_decoded', 0) / seconds:.1f} frames/s decoded")
    return "\n".join(lines)


def ingest(config: IngestConfig, pipeline: Optional[beam.Pipeline] = None,
           options: Optional[PipelineOptions] = None) -> Optional[DatasetMetadata]:
    """Runs one ingest (an append when `config.append`) and returns the finished dataset's metadata.

    The library entry point of the stage (seqio's `run_pipeline` shape): `clipforge ingest`, retrain
    and the demo call it with a typed config.

    Args:
      config: a checked IngestConfig (`parse_config`, or `from_mapping(IngestConfig, ...)`).
      pipeline: a Pipeline to build the job into and run, e.g. `TestPipeline(runner=local_runner())`;
        by default one is created from `options`.
      options: Beam options for the default pipeline (`pipeline_options(flags)`); the local runner
        when None.

    Returns:
      The dataset's metadata, or None for a Flex Template launch (the job runs later, on Dataflow).

    Raises:
      SetupError: a wrong set-up, found before any work; ClipforgeError: the work failed.
    """
    start = time.time()
    if config.append:
        from pipelines.ingest import append
        return append.append(config, resolve_options(pipeline, options), start, pipeline)
    plan = prepare(config)
    if not run_staged(plan.staging, lambda p: build_pipeline(p, plan), pipeline, options):
        log.info(f"clipforge ingest: job submitted; {config.output}/metadata.json appears when it finishes")
        return None
    meta = out_dir.load_metadata(plan.staging.final)
    log.info(summary(plan, meta, time.time() - start))
    return meta


@exits("clipforge ingest")
def run(argv: list[str]) -> int:
    """Entry point of `clipforge ingest`; returns the exit status (schemas/errors.py: 2 for a wrong set-up)."""
    config, beam_args = parse_config(argv)
    ingest(config, options=pipeline_options(beam_args))
    return 0
