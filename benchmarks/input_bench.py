"""Input pipeline benchmark: windows/s from the shards, and epoch time from shards vs from memory."""
from __future__ import annotations

import os
import time

from schemas.tasks import REGRESSION

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _demo_dataset(workdir: str) -> str:
    """The demo's regression dataset (60 synthetic clips, T=6, 64x64 gray), built once."""
    from clipforge import demo, synth
    from pipelines import ingest
    corpus, data = os.path.join(workdir, "input_corpus"), os.path.join(workdir, "input_dataset")
    if not os.path.exists(os.path.join(data, "metadata.json")):
        synth.make_corpus(corpus, n_videos=60, seed=0, seconds=demo.CLIP_SECONDS)
        ingest.ingest(demo.ingest_config(REGRESSION.name, corpus, data))
    return data


def run(workdir: str, batch: int = 16, epochs: int = 6) -> dict:
    """Returns windows/s of the tf.data input alone, and the input-bound ratio for the demo model."""
    import numpy as np
    import tensorflow as tf
    from clipforge import demo
    from schemas.metadata import DatasetMetadata
    from trainer.config import TrainConfig
    from trainer.input import make_dataset
    from trainer.train import compile_model

    data = _demo_dataset(workdir)
    meta = DatasetMetadata.load(data)
    n = meta.num_windows("train")

    def shards():
        return make_dataset(data, meta, "train", batch, training=True)

    def cached():  # what `clipforge train` uses when the split fits in --set cache_mb (default 1024)
        return make_dataset(data, meta, "train", batch, training=True, cache=True)

    # 1. the input alone: decode + shuffle + batch, one full pass after a warm-up pass
    warm = sum(1 for _ in shards())
    start = time.perf_counter()
    seen = sum(int(x.shape[0]) for x, _ in shards())
    input_wps = seen / (time.perf_counter() - start)

    # 2. the same model fed from the shards and from the same batches held in memory
    batches = list(shards())
    xs = np.concatenate([x.numpy() for x, _ in batches])
    ys = np.concatenate([y.numpy() for _, y in batches])
    memory = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(batch).cache()
    cfg = TrainConfig(data=data, workdir=workdir, arch=demo.PRESETS[REGRESSION.name].arch, epochs=epochs,
                      batch_size=batch).validate()
    times = {}
    for name, make in (("memory", lambda: memory), ("shards", shards), ("cached", cached)):
        model = compile_model(meta, cfg, total_steps=epochs * (n // batch))
        stamps = []
        cb = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: stamps.append(time.perf_counter()))
        start = time.perf_counter()
        model.fit(make(), epochs=epochs, verbose=0, callbacks=[cb])
        # epoch 1 traces the graph (and fills the cache); the fastest later epoch is the steady state
        times[name] = min(b - a for a, b in zip(stamps, stamps[1:]))
    assert warm == n // batch, f"{warm} batches from {n} windows"
    return {"train_windows": n, "batch": batch, "input_windows_per_s": round(input_wps, 1),
            "epoch_s_from_shards": round(times["shards"], 2), "epoch_s_from_memory": round(times["memory"], 2),
            "input_bound_ratio": round(times["shards"] / times["memory"], 3),
            "epoch_s_cached": round(times["cached"], 2),
            "input_bound_ratio_cached": round(times["cached"] / times["memory"], 3)}


def run_clip(workdir: str, clip_frames: int = 3, clip_strides: tuple[int, ...] = (1, 2), batch: int = 16,
             epochs: int = 6) -> dict:
    """The input-bound ratio with clip_frames < T: fresh random spans each epoch vs the same batches in memory."""
    import numpy as np
    import tensorflow as tf
    from clipforge import demo
    from schemas.metadata import DatasetMetadata
    from trainer.config import TrainConfig
    from trainer.input import make_dataset
    from trainer.train import compile_model

    data = _demo_dataset(workdir)
    meta = DatasetMetadata.load(data)
    n = meta.num_windows("train")

    def spans():  # what `clipforge train --set clip_frames=K --set clip_strides=...` feeds
        return make_dataset(data, meta, "train", batch, training=True, cache=True, clip_frames=clip_frames,
                            clip_strides=clip_strides)

    batches = list(spans())
    memory = tf.data.Dataset.from_tensor_slices((np.concatenate([x.numpy() for x, _ in batches]),
                                                 np.concatenate([y.numpy() for _, y in batches]))).batch(batch).cache()
    cfg = TrainConfig(data=data, workdir=workdir, arch=demo.PRESETS[REGRESSION.name].arch, epochs=epochs,
                      batch_size=batch, clip_frames=clip_frames, clip_strides=clip_strides).validate()
    times = {}
    for name, make in (("memory", lambda: memory), ("spans", spans)):
        model = compile_model(meta, cfg, total_steps=epochs * (n // batch))
        stamps = []
        cb = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: stamps.append(time.perf_counter()))
        model.fit(make(), epochs=epochs, verbose=0, callbacks=[cb])
        times[name] = min(b - a for a, b in zip(stamps, stamps[1:]))
    return {"frames": meta.spec.frames, "clip_frames": clip_frames, "clip_strides": list(clip_strides),
            "epoch_s_spans_cached": round(times["spans"], 2), "epoch_s_from_memory": round(times["memory"], 2),
            "input_bound_ratio_clip": round(times["spans"] / times["memory"], 3)}


if __name__ == "__main__":
    import json
    import sys
    if len(sys.argv) > 2 and sys.argv[2] == "clip":
        print(json.dumps(run_clip(sys.argv[1]), indent=1))
    else:
        print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "bench_out"), indent=1))
