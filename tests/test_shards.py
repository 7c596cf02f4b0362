"""The shuffle-free shard writer: exactly N shards per split, every record once, parts joined."""
from __future__ import annotations

import collections
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines.ingest.dataset_dir import PARTS_DIR, concat_parts, list_shards, remove_beam_temp
from pipelines.ingest.transforms import WriteShards
from pipelines.runners.options import local_runner
from schemas.tfrecord import iter_records, write_records


def _records(n_videos: int, per_video: int, split: str) -> list[tuple[str, bytes]]:
    return [(split, f"{split}:v{v}:w{w}".encode()) for v in range(n_videos) for w in range(per_video)]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_write_shards_exact_counts_every_record_once(tmp_path, compression):
    train, test = _records(6, 20, "train"), _records(1, 2, "test")
    work = str(tmp_path / "work")
    with TestPipeline(runner=local_runner()) as p:
        # two Creates flattened: the writer sees records of both splits in one stage
        recs = (p | "T" >> beam.Create(train), p | "S" >> beam.Create(test)) | beam.Flatten()
        _ = recs | WriteShards(work, {"train": 3, "test": 4}, compression)
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    for split, n, want in (("train", 3, train), ("test", 4, test)):
        shards = list_shards(work, split)
        assert [os.path.basename(s) for s in shards] == [f"part-{i:05d}-of-{n:05d}{suffix}" for i in range(n)]
        got = [r for s in shards for r in iter_records(s, compression)]
        assert collections.Counter(got) == collections.Counter(d for _, d in want)
    # blocks of 32 round robin: 120 train records reach every shard, each with windows of several
    # videos; the 2 test records (one block) open one file, and the other test shards are empty
    for s in list_shards(work, "train"):
        assert len({r.split(b":")[1] for r in iter_records(s, compression)}) >= 2
    assert sorted(len(list(iter_records(s, compression))) for s in list_shards(work, "test")) == [0, 0, 0, 2]
    parts = os.path.join(work, PARTS_DIR)
    assert not [f for _, _, files in os.walk(parts) for f in files]  # joined parts are moved or deleted
    remove_beam_temp(work)
    assert not os.path.exists(os.path.join(work, PARTS_DIR))


def test_concat_parts_gzip_members_read_by_tf_data(tmp_path):
    import tensorflow as tf
    parts = []
    for i in range(3):
        parts.append(str(tmp_path / f"p{i}.tfrecord.gz"))
        write_records(parts[-1], [f"{i}-{j}".encode() for j in range(4)], "gzip")
    dest = concat_parts(parts, str(tmp_path / "out" / "part-00000-of-00001.tfrecord.gz"))
    got = [r.numpy() for r in tf.data.TFRecordDataset(dest, compression_type="GZIP")]
    assert got == [f"{i}-{j}".encode() for i in range(3) for j in range(4)]
    assert not any(os.path.exists(p) for p in parts)
    # a retried join finds its parts gone and the shard in place: it keeps the shard
    assert concat_parts(parts, dest) == dest and len(list(iter_records(dest, "gzip"))) == 12
