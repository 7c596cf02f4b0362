"""The ingest stages as composite PTransforms; the work itself lives in Beam-free functions.

Decode, windowing and encoding are one DoFn (`MakeRecords`): frames never become
PCollection elements, because a stream of raw frames between stages would be materialised
and each frame could no longer be encoded once for all the windows that share it. The unit
of work is a segment: a whole video, or a time segment of a long one (pipelines/segments.py).
"""
from __future__ import annotations

import random
import shutil
import sys
import tempfile
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

from pipelines.decoder import DecoderError, default_decoder, resolve
from pipelines.drift import write_reference
from pipelines.inputs import VideoRef
from pipelines.leakage import audit
from pipelines.manifest import MANIFEST_FILE, complete_rows, write_manifest
from pipelines.output import PARTS_DIR, build_metadata, compression_type as _ctype, concat_parts, \
    part_path, remove_beam_temp, shard_path, write_metadata
from pipelines.records import DeadLetter, SegmentResult, VideoJob, finish_video, plan_decode, plan_video, \
    process_segment, video_windows
from pipelines.probe import ProbeLimits
from pipelines.segments import Segment
from pipelines.signals import VideoSignals
from pipelines.stats import DatasetStats, VideoSummary
from schemas.metadata import DEAD_LETTER_FILE
from schemas.spec import TargetSpec, WindowSpec

RECORD, WINDOW, SUMMARY, DEAD_LETTER = "records", "windows", "summary", "dead_letter"
SIGNALS = "signals"
SEGMENT, PART = "segment", "part"
Record = typing.Tuple[str, bytes]  # (split, serialized tf.train.Example)
SHARD_BLOCK = 32  # consecutive records of a bundle written to the same shard


# DoFns emit (kind, value) pairs that are then split with one filter per kind, rather than
# TaggedOutputs or Partition: Beam's DaskRunner does not route multiple outputs apart.
def _only(item: tuple, kind: str):
    if item[0] == kind:
        yield item[1]


def _split_by_kind(tagged, kinds: tuple[str, ...], stage: str = "") -> dict:
    return {kind: tagged | f"{stage}Only[{kind}]" >> beam.FlatMap(_only, kind) for kind in kinds}


class ReadVideos(beam.PTransform):
    """Starts the pipeline from the listed videos: PBegin -> PCollection[VideoRef]."""

    def __init__(self, refs: list[VideoRef]):
        super().__init__()
        self.refs = refs

    def expand(self, pbegin):
        # Create re-shuffles its elements, so videos spread over workers from the start.
        return pbegin | "List" >> beam.Create(self.refs)


class _VideoFn(beam.DoFn):
    """Shared worker set-up: the decoder must run here and be the build the launcher named, and a
    scratch dir for remote copies.

    Attributes (set by subclasses):
      decoder: bundled | system.
      build: the launcher's `Decoder.describe()` (what metadata.json records), or None.
    """

    decoder, build = "bundled", None

    def setup(self):
        try:
            self.ffmpeg = resolve(self.decoder)
        except DecoderError as e:
            raise RuntimeError(f"on this worker: {e}") from None
        if self.build and not self.ffmpeg.same_build(self.build):
            raise RuntimeError(f"this worker's {self.decoder} decoder is {self.ffmpeg.version!r}, but the launcher's "
                               f"(named in metadata.json) is {self.build.get('version')!r} with another build; "
                               "install the same clipforge (and imageio-ffmpeg) on the workers as on the launcher")
        self.scratch = tempfile.mkdtemp(prefix="clipforge-")
        self.dead = Metrics.counter("clipforge", "videos_dead_lettered")

    def teardown(self):
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)


class _PlanFn(_VideoFn):
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


class _MakeRecordsFn(_VideoFn):
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
                print(f"ingest: {out.ref.video_id}{part}: {windows} windows from "
                      f"{out.summary.frames_decoded} frames in {time.time() - start:.1f}s",
                      file=sys.stderr, flush=True)
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
        planned = _split_by_kind(videos | "PlanSegments" >> beam.ParDo(_PlanFn(self.job, self.build)),
                                 (SEGMENT, DEAD_LETTER), "Planned")
        tagged = (planned[SEGMENT] | "SpreadSegments" >> beam.Reshuffle()
                  | "DecodeAndEncode" >> beam.ParDo(_MakeRecordsFn(self.job, self.build)))
        finished = (tagged | f"Only[{PART}]" >> beam.FlatMap(_only, PART).with_output_types(
                        typing.Tuple[bytes, SegmentResult])
                    | "GroupByVideo" >> beam.GroupByKey()
                    | "FinishVideo" >> beam.ParDo(_FinishVideoFn(self.job)))
        out = _split_by_kind(finished, (SUMMARY, DEAD_LETTER), "Finished")
        out[DEAD_LETTER] = (planned[DEAD_LETTER], out[DEAD_LETTER]) | "AllVideoDeadLetters" >> beam.Flatten()
        out[RECORD] = tagged | f"Only[{RECORD}]" >> beam.FlatMap(_only, RECORD).with_output_types(Record)
        return out


class _PlanDecodeFn(_VideoFn):
    def __init__(self, spec: WindowSpec, horizon: int, timeout: float, limits: ProbeLimits, segment_seconds: float,
                 decoder: str):
        self.args = (spec, horizon, timeout, limits, segment_seconds)
        self.decoder = decoder

    def process(self, ref: VideoRef):
        for out in plan_decode(ref, *self.args, self.ffmpeg):
            if isinstance(out, DeadLetter):
                self.dead.inc()
                yield DEAD_LETTER, out
            else:
                yield SEGMENT, out


class _DecodeWindowsFn(_VideoFn):
    def __init__(self, spec: WindowSpec, resize: str, horizon: int, timeout: float, threads: int,
                 limits: Optional[ProbeLimits], decoder: str, short_videos: str = "drop", source_fps: float = 0.0,
                 signals: bool = False):
        self.args = (spec, resize, horizon, timeout)
        self.threads, self.limits, self.decoder, self.short_videos = threads, limits, decoder, short_videos
        self.source_fps, self.signals = source_fps, signals

    def process(self, seg: Segment):
        for out in video_windows(seg, *self.args, scratch_dir=self.scratch, threads=self.threads,
                                 limits=self.limits, decoder=self.ffmpeg, short_videos=self.short_videos,
                                 source_fps=self.source_fps, signals=self.signals):
            if isinstance(out, DeadLetter):
                self.dead.inc()
                yield DEAD_LETTER, out
            elif isinstance(out, VideoSignals):
                yield SIGNALS, out
            else:
                yield WINDOW, out


class DecodeWindows(beam.PTransform):
    """Decodes videos into task-free windows of uint8 frames (for predict; no labels, no split).

    Long local videos are planned as time segments, as at ingest, and the segments spread over
    the workers; their windows are exactly those of a whole decode.

    Args:
      spec: the WindowSpec (e.g. from a model's metadata.json); encoding is ignored.
      resize: stretch | crop | pad, as at ingest.
      horizon: frames after each window to carry as `next_frames` (0: none).
      timeout: wall-clock seconds for probing and decoding one video (or segment).
      threads: ffmpeg decoder threads (0 = ffmpeg decides).
      limits: formats, pixel and duration limits checked before decoding (None: the defaults).
      segment_seconds: videos longer than ~1.5x this are decoded as segments of about this
        length (0: every video whole).
      decoder: bundled | system; None: $CLIPFORGE_DECODER or bundled.
      short_videos: drop | pad: a video shorter than one window is dead-lettered (too_short) or
        gives one window with its last frame repeated (VideoWindow.padded_frames).
      source_fps: frame folders (VideoRef.frames_root): the rate their frames were taken at.
      signals: also return each segment's drift signal sums (pipelines/signals.py).

    Returns:
      {"windows": PCollection[VideoWindow], "dead_letter": PCollection[DeadLetter]}, and with
      `signals` "signals": PCollection[VideoSignals], one per decoded segment.
    """

    def __init__(self, spec: WindowSpec, resize: str = "stretch", horizon: int = 0,
                 timeout: float = 600.0, threads: int = 0, limits: Optional[ProbeLimits] = None,
                 segment_seconds: float = 0.0, decoder: Optional[str] = None, short_videos: str = "drop",
                 source_fps: float = 0.0, signals: bool = False):
        super().__init__()
        limits, decoder = limits or ProbeLimits(), decoder or default_decoder()
        self.plan = _PlanDecodeFn(spec, horizon, timeout, limits, segment_seconds, decoder)
        self.fn = _DecodeWindowsFn(spec, resize, horizon, timeout, threads, limits, decoder, short_videos,
                                   source_fps, signals)
        self.kinds = (WINDOW, DEAD_LETTER, SIGNALS) if signals else (WINDOW, DEAD_LETTER)

    def expand(self, videos):
        planned = _split_by_kind(videos | "Plan" >> beam.ParDo(self.plan), (SEGMENT, DEAD_LETTER), "Planned")
        decoded = _split_by_kind(planned[SEGMENT] | "SpreadSegments" >> beam.Reshuffle()
                                 | "Decode" >> beam.ParDo(self.fn), self.kinds)
        decoded[DEAD_LETTER] = (planned[DEAD_LETTER], decoded[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
        return decoded


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
        return _split_by_kind(shards, tuple(self.num_shards))


class WriteDeadLetter(beam.PTransform):
    """Writes OUTPUT/dead_letter.jsonl (one JSON object per video, possibly none).

    Returns:
      {"files": PCollection[file name], "counts": PCollection[{kind: n}] (a single dict)}.
    """

    def __init__(self, output_dir: str):
        super().__init__()
        self.path = f"{output_dir.rstrip('/')}/{DEAD_LETTER_FILE}"

    def expand(self, dead):
        files = (dead | "ToJson" >> beam.Map(DeadLetter.to_json)
                 | "Write" >> beam.io.WriteToText(self.path, shard_name_template="", num_shards=1))
        counts = (dead | "Kind" >> beam.Map(lambda d: d.kind) | "Count" >> beam.combiners.Count.PerElement()
                  | "ToDict" >> beam.combiners.ToDict())
        return {"files": files, "counts": counts}


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
    "manifest": PCollection[row dict] (pipelines/manifest.py), one per input video. The sinks'
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
