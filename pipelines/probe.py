"""ffprobe a local video file: its first video stream's size, frame rate and duration."""
from __future__ import annotations

import dataclasses
import json
import os
from fractions import Fraction
from typing import Optional

from pipelines.process import run_tool

# Only the file protocol: a playlist or concat file inside a video cannot make ffmpeg open
# a network connection or another protocol's resource.
PROTOCOL_WHITELIST = "file"


class VideoError(Exception):
    """A video cannot be used; `kind` is a short stable code counted in the summary.

    Attributes:
      stage: the step that failed (read, probe, decode, labels, window).
      kind: e.g. probe_failed, no_video_stream, decode_failed, timeout.
      stderr: the last <= 1 KB of the tool's stderr, or "".
    """

    def __init__(self, stage: str, kind: str, reason: str, stderr: str = ""):
        super().__init__(reason)
        self.stage, self.kind, self.reason, self.stderr = stage, kind, reason, stderr


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What ffprobe reports about a file's first video stream."""

    width: int
    height: int
    fps: Optional[float]
    duration: Optional[float]
    frames: Optional[int]
    codec: str
    format_name: str


def file_arg(path: str) -> str:
    """The input argument for ffmpeg/ffprobe: an absolute path behind the `file:` protocol.

    With the prefix a name is always a plain file name, whatever it starts with (`-`,
    `concat:`, `http:`) or contains (spaces, quotes, `%d`, non-UTF-8 bytes).
    """
    return "file:" + os.path.abspath(path)


def probe_args(path: str) -> list[str]:
    """The ffprobe command for `path` (ffprobe has no -nostdin; stdin is /dev/null instead)."""
    return ["ffprobe", "-hide_banner", "-v", "error", "-protocol_whitelist", PROTOCOL_WHITELIST,
            "-show_entries",
            "stream=codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,duration"
            ":format=format_name,duration",
            "-of", "json", file_arg(path)]


def _rate(text: Optional[str]) -> Optional[float]:
    try:
        r = Fraction(text)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return float(r) if r > 0 else None


def _number(text, cast=float):
    try:
        v = cast(text)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def probe_video(path: str, timeout: float) -> VideoInfo:
    """Probes a local file.

    Args:
      path: a local file path.
      timeout: wall-clock seconds before ffprobe is killed.

    Returns:
      The VideoInfo of the first video stream.

    Raises:
      VideoError: stage "probe", kind probe_failed / timeout / no_video_stream.
    """
    rc, out, err, timed_out = run_tool(probe_args(path), timeout)
    if timed_out:
        raise VideoError("probe", "timeout", f"ffprobe did not finish in {timeout:g}s", err)
    if rc != 0:
        first = err.strip().splitlines()[-1] if err.strip() else f"exit status {rc}"
        raise VideoError("probe", "probe_failed", f"ffprobe cannot read the file: {first}", err)
    try:
        data = json.loads(out.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as e:
        raise VideoError("probe", "probe_failed", f"ffprobe printed unreadable JSON: {e}", err) from e
    streams = [s for s in data.get("streams", []) if s.get("codec_type") == "video"]
    if not streams:
        kinds = sorted({s.get("codec_type", "?") for s in data.get("streams", [])})
        raise VideoError("probe", "no_video_stream",
                         f"no video stream (streams: {', '.join(kinds) or 'none'})", err)
    s, fmt = streams[0], data.get("format", {})
    width, height = _number(s.get("width"), int), _number(s.get("height"), int)
    if not width or not height:
        raise VideoError("probe", "no_video_stream", "the video stream reports no frame size", err)
    return VideoInfo(width=width, height=height,
                     fps=_rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate")),
                     duration=_number(s.get("duration")) or _number(fmt.get("duration")),
                     frames=_number(s.get("nb_frames"), int), codec=str(s.get("codec_name", "")),
                     format_name=str(fmt.get("format_name", "")))
