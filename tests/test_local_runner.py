"""The local runner: `--direct_num_workers N` runs threads by default and makes the one-worker dataset."""
import pytest
from apache_beam.options.pipeline_options import DirectOptions

from pipelines.runners.options import DEFAULT_PARALLEL_MODE, pipeline_options
from schemas.metadata import DatasetMetadata
from tests import videos
from tests.helpers import ingest, read_dataset

FLAGS = ["--task", "next_frame", "--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16",
         "--color", "gray", "--splits", "0.5,0.25,0.25", "--num-shards", "2"]


@pytest.mark.parametrize("flags, mode", [
    ([], "in_memory"),
    (["--direct_num_workers", "1"], "in_memory"),
    (["--direct_num_workers", "2"], DEFAULT_PARALLEL_MODE),
    (["--direct_num_workers=0"], DEFAULT_PARALLEL_MODE),  # 0: one per CPU
    # a mode the user names is kept, even one Beam would warn about
    (["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"], "multi_processing"),
    (["--direct_num_workers", "2", "--direct_running_mode=in_memory"], "in_memory"),
    (["--direct_running_mode", "multi_processing"], "multi_processing"),
    # another runner's flags are left as Beam parses them
    (["--runner", "dask", "--direct_num_workers", "2"], "in_memory"),
])
def test_running_mode_of_the_local_runner(flags, mode):
    assert DEFAULT_PARALLEL_MODE == "multi_threading"
    assert pipeline_options(flags).view_as(DirectOptions).direct_running_mode == mode


def test_two_workers_by_default_write_the_one_worker_dataset(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(8):  # index clips of different lengths, and two lossy ones
        videos.make_video(str(src / f"v{i}.mkv"), frames=6 + 3 * i)
    videos.lavfi_video(str(src / "bars.mp4"), "smptebars", seconds=1.5)
    videos.lavfi_video(str(src / "mandel.mp4"), "mandelbrot", seconds=1.2)
    runs = {}
    for workers in ("1", "2"):
        out = str(tmp_path / f"out{workers}")
        rc, printed = ingest("--input", str(src), "--output", out, *FLAGS, "--direct_num_workers", workers)
        assert rc == 0, printed
        runs[workers] = out

    def keyed(directory):
        return sorted((split, r["video_id"], r["start_frame"], r["frames"].tobytes(), r["next_frames"].tobytes())
                      for split, recs in read_dataset(directory).items() for r in recs)
    one, two = keyed(runs["1"]), keyed(runs["2"])
    assert len(one) > 40 and {r[1] for r in one} == {f"v{i}.mkv" for i in range(8)} | {"bars.mp4", "mandel.mp4"}
    assert two == one
    m1, m2 = DatasetMetadata.load(runs["1"]), DatasetMetadata.load(runs["2"])
    assert m2.stats == m1.stats
    assert {s: (v["videos"], v["windows"]) for s, v in m2.splits.items()} == \
        {s: (v["videos"], v["windows"]) for s, v in m1.splits.items()}
    assert m2.fingerprint == m1.fingerprint
