"""Stream a video's frames off an ffmpeg pipe, resampled, resized and colour-converted by ffmpeg."""
from __future__ import annotations

import math
from typing import Iterator, Optional

import ffmpeg
import numpy as np

from pipelines.decoder import Decoder, default_decoder, resolve
from pipelines.probe import (DEFAULT_FORMATS, DEFAULT_LIMITS, PROTOCOL_WHITELIST, ProbeLimits, VideoError,
                             VideoInfo, file_arg, header_info)
from pipelines.subprocess_guard import ToolProcess
from schemas.spec import WindowSpec

RESIZE_MODES = ("stretch", "crop", "pad")
PIX_FMTS = {1: "gray", 3: "rgb24"}
# Global options go before everything else: ffmpeg ignores options that trail the output.
FFMPEG_GLOBAL = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
# The same at info level, each line tagged with its level: the input dump is the probe (FrameStream).
FFMPEG_GLOBAL_HEADER = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info"]
# Area averaging: the sharpest honest downscale, and the same pixels every run.
SCALE_FLAGS = "area"
_INPUT = "file:input"


def ffmpeg_args(path: str, spec: WindowSpec, resize: str = "stretch", threads: int = 0,
                formats: tuple[str, ...] = DEFAULT_FORMATS, seek: float = 0.0, lead: float = 0.0,
                stop_after: int = 0, header: bool = False, max_pixels: int = 0, pipe_format: str = "",
                pipe_rate: float = 0.0) -> list[str]:
    """The ffmpeg command that writes `path` as raw frames of `spec` to stdout.

    One filter graph does everything: `fps` resamples to a constant rate first (so later
    filters touch only kept frames and variable-frame-rate sources line up with label
    times), `scale` resizes, `pad` or `crop` (for those resize modes) fill or cut to the
    exact size, and `format` converts to gray or rgb24.

    Args:
      path: a local file.
      spec: the window spec (fps, height, width, channels).
      resize: stretch (ignore aspect), crop (fill, then centre-crop) or pad (fit, then
        centre on black).
      threads: ffmpeg decoder threads; 0 lets ffmpeg choose.
      formats: the demuxers ffmpeg may use (-format_whitelist), as for the probe.
      seek: start decoding here (seconds, `-ss` before `-i`: a demuxer seek to the keyframe at
        or before it). Frame timing then matches a decode from the start exactly when `seek`
        and `lead` are whole multiples of 1/fps that the stream's time base can represent
        (pipelines/segments.py picks them so): the first frame out is the one a decode
        from the start shows at `seek + lead`.
      lead: seconds after `seek` that are decoded but dropped by the fps filter (its
        start_time), so that a seek landing a little late still starts on the right frame.
      stop_after: stop after this many output frames (`-frames:v`); 0 reads to the end.
      header: print the input dump first, every line tagged with its level (FrameStream's
        `check`); otherwise only errors are printed.
      max_pixels: the decoder refuses frames larger than this (its own `max_pixels`); 0: no limit.
      pipe_format, pipe_rate: a frame folder: images of this ffmpeg pipe demuxer (jpeg_pipe,
        png_pipe, ...) arrive on stdin at this rate, written by clipforge (pipelines/frames.py);
        `path` is then unused and only the pipe protocol and that demuxer are allowed.

    Returns:
      The argument list (no shell involved): the input is always a plain local file
      (`file:` + absolute path), only the file protocol is allowed, stdin is never read.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r}: expected one of {RESIZE_MODES}")
    w, h = spec.width, spec.height
    # ffmpeg-python hashes its arguments as UTF-8, which a non-UTF-8 file name (surrogate
    # escapes) breaks; the real name replaces a placeholder after compiling.
    # -noaccurate_seek keeps the frames decoded between the keyframe and `seek`, so the fps
    # filter can pick, for its first output time, the same source frame as a full decode.
    seeking = {"ss": repr(float(seek)), "noaccurate_seek": None} if seek > 0 else {}
    if max_pixels > 0:
        seeking["max_pixels"] = int(max_pixels)
    if pipe_format:
        # reinit_filter 0: frames of another size go through the same graph (scale resizes each);
        # a rebuilt graph would drop the frame the fps filter holds back at every size change
        stream = ffmpeg.input("pipe:0", f=pipe_format, framerate=repr(float(pipe_rate)), protocol_whitelist="pipe",
                              format_whitelist=pipe_format, threads=threads, reinit_filter=0, **seeking)
    else:
        stream = ffmpeg.input(_INPUT, protocol_whitelist=PROTOCOL_WHITELIST, format_whitelist=",".join(formats),
                              threads=threads, **seeking)
    if seek > 0:
        # start_time pins the output grid to the seek point rather than to the first frame that
        # arrives; setpts restarts it at 0, else rawvideo's constant-rate muxer would pad.
        stream = stream.filter("fps", fps=spec.fps, start_time=repr(float(lead))).filter("setpts", "PTS-STARTPTS")
    else:
        stream = stream.filter("fps", fps=spec.fps)
    fit = {"stretch": {}, "crop": {"force_original_aspect_ratio": "increase"},
           "pad": {"force_original_aspect_ratio": "decrease"}}[resize]
    stream = stream.filter("scale", w, h, flags=SCALE_FLAGS, **fit)
    if resize == "pad":
        # Padded in rgb24, where black is 0; a gray frame would be padded with video black (16).
        stream = stream.filter("format", "rgb24")
        stream = stream.filter("pad", w, h, "(ow-iw)/2", "(oh-ih)/2", color="black")
    stream = stream.filter("format", PIX_FMTS[spec.channels])
    if resize == "crop":
        stream = stream.filter("crop", w, h)
    bound = {"frames:v": int(stop_after)} if stop_after > 0 else {}
    out = stream.output("pipe:", format="rawvideo", pix_fmt=PIX_FMTS[spec.channels], **bound)
    glob = FFMPEG_GLOBAL_HEADER if header else FFMPEG_GLOBAL
    return [file_arg(path) if a == _INPUT else a for a in out.compile(cmd=list(glob))]


class FrameStream:
    """Iterates a video's frames as uint8 arrays of `spec.frame_shape`, one pipe read each.

    Nothing but the frame being read is held here; the caller decides what to keep. When the
    iteration ends, `frames` is the number of frames read, and a failure (ffmpeg's non-zero
    exit, the timeout, more frames than --max-duration allows) has been raised as VideoError
    (stage "decode", kind decode_failed, timeout or too_long) carrying ffmpeg's stderr tail.
    ffmpeg's process group is killed whenever iteration stops early.

    Args:
      path: a local file.
      spec: the window spec.
      resize: see `ffmpeg_args`.
      timeout: wall-clock seconds for the whole decode.
      threads: ffmpeg decoder threads (0 = ffmpeg decides).
      limits: the allowed formats and the longest duration; a file whose header understates
        its length is stopped after `max_duration * fps` frames. None for the defaults.
      seek, lead, stop_after: decode one time segment only (see `ffmpeg_args`).
      decoder: the ffmpeg to run; None for the default one (pipelines/decoder.py).
      pipe_format, pipe_rate, feed: a frame folder's images, fed to ffmpeg's stdin (`ffmpeg_args`).
      check: the decoding ffmpeg is also the probe (one process per video): before the first
        frame is read, its input dump is checked against `limits` as `probe_video` checks
        ffprobe's answers, and a file outside them raises the same VideoError (stage "probe")
        with ffmpeg killed. Until then ffmpeg can run at most a 64 KB pipe ahead, and its decoder
        refuses any frame above --max-pixels (ffmpeg's own max_pixels), so a pixel bomb is not
        decoded even then. `info` holds what the header said.
    """

    def __init__(self, path: str, spec: WindowSpec, resize: str, timeout: float, threads: int = 0,
                 limits: Optional[ProbeLimits] = None, seek: float = 0.0, lead: float = 0.0,
                 stop_after: int = 0, decoder: Optional[Decoder] = None, check: bool = False,
                 pipe_format: str = "", pipe_rate: float = 0.0, feed=None):
        limits = limits or DEFAULT_LIMITS
        self.path, self.limits, self.decoder, self.check, self.feed = path, limits, decoder, check, feed
        self.args = ffmpeg_args(path, spec, resize, threads, limits.formats, seek, lead, stop_after, header=check,
                                max_pixels=limits.max_pixels if check or pipe_format else 0, pipe_format=pipe_format,
                                pipe_rate=pipe_rate)
        self.info: Optional[VideoInfo] = None
        self.shape = spec.frame_shape
        self.timeout = timeout
        self.max_duration = limits.max_duration
        self.max_frames = math.ceil(limits.max_duration * spec.fps) + 1
        self.frames = 0
        self.stderr = ""
        self.process = None  # the running ToolProcess, for callers that watch it

    def __iter__(self) -> Iterator[np.ndarray]:
        size = int(np.prod(self.shape))
        ended = too_long = False
        if self.decoder is None:
            self.decoder = resolve(default_decoder())
        with ToolProcess([self.decoder.ffmpeg, *self.args[1:]], self.timeout, header=self.check,
                         feed=self.feed) as tp:
            self.process = tp
            try:
                if self.check:
                    head = tp.header(self.timeout)
                    self.info = header_info(head or b"", self.path, tp.stderr_tail(), self.limits, self.decoder,
                                            self.timeout, tp.timed_out or head is None)
                    self.limits.check(self.info)
                    tp.widen_pipe()
                while True:
                    buf = tp.stdout.read(size)
                    if len(buf) < size:
                        ended = True  # EOF; a partial trailing frame only happens when ffmpeg died
                        break
                    if self.frames == self.max_frames:
                        too_long = True
                        break
                    self.frames += 1
                    yield np.frombuffer(buf, np.uint8).reshape(self.shape)
            finally:
                # At EOF ffmpeg is exiting: its status decides. Otherwise (the consumer stopped,
                # too long, an error) it is killed at once.
                rc = tp.close(wait=ended)
                self.stderr = tp.stderr_tail()
        if isinstance(tp.feed_error, VideoError):
            raise tp.feed_error  # a frame file clipforge could not feed (pipelines/frames.py)
        if too_long:
            raise VideoError("decode", "too_long",
                             f"more than {self.max_duration:g}s of video (--max-duration) although the "
                             f"header said less: stopped after {self.frames} frames", self.stderr)
        if tp.timed_out:
            raise VideoError("decode", "timeout",
                             f"decode did not finish in {self.timeout:g}s ({self.frames} frames read)",
                             self.stderr)
        if rc != 0:
            last = self.stderr.strip().splitlines()[-1] if self.stderr.strip() else ""
            raise VideoError("decode", "decode_failed",
                             f"ffmpeg exited with status {rc} after {self.frames} frames: {last}",
                             self.stderr)
