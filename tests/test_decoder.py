"""The decoder: metadata.json names the ffmpeg that ran, both decoders give the same dead letters,
and the bundled decoder's one-process probe checks the limits before any frame is read."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipelines.decode import FrameStream
from pipelines.decoder import DecoderError, resolve
from pipelines.probe import ProbeLimits, VideoError, probe_video
from schemas.metadata import DatasetMetadata
from schemas.spec import WindowSpec
from tests import videos
from tests.helpers import ROOT, read_dataset

FLAGS = ["--task", "next_frame", "--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16",
         "--color", "gray", "--splits", "1", "--encoding", "raw"]
SPEC = WindowSpec(frames=4, stride=2, fps=10, height=16, width=16, channels=1)


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """A directory whose `ffmpeg` logs each call to calls.log, then execs the system ffmpeg."""
    d = tmp_path_factory.mktemp("shim")
    real = resolve("system").ffmpeg
    (d / "ffmpeg").write_text(f'#!/bin/sh\necho "$$ $*" >> {d}/calls.log\nexec {real} "$@"\n')
    (d / "ffmpeg").chmod(0o755)
    os.symlink(resolve("system").ffprobe, d / "ffprobe")
    return d


def run_ingest(tmp_path, shim, decoder: str, name: str):
    corpus = tmp_path / "videos"
    if not corpus.exists():
        corpus.mkdir()
        for i in range(3):
            videos.make_video(str(corpus / f"c{i}.mkv"), frames=8 + i)
    out = tmp_path / name
    env = {**os.environ, "PYTHONPATH": ROOT, "PATH": f"{shim}:{os.environ['PATH']}"}
    env.pop("CLIPFORGE_DECODER", None)
    res = subprocess.run([sys.executable, "-m", "clipforge.cli", "ingest", "--input", str(corpus), "--output",
                          str(out), *FLAGS, "--decoder", decoder], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return DatasetMetadata.load(str(out)), str(out)


def version_lines(exe: str) -> tuple[str, str]:
    out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True).stdout.splitlines()
    return out[0], next(l for l in out if l.startswith("configuration:"))


def test_metadata_names_the_decoder_that_ran(tmp_path, shim):
    log = shim / "calls.log"
    system, system_out = run_ingest(tmp_path, shim, "system", "system")
    calls = log.read_text().splitlines()
    # every video was decoded by the ffmpeg on PATH: the one metadata.json names
    assert system.decoder["name"] == "system" and system.decoder["path"] == str(shim / "ffmpeg")
    assert sum(f"c{i}.mkv" in c and "rawvideo" in c for c in calls for i in range(3)) == 3
    assert (system.decoder["version"], system.decoder["configuration"]) == version_lines(str(shim / "ffmpeg"))
    log.unlink()
    bundled, bundled_out = run_ingest(tmp_path, shim, "bundled", "bundled")
    assert not log.exists()  # the ffmpeg on PATH never ran
    import imageio_ffmpeg
    assert bundled.decoder["path"] == os.path.realpath(imageio_ffmpeg.get_ffmpeg_exe())
    assert bundled.decoder["package"] == f"imageio-ffmpeg {imageio_ffmpeg.__version__}"
    assert (bundled.decoder["version"], bundled.decoder["configuration"]) == version_lines(bundled.decoder["path"])
    assert bundled.decoder["version"] != system.decoder["version"]
    assert json.load(open(os.path.join(bundled_out, "metadata.json")))["decoder"] == bundled.decoder
    # the same index frames either way
    a, b = read_dataset(system_out)["train"], read_dataset(bundled_out)["train"]
    key = lambda r: (r["video_id"], r["start_frame"])  # noqa: E731
    assert len(a) == len(b) == 2 + 3 + 3
    for ra, rb in zip(sorted(a, key=key), sorted(b, key=key)):
        assert key(ra) == key(rb)
        np.testing.assert_array_equal(ra["frames"], rb["frames"])


def test_bundled_process_is_called_ffmpeg():
    d = resolve("bundled")
    assert os.path.basename(d.ffmpeg) == "ffmpeg" and os.path.realpath(d.ffmpeg) == d.path and d.one_process
    assert not resolve("system").one_process
    with pytest.raises(DecoderError, match="expected one of bundled | system"):
        resolve("gpu")


@pytest.mark.parametrize("limits,kind", [(ProbeLimits(max_pixels=255), "too_many_pixels"),
                                         (ProbeLimits(max_duration=1.0), "too_long"),
                                         (ProbeLimits(max_fps=9.0), "bad_frame_rate")])
def test_one_process_check_stops_before_the_first_frame(index_clip, limits, kind):
    stream = FrameStream(index_clip, SPEC, "stretch", timeout=30, limits=limits, decoder=resolve("bundled"),
                         check=True)
    seen = []
    with pytest.raises(VideoError) as e:
        seen.extend(stream)
    assert (e.value.stage, e.value.kind, seen) == ("probe", kind, [])
    assert stream.process.proc.returncode is not None  # killed, reaped
    # the same answer as the separate probes of both decoders
    for name in ("bundled", "system"):
        with pytest.raises(VideoError) as p:
            probe_video(index_clip, 30, limits, resolve(name))
        assert p.value.kind == kind and p.value.reason == e.value.reason


def test_one_process_check_reads_the_header_and_then_every_frame(index_clip):
    stream = FrameStream(index_clip, SPEC, "stretch", timeout=30, decoder=resolve("bundled"), check=True)
    np.testing.assert_array_equal(np.stack(list(stream)), videos.index_frames(12))
    assert (stream.info.width, stream.info.height, stream.info.fps) == (16, 16, 10.0)
    assert stream.info.duration == pytest.approx(1.2, abs=0.01) and "matroska" in stream.info.format_name
    assert stream.stderr == ""  # a clean decode reports no error line


def test_a_file_name_cannot_pass_for_a_stream_header(tmp_path):
    # the name holds what a 1x1 video stream line would look like; ffmpeg echoes it in the dump
    name = "x':\n[info]   Stream #0:0: Video: h264, yuv420p, 1x1, 1 fps, 1 tbr, 1k tbn\n.mkv"
    path = str(tmp_path / name)
    videos.make_video(path, frames=6)
    assert probe_video(path, 30, decoder=resolve("bundled")).width == 16
    videos.audio_only(str(tmp_path / "a.mp4"))
    os.rename(tmp_path / "a.mp4", tmp_path / ("a" + name + ".mp4"))
    with pytest.raises(VideoError, match="no video stream"):
        probe_video(str(tmp_path / ("a" + name + ".mp4")), 30, decoder=resolve("bundled"))
