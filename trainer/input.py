"""tf.data input: the shards of one split -> batches of (uint8 frames, target), read per metadata.json."""
from __future__ import annotations

import os
import re

import tensorflow as tf

from schemas import features as fk
from schemas.codec import RecordCodec
from schemas.metadata import DatasetMetadata
from schemas.tasks import task_of
from trainer import TrainerError
from trainer.augment import augment_fn, temporal_span_fn

AUTOTUNE = tf.data.AUTOTUNE
STREAM_SHUFFLE_BUFFER = 1024  # records (still encoded) in the shuffle buffer when streaming


class ShardError(TrainerError):
    """A shard cannot be read or one of its records does not parse with the dataset spec."""


def shard_files(data_dir: str, meta: DatasetMetadata, split: str) -> list[str]:
    """The split's shard paths; raises ShardError naming any that metadata.json lists but are gone."""
    try:
        files = meta.shard_paths(data_dir, split)
    except KeyError as e:
        raise ShardError(f"{os.path.join(data_dir, 'metadata.json')}: {e.args[0]}") from None
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise ShardError(f"shard(s) listed in {data_dir}/metadata.json are missing: {missing}")
    if not files:
        raise ShardError(f"split {split!r} of {data_dir} has no shards")
    return files


def shard_plan(meta: DatasetMetadata, split: str, num_workers: int, global_batch: int) -> str:
    """How a multi-worker run splits a split's windows between workers: none | file | data.

    none: one machine, nothing to split. file: worker i reads shards i, i+n, ... when that
    leaves every worker the same number of full batches (a worker that ran out of batches first
    would leave the others waiting in an all-reduce). data: otherwise every worker reads every
    shard and keeps every n-th window.
    """
    shards = meta.splits[split]["shards"]
    if num_workers <= 1:
        return "none"
    if len(shards) < num_workers:
        return "data"
    per_worker = [0] * num_workers
    for i, shard in enumerate(shards):
        per_worker[i % num_workers] += int(shard["records"])
    steps = {n // max(1, global_batch // num_workers) for n in per_worker}
    return "file" if len(steps) == 1 else "data"


def make_dataset(data_dir: str, meta: DatasetMetadata, split: str, global_batch: int,
                 training: bool, seed: int = 0, shuffle_buffer: int = 0,
                 augment: tuple[str, ...] = (), num_workers: int = 1, worker_index: int = 0,
                 deterministic: bool = True, pixel_dtype: tf.DType = tf.uint8,
                 cache: bool = False, clip_frames: int = 0,
                 clip_strides: tuple[int, ...] = (1,)) -> tf.data.Dataset:
    """Builds the input pipeline of one split.

    Args:
      data_dir: the dataset directory.
      meta: its metadata (spec, target, compression, shards).
      split: split name, e.g. "train".
      global_batch: windows per step over all replicas (tf.distribute splits each batch).
      training: shuffle, augment and drop the last partial batch.
      seed: seed of the shuffles and augmentation.
      shuffle_buffer: windows held by the training shuffle buffer; 0: the whole split when
        cached, STREAM_SHUFFLE_BUFFER records when streamed.
      augment: augmentation names (see trainer/augment.py); used only when training.
      num_workers: worker processes of a multi-worker run (see shard_plan).
      worker_index: this worker's index among them.
      deterministic: keep element order reproducible across parallel reads and maps.
      pixel_dtype: dtype of the frames (and next_frame targets) in the batches; the model casts
        them back to uint8. Multi-worker runs need int32: Keras all-reduces a first batch across
        workers to build the model, and collective ops do not take uint8.
      cache: keep the decoded windows in memory after the first pass (see `decoded_bytes`);
        later epochs then neither read nor decode (training shuffles the cached windows).
      clip_frames: K of TrainConfig.clip_frames (0: T); with clip_strides, training windows
        carry a random K-frame span where the model's crop reads it (augment.temporal_span_fn).
      clip_strides: the strides a training span draws from.

    Returns:
      A dataset of (frames uint8 [B, T, H, W, C], target): float32 [B, D] (regression),
      int64 [B] (classification), float32 multi-hot [B, K] (multilabel) or uint8
      [B, horizon, H, W, C] (next_frame).
    """
    files = shard_files(data_dir, meta, split)
    parse = RecordCodec(meta.spec, meta.target).parse_fn()
    key = task_of(meta.target).record_key
    compression = "GZIP" if meta.compression == "gzip" else ""

    plan = shard_plan(meta, split, num_workers, global_batch)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if plan == "file":
        # FILE sharding by hand, on the file list before any reading: tf.data's FILE auto-shard
        # cannot walk back through scan() (the augmentation seeds below) to find the files.
        ds = ds.shard(num_workers, worker_index)
    if training and not cache:
        # Reshuffling the file order each epoch changes which shards interleave together.
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
                       cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE,
                       deterministic=deterministic)
    if training and not cache:
        # Shuffle before parsing: the buffer then holds compressed records, not decoded frames,
        # so a large buffer stays cheap. Ingest spread long videos over the shards in blocks of 32.
        ds = ds.shuffle(shuffle_buffer or STREAM_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda s: _frames_and_target(parse(s), key), num_parallel_calls=AUTOTUNE,
                deterministic=deterministic)
    if cache:
        ds = ds.cache()
        if training:  # the buffer now holds decoded windows, at most the split already in memory
            n = max(meta.num_windows(split), 1)
            ds = ds.shuffle(min(shuffle_buffer or n, n), seed=seed, reshuffle_each_iteration=True)
    fn = augment_fn(augment, meta.target.task) if training else None
    if fn is not None:
        # Augment after parsing (it works on pixels) and before batching (each window draws its
        # own transform). A window's seed is (seed, its position in the epoch's stream); the
        # order is reshuffled every epoch, so a window gets new transforms each epoch. scan()
        # counts positions without adding a second source dataset, which FILE sharding forbids.
        ds = ds.scan(tf.constant(0, tf.int64),
                     lambda i, x: (i + 1, (x[0], x[1], tf.stack([tf.constant(seed, tf.int64), i]))))
        ds = ds.map(fn, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    # No repeat(): Keras restarts the iterator each epoch, so an epoch is exactly one pass and the
    # epoch count that BackupAndRestore records means what it says.
    # Training drops the last partial batch so every step has the same global batch: replicas
    # stay equal under tf.distribute and steps are comparable. Evaluation keeps every window.
    ds = ds.batch(global_batch, drop_remainder=training)
    frames = meta.spec.frames
    span = temporal_span_fn(frames, clip_frames or frames, clip_strides, meta.target.task) if training else None
    if span is not None:
        # Spans are drawn per batch, one per window: a few ops per batch instead of per window
        # keeps a cheaper K-frame model from waiting on the input. A batch's seed is (seed,
        # -1 - its index in the epoch): batches are made of reshuffled windows, so a window
        # gets a new span each epoch, and the negative counter never repeats an augmentation seed.
        ds = ds.scan(tf.constant(0, tf.int64),
                     lambda i, x: (i + 1, (x[0], x[1], tf.stack([tf.constant(seed, tf.int64), -1 - i]))))
        ds = ds.map(lambda x, y, s: (span(x, s), y), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if pixel_dtype != tf.uint8:
        ds = ds.map(lambda x, y: (tf.cast(x, pixel_dtype),
                                  tf.cast(y, pixel_dtype) if y.dtype == tf.uint8 else y),
                    num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(AUTOTUNE)  # last, so decoding overlaps the training step
    options = tf.data.Options()
    options.deterministic = deterministic
    # Set explicitly so tf.distribute never guesses (and warns): OFF where the files were
    # already split above, DATA otherwise (on one machine nothing is split either way).
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.OFF if plan == "file" else policy.DATA
    return ds.with_options(options)


def decoded_bytes(meta: DatasetMetadata, split: str) -> int:
    """Bytes the split's windows take decoded (uint8 frames, plus next frames for next_frame)."""
    spec, target = meta.spec, meta.target
    frames = spec.frames + task_of(target).horizon(target)
    return meta.num_windows(split) * frames * spec.height * spec.width * spec.channels


def fits_cache(meta: DatasetMetadata, split: str, cache_mb: int) -> bool:
    """Whether a split's decoded windows fit in `cache_mb` MiB (make_dataset's `cache`)."""
    return decoded_bytes(meta, split) <= cache_mb * 2 ** 20


def _frames_and_target(parsed: dict, key: str):
    return parsed[fk.FRAMES], parsed[key]


def find_bad_shards(data_dir: str, meta: DatasetMetadata, split: str) -> list[str]:
    """Reads every shard of a split alone and says which fail and where.

    tf.data's errors ("corrupted record at 128") do not name the file when shards are
    interleaved; this second pass, run only after such an error, finds it.

    Returns:
      One line per bad shard: "PATH: record N: reason".
    """
    parse = RecordCodec(meta.spec, meta.target).parse_fn()
    compression = "GZIP" if meta.compression == "gzip" else ""
    problems = []
    for path in shard_files(data_dir, meta, split):
        n = 0
        try:
            for _ in tf.data.TFRecordDataset(path, compression_type=compression).map(parse):
                n += 1
        except tf.errors.OpError as e:
            reason = re.sub(r"\{\{.*?\}\}\s*", "", e.message.split("[Op:")[0]).strip().splitlines()[-1]
            problems.append(f"{path}: record {n}: {reason}")
    return problems


def count_mismatches(data_dir: str, meta: DatasetMetadata, split: str) -> list[str]:
    """Shards whose record count differs from metadata.json (read without parsing)."""
    compression = "GZIP" if meta.compression == "gzip" else ""
    problems = []
    for shard, path in zip(meta.splits[split]["shards"], shard_files(data_dir, meta, split)):
        n = int(tf.data.TFRecordDataset(path, compression_type=compression).reduce(
            tf.constant(0, tf.int64), lambda count, _: count + 1))
        if n != int(shard["records"]):
            problems.append(f"{path}: holds {n} records, metadata.json says {shard['records']}")
    listed = sum(int(shard["records"]) for shard in meta.splits[split]["shards"])
    if listed != meta.num_windows(split):
        problems.append(f"split {split!r}: its shards list {listed} records, metadata.json says "
                        f"{meta.num_windows(split)} windows")
    return problems
