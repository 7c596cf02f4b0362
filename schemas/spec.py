"""Typed window and target specs, shared by ingest, the trainer and exported models."""
from __future__ import annotations

import dataclasses
from typing import Any

from schemas import tasks as _tasks
from schemas.errors import SetupError

ENCODINGS = ("png", "jpeg", "raw")
TASKS = _tasks.NAMES


class SpecError(SetupError, ValueError):
    """A spec field holds a value that cannot work; the message names the field."""


def _check(cond: bool, field: str, value: Any, expected: str) -> None:
    if not cond:
        raise SpecError(f"{field}={value!r} is invalid: expected {expected}")


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """How frames are sampled, sized and stored.

    Attributes:
      frames: frames per window (T).
      stride: frames between the starts of consecutive windows.
      fps: frame rate every video is resampled to before windowing.
      height, width: frame size after resizing.
      channels: 1 (gray) or 3 (rgb).
      encoding: png | jpeg | raw, how each frame is stored in a record.
      jpeg_quality: 1..100, used when encoding is jpeg.
    """

    frames: int
    stride: int
    fps: float
    height: int
    width: int
    channels: int
    encoding: str = "png"
    jpeg_quality: int = 95

    def __post_init__(self):
        _check(isinstance(self.frames, int) and self.frames >= 1, "frames", self.frames, "an integer >= 1")
        _check(isinstance(self.stride, int) and self.stride >= 1, "stride", self.stride, "an integer >= 1")
        _check(isinstance(self.fps, (int, float)) and 0 < self.fps <= 1000, "fps", self.fps, "a number in (0, 1000]")
        _check(isinstance(self.height, int) and 1 <= self.height <= 8192, "height", self.height, "an integer in [1, 8192]")
        _check(isinstance(self.width, int) and 1 <= self.width <= 8192, "width", self.width, "an integer in [1, 8192]")
        _check(self.channels in (1, 3), "channels", self.channels, "1 (gray) or 3 (rgb)")
        _check(self.encoding in ENCODINGS, "encoding", self.encoding, " | ".join(ENCODINGS))
        _check(isinstance(self.jpeg_quality, int) and 1 <= self.jpeg_quality <= 100,
               "jpeg_quality", self.jpeg_quality, "an integer in [1, 100]")
        if self.encoding == "jpeg" and self.channels not in (1, 3):
            raise SpecError("jpeg encoding needs 1 or 3 channels")

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def window_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, self.height, self.width, self.channels)

    @property
    def color(self) -> str:
        return "gray" if self.channels == 1 else "rgb"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WindowSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"unknown window spec field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """What each window is labelled with.

    Attributes:
      task: a schemas/tasks.py row name.
      outputs: regression output names (D of them), in record order.
      classes: class names (classification, multilabel); labels are indices into this stable order.
      horizon: next_frame: how many frames after the window are the target.
    """

    task: str
    outputs: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    horizon: int = 1

    def __post_init__(self):
        _check(self.task in TASKS, "task", self.task, " | ".join(TASKS))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        problem = _tasks.task_of(self.task).check(self)
        if problem:
            _check(False, *problem)

    @property
    def num_outputs(self) -> int:
        """Width of the model's output vector (regression D, classes K; 0 for frame targets)."""
        return _tasks.task_of(self.task).width(self)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"task": self.task}
        for name in _tasks.task_of(self.task).fields:
            value = getattr(self, name)
            d[name] = list(value) if isinstance(value, tuple) else value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TargetSpec":
        d = dict(d)
        if "task" not in d:
            raise SpecError("target spec is missing 'task'")
        return cls(task=d["task"], outputs=tuple(d.get("outputs", ())),
                   classes=tuple(d.get("classes", ())), horizon=int(d.get("horizon", 1)))
