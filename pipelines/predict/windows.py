"""Videos decoded into task-free windows of uint8 frames: what predict feeds its model.

The same plan, probe, decode and ring buffer as ingest (pipelines/streams.py, windows.py), so the
windows match ingest's pixel for pixel; no labels, no split, no encoding.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator, NamedTuple, Optional, Union

import apache_beam as beam
import numpy as np

from pipelines.dead_letters import DeadLetter
from pipelines.decoder import Decoder, default_decoder, resolve
from pipelines.inputs import VideoRef, local_file
from pipelines.probe import ProbeLimits, VideoError
from pipelines.segments import Segment
from pipelines.signals import FrameSignals, VideoSignals
from pipelines.sources import DEAD_LETTER, SEGMENT, SIGNALS, WINDOW, VideoFn, split_by_kind
from pipelines.streams import plan_decode, segment_stream, too_short
from pipelines.windows import iter_windows, padded_frames
from schemas.spec import WindowSpec


class VideoWindow(NamedTuple):
    """A window of decoded frames, for consumers that need pixels rather than records (predict).

    Attributes:
      video_id, path: the source video.
      start_frame, start_time: the window's first frame and its time in seconds.
      frames: uint8 (T, H, W, C).
      next_frames: uint8 (horizon, H, W, C) following the window, or None when horizon is 0.
      padded_frames: how many of its last frames (next_frames included) repeat the video's last
        frame (short_videos="pad"); 0 for a normal window.
    """

    video_id: str
    path: str
    start_frame: int
    start_time: float
    frames: np.ndarray
    next_frames: Optional[np.ndarray]
    padded_frames: int = 0


def video_windows(ref: Union[VideoRef, Segment], spec: WindowSpec, resize: str = "stretch", horizon: int = 0,
                  timeout: float = 600.0, scratch_dir: str = "/tmp", threads: int = 0,
                  limits: Optional[ProbeLimits] = None, decoder: Optional[Decoder] = None,
                  short_videos: str = "drop", source_fps: float = 0.0, signals: bool = False
                  ) -> Iterator[Union[VideoWindow, DeadLetter, VideoSignals]]:
    """Decodes one video, or one segment of a long one, into task-free windows of `spec`.

    No labels, no split, no encoding: the same probe, decode and ring buffer as ingest, so
    windows match ingest's pixel for pixel, and a segment's windows are exactly the ones a
    whole decode has in its range (`plan_decode` plans them). With horizon > 0 each window also
    carries the frames after it (windows whose horizon would run past the end are not produced).
    With short_videos="pad" a whole video shorter than one window gives one window, its last
    frame repeated (as ingest pads). source_fps: a frame folder's frame rate (--source-fps).
    signals: also yield the segment's drift signal sums (pipelines/signals.py) once it decoded.

    Yields:
      VideoWindow per window, or a single DeadLetter (same stages and kinds as ingest) when the
      video yields none; with `signals`, then one VideoSignals (a segment after the first yields
      it even without windows: its frames still count). A segment after the first that yields
      no window is not an error (the duration estimate ran past the last frame) unless its
      decode failed; its dead letter then names the segment.
    """
    seg = ref if isinstance(ref, Segment) else Segment(ref)
    ref, limits, decoder = seg.ref, limits or ProbeLimits(), decoder or resolve(default_decoder())
    n = 0
    meter = FrameSignals(None if seg.end is None else seg.end - seg.start)
    try:
        with local_file(ref.path, scratch_dir) as path:
            stream = segment_stream(seg, path, spec, resize, timeout, threads, limits, horizon, decoder,
                                     source_fps)
            pad = short_videos == "pad" and seg.count == 1  # a short video is never split
            try:
                frames = meter.watch(itertools.islice(stream, seg.skip, None))
                for local_start, window in iter_windows(frames, spec.frames, spec.stride, horizon, pad):
                    start = seg.start + local_start
                    if seg.end is not None and start >= seg.end:
                        break  # the next segment's first window: it decodes that one
                    pixels = np.stack([f.pixels for f in window])
                    n += 1
                    yield VideoWindow(ref.video_id, ref.path, start, start / spec.fps, pixels[:spec.frames],
                                      pixels[spec.frames:] if horizon else None, padded_frames(local_start, window))
            except VideoError:
                if not n:
                    raise
    except VideoError as e:
        yield _in_segment(DeadLetter.of(ref, e), seg)
        return
    except OSError as e:
        yield _in_segment(DeadLetter(ref.path, ref.video_id, "read", f"cannot read the file: {e}", "read_failed"),
                          seg)
        return
    if not n and seg.index == 0:
        yield DeadLetter.of(ref, too_short(stream.frames, spec, horizon))
    elif signals:
        facts = seg.facts or (stream.info.facts() if stream.info else {})
        yield VideoSignals(ref.video_id, seg.index, meter.sums, facts)


def _in_segment(dead: DeadLetter, seg: Segment) -> DeadLetter:
    if seg.count == 1:
        return dead
    return dataclasses.replace(dead, reason=f"segment {seg.index + 1}/{seg.count} (from frame {seg.start}): "
                                            f"{dead.reason}")


class _PlanDecodeFn(VideoFn):
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


class _DecodeWindowsFn(VideoFn):
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
        planned = split_by_kind(videos | "Plan" >> beam.ParDo(self.plan), (SEGMENT, DEAD_LETTER), "Planned")
        decoded = split_by_kind(planned[SEGMENT] | "SpreadSegments" >> beam.Reshuffle()
                                 | "Decode" >> beam.ParDo(self.fn), self.kinds)
        decoded[DEAD_LETTER] = (planned[DEAD_LETTER], decoded[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
        return decoded
