"""The ingest stages as composite PTransforms; the work itself lives in Beam-free functions.

Decode, windowing and encoding are one DoFn (`MakeRecords`): frames never become
PCollection elements, because a stream of raw frames between stages would be materialised
and each frame could no longer be encoded once for all the windows that share it. The unit
of work is a segment: a whole video, or a time segment of a long one (pipelines/segments.py).
"""
from __future__ import annotations

import random
import time
import typing
import uuid
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.drift import write_reference
from pipelines.ingest.dataset_dir import PARTS_DIR, build_metadata
from pipelines.ingest.dataset_dir import compression_type as _ctype
from pipelines.ingest.dataset_dir import concat_parts, part_path, remove_beam_temp, shard_path, write_metadata
from pipelines.ingest.engine import SegmentResult, VideoJob, finish_video, plan_video, process_segment
from pipelines.ingest.leakage import audit
from pipelines.ingest.manifest import MANIFEST_FILE, complete_rows, write_manifest
from pipelines.ingest.stats import DatasetStats, VideoSummary
from pipelines.inputs import VideoRef
from pipelines.segments import Segment
from pipelines.sources import DEAD_LETTER, PART, RECORD, SEGMENT, SUMMARY, VideoFn, only, split_by_kind
from schemas.logs import PROGRESS, get_logger
from schemas.spec import TargetSpec, WindowSpec

Record = typing.Tuple[str, bytes]  # (split, serialized tf.train.Example)
log = get_logger(__name__)
SHARD_BLOCK = 32  # consecutive records of a bundle written to the same shard


class _PlanFn(VideoFn):
    def __init__(self, job: VideoJob, build: Optional[dict] = None):
        self.job, self.decoder, self.build = job, job.decoder, build

    def setup(self):
        super().setup()
        self.split = Metrics.counter("clipforge", "videos_split")
        self.segments = Metrics.counter("clipforge", "segments")

    def process(self, ref: VideoRef):
        for out in plan_video(ref, self.job):
            if isinstance(out, Segment):
                self.segments.inc()
                if out.index == 1:
                    self.split.inc()
                yield SEGMENT, out
            else:
                self.dead.inc()
                yield DEAD_LETTER, out


class _MakeRecordsFn(VideoFn):
    def __init__(self, job: VideoJob, build: Optional[dict] = None):
        self.job, self.decoder, self.build = job, job.decoder, build

    def setup(self):
        super().setup()
        self.windows = Metrics.counter("clipforge", "windows_written")
        self.frames = Metrics.counter("clipforge", "frames_decoded")

    def process(self, seg: Segment):
        start, windows = time.time(), 0
        for out in process_segment(seg, self.job, self.scratch):
            if isinstance(out, SegmentResult):
                self.frames.inc(out.summary.frames_decoded)
                # one progress line per video (or segment), as it finishes, on the worker's stderr
                part = f" [segment {seg.index + 1}/{seg.count}]" if seg.count > 1 else ""
                log.info(f"ingest: {out.ref.video_id}{part}: {windows} windows from "
                         f"{out.summary.frames_decoded} frames in {time.time() - start:.1f}s", extra=PROGRESS)
                # keyed by bytes: Beam's coders encode str as strict UTF-8, which a non-UTF-8
                # file name (surrogate escapes) is not
                yield PART, (out.ref.video_id.encode("utf-8", "surrogateescape"), out)
            else:
                self.windows.inc()
                windows += 1
                yield RECORD, out


class _FinishVideoFn(beam.DoFn):
    def __init__(self, job: VideoJob):
        self.job = job

    def setup(self):
        self.videos = Metrics.counter("clipforge", "videos_written")
        self.partial = Metrics.counter("clipforge", "videos_partially_decoded")
        self.dead = Metrics.counter("clipforge", "videos_dead_lettered")

    def process(self, keyed):
        out = finish_video(list(keyed[1]), self.job)
        if isinstance(out, VideoSummary):
            self.videos.inc()
            if out.partial:
                self.partial.inc()
            yield SUMMARY, out
        else:
            self.dead.inc()
            yield DEAD_LETTER, out


class MakeRecords(beam.PTransform):
    """Decodes each video and turns its windows into records, streaming (see `process_segment`).

    Long local videos are planned as time segments (`plan_video`); segments are reshuffled
    so that one video's segments decode on several workers, and their results are grouped
    back per video into one summary or dead letter.

    Args:
      job: what to make of each video.
      build: the decoder build the launcher resolved (`Decoder.describe()`); every worker checks
        that its own is the same one. None: no check.

    Returns:
      {"records": PCollection[(split, bytes)], "summary": PCollection[VideoSummary],
       "dead_letter": PCollection[DeadLetter]}.
    """

    def __init__(self, job: VideoJob, build: Optional[dict] = None):
        super().__init__()
        self.job, self.build = job, build

    def expand(self, videos):
        planned = split_by_kind(videos | "PlanSegments" >> beam.ParDo(_PlanFn(self.job, self.build)),
                                 (SEGMENT, DEAD_LETTER), "Planned")
        tagged = (planned[SEGMENT] | "SpreadSegments" >> beam.Reshuffle()
                  | "DecodeAndEncode" >> beam.ParDo(_MakeRecordsFn(self.job, self.build)))
        finished = (tagged | f"Only[{PART}]" >> beam.FlatMap(only, PART).with_output_types(
                        typing.Tuple[bytes, SegmentResult])
                    | "GroupByVideo" >> beam.GroupByKey()
                    | "FinishVideo" >> beam.ParDo(_FinishVideoFn(self.job)))
        out = split_by_kind(finished, (SUMMARY, DEAD_LETTER), "Finished")
        out[DEAD_LETTER] = (planned[DEAD_LETTER], out[DEAD_LETTER]) | "AllVideoDeadLetters" >> beam.Flatten()
        out[RECORD] = tagged | f"Only[{RECORD}]" >> beam.FlatMap(only, RECORD).with_output_types(Record)
        return out


class _WritePartsFn(beam.DoFn):
    """Writes each bundle's records straight to part files, one per (split, shard) it touches.

    Records go to a split's shards in blocks of SHARD_BLOCK, round robin from a random start:
    a long video (or a local runner's one big bundle) spreads over every shard, while a bundle
    of a few windows (a short clip on Dataflow) opens one file, not one per shard. Nothing is
    buffered: memory stays flat in the dataset's size. Emits ("split/shard", part path) once a
    bundle's files are closed.
    """

    def __init__(self, parts_dir: str, num_shards: dict[str, int], compression: str):
        self.parts_dir, self.num_shards, self.compression = parts_dir, num_shards, compression

    def start_bundle(self):
        self.bundle = uuid.uuid4().hex
        self.first_shard = {s: random.randrange(n) for s, n in self.num_shards.items()}
        self.count = dict.fromkeys(self.num_shards, 0)
        self.files = {}

    def process(self, record: Record):
        split, data = record
        n = self.count[split]
        self.count[split] = n + 1
        shard = (self.first_shard[split] + n // SHARD_BLOCK) % self.num_shards[split]
        f = self.files.get((split, shard))
        if f is None:
            path = part_path(self.parts_dir, split, shard, self.bundle, self.compression)
            f = self.files[(split, shard)] = (path, FileSystems.create(path, compression_type=_ctype(self.compression)))
        _TFRecordUtil.write_record(f[1], data)

    def finish_bundle(self):
        for (split, shard), (path, f) in sorted(self.files.items()):
            f.close()
            yield WindowedValue((f"{split}/{shard}", path), MIN_TIMESTAMP, [GlobalWindow()])
        self.files = {}


def _join_parts(keyed, output_dir: str, num_shards: dict[str, int], compression: str,
                generation: int = 0) -> tuple[str, str]:
    key, grouped = keyed
    split, shard = key.split("/")
    parts = sorted(set(grouped["parts"]))  # a retried bundle can report a part twice
    return split, concat_parts(parts, shard_path(output_dir, split, int(shard), num_shards[split], compression,
                                                 generation))


class WriteShards(beam.PTransform):
    """Writes each split as exactly N TFRecord shards under OUTPUT/<split>/, without a shuffle.

    Each bundle writes its records to part files (blocks of SHARD_BLOCK, round robin over the
    split's shards) as they are made, so no record is ever held by the runner: peak memory does not grow with the corpus
    (a Reshuffle before a sink makes the local runners hold every record). A
    second step concatenates each shard's parts (valid for TFRecord framing and for gzip members)
    and writes empty shards where a split has fewer records than shards.

    Args:
      generation: an append's number, which names its shards apart from the ones already there.

    Returns:
      {split: PCollection of the shard file names written}.
    """

    def __init__(self, output_dir: str, num_shards: dict[str, int], compression: str = "none", generation: int = 0):
        super().__init__()
        self.output_dir, self.num_shards, self.compression = output_dir.rstrip("/"), num_shards, compression
        self.generation = generation

    def expand(self, records):
        parts_dir = f"{self.output_dir}/{PARTS_DIR}" + (f"-g{self.generation:04d}" if self.generation else "")
        parts = records | "WriteParts" >> beam.ParDo(_WritePartsFn(parts_dir, self.num_shards, self.compression))
        keys = (records.pipeline
                | "ShardKeys" >> beam.Create([f"{s}/{i}" for s, n in self.num_shards.items() for i in range(n)]))
        shards = ({"parts": parts, "keys": keys | "Key" >> beam.Map(lambda k: (k, None))}
                  | "GroupParts" >> beam.CoGroupByKey()
                  | "JoinParts" >> beam.Map(_join_parts, self.output_dir, self.num_shards, self.compression,
                                           self.generation))
        return split_by_kind(shards, tuple(self.num_shards))


class _StatsFn(beam.CombineFn):
    def create_accumulator(self):
        return DatasetStats()

    def add_input(self, acc, summary):
        return acc.add(summary)

    def merge_accumulators(self, accs):
        out = DatasetStats()
        for a in accs:
            out.merge(a)
        return out

    def extract_output(self, acc):
        return acc


class WriteMetadata(beam.PTransform):
    """Writes metadata.json last: after every shard and the dead-letter file are final.

    Its input is {"summary": PCollection[VideoSummary], "dead_counts": PCollection[dict],
    "dead_files": PCollection[str], "shards/<split>": PCollection[str] per split}, and optionally
    "manifest": PCollection[row dict] (pipelines/ingest/manifest.py), one per input video. The sinks'
    outputs are side inputs, so this step cannot start before every sink has finished; it then
    lists and counts the shards on disk, writes videos.parquet, drift_reference.json and the
    leakage audit (when given rows), and writes metadata.json.

    Args:
      static: {video_id: {"size", "mtime", "group", "label", "split"}} for the manifest rows.
      provenance: metadata.json `provenance`.
    """

    def __init__(self, output_dir: str, spec: WindowSpec, target: TargetSpec, config: dict, fingerprint: str,
                 decoder: Optional[dict] = None, static: Optional[dict] = None, provenance: Optional[dict] = None):
        super().__init__()
        self.args = (output_dir, spec, target, config, fingerprint)
        self.decoder = decoder or {}
        self.static, self.provenance = static or {}, provenance or {}

    def expand(self, inputs):
        p = inputs["summary"].pipeline
        stats = inputs["summary"] | "CombineStats" >> beam.CombineGlobally(_StatsFn())
        splits = [k.split("/", 1)[1] for k in inputs if k.startswith("shards/")]
        shard_lists = [beam.pvalue.AsList(inputs[f"shards/{s}"]) for s in splits]
        output_dir, spec, target, config, fingerprint = self.args
        decoder, static, prov = self.decoder, self.static, self.provenance
        has_rows = "manifest" in inputs
        rows_in = inputs["manifest"] if has_rows else p | "NoRows" >> beam.Create([])

        def write(_, stats, dead_counts, rows, *written):
            del written  # the sinks' outputs are only waited for; the shards are listed on disk
            remove_beam_temp(output_dir)
            extra = {}
            if has_rows:
                rows = complete_rows(list(rows), static)
                write_manifest(rows, output_dir)
                write_reference(rows, output_dir)  # before metadata.json: published with it
                extra = {"leakage": audit(rows), "manifest": MANIFEST_FILE}
            meta = build_metadata(output_dir, spec, target, config, fingerprint, splits, stats, dead_counts, decoder,
                                  provenance=prov, **extra)
            yield write_metadata(meta, output_dir)

        return (p | "Once" >> beam.Create([None])
                | "Write" >> beam.FlatMap(write, beam.pvalue.AsSingleton(stats),
                                          beam.pvalue.AsSingleton(inputs["dead_counts"]),
                                          beam.pvalue.AsList(rows_in),
                                          beam.pvalue.AsList(inputs["dead_files"]), *shard_lists))
