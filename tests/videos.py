"""Test videos made on the fly with ffmpeg: exact index-coded clips, lavfi clips and broken files.

API (all functions return the path they wrote):
  index_frames(n, height, width, channels) -> uint8 (n, H, W, C): frame i is uniformly
      index_value(i), so any decode at the same size and fps can be checked exactly;
  frame_index(frame) -> int: the index a decoded frame of index_frames carries;
  write_frames(path, frames, fps, codec="ffv1"): numpy frames piped into ffmpeg (ffv1 in .mkv
      is lossless, so decoding gives the frames back bit for bit; libx264/mpeg4 are lossy);
  make_video(path, frames=8, size=(16, 16), fps=10, channels=1, codec="ffv1"): an index clip;
  lavfi_video(path, source="testsrc", seconds=1.0, size=(48, 64), fps=10, codec="libx264"):
      an ordinary H.264 mp4 from ffmpeg's testsrc / mandelbrot / smptebars sources;
  audio_only(path), zero_byte(path), text_file(path): inputs ingest must dead-letter;
  raw_decode(path, fps, size, channels, resize_filter=None) -> uint8 (N, H, W, C): an
      independent decode with the ffmpeg command line, to compare ingest's frames against. It
      runs the ffmpeg build ingest runs (the default decoder, pipelines/decoder.py): builds differ
      by +-1 on a few pixels of lossy clips (swscale rounding), which is why metadata.json names
      the build.
"""
from __future__ import annotations

import os
import subprocess

import numpy as np

PIX_IN = {1: "gray", 3: "rgb24"}
# ffv1 keeps gray and (as bgr0) rgb exactly.
FFV1_PIX = {1: "gray", 3: "bgr0"}
INDEX_BASE, INDEX_STEP, INDEX_MAX = 16, 4, 59


def index_value(i: int) -> int:
    """The pixel value of frame i of an index clip (distinct for i <= 59)."""
    return INDEX_BASE + INDEX_STEP * i


def index_frames(n: int, height: int = 16, width: int = 16, channels: int = 1) -> np.ndarray:
    """n uniform frames, frame i filled with index_value(i)."""
    if n - 1 > INDEX_MAX:
        raise ValueError(f"index clips hold at most {INDEX_MAX + 1} frames")
    values = np.array([index_value(i) for i in range(n)], np.uint8)
    return np.broadcast_to(values[:, None, None, None], (n, height, width, channels)).copy()


def frame_index(frame: np.ndarray) -> int:
    """Recovers i from a decoded frame of an index clip."""
    return int(round((float(np.mean(frame)) - INDEX_BASE) / INDEX_STEP))


def _ffmpeg(args: list[str], stdin: bytes | None = None) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], input=stdin, check=True,
                   stdout=subprocess.DEVNULL)


def write_frames(path: str, frames: np.ndarray, fps: float, codec: str = "ffv1") -> str:
    """Encodes uint8 (N, H, W, C) frames (C = 1 or 3) at `fps` into `path`."""
    n, h, w, c = frames.shape
    out_pix = FFV1_PIX[c] if codec == "ffv1" else "yuv420p"
    cmd = ["-f", "rawvideo", "-pix_fmt", PIX_IN[c], "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:",
           "-c:v", codec, "-pix_fmt", out_pix]
    if codec == "libx264":
        cmd += ["-preset", "ultrafast"]
    _ffmpeg(cmd + [path], stdin=np.ascontiguousarray(frames).tobytes())
    return path


def make_video(path: str, frames: int = 8, size: tuple[int, int] = (16, 16), fps: float = 10,
               channels: int = 1, codec: str = "ffv1") -> str:
    """An index clip: `frames` frames of (height, width) whose values encode their index."""
    return write_frames(path, index_frames(frames, size[0], size[1], channels), fps, codec)


def lavfi_video(path: str, source: str = "testsrc", seconds: float = 1.0, size: tuple[int, int] = (48, 64),
                fps: float = 10, codec: str = "libx264") -> str:
    """An ordinary clip from an ffmpeg lavfi source (testsrc, mandelbrot, smptebars...)."""
    h, w = size
    extra = ["-preset", "ultrafast"] if codec == "libx264" else []
    _ffmpeg(["-f", "lavfi", "-i", f"{source}=size={w}x{h}:rate={fps}", "-t", str(seconds),
             "-c:v", codec, *extra, "-pix_fmt", "yuv420p", path])
    return path


def audio_only(path: str, seconds: float = 0.5) -> str:
    """A valid media file with a sine tone and no video stream (mp4/m4a container)."""
    _ffmpeg(["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", "-f", "mp4", path])
    return path


def zero_byte(path: str) -> str:
    open(path, "wb").close()
    return path


def text_file(path: str) -> str:
    """A text file (typically named .mp4): not a video at all."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("this is not a video\n" * 20)
    return path


def raw_decode(path: str, fps: float, size: tuple[int, int], channels: int,
               resize_filter: str | None = None) -> np.ndarray:
    """Decodes with the ffmpeg command line, independently of pipelines/decode.py (same ffmpeg build)."""
    from pipelines.decoder import default_decoder, resolve
    h, w = size
    scale = resize_filter or f"scale={w}:{h}:flags=area"
    fmt = PIX_IN[channels]
    ffmpeg = resolve(default_decoder()).ffmpeg
    out = subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-i", os.path.abspath(path),
                          "-vf", f"fps={fps},{scale},format={fmt}", "-f", "rawvideo", "-pix_fmt", fmt, "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, channels)
