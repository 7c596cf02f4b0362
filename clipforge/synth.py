"""A synthetic corpus of real mp4 clips whose ground truth is known: a shape moving at a set speed and direction."""
from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import subprocess
from typing import Optional

import numpy as np
from schemas.errors import ClipforgeError

LABELS_FILE = "labels.csv"
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
BACKGROUNDS = ("noise", "gradient", "checker")
SHAPES = ("disc", "square")
# Shapes a multi-shape corpus (extra_shapes > 0) adds beside the moving one; labels.csv `shapes`.
EXTRA_SHAPES = ("cross", "disc", "ring", "square")
FFMPEG_TIMEOUT_S = 60


class SynthError(ClipforgeError, RuntimeError):
    """ffmpeg is missing or failed to encode a clip; the message carries its stderr."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """Everything that decides one clip's pixels.

    Attributes:
      video: file name, the `video` column of labels.csv.
      speed: pixels per second along `direction` (the regression target).
      direction: left | right | up | down (the class label).
      shape: disc | square.
      radius: disc radius or half the square's side, pixels.
      color: RGB of the shape.
      start: (x, y) centre at t=0, pixels.
      background: noise | gradient | checker.
      seed: seed of the background texture.
      extras: further shapes moving with the first one, each (shape, radius, color, start).
    """

    video: str
    speed: float
    direction: str
    shape: str
    radius: float
    color: tuple[int, int, int]
    start: tuple[float, float]
    background: str
    seed: int
    extras: tuple = ()

    @property
    def shapes(self) -> list[str]:
        """The distinct shapes in the clip, sorted (the multilabel label set)."""
        return sorted({self.shape, *(e[0] for e in self.extras)})


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A still, dark texture (values 10..100) so the bright shape stands out in rgb and in gray."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    if kind == "noise":  # blotches: coarse noise upsampled, plus fine grain
        coarse = rng.uniform(0, 1, (6, 6, 3))
        idx = np.minimum((np.arange(size) * 6) // size, 5)
        tex = coarse[idx][:, idx] * 0.8 + rng.uniform(0, 0.2, (size, size, 3))
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy)
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
        lo, hi = rng.uniform(0, 0.4, 3), rng.uniform(0.6, 1, 3)
        tex = lo + ramp[..., None] * (hi - lo)
    else:
        cell = int(rng.integers(4, 13))
        board = ((np.arange(size)[:, None] // cell + np.arange(size)[None, :] // cell) % 2).astype(np.float64)
        a, b = rng.uniform(0, 0.4, 3), rng.uniform(0.6, 1, 3)
        tex = a + board[..., None] * (b - a)
    return 10.0 + 90.0 * tex


def _bright_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour with luma >= 170, well above the background's 100 (visible after gray conversion)."""
    while True:
        c = rng.integers(0, 256, 3)
        if 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] >= 170:
            return int(c[0]), int(c[1]), int(c[2])


def render(clip: Clip, size: int, fps: float, frames: int) -> np.ndarray:
    """The clip's uint8 frames [frames, size, size, 3].

    The shape wraps around the edges (leaving one side, entering at the other), so it stays in view
    and moves in its labelled direction at its labelled speed in every frame. Edges are
    anti-aliased, so sub-pixel positions (and hence speeds) are visible.
    """
    bg = _background(clip.background, size, np.random.default_rng(clip.seed))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = DIRECTIONS[clip.direction]
    out = np.empty((frames, size, size, 3), np.uint8)
    layers = [(clip.shape, clip.radius, clip.color, clip.start), *clip.extras]
    for i in range(frames):
        img = bg
        for shape, radius, color, start in layers:
            cx = start[0] + dx * clip.speed * i / fps
            cy = start[1] + dy * clip.speed * i / fps
            # Offsets on the torus: the nearest copy of the centre, so the shape wraps seamlessly.
            ox = (xs - cx + size / 2) % size - size / 2
            oy = (ys - cy + size / 2) % size - size / 2
            alpha = _alpha(shape, radius, ox, oy)[..., None]
            img = img * (1 - alpha) + np.asarray(color, np.float64) * alpha
        out[i] = np.round(img).astype(np.uint8)
    return out


def _alpha(shape: str, r: float, ox: np.ndarray, oy: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in 0..1 of a shape of radius r at offsets (ox, oy) from its centre."""
    inside = lambda d, edge: np.clip(edge + 0.5 - d, 0, 1)
    if shape == "disc":
        return inside(np.hypot(ox, oy), r)
    if shape == "ring":  # a disc with a hole of half its radius
        d = np.hypot(ox, oy)
        return inside(d, r) * np.clip(d - 0.5 * r + 0.5, 0, 1)
    if shape == "cross":  # two bars a third of the radius thick
        bar = lambda a, b: inside(np.abs(a), r) * inside(np.abs(b), r / 3)
        return np.maximum(bar(ox, oy), bar(oy, ox))
    return inside(np.abs(ox), r) * inside(np.abs(oy), r)


def encode_mp4(frames: np.ndarray, path: str, fps: float) -> None:
    """Pipes uint8 RGB frames [N, H, W, 3] into ffmpeg's libx264 (yuv420p, so every player reads it).

    Raises:
      SynthError: ffmpeg failed or timed out; the message holds the end of its stderr.
    """
    n, h, w, _ = frames.shape
    cmd = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0", "-c:v", "libx264", "-preset", "veryfast",
           "-crf", "12", "-pix_fmt", "yuv420p", "-threads", "1", path]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # communicate() feeds stdin while draining stderr, so neither pipe can fill and deadlock.
        _, err = proc.communicate(np.ascontiguousarray(frames).tobytes(), timeout=FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SynthError(f"ffmpeg timed out after {FFMPEG_TIMEOUT_S}s writing {path}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        raise SynthError(f"ffmpeg failed ({proc.returncode}) writing {path}: {err.decode(errors='replace')[-1000:]}")


def plan_corpus(n_videos: int, seed: int, size: int, speed_range: tuple[float, float],
                extra_shapes: int = 0) -> list[Clip]:
    """Draws every clip's parameters; directions are balanced (n_videos // 4 each, the rest random).

    extra_shapes > 0 adds 0..extra_shapes further shapes to each clip, drawn from a second random
    stream, so the first shape of every clip is the same as without them.
    """
    rng = np.random.default_rng(seed)
    names = list(DIRECTIONS)
    directions = [names[i % 4] for i in range(n_videos)]
    directions = [directions[i] for i in rng.permutation(n_videos)]
    clips = []
    for i, direction in enumerate(directions):
        clips.append(Clip(
            video=f"clip_{i:04d}.mp4", speed=round(float(rng.uniform(*speed_range)), 3), direction=direction,
            shape=SHAPES[int(rng.integers(len(SHAPES)))], radius=round(float(rng.uniform(0.08, 0.14) * size), 2),
            color=_bright_color(rng), start=(float(rng.uniform(0, size)), float(rng.uniform(0, size))),
            background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], seed=int(rng.integers(2 ** 31))))
    if extra_shapes:
        more = np.random.default_rng([seed, 1])
        # the first shape is one of EXTRA_SHAPES too, so every class can be the only one in a clip
        clips = [dataclasses.replace(c, shape=EXTRA_SHAPES[int(more.integers(len(EXTRA_SHAPES)))],
                                     extras=_extras(more, size, int(more.integers(0, extra_shapes + 1))))
                 for c in clips]
    return clips


def _extras(rng: np.random.Generator, size: int, n: int) -> tuple:
    return tuple((EXTRA_SHAPES[int(rng.integers(len(EXTRA_SHAPES)))], round(float(rng.uniform(0.08, 0.12) * size), 2),
                  _bright_color(rng), (float(rng.uniform(0, size)), float(rng.uniform(0, size)))) for _ in range(n))


def make_corpus(out_dir: str, n_videos: int = 60, seed: int = 0, size: int = 64, fps: float = 12.0,
                seconds: float = 2.5, speed_range: Optional[tuple[float, float]] = None,
                extra_shapes: int = 0) -> list[Clip]:
    """Writes n_videos mp4 clips and OUT_DIR/labels.csv (columns video, speed, direction).

    With extra_shapes > 0, each clip holds 1 to 1 + extra_shapes shapes and labels.csv has a
    `shapes` column: the clip's distinct shapes joined by `;` (the multilabel demo's labels).

    The same arguments always give the same clips and labels.

    Args:
      out_dir: folder to write into (created).
      n_videos: number of clips.
      seed: seed of every random choice.
      size: frame side in pixels (even, as yuv420p needs).
      fps: frame rate.
      seconds: clip length; each clip has round(seconds * fps) frames.
      speed_range: (min, max) px/s; default 2..6 px per frame, motion visible even at half resolution.
      extra_shapes: most shapes added to a clip beside its first (0: one shape per clip).

    Returns:
      The clips, in labels.csv order.

    Raises:
      ValueError: a size, length or speed that cannot give a valid corpus.
      SynthError: ffmpeg is missing or fails.
    """
    frames = int(round(seconds * fps))
    if size < 8 or size % 2:
        raise ValueError(f"size={size}: expected an even number >= 8 (yuv420p needs even sides)")
    if n_videos < 1 or frames < 2:
        raise ValueError(f"n_videos={n_videos}, seconds*fps={frames}: expected >= 1 video of >= 2 frames")
    speed_range = speed_range or (2.0 * fps, 6.0 * fps)
    if not 0 < speed_range[0] <= speed_range[1]:
        raise ValueError(f"speed_range={speed_range}: expected 0 < min <= max")
    if shutil.which("ffmpeg") is None:
        raise SynthError("ffmpeg not found on PATH; install it (e.g. apt-get install ffmpeg) or run `make setup`")
    os.makedirs(out_dir, exist_ok=True)
    clips = plan_corpus(n_videos, seed, size, speed_range, extra_shapes)
    for clip in clips:
        encode_mp4(render(clip, size, fps, frames), os.path.join(out_dir, clip.video), fps)
    with open(os.path.join(out_dir, LABELS_FILE), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "speed", "direction"] + ["shapes"] * bool(extra_shapes))
        writer.writerows([c.video, f"{c.speed:.3f}", c.direction] + [";".join(c.shapes)] * bool(extra_shapes)
                         for c in clips)
    return clips
