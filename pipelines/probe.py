"""Probe a local video file (ffprobe, or the bundled ffmpeg's stream header) and check it against the limits."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from fractions import Fraction
from typing import Optional

from pipelines.decoder import Decoder, default_decoder, resolve
from pipelines.subprocess_guard import ToolProcess, run_tool
from schemas.errors import ClipforgeError

# Only the file protocol: whatever a file refers to, ffmpeg cannot open a network connection
# or another protocol's resource (pipe:, fd:, subfile:, data:, http:, tcp:...).
PROTOCOL_WHITELIST = "file"
# Demuxers allowed by default, as ffprobe's format_name spells them: the common video
# containers. Left out on purpose: playlists and references that open other files or URLs
# (hls, concat, dash, image2 sequences, ...), which a hostile upload can point at /etc/passwd
# or at an internal web server.
DEFAULT_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts",
                   "flv", "ogg", "mpeg", "asf", "mxf", "gif", "yuv4mpegpipe")
DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K UHD
DEFAULT_MAX_DURATION = 6 * 3600.0  # seconds
MAX_SOURCE_FPS = 1000.0  # above this a header's frame rate is taken as broken or hostile
_NOT_ON_WHITELIST = re.compile(r"\[([\w,]+) @ 0x[0-9a-fA-F]+\] Format not on whitelist")
# ffmpeg 7+ names its input context, not the demuxer, in that line; the debug line before it names the demuxer.
_PROBED = re.compile(rb"\] \[debug\] Format ([\w,]+) probed with size=")
_HLS_DECLINED = "Not detecting m3u8/hls with non standard extension"
# Lines of ffmpeg's input dump (av_dump_format), as printed at -loglevel level+info.
_DURATION = re.compile(rb"\[info\]   Duration: (?:(\d+):(\d\d):(\d\d(?:\.\d+)?)|N/A)")
_STREAM = re.compile(rb"\[info\]   Stream #0:\d+[^:]*: (\w+): (.*)")
_SIZE = re.compile(rb", (\d+)x(\d+)\b")
# The decoder's own -max_pixels refusal, when the header's frame size is above it (FrameStream's check).
_MAX_PIXELS = re.compile(rb"Picture size (\d+)x(\d+) exceeds specified max pixel count")
_RATE = re.compile(rb", (\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_SAR = re.compile(rb"\[SAR (\d+:\d+) DAR")
# Side data of the stream above (older builds: "displaymatrix:"); a metadata key would be padded before its colon.
_ROTATION = re.compile(rb"\[info\]       (?:Display Matrix|displaymatrix): rotation of (-?\d+(?:\.\d+)?) degrees")
ATTACHED_PIC = b"(attached pic)"
COVER_ART_REASON = "the only video stream is an attached picture (cover art), not video"


class VideoError(ClipforgeError):
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
    time_base: Optional[Fraction] = None
    rotation: float = 0.0
    sar: str = ""
    vfr: Optional[bool] = None
    frame_gaps: Optional[int] = None  # frame folders: numbers missing from the file names

    def facts(self) -> dict:
        """What the manifest (videos.parquet) records of the header."""
        return {"format": self.format_name, "codec": self.codec, "width": self.width, "height": self.height,
                "rotation": self.rotation, "sar": self.sar, "source_fps": self.fps, "vfr": self.vfr,
                "duration": self.duration, "frame_gaps": self.frame_gaps}


@dataclasses.dataclass(frozen=True)
class ProbeLimits:
    """What a file must satisfy before it is decoded (the --formats, --max-pixels and
    --max-duration flags); the defaults apply wherever no limits are passed.

    Attributes:
      formats: allowed demuxer names; a file is accepted when one of the comma-separated
        names in its format_name is listed (ffmpeg's own matching).
      max_pixels: the largest width x height accepted.
      max_duration: the longest duration accepted, in seconds.
      max_fps: the highest source frame rate accepted.
    """

    formats: tuple[str, ...] = DEFAULT_FORMATS
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_duration: float = DEFAULT_MAX_DURATION
    max_fps: float = MAX_SOURCE_FPS

    @property
    def format_whitelist(self) -> str:
        """The value of ffmpeg's and ffprobe's -format_whitelist."""
        return ",".join(self.formats)

    def allows_format(self, format_name: str) -> bool:
        return any(name in self.formats for name in format_name.split(","))

    def check(self, info: "VideoInfo") -> None:
        """Raises VideoError (stage "probe") when ffprobe's answers are outside the limits.

        Kinds: format_not_allowed, too_many_pixels, too_long, bad_frame_rate.
        """
        if not self.allows_format(info.format_name):
            raise VideoError("probe", "format_not_allowed", f"container format {info.format_name!r} "
                             f"is not in --formats ({self.format_whitelist})")
        pixels = info.width * info.height
        if pixels > self.max_pixels:
            raise VideoError("probe", "too_many_pixels", f"frame size {info.width}x{info.height} = "
                             f"{pixels} pixels is above --max-pixels {self.max_pixels}")
        if info.duration is not None and info.duration > self.max_duration:
            raise VideoError("probe", "too_long", f"duration {info.duration:g}s is above "
                             f"--max-duration {self.max_duration:g}s")
        if info.fps is not None and not (math.isfinite(info.fps) and info.fps <= self.max_fps):
            raise VideoError("probe", "bad_frame_rate", f"frame rate {info.fps:g} fps is not sane "
                             f"(above {self.max_fps:g} fps)")


DEFAULT_LIMITS = ProbeLimits()


def file_arg(path: str) -> str:
    """The input argument for ffmpeg/ffprobe: an absolute path behind the `file:` protocol.

    With the prefix a name is always a plain file name, whatever it starts with (`-`,
    `concat:`, `http:`) or contains (spaces, quotes, `%d`, non-UTF-8 bytes).
    """
    return "file:" + os.path.abspath(path)


def probe_args(path: str, formats: tuple[str, ...] = DEFAULT_FORMATS) -> list[str]:
    """The ffprobe command for `path` (ffprobe has no -nostdin; stdin is /dev/null instead).

    -format_whitelist stops a playlist or concat file before its demuxer opens anything:
    ffmpeg picks the demuxer from the file's first bytes and refuses it before reading on.
    """
    return ["ffprobe", "-hide_banner", "-v", "error", "-protocol_whitelist", PROTOCOL_WHITELIST,
            "-format_whitelist", ",".join(formats), "-show_entries",
            "stream=codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,duration,"
            "sample_aspect_ratio:stream_disposition=attached_pic:stream_side_data=rotation:format=format_name,duration",
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


def probe_video(path: str, timeout: float, limits: Optional[ProbeLimits] = None,
                decoder: Optional[Decoder] = None) -> VideoInfo:
    """Probes a local file and checks it against the limits.

    Args:
      path: a local file path.
      timeout: wall-clock seconds before the probing process is killed.
      limits: the checks to apply; None for the defaults (DEFAULT_LIMITS).
      decoder: None for the default one (pipelines/decoder.py). The system decoder asks
        ffprobe; the bundled one, which has no ffprobe,
        runs its ffmpeg on the input alone (no output, nothing decoded but what ffprobe decodes
        too) and reads the stream header it prints (`header_info`).

    Returns:
      The VideoInfo of the first video stream.

    Raises:
      VideoError: stage "probe", kind probe_failed / timeout / format_not_allowed /
        no_video_stream / too_many_pixels / too_long / bad_frame_rate.
    """
    limits = limits or DEFAULT_LIMITS
    decoder = decoder or resolve(default_decoder())
    if decoder.one_process:
        with ToolProcess(header_probe_args(decoder.ffmpeg, path, limits.formats), timeout, header=True) as tp:
            head = tp.header(timeout)
            tp.close(wait=True)
        info = header_info(head or b"", path, tp.stderr_tail(), limits, decoder, timeout, tp.timed_out)
        limits.check(info)
        return info
    rc, out, err, timed_out = run_tool(probe_args(path, limits.formats), timeout)
    if timed_out:
        raise VideoError("probe", "timeout", f"ffprobe did not finish in {timeout:g}s", err)
    refused = _NOT_ON_WHITELIST.search(err)
    if rc != 0 and refused:
        raise VideoError("probe", "format_not_allowed", f"container format {refused.group(1)!r} is not "
                         f"in --formats ({limits.format_whitelist}); it was refused before being read", err)
    if rc != 0:
        first = err.strip().splitlines()[-1] if err.strip() else f"exit status {rc}"
        raise VideoError("probe", "probe_failed", f"ffprobe cannot read the file: {first}", err)
    try:
        data = json.loads(out.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as e:
        raise VideoError("probe", "probe_failed", f"ffprobe printed unreadable JSON: {e}", err) from e
    video = [s for s in data.get("streams", []) if s.get("codec_type") == "video"]
    streams = [s for s in video if not (s.get("disposition") or {}).get("attached_pic")]
    if video and not streams:
        raise VideoError("probe", "no_video_stream", COVER_ART_REASON, err)
    if not streams:
        kinds = sorted({s.get("codec_type", "?") for s in data.get("streams", [])})
        raise VideoError("probe", "no_video_stream",
                         f"no video stream (streams: {', '.join(kinds) or 'none'})", err)
    s, fmt = streams[0], data.get("format", {})
    width, height = _number(s.get("width"), int), _number(s.get("height"), int)
    if not width or not height:
        raise VideoError("probe", "no_video_stream", "the video stream reports no frame size", err)
    avg, base = _rate(s.get("avg_frame_rate")), _rate(s.get("r_frame_rate"))
    rotation = next((float(d["rotation"]) for d in s.get("side_data_list") or [] if "rotation" in d), 0.0)
    sar = str(s.get("sample_aspect_ratio") or "")
    info = VideoInfo(width=width, height=height, fps=avg or base,
                     duration=_number(s.get("duration")) or _number(fmt.get("duration")),
                     frames=_number(s.get("nb_frames"), int), codec=str(s.get("codec_name", "")),
                     format_name=str(fmt.get("format_name", "")), rotation=rotation,
                     sar="" if sar in ("0:1", "N/A") else sar,
                     vfr=None if not (avg and base) else abs(avg - base) > 1e-3 * base)
    limits.check(info)
    return info


def header_probe_args(ffmpeg: str, path: str, formats: tuple[str, ...], level: str = "info") -> list[str]:
    """The bundled decoder's probe: its ffmpeg on the input alone, printing the input dump."""
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", f"level+{level}", "-protocol_whitelist",
            PROTOCOL_WHITELIST, "-format_whitelist", ",".join(formats), "-i", file_arg(path)]


def _refused_format(decoder: Decoder, path: str, formats: tuple[str, ...], timeout: float,
                    force: str = "") -> tuple[str, str]:
    """The demuxer ffmpeg detected (or FORCE) in a file its -format_whitelist refuses, and its stderr.

    Asked of ffmpeg at debug level, which names the demuxer it probed; only on that path, and the
    same whitelist refuses the file again before any demuxer opens it.
    """
    args = header_probe_args(decoder.ffmpeg, path, formats, "debug")
    if force:
        args[-2:-2] = ["-f", force]
    with ToolProcess(args, timeout, header=True) as tp:
        head = tp.header(timeout) or b""
        tp.close(wait=True)
    m = _PROBED.search(head)
    return force or (m.group(1).decode("ascii") if m else "unknown"), tp.stderr_tail()


def _rate_text(number: bytes, kilo: bytes) -> float:
    return float(number) * (1000 if kilo else 1)


def header_info(head: bytes, path: str, errors: str, limits: ProbeLimits, decoder: Decoder, timeout: float,
                timed_out: bool = False) -> VideoInfo:
    """The VideoInfo of ffmpeg's input dump (the stream header it prints before decoding).

    Only lines after the exact `Input #0, <format>, from '<file: name>':` line are read, and
    only at the dump's own indentation, so neither a file name nor a metadata value (whose
    continuation lines ffmpeg indents further) can pass for a stream or a duration.

    Args:
      head: ffmpeg's stderr up to the end of its input dump (`ToolProcess.header`).
      path: the file given to ffmpeg.
      errors: ffmpeg's error lines (the stderr tail), for the dead letter.
      limits: for the formats ffmpeg was allowed (to name a refused one).
      decoder, timeout: to ask ffmpeg which format it refused.
      timed_out: the process was killed by the timeout.

    Raises:
      VideoError: stage "probe", kind timeout / format_not_allowed / probe_failed / no_video_stream.
    """
    if timed_out:
        raise VideoError("probe", "timeout",
                         f"ffmpeg did not finish in {timeout:g}s (its stream header, the probe, had not come)", errors)
    marker = b", from '" + os.fsencode(file_arg(path)) + b"':"
    start = head.find(b"[info] Input #0, ")
    end = head.find(marker, start) if start >= 0 else -1
    if end < 0:
        name = ""
        if "Format not on whitelist" in errors:
            name, _ = _refused_format(decoder, path, limits.formats, timeout)
        elif _HLS_DECLINED in errors and "hls" not in limits.formats:
            # ffmpeg 7+ declines to detect a playlist not named .m3u8; named as one, it is refused unread
            name, refused = _refused_format(decoder, path, limits.formats, timeout, force="hls")
            name, errors = (name, refused) if "Format not on whitelist" in refused else ("", errors)
        if name:
            raise VideoError("probe", "format_not_allowed", f"container format {name!r} is not in --formats "
                             f"({limits.format_whitelist}); it was refused before being read", errors)
        lines = [l for l in errors.strip().splitlines() if "Error opening input file" not in l]
        raise VideoError("probe", "probe_failed", "ffmpeg cannot read the file: "
                         + (lines[-1] if lines else "no stream header"), errors)
    format_name = head[start + len(b"[info] Input #0, "):end].decode("utf-8", "replace")
    duration, streams, rotation = None, [], {}
    for line in head[end + len(marker):].split(b"\n"):
        m = _DURATION.match(line)
        if m and m.group(1) is not None:
            duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        m = _STREAM.match(line)
        if m:
            streams.append((m.group(1).decode("ascii").lower(), m.group(2)))
        m = _ROTATION.match(line)
        if m and streams:
            rotation.setdefault(len(streams) - 1, float(m.group(1)))
    video = [(i, rest) for i, (kind, rest) in enumerate(streams)
             if kind == "video" and not rest.rstrip().endswith(ATTACHED_PIC)]
    if not video and any(kind == "video" for kind, _ in streams):
        raise VideoError("probe", "no_video_stream", COVER_ART_REASON, errors)
    if not video:
        kinds = sorted({kind for kind, _ in streams})
        raise VideoError("probe", "no_video_stream", f"no video stream (streams: {', '.join(kinds) or 'none'})",
                         errors)
    index, rest = video[0]
    size = _SIZE.search(rest) or _MAX_PIXELS.search(errors.encode("utf-8", "replace"))
    if not size or not int(size.group(1)) or not int(size.group(2)):
        raise VideoError("probe", "no_video_stream", "the video stream reports no frame size", errors)
    rates = {kind: _rate_text(n, k) for n, k, kind in _RATE.findall(rest)}
    fps = rates.get(b"fps") or rates.get(b"tbr")
    sar = _SAR.search(rest)
    avg, base = rates.get(b"fps"), rates.get(b"tbr")
    return VideoInfo(width=int(size.group(1)), height=int(size.group(2)), fps=fps if fps and fps > 0 else None,
                     duration=duration if duration and duration > 0 else None, frames=None,
                     codec=re.match(rb"\w*", rest).group(0).decode("ascii"), format_name=format_name,
                     rotation=rotation.get(index, 0.0), sar=sar.group(1).decode("ascii") if sar else "",
                     vfr=None if not (avg and base) else abs(avg - base) > 1e-3 * base)
