"""Frame folders as videos: a folder of images, listed and read by clipforge, fed to ffmpeg's stdin."""
from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
from typing import Iterator, Optional

from pipelines.probe import ProbeLimits, VideoError, VideoInfo

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
# ffmpeg's demuxer for a stream of concatenated images of one format (never image2's file patterns)
PIPE_FORMATS = {"jpeg": "jpeg_pipe", "png": "png_pipe", "bmp": "bmp_pipe", "webp": "webp_pipe"}
READ_CHUNK = 1 << 20


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def natural_key(name: str) -> list:
    """Sorts `2.jpg` before `10.jpg`: digit runs compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t]


def frame_files(folder: str) -> list[str]:
    """The image files directly in FOLDER, in natural order."""
    return sorted((n for n in os.listdir(folder) if is_image(n)), key=natural_key)


def numbering_gaps(names: list[str]) -> int:
    """Frame numbers missing between the first and last (the last digit run of each name)."""
    numbers = []
    for n in names:
        runs = re.findall(r"\d+", os.path.splitext(n)[0])
        if runs:
            numbers.append(int(runs[-1]))
    numbers.sort()
    return sum(max(0, b - a - 1) for a, b in zip(numbers, numbers[1:]))


def image_info(path: str) -> tuple[str, int, int]:
    """(format, width, height) from an image file's header.

    Raises:
      ValueError: not a JPEG, PNG, BMP or WebP image, or its header is cut short.
    """
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return "png", w, h
        if head[:2] == b"BM" and len(head) >= 26:
            w, h = struct.unpack("<ii", head[18:26])
            return "bmp", abs(w), abs(h)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return "webp", *_webp_size(head, f)
        if head[:2] == b"\xff\xd8":
            return "jpeg", *_jpeg_size(f)
    raise ValueError("not a JPEG, PNG, BMP or WebP image")


def _webp_size(head: bytes, f) -> tuple[int, int]:
    chunk = head[12:16]
    data = head[20:32] + f.read(8)
    if chunk == b"VP8 " and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 5:
        b = data[1:5]
        return 1 + (((b[1] & 0x3F) << 8) | b[0]), 1 + (((b[3] & 0xF) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
    if chunk == b"VP8X" and len(data) >= 10:
        return 1 + int.from_bytes(data[4:7], "little"), 1 + int.from_bytes(data[7:10], "little")
    raise ValueError("WebP header cut short")


def _jpeg_size(f) -> tuple[int, int]:
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise ValueError("JPEG header without a frame (SOF) marker")
        if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
            continue
        length = f.read(2)
        if len(length) < 2:
            raise ValueError("JPEG header cut short")
        n = struct.unpack(">H", length)[0]
        if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
            sof = f.read(5)
            if len(sof) < 5:
                raise ValueError("JPEG frame header cut short")
            h, w = struct.unpack(">HH", sof[1:5])
            return w, h
        f.seek(n - 2, os.SEEK_CUR)


class FolderFrames:
    """The checked frame files of one folder and the bytes fed to ffmpeg.

    Every file must be a regular file inside the input root (a symlink pointing outside it is
    refused), readable as an image of one format, and within --max-pixels; the first that is
    not raises VideoError naming it. Feeding them hashes their bytes as they are read.

    Args:
      folder: the frame folder.
      root: the input root.
      limits: --max-pixels.
      source_fps: the rate the frames were taken at.
    """

    def __init__(self, folder: str, root: str, limits: ProbeLimits, source_fps: float):
        names = frame_files(folder)
        real_root = os.path.realpath(root) + os.sep
        self.paths, sizes, formats = [], [], set()
        for name in names:
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if not real.startswith(real_root):
                raise VideoError("read", "frame_outside_root", f"frame {path} points outside the input root ({real})")
            try:
                if not stat.S_ISREG(os.stat(real).st_mode):
                    raise VideoError("read", "bad_frame", f"frame {path} is not a regular file")
                fmt, w, h = image_info(real)
            except (OSError, ValueError) as e:
                raise VideoError("read", "bad_frame", f"frame {path} cannot be read as an image: {e}") from None
            if w * h > limits.max_pixels:
                raise VideoError("probe", "too_many_pixels", f"frame {path} is {w}x{h} = {w * h} pixels, above "
                                 f"--max-pixels {limits.max_pixels}")
            formats.add(fmt)
            if len(formats) > 1:
                raise VideoError("read", "bad_frame", f"frame {path} is {fmt} but earlier frames are "
                                 f"{sorted(formats - {fmt})[0]}: a frame folder holds images of one format")
            self.paths.append(real)
            sizes.append((w, h))
        self.format = PIPE_FORMATS[formats.pop()] if formats else ""
        self.sha256 = ""
        self.info = VideoInfo(width=sizes[0][0] if sizes else 0, height=sizes[0][1] if sizes else 0, fps=source_fps,
                              duration=len(names) / source_fps, frames=len(names), codec=self.format[:-5],
                              format_name="frames", sar="", vfr=False, frame_gaps=numbering_gaps(names))

    def feed(self) -> Iterator[bytes]:
        """Each frame file's bytes, in order; hashes them all (sha256 of the concatenation)."""
        h = hashlib.sha256()
        for path in self.paths:
            try:
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(READ_CHUNK), b""):
                        h.update(chunk)
                        yield chunk
            except OSError as e:
                raise VideoError("read", "bad_frame", f"frame {path} cannot be read: {e}") from None
        self.sha256 = h.hexdigest()


def folder_source_fps(video_id: str, default: float, per_video: Optional[dict[str, float]]) -> float:
    """A folder's frame rate: its labels `fps` cell, else --source-fps."""
    return (per_video or {}).get(video_id) or default
