"""probe + streaming decode with real ffmpeg: exact frames, resampling, resizing, odd names, guards."""
import os
import sys
import time

import numpy as np
import pytest

from pipelines.decode import FrameStream, ffmpeg_args
from pipelines.probe import VideoError, probe_args, probe_video
from pipelines.subprocess_guard import STDERR_TAIL_BYTES, ToolProcess, run_tool
from schemas.spec import WindowSpec
from tests import videos
from tests.helpers import decode_all


def spec(fps=10, h=16, w=16, c=1):
    return WindowSpec(frames=4, stride=2, fps=fps, height=h, width=w, channels=c)


def test_stream_gives_back_the_exact_frames(index_clip):
    frames = list(FrameStream(index_clip, spec(), "stretch", timeout=30))
    np.testing.assert_array_equal(np.stack(frames), videos.index_frames(12))


def test_rgb_frames_are_exact(tmp_path):
    src = videos.index_frames(5, 8, 12, 3)
    src[..., 1] = 99  # channels must not be swapped or mixed
    path = videos.write_frames(str(tmp_path / "rgb.mkv"), src, fps=10)
    np.testing.assert_array_equal(decode_all(path, spec(h=8, w=12, c=3)), src)


@pytest.mark.parametrize("src_fps,out_fps,expected", [
    (20, 10, [0, 2, 4, 6, 8, 10, 12, 14]),   # downsampling keeps every other frame
    (10, 20, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]),  # upsampling repeats
])
def test_fps_resampling(tmp_path, src_fps, out_fps, expected):
    path = videos.make_video(str(tmp_path / "v.mkv"), frames=16 if src_fps == 20 else 8, fps=src_fps)
    got = [videos.frame_index(f) for f in decode_all(path, spec(fps=out_fps))]
    assert got == expected


@pytest.mark.parametrize("mode,row0,col8", [
    ("stretch", [50] * 8 + [200] * 8, [200] * 16),
    ("crop", [50] * 8 + [200] * 8, [200] * 16),       # the centre 16 of 32 columns
    ("pad", [0] * 16, [0] * 4 + [200] * 8 + [0] * 4),  # 16x32 fitted into 8x16, black bars
])
def test_resize_modes(tmp_path, mode, row0, col8):
    src = np.full((3, 16, 32, 1), 200, np.uint8)
    src[:, :, :16] = 50
    path = videos.write_frames(str(tmp_path / "wide.mkv"), src, fps=10)
    for channels in (1, 3):
        out = decode_all(path, spec(c=channels), mode)
        assert out.shape == (3, 16, 16, channels)
        assert out[0, 0, :, 0].tolist() == row0 and out[0, :, 8, 0].tolist() == col8


def test_ffmpeg_command_is_one_filter_graph_on_a_plain_file():
    args = ffmpeg_args("-i evil %d.mp4", spec(), "crop")
    assert args[:2] == ["ffmpeg", "-nostdin"]
    assert args[args.index("-protocol_whitelist") + 1] == "file"
    assert args[args.index("-i") + 1] == "file:" + os.path.abspath("-i evil %d.mp4")
    graph = [a for a in args if "fps=" in a]
    assert len(graph) == 1 and args.count("-filter_complex") == 1
    assert [f.split("]")[1].split("=")[0] for f in graph[0].split(";")] == ["fps", "scale", "format", "crop"]
    pargs = probe_args("-x.mp4")
    assert pargs[pargs.index("-protocol_whitelist") + 1] == "file" and pargs[-1].startswith("file:/")


@pytest.mark.parametrize("name", ["-leading dash.mkv", "it's \"quoted\".mkv", "100% %d frame.mkv",
                                  b"latin1 \xe9t\xe9.mkv", "concat:a.mkv"])
def test_hostile_names_are_plain_files(tmp_path, name):
    # A name that is not UTF-8 comes back from os.listdir with surrogate escapes.
    fname = os.fsdecode(name) if isinstance(name, bytes) else name
    path = str(tmp_path / fname)
    src = videos.index_frames(6)
    videos.write_frames(str(tmp_path / "plain.mkv"), src, fps=10)
    os.rename(tmp_path / "plain.mkv", path)
    assert probe_video(path, timeout=30).width == 16
    np.testing.assert_array_equal(decode_all(path, spec()), src)


def test_probe_reads_size_rate_and_duration(tmp_path):
    path = videos.lavfi_video(str(tmp_path / "t.mp4"), seconds=1.0, size=(24, 40), fps=25)
    info = probe_video(path, timeout=30)
    assert (info.height, info.width, info.fps, info.codec) == (24, 40, 25.0, "h264")
    assert info.duration == pytest.approx(1.0, abs=0.05) and "mp4" in info.format_name


@pytest.mark.parametrize("make,kind", [(videos.zero_byte, "probe_failed"), (videos.text_file, "probe_failed"),
                                       (videos.audio_only, "no_video_stream")])
def test_probe_rejects_non_videos(tmp_path, make, kind):
    path = make(str(tmp_path / "bad.mp4"))
    with pytest.raises(VideoError) as e:
        probe_video(path, timeout=30)
    assert e.value.kind == kind and e.value.stage == "probe"
    if kind == "probe_failed":
        assert "Invalid data" in e.value.stderr and len(e.value.stderr.encode()) <= STDERR_TAIL_BYTES


def test_decode_failure_carries_stderr(tmp_path):
    path = videos.text_file(str(tmp_path / "t.mp4"))
    with pytest.raises(VideoError) as e:
        list(FrameStream(path, spec(), "stretch", timeout=30))
    assert e.value.kind == "decode_failed" and "0 frames" in e.value.reason and e.value.stderr


def test_stopping_early_kills_ffmpeg(tmp_path):
    path = videos.lavfi_video(str(tmp_path / "long.mp4"), seconds=20, size=(64, 64), fps=25)
    # 500 frames of 64x64 rgb: 6 MB, several times the 1 MB pipe (subprocess_guard.PIPE_BYTES), so
    # ffmpeg is still blocked writing when the consumer stops (16x16 gray, 128 KB, could finish first)
    stream = FrameStream(path, spec(fps=25, h=64, w=64, c=3), "stretch", timeout=60)
    it = iter(stream)
    next(it)
    pid = stream.process.proc.pid
    assert _alive_in_group(pid) == [pid]  # ffmpeg is still decoding
    it.close()  # the consumer stops after one frame
    assert stream.process.proc.returncode is not None and _alive_in_group(pid) == []


def _alive_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    alive = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def test_timeout_kills_the_process_group():
    start = time.time()
    # The child starts a grandchild in its group; both must die at the timeout.
    code = "import subprocess,time; subprocess.Popen(['sleep','30']); print('started', flush=True); time.sleep(30)"
    with ToolProcess([sys.executable, "-c", code], timeout=1.0) as tp:
        assert tp.stdout.readline() == b"started\n"
        assert len(_alive_in_group(tp.proc.pid)) == 2
        tp.stdout.read()
        rc = tp.close()
    assert tp.timed_out and rc != 0 and time.time() - start < 10
    # SIGKILL reached the whole group; the grandchild (not ours to wait for) is gone within moments,
    # long before its 30 s sleep would end
    deadline = time.time() + 3
    while _alive_in_group(tp.proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert _alive_in_group(tp.proc.pid) == []



def test_stderr_is_drained_and_only_its_tail_kept():
    # 1 MB on stderr would block a child whose stderr nobody reads (the pipe holds 64 KB).
    code = "import sys; sys.stderr.write('x' * 1_000_000 + 'THE END'); sys.stdout.write('ok')"
    rc, out, err, timed_out = run_tool([sys.executable, "-c", code], timeout=30)
    assert (rc, out, timed_out) == (0, b"ok", False)
    assert err.endswith("THE END") and len(err) == STDERR_TAIL_BYTES
