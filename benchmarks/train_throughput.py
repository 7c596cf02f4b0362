"""Trainer benchmark: training windows/s and GFLOP/s of every architecture, against the CPU's peak.

    .venv/bin/python -m benchmarks.train_throughput [--frames 8 --size 64 --channels 1
        --batch-size 8 --steps 10 --archs conv3d,cnn_rnn --out FILE.md]
        [--mixed-precision] [--jit] [--strategy mirrored]     (the same flags on a GPU machine)

Each architecture gets the real task model (trainer.heads.build_model, regression head, default
TrainConfig widths) compiled with a constant-rate Adam and the regression loss (`clipforge train`
adds a cosine schedule and weight decay, which do not change a step's compute), and runs fit() on an in-memory
batch repeated, so the figure is model compute (forward, backward, Adam) without input I/O.
The first epoch (graph tracing) is left out; of the timed epochs the fastest is reported, since
on a shared machine the slower ones measure the neighbours.

The same run prints the CPU (model, the flags that matter), the TensorFlow settings clipforge
chose (trainer/cpu.py; set TF_ENABLE_ONEDNN_OPTS=0 to measure TensorFlow's AVX2 default), and the
machine's float32 matmul peak, so `of peak` (achieved GFLOP/s over that peak) compares hosts.
FLOPs per window are counted from the model's layers (benchmarks/flops.py: forward x 3).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from trainer import cpu  # noqa: E402

# Each architecture runs in a process of its own with the settings `clipforge train` would choose
# for it (trainer/cpu.py); the parent keeps the environment it was started with to pass them on.
PARENT_ENV = dict(os.environ)
ONE_ARCH = "CLIPFORGE_BENCH_ARCH"
CPU_SETTINGS = cpu.choose(os.environ.get(ONE_ARCH))  # before TensorFlow is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from schemas.metadata import DatasetMetadata  # noqa: E402
from schemas.spec import TargetSpec, WindowSpec  # noqa: E402
from benchmarks.flops import train_flops_per_window  # noqa: E402
from trainer.archs import ARCHS, arch_defaults  # noqa: E402
from trainer.callbacks import EpochTimer  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.heads import build_model  # noqa: E402
from trainer.losses import task_loss, task_metrics  # noqa: E402
from trainer.distribute import select_strategy  # noqa: E402
from trainer.train import precision_policy  # noqa: E402
from schemas.tasks import REGRESSION  # noqa: E402


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """Best float32 GFLOP/s of an n x n matmul, in TensorFlow and in numpy (BLAS)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3

    def best(fn) -> float:
        fn()  # warm-up: thread pools, kernel selection
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    ta = tf.constant(a)
    return {"tensorflow": best(lambda: tf.linalg.matmul(ta, ta).numpy()),
            "numpy": best(lambda: a @ a)}


def synthetic_metadata(frames: int, size: int, channels: int) -> DatasetMetadata:
    """Metadata of a regression dataset with one output and plausible pixel stats."""
    return DatasetMetadata(
        spec=WindowSpec(frames=frames, stride=frames, fps=10.0, height=size, width=size,
                        channels=channels),
        target=TargetSpec(REGRESSION.name, outputs=("y",)), splits={}, dead_letter={},
        stats={"pixel_mean": [110.0] * channels, "pixel_std": [60.0] * channels,
               "target_mean": [0.0], "target_std": [1.0]},
        config={}, fingerprint="benchmark")


def measure(arch: str, meta: DatasetMetadata, batch: int, steps: int, repeats: int,
            args) -> dict:
    """Parameters, training windows/s and FLOPs per window of one architecture."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    # default widths (what `clipforge train` builds); no pretrained weights download
    cfg = TrainConfig(data="-", workdir="-", arch=arch,
                      arch_options={"backbone_weights": "none"} if "backbone_weights" in arch_defaults(arch) else {})
    policy = precision_policy(args.mixed_precision)
    keras.mixed_precision.set_dtype_policy(policy)
    with select_strategy(args.strategy).scope():
        model = build_model(meta, cfg)
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=task_loss(REGRESSION, "mse", meta.stats),
                      metrics=task_metrics(REGRESSION), jit_compile=args.jit)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch,) + meta.spec.window_shape, dtype=np.uint8)
    y = rng.normal(size=(batch, 1)).astype(np.float32)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    timer = EpochTimer()
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1 + repeats, callbacks=[timer], shuffle=False,
              verbose=0)
    rates = [n * batch / s for n, s in zip(timer.steps[1:], timer.train_seconds[1:])]
    flops = train_flops_per_window(model)
    return {"arch": arch, "parameters": model.count_params(), "windows_per_s": max(rates),
            "mflop_per_window": flops / 1e6, "policy": policy, "gflops": max(rates) * flops / 1e9,
            "first_epoch_s": timer.epoch_seconds[0], "total_s": time.perf_counter() - start}


def run_child(arch: str, argv: list[str]) -> dict:
    """measure() of one architecture in a fresh process with its own CPU settings."""
    env = dict(PARENT_ENV, **{ONE_ARCH: arch})
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", *argv], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{arch}: benchmark failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], args, peak: dict) -> str:
    """The results as a Markdown table with the set-up above it."""
    device = ", ".join(d.name for d in tf.config.list_logical_devices("GPU")) or "CPU"
    precision = ", ".join(sorted({r["policy"] for r in rows}))
    head = (f"Training throughput on {device} ({cpu.cpu_summary()}; TensorFlow {tf.__version__}; "
            f"settings as `clipforge train` chooses them per architecture): regression head, "
            f"T={args.frames}, {args.size}x{args.size}x{args.channels}, batch {args.batch_size}, "
            f"{precision}{', XLA' if args.jit else ''}, strategy {args.strategy}, default widths; "
            f"best of {args.repeats} epochs of {args.steps} steps after one untimed epoch. "
            f"float32 matmul peak in this run: {peak['tensorflow']:.1f} GFLOP/s TensorFlow, "
            f"{peak['numpy']:.1f} numpy; `of peak` is over the larger.\n\n")
    best = max(peak.values())
    lines = ["| architecture | parameters | MFLOP/window | train windows/s | GFLOP/s | of peak "
             "| first epoch (trace + steps) s | TensorFlow settings |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        settings = r["settings"].removeprefix("CPU settings: ").split(" on ")[0]
        lines.append(f"| {r['arch']} | {r['parameters']:,} | {r['mflop_per_window']:.1f} | "
                     f"{r['windows_per_s']:.1f} | {r['gflops']:.1f} | {r['gflops'] / best:.2f} | "
                     f"{r['first_epoch_s']:.1f} | {settings} |")
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
    p.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 on GPU, mixed_bfloat16 on a CPU with native bf16 (as train)")
    p.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    p.add_argument("--strategy", choices=("auto", "mirrored"), default="auto",
                   help="as `clipforge train --strategy` (mirrored: all local GPUs)")
    p.add_argument("--out", help="also write the Markdown table here")
    args = p.parse_args(argv)
    print(CPU_SETTINGS, flush=True)
    peak = matmul_peak_gflops()
    print(f"float32 matmul peak: {peak['tensorflow']:.1f} GFLOP/s TensorFlow, "
          f"{peak['numpy']:.1f} GFLOP/s numpy", flush=True)
    meta = synthetic_metadata(args.frames, args.size, args.channels)
    if os.environ.get(ONE_ARCH):  # a child: one architecture, one JSON line
        row = measure(os.environ[ONE_ARCH], meta, args.batch_size, args.steps, args.repeats, args)
        print(json.dumps({**row, "settings": CPU_SETTINGS}))
        return 0
    rows = []
    for arch in args.archs.split(","):
        rows.append(run_child(arch, argv if argv is not None else sys.argv[1:]))
        r = rows[-1]
        print(f"{arch}: {r['parameters']:,} parameters, {r['windows_per_s']:.1f} windows/s, "
              f"{r['gflops']:.1f} GFLOP/s ({r['total_s']:.0f} s; {r['settings']})", flush=True)
    # Peak again after the models: on a shared machine the better of the two is the machine's.
    after = matmul_peak_gflops()
    peak = {k: max(peak[k], after[k]) for k in peak}
    text = table(rows, args, peak)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
