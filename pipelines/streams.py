"""A video, or one time segment of it, opened as a frame stream checked against the limits.

What both jobs do before the first frame: split a long local video into segments (`plan_decode`),
then open each segment's stream (`segment_stream`): a frame folder fed to ffmpeg, a planned seek,
or a whole video probed first (by its own decode with the bundled ffmpeg).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterator, Optional, Union

from pipelines.dead_letters import DeadLetter
from pipelines.decode import FrameStream
from pipelines.decoder import Decoder, default_decoder, resolve
from pipelines.frames import FolderFrames
from pipelines.inputs import VideoRef, is_local
from pipelines.probe import ProbeLimits, VideoError, probe_video
from pipelines.segments import MIN_SEGMENTS, Segment, is_long, plan_segments, video_time_base
from schemas.spec import WindowSpec


def too_short(frames: int, spec: WindowSpec, horizon: int) -> VideoError:
    need = spec.frames + horizon
    extra = f" ({spec.frames} + horizon {horizon})" if horizon else ""
    return VideoError("window", "too_short",
                      f"shorter than one window: {frames} frames at {spec.fps:g} fps, a window needs "
                      f"{need}{extra}")


def probe_and_stream(path: str, spec: WindowSpec, resize: str, timeout: float, threads: int,
                      limits: Optional[ProbeLimits] = None, decoder: Optional[Decoder] = None) -> FrameStream:
    """The frame stream of a file checked against the limits before its frames are read.

    With the bundled decoder the decoding ffmpeg is its own probe (one process: FrameStream's
    `check`); with the system one ffprobe runs first, and the stream gets what is left of the timeout.
    """
    decoder = decoder or resolve(default_decoder())
    if decoder.one_process:
        return FrameStream(path, spec, resize, timeout, threads, limits, decoder=decoder, check=True)
    start = time.monotonic()
    info = probe_video(path, timeout, limits, decoder)
    stream = FrameStream(path, spec, resize, max(timeout - (time.monotonic() - start), 0.001), threads, limits,
                         decoder=decoder)
    stream.info = info
    return stream


# With the bundled decoder a video is only probed for splitting when it holds at least 4 kB (32 kbit)
# per second of a splittable length: a short clip is probed by its own decode, in one process.
MIN_SPLIT_BYTES_PER_SECOND = 4000


def plan_decode(ref: VideoRef, spec: WindowSpec, horizon: int, timeout: float, limits: ProbeLimits,
                segment_seconds: float, decoder: Optional[Decoder] = None) -> Iterator[Union[Segment, DeadLetter]]:
    """Splits a video into time segments when it is long; else yields it as one whole segment.

    Only local videos longer than 1.5 x `segment_seconds` are split, which needs their
    duration and time base: they are probed (and checked against the limits) here, once.
    Others are one whole segment, probed when decoded. Remote videos are never split: every
    segment would need its own copy of the file. With the bundled decoder, files too small to
    be that long at MIN_SPLIT_BYTES_PER_SECOND are not probed here (a very long video below
    it is decoded whole: the same windows, on one worker).

    Yields:
      The video's segments in order, or one DeadLetter (probe or read stage).
    """
    decoder = decoder or resolve(default_decoder())
    if ref.frames_root:  # a frame folder: decoded whole, checked frame by frame when it starts
        yield Segment(ref)
        return
    small = 0 < ref.size < MIN_SEGMENTS * segment_seconds * MIN_SPLIT_BYTES_PER_SECOND
    if segment_seconds <= 0 or not is_local(ref.path) or (decoder.one_process and small):
        yield Segment(ref)
        return
    try:
        info = probe_video(ref.path, timeout, limits, decoder)
        time_base = video_time_base(ref.path, timeout, limits.formats, "" if decoder.ffprobe else decoder.ffmpeg) \
            if is_long(info.duration, segment_seconds) else None
    except VideoError as e:
        yield DeadLetter.of(ref, e)
        return
    except OSError as e:
        yield DeadLetter(ref.path, ref.video_id, "read", f"cannot read the file: {e}", "read_failed")
        return
    for seg in plan_segments(ref, info.duration, time_base, spec, horizon, segment_seconds):
        yield dataclasses.replace(seg, facts=info.facts())


def segment_stream(seg: Segment, path: str, spec: WindowSpec, resize: str, timeout: float, threads: int,
                    limits: ProbeLimits, horizon: int, decoder: Decoder, source_fps: float = 0.0) -> FrameStream:
    """The segment's frame stream: a frame folder's images fed to ffmpeg, seeking as planned, or probing
    first for a whole video."""
    if seg.ref.frames_root:
        folder = FolderFrames(path, seg.ref.frames_root, limits, source_fps)
        stream = FrameStream(path, spec, resize, timeout, threads, limits, decoder=decoder,
                             pipe_format=folder.format, pipe_rate=source_fps, feed=folder.feed())
        stream.info, stream.folder = folder.info, folder
        return stream
    if seg.probed:
        return FrameStream(path, spec, resize, timeout, threads, limits, seg.seek, seg.lead,
                           seg.stop_after(spec.frames + horizon), decoder=decoder)
    return probe_and_stream(path, spec, resize, timeout, threads, limits, decoder)
