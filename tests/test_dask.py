"""Distributed engines: ingest on a dask.distributed cluster and on two FnApiRunner processes."""
import json
import os
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.ingest.engine import VideoJob, plan_video
from pipelines.inputs import VideoRef
from pipelines.runners.options import create_pipeline
from schemas.metadata import DatasetMetadata
from schemas.spec import TargetSpec, WindowSpec
from tests import videos
from tests.helpers import ingest, read_dataset

distributed = pytest.importorskip("distributed")

DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"
# Short clips, a 30 s clip split into 4 segments, and a broken file: the dead-letter path too.
FLAGS = ["--task", "next_frame", "--horizon", "1", "--frames", "4", "--stride", "3", "--fps", "10",
         "--size", "16x16", "--color", "gray", "--splits", "0.5,0.5", "--segment-seconds", "8"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    d = root / "videos"
    d.mkdir()
    for i in range(4):
        videos.make_video(str(d / f"clip{i}.mkv"), frames=9 + 3 * i)
    long = videos.lavfi_video(str(d / "long.mp4"), "testsrc", seconds=30, size=(16, 16), fps=10)
    videos.text_file(str(d / "broken.mp4"))
    spec = WindowSpec(frames=4, stride=3, fps=10, height=16, width=16, channels=1)
    job = VideoJob(spec, TargetSpec("next_frame", horizon=1), segment_seconds=8)
    assert [s.start for s in plan_video(VideoRef(long, "long.mp4"), job)] == [0, 81, 162, 243]  # decoded apart
    return root


@pytest.fixture(scope="module")
def reference(corpus):
    """The dataset the default runner (Beam's FnApiRunner, in process) writes."""
    out = str(corpus / "reference")
    assert ingest("--input", str(corpus / "videos"), "--output", out, *FLAGS)[0] == 0
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two worker processes on loopback; the workers' temp dir is `cluster.tmp`."""
    tmp = tmp_path_factory.mktemp("dask-workers-tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp))  # inherited by the worker processes
        with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                      dashboard_address=None) as c:
            c.tmp = tmp
            yield c


def keyed(directory):
    """Every record as (split, video_id, start_frame, frames, next frames)."""
    return sorted((split, r["video_id"], r["start_frame"], r["frames"].tobytes(), r["next_frames"].tobytes())
                  for split, recs in read_dataset(directory).items() for r in recs)


def assert_same_dataset(out, reference):
    got, want = keyed(out), keyed(reference)
    assert got == want and len(want) == (2 + 3 + 4 + 5) + 99  # clips of 9, 12, 15, 18 and 300 frames
    a, b = DatasetMetadata.load(out), DatasetMetadata.load(reference)
    assert a.splits == b.splits and a.stats == b.stats and a.dead_letter == b.dead_letter
    assert a.dead_letter["reasons"] == {"probe_failed": 1} and a.stats["partial_videos"] == 0
    with open(os.path.join(out, "dead_letter.jsonl")) as f:
        assert [json.loads(line)["video_id"] for line in f] == ["broken.mp4"]
    # nothing temporary left: no beam-temp-* under the dataset, no staging dir beside it
    assert sorted(os.listdir(out)) == ["dead_letter.jsonl", "drift_reference.json", "metadata.json", "train",
                                       "validation", "videos.parquet"]
    for split in ("train", "validation"):
        assert all(n.startswith("part-") for n in os.listdir(os.path.join(out, split)))
    assert not [n for n in os.listdir(os.path.dirname(out)) if n.startswith(".")]


def scratch_dirs(tmp):
    return [n for n in os.listdir(tmp) if n.startswith("clipforge-")]


def test_dask_cluster_of_two_worker_processes_writes_the_reference_dataset(corpus, reference, cluster):
    workers = cluster.scheduler_info["workers"]
    assert len(workers) == 2 and all(w["host"] == "127.0.0.1" for w in workers.values())
    out = str(corpus / "dask")
    rc, printed = ingest("--input", str(corpus / "videos"), "--output", out, *FLAGS,
                         "--runner", DASK, "--dask_client_address", cluster.scheduler_address)
    assert rc == 0 and "6 videos read" in printed
    assert_same_dataset(out, reference)
    assert scratch_dirs(cluster.tmp) == []  # the workers removed their scratch dirs


def test_two_fnapi_worker_processes_write_the_reference_dataset(corpus, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # inherited by the worker processes
    out = str(corpus / "multi")
    rc, _ = ingest("--input", str(corpus / "videos"), "--output", out, *FLAGS,
                   "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    assert rc == 0
    assert_same_dataset(out, reference)
    assert scratch_dirs(tmp_path) == []


def _log(path, line):
    with open(path, "a") as f:
        f.write(f"{line}\n")


class _Bundles(beam.DoFn):
    """Logs which DoFn instance (one per dask partition) saw each element."""

    def __init__(self, path):
        self.path = path

    def setup(self):
        self.id = uuid.uuid4().hex

    def process(self, x):
        _log(self.path, f"{self.id} {x}")
        yield x


def test_dask_runner_computes_side_inputs_once_and_reshuffle_spreads(cluster, tmp_path):
    calls, bundles, result = tmp_path / "calls", tmp_path / "bundles", tmp_path / "result"
    p = create_pipeline(PipelineOptions(["--runner", DASK, "--dask_client_address", cluster.scheduler_address]))
    values = p | "Values" >> beam.Create([1, 2, 3]) | "Count" >> beam.Map(lambda x: (_log(calls, x), x)[1])
    total = values | "Sum" >> beam.CombineGlobally(sum)
    _ = (p | "Once" >> beam.Create([None])
         | "Read" >> beam.Map(lambda _, t, v: _log(result, (t, sorted(v))), beam.pvalue.AsSingleton(total),
                              beam.pvalue.AsList(values)))
    _ = (p | "One" >> beam.Create([8]) | "Eight" >> beam.FlatMap(lambda n: list(range(n)))
         | "Spread" >> beam.Reshuffle() | "Bundles" >> beam.ParDo(_Bundles(str(bundles))))
    p.run().wait_until_finish()
    # Beam's own DaskRunner computes only the last leaf ("Bundles", in one partition: its Reshuffle
    # is a no-op), and re-runs "Count" in a nested compute for each task that reads a side input.
    assert sorted(calls.read_text().split()) == ["1", "2", "3"]
    assert result.read_text() == "(6, [1, 2, 3])\n"
    seen = [line.split() for line in bundles.read_text().splitlines()]
    assert sorted(int(x) for _, x in seen) == list(range(8)) and len({b for b, _ in seen}) >= 2
