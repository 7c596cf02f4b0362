"""Long videos as time segments: where each one starts, how ffmpeg seeks there exactly, how they rejoin."""
from __future__ import annotations

import dataclasses
import hashlib
import math
from fractions import Fraction
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from pipelines.inputs import VideoRef
from pipelines.probe import DEFAULT_FORMATS, PROTOCOL_WHITELIST, file_arg
from pipelines.subprocess_guard import run_tool
from schemas.spec import WindowSpec

# Seconds decoded before each segment's first frame and dropped by the fps filter: a seek that
# lands after its target (containers without an index) still starts on the right frame.
LEAD_SECONDS = 1.0
# A video is split only when it is at least this many segments long.
MIN_SEGMENTS = 1.5
# ffmpeg reads `fps=<float>` as the closest fraction whose terms stay under this (av_d2q).
_FPS_TERMS = 1001000


@dataclasses.dataclass(frozen=True)
class Segment:
    """A part of one video, decoded on its own: the windows that start in [start, end).

    Frame numbers are those of a decode of the whole video at the dataset's fps. The decode
    covers frames start .. end + span - 2 (span = T + horizon): the windows starting before
    `end` need up to span - 1 frames of the next segment, and nothing more is read.

    Attributes:
      ref: the video.
      index, count: this segment's place among the video's segments (0-based) and their number.
      start: its first frame and first window start (a multiple of the stride).
      end: where the next segment starts; None for the last one, which reads to the end.
      seek: seconds to seek to before decoding (0: decode from the start).
      lead: seconds after `seek` decoded and dropped by ffmpeg.
      skip: frames ffmpeg delivers before frame `start`, dropped here.
      probed: the planner probed and checked the file already.
      facts: what that probe said (`VideoInfo.facts()`), for the manifest; None when not probed.
    """

    ref: VideoRef
    index: int = 0
    count: int = 1
    start: int = 0
    end: Optional[int] = None
    seek: float = 0.0
    lead: float = 0.0
    skip: int = 0
    probed: bool = False
    facts: Optional[dict] = dataclasses.field(default=None, compare=False, hash=False)

    def stop_after(self, span: int) -> int:
        """The frames ffmpeg must deliver (skipped ones included); 0 for 'to the end'."""
        return 0 if self.end is None else self.skip + self.end - self.start + span - 1


def fps_fraction(fps: float) -> Fraction:
    """The output frame rate exactly as ffmpeg's fps filter reads `fps=<value>`."""
    return Fraction(repr(float(fps))).limit_denominator(_FPS_TERMS)


def _lcm(a: Fraction, b: Fraction) -> Fraction:
    return Fraction(math.lcm(a.numerator, b.numerator), math.gcd(a.denominator, b.denominator))


def seek_grid(fps: Fraction, time_base: Fraction) -> Fraction:
    """The finest step, in seconds, at which seeking keeps frame timing exact.

    After `-ss X` ffmpeg shifts every timestamp by X, converted to the stream's time base, and
    the fps filter rounds each frame's time to its output grid, measured from its start_time.
    When X and start_time are whole numbers of output frames, of time-base units and of
    microseconds (ffmpeg's own unit), nothing is rounded on the way, so each frame lands on the
    same output frame as in a decode from the start, ties included.
    """
    return _lcm(_lcm(1 / fps, time_base), Fraction(1, 1_000_000))


def is_long(duration: Optional[float], segment_seconds: float) -> bool:
    """Whether a video of `duration` seconds is split at all."""
    return bool(duration) and segment_seconds > 0 and duration >= MIN_SEGMENTS * segment_seconds


def video_time_base(path: str, timeout: float, formats: tuple[str, ...] = DEFAULT_FORMATS,
                    ffmpeg: str = "") -> Optional[Fraction]:
    """The time base of a local file's first video stream, or None when unknown.

    Asked of ffprobe, or, given FFMPEG (the bundled decoder has no ffprobe), of ffmpeg copying
    the stream's first packet to the framecrc muxer, which prints the exact time base (the
    stream header rounds it).
    """
    if ffmpeg:
        args = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-protocol_whitelist", PROTOCOL_WHITELIST,
                "-format_whitelist", ",".join(formats), "-i", file_arg(path), "-map", "0:v:0", "-c", "copy",
                "-frames:v", "1", "-f", "framecrc", "-"]
    else:
        args = ["ffprobe", "-hide_banner", "-v", "error", "-protocol_whitelist", PROTOCOL_WHITELIST,
                "-format_whitelist", ",".join(formats), "-select_streams", "v:0",
                "-show_entries", "stream=time_base", "-of", "csv=p=0", file_arg(path)]
    rc, out, _, _ = run_tool(args, timeout)
    text = out.decode("ascii", "replace")
    if ffmpeg:
        text = next((l.split(":", 1)[1] for l in text.splitlines() if l.startswith("#tb 0:")), "")
    try:
        tb = Fraction(text.strip().splitlines()[0].strip())
    except (IndexError, ValueError, ZeroDivisionError):
        return None
    return tb if rc == 0 and tb > 0 else None


def plan_segments(ref: VideoRef, duration: Optional[float], time_base: Optional[Fraction], spec: WindowSpec,
                  horizon: int, segment_seconds: float) -> list[Segment]:
    """Splits a video of `duration` seconds into segments of about `segment_seconds`.

    Seeks land on `seek_grid` points (exact frame timing), and segment starts on multiples of
    the stride; where the two grids meet often enough the starts are on both, otherwise the
    frames between the seek point and a start are decoded and skipped. Each seek is followed
    by a lead of decoded-and-dropped seconds (see LEAD_SECONDS) when that lead is short next
    to a segment. A video whose exact seek points are more than half a segment apart (odd
    frame rates and time bases) is not split.

    Args:
      ref: the video.
      duration: its duration from ffprobe; None gives one whole segment.
      time_base: its video stream's time base; None gives one whole segment.
      spec: the window spec (fps, frames, stride).
      horizon: next_frame frames after each window (0 otherwise).
      segment_seconds: the target segment length; 0 gives one whole segment.

    Returns:
      The segments in order; a single whole-video segment when the video is not long enough.
    """
    whole = [Segment(ref, probed=True)]
    if not is_long(duration, segment_seconds) or not time_base:
        return whole
    fps = fps_fraction(spec.fps)
    grid = seek_grid(fps, time_base)
    if grid > segment_seconds / 2:
        return whole
    grid_ticks = int(grid * fps)
    span = spec.frames + horizon
    unit = math.lcm(spec.stride, grid_ticks)
    if unit > segment_seconds * fps / 2:  # the grids rarely meet: align to the stride, skip the rest
        unit = spec.stride
    length = max(round(segment_seconds * fps / unit), 1, math.ceil(span / unit)) * unit
    count = max(2, round(duration * fps / length))
    lead = _lcm(grid, Fraction(1)) * math.ceil(LEAD_SECONDS / _lcm(grid, Fraction(1)))  # whole seconds
    lead_ticks = int(lead * fps) if lead <= segment_seconds / 4 else 0
    out = []
    for j in range(count):
        start, end = j * length, ((j + 1) * length if j < count - 1 else None)
        on_grid = start // grid_ticks * grid_ticks  # the last seek point at or before `start`
        seek_ticks = on_grid - lead_ticks
        if seek_ticks <= 0:  # near the beginning: decode from the start and skip
            out.append(Segment(ref, j, count, start, end, skip=start, probed=True))
        else:
            out.append(Segment(ref, j, count, start, end, seek=float(seek_ticks / fps),
                               lead=float(lead_ticks / fps), skip=start - on_grid, probed=True))
    return out


def shared_frames_end(seg: Segment, spec: WindowSpec, horizon: int, written: Callable[[int], bool]) -> int:
    """Frames of `seg` before this index are in a window the previous segment writes.

    Those frames are counted in the pixel stats by the previous segment, so that each frame is
    counted once, as in a whole decode.

    Args:
      seg: the segment.
      spec, horizon: the window spec and next_frame horizon.
      written: whether the window starting at a frame is written (it has a label).
    """
    span = spec.frames + horizon
    first = max(0, -(-(seg.start - span + 1) // spec.stride) * spec.stride)
    ends = [s + span for s in range(first, seg.start, spec.stride) if written(s)]
    return max([seg.start, *ends])


class EdgeDigests:
    """Hashes the frames a segment shares with its neighbours, to check the seek when they rejoin.

    A segment decodes the first span - 1 frames of the next one; both hash those frames, and
    `boundary_problem` compares them. Also counts the frames that pass.
    """

    def __init__(self, seg: Segment, span: int):
        shared = span - 1
        self.head_end = shared if seg.index > 0 else 0
        self.tail_start = None if seg.end is None or not shared else seg.end - seg.start
        self.count = 0
        self._head, self._tail = hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16)
        self._head_n = self._tail_n = 0

    def watch(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Passes `frames` through, hashing the shared ones."""
        for pixels in frames:
            if self.count < self.head_end:
                self._head.update(pixels)
                self._head_n += 1
            if self.tail_start is not None and self.count >= self.tail_start:
                self._tail.update(pixels)
                self._tail_n += 1
            self.count += 1
            yield pixels

    @property
    def head(self) -> tuple[int, str]:
        return self._head_n, self._head.hexdigest() if self._head_n else ""

    @property
    def tail(self) -> tuple[int, str]:
        return self._tail_n, self._tail.hexdigest() if self._tail_n else ""


def boundary_problem(index: int, start: int, tail_before: tuple[int, str], head: tuple[int, str]) -> str:
    """A sentence when segment `index` does not continue the one before it, else ""."""
    if tail_before == head:
        return ""
    return (f"segment {index} (from frame {start}) does not continue segment {index - 1}: their shared "
            f"frames differ ({tail_before[0]} vs {head[0]} hashed), so seeking in this file is not frame-exact; "
            "ingest it with --segment-seconds 0")


