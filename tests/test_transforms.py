"""Each ingest PTransform on its own (TestPipeline + Create + assert_that), and ingest() on a TestPipeline."""
from __future__ import annotations

import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import ingest
from pipelines.dead_letters import DeadLetter, WriteDeadLetter
from pipelines.ingest.config import parse_config
from pipelines.ingest.engine import VideoJob
from pipelines.ingest.stats import VideoSummary
from pipelines.ingest.transforms import MakeRecords, WriteMetadata
from pipelines.inputs import VideoRef
from pipelines.runners.options import local_runner
from pipelines.windows import count_windows
from schemas.codec import RecordCodec
from schemas.metadata import DatasetMetadata
from schemas.spec import TargetSpec, WindowSpec
from schemas.tfrecord import write_records
from tests import videos
from tests.helpers import read_dataset

SPEC = WindowSpec(frames=4, stride=2, fps=10, height=16, width=16, channels=1, encoding="png")
NEXT = TargetSpec("next_frame", horizon=1)


def pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(runner=local_runner())


def test_make_records_streams_the_windows_of_a_video_and_dead_letters_a_broken_one(index_clip, tmp_path):
    broken = videos.text_file(str(tmp_path / "notes.mkv"))
    codec = RecordCodec(SPEC, NEXT)
    with pipeline() as p:
        made = (p | beam.Create([VideoRef(index_clip, "index12.mkv"), VideoRef(broken, "notes.mkv")])
                | MakeRecords(VideoJob(SPEC, NEXT)))
        frames = made["records"] | "Frames" >> beam.Map(
            lambda r: (r[0], [videos.frame_index(f) for f in codec.decode_numpy(r[1])["frames"]]))
        # windows start every 2 frames and need one frame after them: starts 0, 2, 4, 6
        assert_that(frames, equal_to([("train", list(range(s, s + 4))) for s in (0, 2, 4, 6)]), label="CheckFrames")
        assert_that(made["summary"] | beam.Map(lambda s: (s.video_id, s.split, s.windows, s.frames_decoded)),
                    equal_to([("index12.mkv", "train", count_windows(12, 4, 2, 1), 12)]), label="CheckSummary")
        assert_that(made["dead_letter"] | beam.Map(lambda d: (d.video_id, d.stage)),
                    equal_to([("notes.mkv", "probe")]), label="CheckDead")


def test_write_dead_letter_counts_each_kind_and_writes_one_line_per_video(tmp_path):
    dead = [DeadLetter("/v/a.mp4", "a.mp4", "probe", "no video stream", "no_video_stream"),
            DeadLetter("/v/b.mp4", "b.mp4", "labels", "no label row", "no_label"),
            DeadLetter("/v/c.mp4", "c.mp4", "labels", "no label row", "no_label")]
    with pipeline() as p:
        out = p | beam.Create(dead) | WriteDeadLetter(str(tmp_path))
        assert_that(out["counts"], equal_to([{"no_video_stream": 1, "no_label": 2}]))
    lines = [json.loads(line) for line in (tmp_path / "dead_letter.jsonl").read_text().splitlines()]
    assert sorted((d["video_id"], d["kind"]) for d in lines) == [
        ("a.mp4", "no_video_stream"), ("b.mp4", "no_label"), ("c.mp4", "no_label")]


def test_write_metadata_counts_the_shards_on_disk_and_sums_the_video_stats(tmp_path):
    work = tmp_path / "ds"
    for split, n in (("train", 3), ("test", 1)):
        (work / split).mkdir(parents=True)
        write_records(str(work / split / "part-00000-of-00001.tfrecord"), [b"x"] * n)
    summaries = [VideoSummary("a", "train", windows=2, frames_decoded=10, pixel_count=4, pixel_sum=(8.0,),
                              pixel_sumsq=(20.0,)),
                 VideoSummary("b", "train", windows=1, frames_decoded=5, pixel_count=4, pixel_sum=(0.0,),
                              pixel_sumsq=(0.0,)),
                 VideoSummary("c", "test", windows=1, frames_decoded=4, pixel_count=4, pixel_sum=(4.0,),
                              pixel_sumsq=(4.0,))]
    with pipeline() as p:
        inputs = {"summary": p | "S" >> beam.Create(summaries), "dead_counts": p | "D" >> beam.Create([{"x": 1}]),
                  "dead_files": p | "F" >> beam.Create(["dead_letter.jsonl"]),
                  "shards/train": p | "T" >> beam.Create(["train/part-00000-of-00001.tfrecord"]),
                  "shards/test": p | "E" >> beam.Create(["test/part-00000-of-00001.tfrecord"])}
        _ = inputs | WriteMetadata(str(work), SPEC, NEXT, {"compression": "none"}, "fp")
    meta = DatasetMetadata.load(str(work))
    assert {s: (i["videos"], i["windows"]) for s, i in meta.splits.items()} == {"train": (2, 3), "test": (1, 1)}
    assert meta.dead_letter["count"] == 1 and meta.fingerprint == "fp"
    assert meta.stats["frames_decoded"] == 19  # every split's
    # pixel stats come from the training split only: 8 pixels, values summing to 8 and squares to 20
    assert meta.stats["pixel_mean"] == pytest.approx([1.0])
    assert meta.stats["pixel_std"] == pytest.approx([np.sqrt(20 / 8 - 1)])


def test_ingest_runs_through_its_library_entry_point_on_a_test_pipeline(tmp_path):
    clips = tmp_path / "videos"
    clips.mkdir()
    for name, n in (("a.mkv", 8), ("b.mkv", 6)):
        videos.make_video(str(clips / name), frames=n)
    config, _ = parse_config(["--input", str(clips), "--output", str(tmp_path / "ds"), "--task", "next_frame",
                              "--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16", "--color", "gray",
                              "--splits", "1"])
    meta = ingest.ingest(config, pipeline=pipeline())
    assert meta.splits["train"]["windows"] == 3 and meta.splits["train"]["videos"] == 2
    data = read_dataset(str(tmp_path / "ds"))
    starts = sorted((r["video_id"], r["start_frame"]) for r in data["train"])
    assert starts == [("a.mkv", s) for s in (0, 2)] + [("b.mkv", 0)]
    assert sorted(os.listdir(tmp_path / "ds")) == ["dead_letter.jsonl", "drift_reference.json", "metadata.json", "train",
                                                 "videos.parquet"]
