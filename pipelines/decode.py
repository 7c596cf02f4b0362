"""Stream a video's frames off an ffmpeg pipe, resampled, resized and colour-converted by ffmpeg."""
from __future__ import annotations

from typing import Iterator

import ffmpeg
import numpy as np

from pipelines.probe import PROTOCOL_WHITELIST, VideoError, file_arg
from pipelines.process import ToolProcess
from schemas.spec import WindowSpec

RESIZE_MODES = ("stretch", "crop", "pad")
PIX_FMTS = {1: "gray", 3: "rgb24"}
# Global options go before everything else: ffmpeg ignores options that trail the output.
FFMPEG_GLOBAL = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
# Area averaging: the sharpest honest downscale, and the same pixels every run.
SCALE_FLAGS = "area"
_INPUT = "file:input"


def ffmpeg_args(path: str, spec: WindowSpec, resize: str = "stretch", threads: int = 0) -> list[str]:
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

    Returns:
      The argument list (no shell involved).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r}: expected one of {RESIZE_MODES}")
    w, h = spec.width, spec.height
    # ffmpeg-python hashes its arguments as UTF-8, which a non-UTF-8 file name (surrogate
    # escapes) breaks; the real name replaces a placeholder after compiling.
    stream = ffmpeg.input(_INPUT, protocol_whitelist=PROTOCOL_WHITELIST, threads=threads)
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
    out = stream.output("pipe:", format="rawvideo", pix_fmt=PIX_FMTS[spec.channels])
    return [file_arg(path) if a == _INPUT else a for a in out.compile(cmd=list(FFMPEG_GLOBAL))]


class FrameStream:
    """Iterates a video's frames as uint8 arrays of `spec.frame_shape`, one pipe read each.

    Nothing but the frame being read is held here; the caller decides what to keep. When the
    iteration ends, `frames` is the number of frames read, and a failure (ffmpeg's non-zero
    exit, the timeout) has been raised as VideoError (stage "decode", kind decode_failed or
    timeout) carrying ffmpeg's stderr tail. ffmpeg is killed whenever iteration stops early.

    Args:
      path: a local file.
      spec: the window spec.
      resize: see `ffmpeg_args`.
      timeout: wall-clock seconds for the whole decode.
    """

    def __init__(self, path: str, spec: WindowSpec, resize: str, timeout: float, threads: int = 0):
        self.args = ffmpeg_args(path, spec, resize, threads)
        self.shape = spec.frame_shape
        self.timeout = timeout
        self.frames = 0
        self.stderr = ""
        self.process = None  # the running ToolProcess, for callers that watch it

    def __iter__(self) -> Iterator[np.ndarray]:
        size = int(np.prod(self.shape))
        with ToolProcess(self.args, self.timeout) as tp:
            self.process = tp
            try:
                while True:
                    buf = tp.stdout.read(size)
                    if len(buf) < size:
                        break  # EOF; a partial trailing frame only happens when ffmpeg died
                    self.frames += 1
                    yield np.frombuffer(buf, np.uint8).reshape(self.shape)
            finally:
                rc = tp.close()  # also on GeneratorExit: the consumer stopped early
                self.stderr = tp.stderr_tail()
        if tp.timed_out:
            raise VideoError("decode", "timeout",
                             f"decode did not finish in {self.timeout:g}s ({self.frames} frames read)",
                             self.stderr)
        if rc != 0:
            last = self.stderr.strip().splitlines()[-1] if self.stderr.strip() else ""
            raise VideoError("decode", "decode_failed",
                             f"ffmpeg exited with status {rc} after {self.frames} frames: {last}",
                             self.stderr)


def decode_all(path: str, spec: WindowSpec, resize: str = "stretch", timeout: float = 600) -> np.ndarray:
    """Decodes a whole (short) video to a (N, H, W, C) array; for tests and tools, not ingest."""
    frames = list(FrameStream(path, spec, resize, timeout))
    return np.stack(frames) if frames else np.zeros((0,) + spec.frame_shape, np.uint8)
