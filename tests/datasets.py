"""Tiny clipforge datasets for trainer tests: shards + metadata.json written with the schemas/ codec.

Each window shows a bright square moving across a dark background. Its velocity is the
regression target, its direction the class, its direction and vertical sense the multilabel set
({left|right} plus down when it moves down), and the frames that follow the next_frame target,
so every task has something learnable. Written directly (no ffmpeg, no Beam) so trainer tests stay fast;
the ingest tests cover the real path from videos.
"""
from __future__ import annotations

import os

import numpy as np

from schemas.codec import RecordCodec
from schemas.metadata import DatasetMetadata
from schemas.spec import TargetSpec, WindowSpec
from schemas.tasks import target_stats, task_of

CLASSES = ("left", "right", "still")
MULTILABEL_CLASSES = ("down", "left", "right")
SPLITS = {"train": 1.0, "validation": 0.5, "test": 0.5}


def render(rng: np.random.Generator, frames: int, size: tuple[int, int], channels: int,
           velocity: tuple[float, float]) -> np.ndarray:
    """A square of side ~size/4 moving by `velocity` pixels per frame; uint8 [frames, H, W, C]."""
    h, w = size
    side = max(2, min(h, w) // 4)
    y0, x0 = rng.uniform(0, h - side), rng.uniform(0, w - side)
    out = np.full((frames, h, w, channels), 20, np.uint8)
    for t in range(frames):
        y = int(round(np.clip(y0 + velocity[0] * t, 0, h - side)))
        x = int(round(np.clip(x0 + velocity[1] * t, 0, w - side)))
        out[t, y:y + side, x:x + side] = 230
    noise = rng.integers(0, 12, out.shape, dtype=np.uint8)
    return out + noise


def make_dataset(root: str, task: str, frames: int = 4, size: tuple[int, int] = (16, 16),
                 channels: int = 1, n_windows: int = 16, horizon: int = 1,
                 encoding: str = "png", compression: str = "none", shards: int = 2,
                 seed: int = 0) -> str:
    """Writes ROOT/<task> with train/validation/test shards and metadata.json.

    Args:
      root: parent folder; the dataset goes to ROOT/<task>.
      task: a row name of schemas/tasks.py.
      frames, size, channels: the window shape (T, (H, W), C).
      n_windows: training windows; validation and test get half as many each.
      horizon: next_frame target length.
      encoding: png | jpeg | raw.
      compression: none | gzip.
      shards: training shards (validation and test get one each).
      seed: NumPy seed; the same arguments give the same bytes.

    Returns:
      The dataset directory.
    """
    import tensorflow as tf

    out = os.path.join(root, task)
    os.makedirs(out, exist_ok=True)
    spec = WindowSpec(frames=frames, stride=frames, fps=5.0, height=size[0], width=size[1],
                      channels=channels, encoding=encoding)
    row = task_of(task)
    given = {"outputs": ("vy", "vx"), "classes": MULTILABEL_CLASSES if row.label_kind == "class_set" else CLASSES,
             "horizon": horizon}
    target = TargetSpec(task, **{f: given[f] for f in row.fields})
    codec = RecordCodec(spec, target)
    rng = np.random.default_rng(seed)
    splits, train_frames, targets, labels = {}, [], [], []
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compression == "gzip" else "")
    for split, share in SPLITS.items():
        n = max(2, int(n_windows * share))
        n_shards = shards if split == "train" else 1
        records = [[] for _ in range(n_shards)]
        for i in range(n):
            label = int(rng.integers(0, len(CLASSES)))
            vx = {0: -1.5, 1: 1.5, 2: 0.0}[label] * rng.uniform(0.6, 1.4)
            vy = float(rng.uniform(-1, 1))
            clip = render(rng, frames + horizon, size, channels, (vy, vx))
            window, following = clip[:frames], clip[frames:]
            if row.label_kind == "class_set":
                label = [k for k, on in enumerate((vy > 0, label == 0, label == 1)) if on]
            rec = codec.encode_window(f"{split}_video{i % 5}.mp4", i * frames, window,
                                      target=[vy, vx], label=label, next_frames=following)
            records[i % n_shards].append(rec)
            if split == "train":
                train_frames.append(window)
                targets.append([vy, vx])
                labels.append(label)
        shard_info = []
        for s, recs in enumerate(records):
            rel = f"{split}/{split}-{s:05d}-of-{n_shards:05d}.tfrecord" + (".gz" if compression == "gzip" else "")
            os.makedirs(os.path.join(out, split), exist_ok=True)
            with tf.io.TFRecordWriter(os.path.join(out, rel), options) as w:
                for r in recs:
                    w.write(r)
            shard_info.append({"path": rel, "records": len(recs)})
        splits[split] = {"videos": 5, "windows": n, "shards": shard_info}
    px = np.stack(train_frames).astype(np.float64)
    stats = {"pixel_mean": px.mean(axis=(0, 1, 2, 3)).tolist(),
             "pixel_std": px.std(axis=(0, 1, 2, 3)).tolist()}
    hist = np.zeros(len(target.classes), np.int64)
    for label in labels if len(hist) else ():
        hist[np.asarray(label, np.int64).reshape(-1)] += 1
    y = np.asarray(targets, np.float64)
    stats["windows"] = len(labels)
    stats.update(target_stats(row, len(labels), y.sum(0).tolist(), (y * y).sum(0).tolist(), hist.tolist(),
                              2, len(target.classes)))
    meta = DatasetMetadata(spec=spec, target=target, splits=splits,
                           dead_letter={"count": 0, "path": "dead_letter.jsonl"}, stats=stats,
                           config={"made_by": "tests/datasets.py", "seed": seed},
                           fingerprint=f"test-{task}-{seed}-{frames}-{size}-{channels}-{n_windows}",
                           compression=compression, created="1970-01-01T00:00:00Z")
    meta.write(out)
    return out
