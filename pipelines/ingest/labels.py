"""Label tables (CSV or Parquet, read with pyarrow): per video, segments or a time series."""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import numpy as np
import pyarrow as pa

from pipelines.ingest.label_columns import class_order, class_sets, normalize_id, numbers, read_table, strings
from schemas.errors import SetupError
from schemas.tasks import TASKS, task_of

JOIN_COLUMNS = ("video_id", "video")  # the first one present is used
SPLIT_COLUMN, GROUP_COLUMN = "split", "group"  # optional: a video's split, a video's group
FPS_COLUMN = "fps"  # optional, frame folders: the rate a folder's frames were taken at
SPLIT_VALUES = ("train", "validation", "test")
SHAPES = ("video", "segments", "series")
Target = Union[np.ndarray, int]  # regression (D,) float64, a class index, or a class set's indices


@dataclasses.dataclass(frozen=True)
class VideoLabels:
    """The label rows of one video.

    Attributes:
      shape: video (one row), segments (start/end seconds) or series (time seconds).
      values: regression (rows, D) float64; classification (rows,) int64 class indices;
        class sets (rows, K) bool multi-hot.
      rows: (rows,) 1-based row numbers in the labels file, for messages.
      start, end: segments, sorted by start; a segment covers start <= t < end.
      time: series, strictly increasing.
      sets: values are class sets: `at` gives index arrays, and a series takes the row at or
        before t instead of interpolating.
    """

    shape: str
    values: np.ndarray
    rows: np.ndarray
    start: Optional[np.ndarray] = None
    end: Optional[np.ndarray] = None
    time: Optional[np.ndarray] = None
    sets: bool = False

    def problem(self, outputs: tuple[str, ...]) -> Optional[str]:
        """Why this video cannot be used (a NaN or infinite target), or None."""
        if self.values.dtype.kind != "f":
            return None
        bad = ~np.isfinite(self.values)
        if not bad.any():
            return None
        r, c = np.argwhere(bad)[0]
        return (f"target {outputs[c]!r} is {self.values[r, c]} (empty, NaN or infinite) at labels "
                f"row {self.rows[r]}")

    def at(self, t: float) -> Optional[Target]:
        """The target at time `t` seconds, or None when no row covers it.

        video: the row's value. segments: the value of the segment with start <= t < end.
        series: linear interpolation between the rows around t (None outside the series); class
        sets: the row at or before t (None before the first row).
        """
        if self.shape == "video":
            return self._value(0)
        if self.shape == "segments":
            i = int(np.searchsorted(self.start, t, side="right")) - 1
            return self._value(i) if i >= 0 and t < self.end[i] else None
        if self.sets:
            i = int(np.searchsorted(self.time, t + 1e-9, side="right")) - 1
            return self._value(i) if i >= 0 else None
        if t < self.time[0] - 1e-9 or t > self.time[-1] + 1e-9:
            return None
        return np.array([np.interp(t, self.time, self.values[:, d]) for d in range(self.values.shape[1])])

    def _value(self, i: int) -> Target:
        if self.sets:
            return np.flatnonzero(self.values[i]).astype(np.int64)
        return self.values[i].copy() if self.values.ndim == 2 else int(self.values[i])


@dataclasses.dataclass
class LabelTable:
    """A labels file, checked and grouped by video id.

    Attributes:
      path: the file read.
      shape: video | segments | series.
      join_column: video_id or video.
      classes: class names, in index order (classification: numeric order when all are
        integers, otherwise sorted; multilabel: the sorted union of the sets); () for regression.
      videos: {video_id: VideoLabels}.
      ignored: columns present but unused.
      splits: {video_id: train|validation|test} from a `split` column (empty cells left out).
      groups: {video_id: group} from a `group` column (empty cells left out).
      fps: {video_id: frames per second} from an `fps` column (frame folders; empty cells left out).
    """

    path: str
    shape: str
    join_column: str
    classes: tuple[str, ...]
    videos: dict[str, VideoLabels]
    ignored: list[str]
    splits: dict[str, str] = dataclasses.field(default_factory=dict)
    groups: dict[str, str] = dataclasses.field(default_factory=dict)
    fps: dict[str, float] = dataclasses.field(default_factory=dict)


def check_training_classes(table: "LabelTable", split_of, present: set, train: str = "train") -> None:
    """Refuses a class set naming a class that no training video holds (the model could not learn it).

    Args:
      table: a class-set LabelTable, keyed by video id.
      split_of: video id -> its split.
      present: the ids of the videos being ingested (rows of other videos teach nothing).
      train: the training split's name.

    Raises:
      SetupError: naming the class and the first labels row that names it.
    """
    seen, first_row = set(), {}
    for vid, v in table.videos.items():
        for r, hot in zip(v.rows, v.values):
            for k in np.flatnonzero(hot):
                first_row.setdefault(int(k), int(r))
                if vid in present and split_of(vid) == train:
                    seen.add(int(k))
    for k, c in enumerate(table.classes):
        if k not in seen:
            raise SetupError(f"labels file {table.path} row {first_row.get(k, '?')}: class {c!r} is in no "
                             f"{train} video, so no model can learn it; relabel or move a video into {train}")


def load_labels(path: str, task: str, target_columns: tuple[str, ...], label_column: str) -> LabelTable:
    """Reads and checks a labels file before any video is touched.

    Args:
      path: CSV or Parquet (any Beam filesystem path).
      task: a row name of schemas/tasks.py that reads labels (its label_kind says how).
      target_columns: regression value columns.
      label_column: the class column (classification) or class-set column (multilabel).

    Returns:
      The LabelTable. Rows with NaN/empty targets are kept; their videos are dead-lettered.

    Raises:
      SetupError: unreadable file, a missing column, a value of the wrong type, a duplicated
        row (or overlapping segments), naming the file, column and row (rows count from 1,
        header excluded).
    """
    table = read_table(path, list(JOIN_COLUMNS) + [label_column])
    cols = table.column_names
    join = next((c for c in JOIN_COLUMNS if c in cols), None)
    if join is None:
        raise SetupError(f"labels file {path} has no 'video' or 'video_id' column to join on (columns: {cols})")
    row = task_of(task)
    needed = list(target_columns) if row.label_kind == "numbers" else [label_column]
    missing = [c for c in needed if c not in cols]
    if missing:
        flag = row.labels
        raise SetupError(f"labels file {path} lacks column(s) {missing} ({flag}); it has {cols}")
    if ("start" in cols) != ("end" in cols):
        raise SetupError(f"labels file {path} has {'start' if 'start' in cols else 'end'!r} without "
                         f"{'end' if 'start' in cols else 'start'!r}: segments need both")
    shape = "segments" if "start" in cols else "series" if "time" in cols else "video"
    if shape not in row.label_shapes:
        takers = " | ".join(n for n, r in TASKS.items() if shape in r.label_shapes)
        raise SetupError(f"labels file {path} is a time series (column 'time'): only --task {takers} read "
                         f"one (regression interpolates targets); use segments (start, end) for {task} labels")
    keys = {"video": [], "segments": ["start", "end"], "series": ["time"]}[shape]
    ignored = [c for c in cols if c not in [join, *needed, *keys, SPLIT_COLUMN, GROUP_COLUMN, FPS_COLUMN]
               and c not in JOIN_COLUMNS]

    ids = [normalize_id(v) for v in strings(table, join, path)]
    classes: tuple[str, ...] = ()
    if row.label_kind == "numbers":
        values = np.stack([numbers(table, c, path, allow_empty=True) for c in target_columns], axis=1)
    elif row.label_kind == "class_set":
        sets = class_sets(table, label_column, path)
        classes = tuple(sorted({n for names in sets for n in names}))
        if not classes:
            raise SetupError(f"labels file {path}: column {label_column!r} names no class in any row; "
                             f"{task} needs at least one class")
        index = {c: i for i, c in enumerate(classes)}
        values = np.zeros((len(sets), len(classes)), bool)
        for r, names in enumerate(sets):
            values[r, [index[n] for n in names]] = True
    else:
        names = strings(table, label_column, path)
        classes = class_order(set(names))
        if len(classes) < 2:
            raise SetupError(f"labels file {path}: column {label_column!r} holds only {list(classes)}; "
                             "classification needs at least two classes")
        index = {c: i for i, c in enumerate(classes)}
        values = np.array([index[n] for n in names], np.int64)
    times = {k: numbers(table, k, path, allow_empty=False) for k in keys}
    splits = _per_video(table, SPLIT_COLUMN, ids, path)
    bad = next(((v, s) for v, s in splits.items() if s not in SPLIT_VALUES), None)
    if bad:
        raise SetupError(f"labels file {path}: column 'split' of video {bad[0]!r} is {bad[1]!r}, expected one "
                         f"of {', '.join(SPLIT_VALUES)} (or empty for the hash split)")
    return LabelTable(path=path, shape=shape, join_column=join, classes=classes,
                      videos=_group(ids, values, times, shape, path, row.label_kind == "class_set"),
                      ignored=ignored, splits=splits,
                      groups=_per_video(table, GROUP_COLUMN, ids, path), fps=_fps(table, ids, path))


def _fps(table: pa.Table, ids: list[str], path: str) -> dict[str, float]:
    out = {}
    for vid, v in _per_video(table, FPS_COLUMN, ids, path).items():
        try:
            out[vid] = float(v)
        except ValueError:
            out[vid] = float("nan")
        if not (out[vid] > 0 and np.isfinite(out[vid])):
            raise SetupError(f"labels file {path}: column 'fps' of video {vid!r} is {v!r}, expected a positive "
                             "frame rate")
    return out


def _per_video(table: pa.Table, name: str, ids: list[str], path: str) -> dict[str, str]:
    """{video_id: value} of an optional per-video column; rows of one video must agree."""
    if name not in table.column_names:
        return {}
    out: dict[str, str] = {}
    for i, (vid, v) in enumerate(zip(ids, table[name].cast(pa.string()).to_pylist())):
        if v is None or v.strip() == "":
            continue
        v = v.strip()
        if out.setdefault(vid, v) != v:
            raise SetupError(f"labels file {path} row {i + 1}: column {name!r} of video {vid!r} is {v!r}, "
                             f"but an earlier row says {out[vid]!r}")
    return out


def _group(ids: list[str], values: np.ndarray, times: dict, shape: str, path: str,
           sets: bool = False) -> dict[str, VideoLabels]:
    """Groups rows by video, sorted by time, refusing duplicates and overlapping segments."""
    uniq, codes = np.unique(np.array(ids, dtype=object), return_inverse=True)
    sort_key = times["start"] if shape == "segments" else times["time"] if shape == "series" else np.zeros(len(ids))
    order = np.lexsort((sort_key, codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    out = {}
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        vid = str(uniq[codes[rows[0]]])
        numbers = rows + 1
        if shape == "video":
            if rows.size > 1:
                raise SetupError(f"labels file {path}: rows {sorted(numbers.tolist())[:5]} all label "
                                 f"video {vid!r}; keep one row per video")
            out[vid] = VideoLabels("video", values[rows], numbers, sets=sets)
        elif shape == "series":
            t = times["time"][rows]
            dup = np.flatnonzero(np.diff(t) <= 0)
            if dup.size:
                i = dup[0]
                raise SetupError(f"labels file {path}: rows {numbers[i]} and {numbers[i + 1]} both give "
                                 f"video {vid!r} at time {t[i]:g}")
            out[vid] = VideoLabels("series", values[rows], numbers, time=t, sets=sets)
        else:
            s, e = times["start"][rows], times["end"][rows]
            empty = np.flatnonzero(e <= s)
            if empty.size:
                raise SetupError(f"labels file {path} row {numbers[empty[0]]}: segment of {vid!r} has "
                                 f"end {e[empty[0]]:g} <= start {s[empty[0]]:g}")
            overlap = np.flatnonzero(s[1:] < e[:-1])
            if overlap.size:
                i = overlap[0]
                raise SetupError(f"labels file {path}: rows {numbers[i]} and {numbers[i + 1]} give "
                                 f"overlapping segments of video {vid!r}")
            out[vid] = VideoLabels("segments", values[rows], numbers, start=s, end=e, sets=sets)
    return out
