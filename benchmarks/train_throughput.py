"""Trainer benchmark: training windows/s and GFLOP/s of every architecture, against the CPU's peak.

    .venv/bin/python -m benchmarks.train_throughput [--frames 8 --size 64 --channels 1
        --batch-size 32 --steps 10 --archs conv3d,cnn_rnn --out FILE.md]
        [--mixed-precision] [--jit] [--strategy mirrored]     (the same flags on a GPU machine)

Each architecture gets the real task model (trainer.heads.build_model, regression head, default
TrainConfig widths) compiled with a constant-rate Adam and the regression loss (`clipforge train`
adds a cosine schedule and weight decay, which do not change a step's compute), and runs fit() on
an in-memory batch repeated, so the figure is model compute (forward, backward, Adam) without
input I/O. The batch is `clipforge train`'s default batch_size (32) unless --batch-size says
otherwise: that is the step users run, and smaller batches measure per-op overhead instead.
The first epoch (graph tracing) is left out; of the timed epochs the fastest is reported, since
on a shared machine the slower ones measure the neighbours.

The same run prints the CPU (model, the flags that matter), the TensorFlow settings clipforge
chose (trainer/cpu.py; set TF_ENABLE_ONEDNN_OPTS=0 to measure TensorFlow's AVX2 default), and the
float32 matmul peak measured under the same instruction-set limits as the architectures'
kernels: with ONEDNN_MAX_CPU_ISA=AVX2 (an AVX2 CPU emulated on a bigger one) TensorFlow's matmul
runs through the same capped oneDNN and numpy under OPENBLAS_CORETYPE=Haswell, and the table says
which ISA its peak is for. `of peak` is achieved GFLOP/s over the better of the two (best of
three sizes, five repeats each, before and after the models). FLOPs per window are counted from
the model's layers (benchmarks/flops.py: forward x 3).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# numpy's OpenBLAS picks its kernels for the CPU it finds; when oneDNN is capped to emulate a
# smaller CPU, the peak's BLAS must be capped the same way (read once, when numpy loads).
ISA_CAP = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
OPENBLAS_CORE = {"SSE41": "Nehalem", "AVX": "Sandybridge", "AVX2": "Haswell", "AVX2_VNNI": "Haswell",
                 "AVX2_VNNI_2": "Haswell", "AVX512_CORE": "SkylakeX",
                 "AVX512_CORE_VNNI": "SkylakeX", "AVX512_CORE_BF16": "Cooperlake"}
if ISA_CAP in OPENBLAS_CORE:
    os.environ.setdefault("OPENBLAS_CORETYPE", OPENBLAS_CORE[ISA_CAP])
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


def matmul_peak_gflops(sizes=(1024, 2048, 3072), repeats: int = 5) -> dict:
    """Best float32 GFLOP/s of n x n matmuls over `sizes`, in TensorFlow and in numpy (BLAS).

    TensorFlow's matmul runs as a graph (tf.function), as a training step does, so it gets the
    same kernels the architectures get: oneDNN when on, held to ONEDNN_MAX_CPU_ISA when that is
    set; numpy then runs under the matching OPENBLAS_CORETYPE (set above, before numpy loads).
    """
    best = {"tensorflow": 0.0, "numpy": 0.0}
    matmul = tf.function(lambda x: tf.linalg.matmul(x, x))
    for n in sizes:
        a = np.random.default_rng(0).random((n, n), dtype=np.float32)
        ta = tf.constant(a)
        for name, fn in (("tensorflow", lambda: matmul(ta).numpy()), ("numpy", lambda: a @ a)):
            fn()  # warm-up: thread pools, kernel selection, tracing
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            best[name] = max(best[name], 2.0 * n ** 3 / min(times) / 1e9)
    return best


def peak_isa() -> str:
    """Which instruction set the measured peak is for: the oneDNN cap, or the CPU's own."""
    eigen = " (TensorFlow's matmul on its Eigen kernels, which no cap limits)" if \
        os.environ.get(cpu.ONEDNN) == "0" else ""
    if ISA_CAP and ISA_CAP != "ALL":
        blas = os.environ.get("OPENBLAS_CORETYPE", "the CPU's own")
        return f"{ISA_CAP} (ONEDNN_MAX_CPU_ISA={ISA_CAP}, OPENBLAS_CORETYPE={blas}){eigen}"
    flags = cpu.cpu_model_and_flags()[1]
    own = next((f for f in ("amx_bf16", "avx512f", "avx2", "avx") if f in flags), "the CPU's")
    return f"the CPU's own ({own.upper()}; no ONEDNN_MAX_CPU_ISA cap){eigen}"


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
                      metrics=task_metrics(REGRESSION), jit_compile=args.jit,
                      steps_per_execution=args.steps_per_execution)
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
            f"{precision}{', XLA' if args.jit else ''}, strategy {args.strategy}, "
            f"steps_per_execution {args.steps_per_execution}, default widths; "
            f"best of {args.repeats} epochs of {args.steps} steps after one untimed epoch. "
            f"float32 matmul peak in this run, for {peak_isa()}: {peak['tensorflow']:.1f} GFLOP/s "
            f"TensorFlow, {peak['numpy']:.1f} numpy (best of n=1024, 2048, 3072); `of peak` is "
            f"over the larger.\n\n")
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
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                   help="windows per step (default: `clipforge train`'s default batch_size)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed epoch")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs; the fastest is reported")
    p.add_argument("--steps-per-execution", type=int, default=1,
                   help="training steps per call of the train function (`clipforge train`: 1)")
    p.add_argument("--archs", default=",".join(ARCHS), help="comma list (default: all)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 on GPU, mixed_bfloat16 on a CPU with native bf16 (as train)")
    p.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    p.add_argument("--strategy", choices=("auto", "mirrored"), default="auto",
                   help="as `clipforge train --strategy` (mirrored: all local GPUs)")
    p.add_argument("--out", help="also write the Markdown table here")
    args = p.parse_args(argv)
    print(CPU_SETTINGS, flush=True)
    meta = synthetic_metadata(args.frames, args.size, args.channels)
    if os.environ.get(ONE_ARCH):  # a child: one architecture, one JSON line
        row = measure(os.environ[ONE_ARCH], meta, args.batch_size, args.steps, args.repeats, args)
        print(json.dumps({**row, "settings": CPU_SETTINGS}))
        return 0
    peak = matmul_peak_gflops()
    print(f"float32 matmul peak for {peak_isa()}: {peak['tensorflow']:.1f} GFLOP/s TensorFlow, "
          f"{peak['numpy']:.1f} GFLOP/s numpy", flush=True)
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
