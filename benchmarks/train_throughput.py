"""Trainer benchmark: parameters and training windows/s of every architecture at one fixed input.

    .venv/bin/python -m benchmarks.train_throughput [--frames 8 --size 64 --channels 1
        --batch-size 8 --steps 10 --archs conv3d,cnn_rnn --out FILE.md]

Each architecture gets the real task model (trainer.heads.build_model, regression head, default
TrainConfig widths) compiled as `clipforge train` compiles it, and runs fit() on an in-memory
batch repeated, so the figure is model compute (forward, backward, Adam) without input I/O.
The first epoch (graph tracing) is left out; of the timed epochs the fastest is reported, since
on a shared machine the slower ones measure the neighbours.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from schemas.metadata import DatasetMetadata  # noqa: E402
from schemas.spec import TargetSpec, WindowSpec  # noqa: E402
from trainer.archs import ARCHS  # noqa: E402
from trainer.callbacks import EpochTimer  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.heads import build_model  # noqa: E402
from trainer.losses import task_loss, task_metrics  # noqa: E402


def synthetic_metadata(frames: int, size: int, channels: int) -> DatasetMetadata:
    """Metadata of a regression dataset with one output and plausible pixel stats."""
    return DatasetMetadata(
        spec=WindowSpec(frames=frames, stride=frames, fps=10.0, height=size, width=size,
                        channels=channels),
        target=TargetSpec("regression", outputs=("y",)), splits={}, dead_letter={},
        stats={"pixel_mean": [110.0] * channels, "pixel_std": [60.0] * channels,
               "target_mean": [0.0], "target_std": [1.0]},
        config={}, fingerprint="benchmark")


def measure(arch: str, meta: DatasetMetadata, batch: int, steps: int, repeats: int) -> dict:
    """Parameters and training windows/s of one architecture."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    cfg = TrainConfig(data="-", workdir="-", arch=arch, backbone_weights="none")
    model = build_model(meta, cfg)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=task_loss("regression", "mse", meta.stats), metrics=task_metrics("regression"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch,) + meta.spec.window_shape, dtype=np.uint8)
    y = rng.normal(size=(batch, 1)).astype(np.float32)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    timer = EpochTimer()
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1 + repeats, callbacks=[timer], shuffle=False,
              verbose=0)
    rates = [n * batch / s for n, s in zip(timer.steps[1:], timer.train_seconds[1:])]
    return {"arch": arch, "parameters": model.count_params(), "windows_per_s": max(rates),
            "first_epoch_s": timer.epoch_seconds[0], "total_s": time.perf_counter() - start}


def table(rows: list[dict], args) -> str:
    """The results as a Markdown table with the set-up above it."""
    head = (f"Training throughput on CPU ({platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, TensorFlow {tf.__version__}): regression head, "
            f"T={args.frames}, {args.size}x{args.size}x{args.channels}, batch {args.batch_size}, "
            f"float32, default widths; best of {args.repeats} epochs of {args.steps} steps after "
            f"one untimed epoch.\n\n")
    lines = ["| architecture | parameters | train windows/s | first epoch (trace + steps) s |",
             "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['parameters']:,} | {r['windows_per_s']:.1f} | "
                     f"{r['first_epoch_s']:.1f} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="steps per timed epoch")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs; the fastest is reported")
    p.add_argument("--archs", default=",".join(ARCHS), help="comma list (default: all)")
    p.add_argument("--out", help="also write the Markdown table here")
    args = p.parse_args(argv)
    meta = synthetic_metadata(args.frames, args.size, args.channels)
    rows = []
    for arch in args.archs.split(","):
        rows.append(measure(arch, meta, args.batch_size, args.steps, args.repeats))
        r = rows[-1]
        print(f"{arch}: {r['parameters']:,} parameters, {r['windows_per_s']:.1f} windows/s "
              f"({r['total_s']:.0f} s)", flush=True)
    text = table(rows, args)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
