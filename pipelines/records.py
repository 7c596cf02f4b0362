"""One video in, its records (or windows) out: labels, split, probe, streaming decode, encode once."""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Iterator, NamedTuple, Optional, Union

import numpy as np

from pipelines.decode import FrameStream
from pipelines.inputs import VideoRef, local_file
from pipelines.labels import VideoLabels
from pipelines.probe import VideoError, probe_video
from pipelines.split import assign_split
from pipelines.stats import VideoStatsAccumulator, VideoSummary
from pipelines.windows import iter_windows, last_frame_time
from schemas.codec import RecordCodec
from schemas.spec import TargetSpec, WindowSpec


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One line of dead_letter.jsonl: a video that produced no records, and why.

    Attributes:
      path, video_id: the video.
      stage: read | labels | probe | decode | window.
      reason: a sentence for people.
      kind: a short stable code, counted in the summary (e.g. no_label, too_short).
      stderr: the last <= 1 KB of ffmpeg/ffprobe stderr, when a tool failed.
    """

    path: str
    video_id: str
    stage: str
    reason: str
    kind: str
    stderr: str = ""

    def to_json(self) -> str:
        # ASCII-only JSON: a non-UTF-8 file name survives as \udcXX escapes.
        return json.dumps(dataclasses.asdict(self), ensure_ascii=True)

    @classmethod
    def of(cls, ref: VideoRef, err: VideoError) -> "DeadLetter":
        return cls(ref.path, ref.video_id, err.stage, err.reason, err.kind, err.stderr)


@dataclasses.dataclass(frozen=True)
class VideoJob:
    """Everything a worker needs to turn a video into records (picklable, no Beam).

    Attributes:
      spec, target: the dataset's window and target specs.
      resize: stretch | crop | pad.
      split_names, split_fractions: the splits and their shares.
      labels: {video_id: VideoLabels}, or None for next_frame.
      timeout: wall-clock seconds for probing and decoding one video.
      threads: ffmpeg decoder threads (0 = ffmpeg decides).
    """

    spec: WindowSpec
    target: TargetSpec
    resize: str = "stretch"
    split_names: tuple[str, ...] = ("train",)
    split_fractions: tuple[float, ...] = (1.0,)
    labels: Optional[dict[str, VideoLabels]] = None
    timeout: float = 600.0
    threads: int = 0

    @property
    def horizon(self) -> int:
        return self.target.horizon if self.target.task == "next_frame" else 0


def _too_short(frames: int, spec: WindowSpec, horizon: int) -> VideoError:
    need = spec.frames + horizon
    extra = f" ({spec.frames} + horizon {horizon})" if horizon else ""
    return VideoError("window", "too_short",
                      f"shorter than one window: {frames} frames at {spec.fps:g} fps, a window needs "
                      f"{need}{extra}")


def _probe_and_stream(path: str, spec: WindowSpec, resize: str, timeout: float, threads: int) -> FrameStream:
    """Probes the file, then opens its frame stream with what is left of the per-video timeout."""
    start = time.monotonic()
    probe_video(path, timeout)
    return FrameStream(path, spec, resize, max(timeout - (time.monotonic() - start), 0.001), threads)


def process_video(ref: VideoRef, job: VideoJob, scratch_dir: str
                  ) -> Iterator[Union[tuple[str, bytes], VideoSummary, DeadLetter]]:
    """Turns one video into serialized records, streaming.

    Order of checks: the label row (no decode for an unlabelled video), the split (a hash of
    the id, before any window), a local copy of remote files, ffprobe, then ffmpeg's frame
    stream through the ring buffer. Each frame is encoded at most once, however many windows
    hold it, and counted once in the pixel stats.

    Yields:
      (split, serialized record) per window as soon as it fills; then either one
      VideoSummary (the video wrote records) or one DeadLetter (it wrote none).
    """
    spec, horizon = job.spec, job.horizon
    labels = None
    if job.labels is not None:
        labels = job.labels.get(ref.video_id)
        if labels is None:
            yield DeadLetter(ref.path, ref.video_id, "labels", f"no row for {ref.video_id!r} in the labels file",
                             "no_label")
            return
        problem = labels.problem(job.target.outputs)
        if problem:
            yield DeadLetter(ref.path, ref.video_id, "labels", problem, "bad_target")
            return
    split = assign_split(ref.video_id, job.split_fractions, job.split_names)
    codec = RecordCodec(spec, job.target)
    stats = VideoStatsAccumulator(spec.channels, len(job.target.outputs) if job.target.task == "regression" else 0,
                                  len(job.target.classes) if job.target.task == "classification" else 0)

    def encode(pixels: np.ndarray) -> bytes:
        stats.add_frame(pixels)
        return codec.encode_frame(pixels)

    written = unlabelled = 0
    partial = ""
    try:
        with local_file(ref.path, scratch_dir) as path:
            stream = _probe_and_stream(path, spec, job.resize, job.timeout, job.threads)
            try:
                for start, frames in iter_windows(stream, spec.frames, spec.stride, horizon):
                    target = None
                    if labels is not None:
                        target = labels.at(last_frame_time(start, spec.frames, spec.fps))
                        if target is None:
                            unlabelled += 1
                            continue
                    encoded = [f.encoded(encode) for f in frames]
                    record = codec.serialize(
                        ref.video_id, start, start / spec.fps, encoded[:spec.frames],
                        target=target if job.target.task == "regression" else None,
                        label=target if job.target.task == "classification" else None,
                        encoded_next=encoded[spec.frames:] if horizon else None)
                    if target is not None:
                        stats.add_target(target)
                    written += 1
                    yield split, record
            except VideoError as e:
                if not written:
                    raise
                partial = e.reason  # frames already written stay: ffmpeg failed after them
            if not partial and stream.stderr.strip():
                # At -loglevel error a clean decode prints nothing; a truncated file still exits 0.
                partial = "ffmpeg reported: " + stream.stderr.strip().splitlines()[-1]
    except VideoError as e:
        yield DeadLetter.of(ref, e)
        return
    except OSError as e:
        yield DeadLetter(ref.path, ref.video_id, "read", f"cannot read the file: {e}", "read_failed")
        return
    if not written:
        if unlabelled:
            yield DeadLetter(ref.path, ref.video_id, "labels",
                             f"none of its {unlabelled} windows has a label at its last frame's time",
                             "no_labelled_window")
        else:
            yield DeadLetter.of(ref, _too_short(stream.frames, spec, horizon))
        return
    yield stats.summary(ref.video_id, split, windows=written, frames_decoded=stream.frames,
                        unlabelled_windows=unlabelled, partial=partial)


class VideoWindow(NamedTuple):
    """A window of decoded frames, for consumers that need pixels rather than records (predict).

    Attributes:
      video_id, path: the source video.
      start_frame, start_time: the window's first frame and its time in seconds.
      frames: uint8 (T, H, W, C).
      next_frames: uint8 (horizon, H, W, C) following the window, or None when horizon is 0.
    """

    video_id: str
    path: str
    start_frame: int
    start_time: float
    frames: np.ndarray
    next_frames: Optional[np.ndarray]


def video_windows(ref: VideoRef, spec: WindowSpec, resize: str = "stretch", horizon: int = 0,
                  timeout: float = 600.0, scratch_dir: str = "/tmp",
                  threads: int = 0) -> Iterator[Union[VideoWindow, DeadLetter]]:
    """Decodes one video into task-free windows of `spec` (no labels, no split, no encoding).

    The same probe, decode and ring buffer as ingest, so windows match ingest's pixel for
    pixel. With horizon > 0 each window also carries the frames after it (windows whose
    horizon would run past the end are not produced).

    Yields:
      VideoWindow per window, or a single DeadLetter (same stages and kinds as ingest) when
      the video yields none.
    """
    n = 0
    try:
        with local_file(ref.path, scratch_dir) as path:
            stream = _probe_and_stream(path, spec, resize, timeout, threads)
            try:
                for start, frames in iter_windows(stream, spec.frames, spec.stride, horizon):
                    pixels = np.stack([f.pixels for f in frames])
                    n += 1
                    yield VideoWindow(ref.video_id, ref.path, start, start / spec.fps, pixels[:spec.frames],
                                      pixels[spec.frames:] if horizon else None)
            except VideoError:
                if not n:
                    raise
    except VideoError as e:
        yield DeadLetter.of(ref, e)
        return
    except OSError as e:
        yield DeadLetter(ref.path, ref.video_id, "read", f"cannot read the file: {e}", "read_failed")
        return
    if not n:
        yield DeadLetter.of(ref, _too_short(stream.frames, spec, horizon))
