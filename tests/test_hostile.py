"""Hostile inputs through real ingest runs: each dead-lettered with its reason or ingested exactly,
no network connection, and no byte of a file a playlist points at in the output."""
import collections
import csv
import gzip
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading

import numpy as np
import pytest

from pipelines.decode import FrameStream, ffmpeg_args
from pipelines.inputs import list_videos
from pipelines.probe import DEFAULT_FORMATS, ProbeLimits, VideoError, probe_args, probe_video
from pipelines.subprocess_guard import ToolProcess, die_with_parent_prefix
from pipelines.windows import count_windows
from schemas.metadata import DatasetMetadata
from schemas.spec import WindowSpec
from tests import videos
from tests.helpers import ingest, read_dataset

FLAGS = ["--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16", "--color", "gray"]
SPEC = WindowSpec(frames=4, stride=2, fps=10, height=16, width=16, channels=1)
CANARY = "CLIPFORGE-CANARY-7f3a9c: secret line of a file no video may reveal"
# Index clips with names that must reach ffmpeg as plain files and be ingested whole.
ODD_NAMES = {"-dash.mkv": 7, "- -i x.mkv": 6, "with space.mkv": 8, "quote ' and \".mkv": 6,
             "100% %d %s.mkv": 7, "concat:x.mkv": 6, "http:x.mkv": 6, os.fsdecode(b"caf\xe9 \xff.mkv"): 7,
             "one/same.mkv": 6, "two/same.mkv": 9}
# path under the corpus -> (stage, kind) of its dead letter.
HOSTILE = {
    "zero.mp4": ("probe", "probe_failed"),
    "head_cut.mp4": ("probe", "probe_failed"),
    "text.mp4": ("probe", "probe_failed"),
    "audio.mp4": ("probe", "no_video_stream"),
    "huge.mkv": ("probe", "too_many_pixels"),
    "endless.mkv": ("probe", "too_long"),
    "fast.mp4": ("probe", "bad_frame_rate"),
    "passwd.m3u8": ("probe", "format_not_allowed"),
    "passwd_m3u8.mp4": ("probe", "format_not_allowed"),
    "passwd.ffconcat": ("probe", "format_not_allowed"),
    "passwd_ffconcat.mp4": ("probe", "format_not_allowed"),
    "secret.ffconcat": ("probe", "format_not_allowed"),
    "http.m3u8": ("probe", "format_not_allowed"),
    "http_m3u8.mp4": ("probe", "format_not_allowed"),
    "http_master.m3u8": ("probe", "format_not_allowed"),
    "http.ffconcat": ("probe", "format_not_allowed"),
    "short.mkv": ("window", "too_short"),
    "fifo.mp4": ("read", "missing_file"),  # not a regular file: opening it would block ffprobe
}
# Source frame i of vfr.mkv is shown from tick VFR_TICKS[i] (1/10 s): gaps of 1, 2, 3, 4, 5 ticks.
VFR_TICKS = [0, 1, 3, 6, 10, 15]


def ffmpeg(*args, stdin=None):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], input=stdin, check=True,
                   stdout=subprocess.DEVNULL)


class Listener:
    """An HTTP-looking server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self):
        self.connections = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer.connections += 1
                self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nbait")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def passwd_lines() -> list[bytes]:
    """The distinctive lines of /etc/passwd (none on a system without it)."""
    try:
        with open("/etc/passwd", "rb") as f:
            return [line for line in f.read().splitlines() if len(line) >= 12]
    except OSError:
        return []


def make_corpus(root, url: str) -> dict:
    """Writes every hostile and odd-named file; returns {name: path} of the listed ones."""
    d = root / "videos"
    (d / "one").mkdir(parents=True)
    (d / "two").mkdir()
    p = {name: str(d / name) for name in [*HOSTILE, *ODD_NAMES, "tail_cut.mp4", "vfr.mkv"]}
    for name, n in ODD_NAMES.items():
        videos.make_video(p[name], frames=n)
    videos.make_video(p["short.mkv"], frames=4)  # a window needs 4 + horizon 1
    os.mkfifo(p["fifo.mp4"])
    videos.zero_byte(p["zero.mp4"])
    videos.text_file(p["text.mp4"])
    videos.audio_only(p["audio.mp4"])
    # An all-intra mp4 with its moov first, cut at the head (no moov) and at the tail (mdat cut).
    whole = str(root / "whole.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=10", "-t", "3", "-c:v", "libx264", "-g", "1",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart", whole)
    data = open(whole, "rb").read()
    assert data.index(b"moov") < data.index(b"mdat")
    open(p["head_cut.mp4"], "wb").write(data[len(data) // 3:])
    open(p["tail_cut.mp4"], "wb").write(data[:len(data) * 3 // 5])
    # A 256x256 Matroska whose header is patched to claim 16000x16000 (valid for ffmpeg, 256 Mpx).
    small = str(root / "small.mkv")
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=256x256:rate=10", "-t", "0.2", "-c:v", "ffv1", small)
    data = open(small, "rb").read()
    for element in (b"\xb0\x82", b"\xba\x82"):  # PixelWidth, PixelHeight: 2-byte value 256
        assert data.count(element + b"\x01\x00") == 1
        data = data.replace(element + b"\x01\x00", element + (16000).to_bytes(2, "big"))
    open(p["huge.mkv"], "wb").write(data)
    # Two frames 30 hours apart: decoding it at 10 fps would give a million frames.
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=16x16:rate=10", "-frames:v", "2",
           "-vf", "setpts=N*1080000/TB", "-fps_mode", "passthrough", "-c:v", "ffv1", p["endless.mkv"])
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=16x16:rate=2000", "-frames:v", "3", "-c:v", "libx264",
           "-preset", "ultrafast", p["fast.mp4"])
    # Variable frame rate: frame i at VFR_TICKS[i] tenths of a second.
    frames = videos.index_frames(len(VFR_TICKS))
    ffmpeg("-f", "rawvideo", "-pix_fmt", "gray", "-s", "16x16", "-r", "10", "-i", "pipe:",
           "-vf", "setpts=N*(N+1)/2", "-fps_mode", "passthrough", "-c:v", "ffv1", p["vfr.mkv"],
           stdin=frames.tobytes())
    # Playlists and references: to /etc/passwd, to a local secret, to the listener.
    (d / "secret.txt").write_text(CANARY + "\n")
    videos.make_video(str(d / "secret_clip.mkv"), frames=8)  # never listed: only a reference reaches it
    hls = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{}\n#EXT-X-ENDLIST\n"
    for name, text in {
        "passwd.m3u8": hls.format("/etc/passwd"), "passwd_m3u8.mp4": hls.format("/etc/passwd"),
        "passwd.ffconcat": "ffconcat version 1.0\nfile /etc/passwd\nfile secret.txt\n",
        "passwd_ffconcat.mp4": "ffconcat version 1.0\nfile /etc/passwd\n",
        "secret.ffconcat": "ffconcat version 1.0\nfile secret_clip.mkv\n",
        "http.m3u8": hls.format(url + "/segment.ts"), "http_m3u8.mp4": hls.format(url + "/segment.ts"),
        "http_master.m3u8": f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\n{url}/variant.m3u8\n",
        "http.ffconcat": f"ffconcat version 1.0\nfile '{url}/clip.mp4'\n",
    }.items():
        open(p[name], "w").write(text)
    return p


@pytest.fixture(scope="module")
def listener():
    srv = Listener()
    yield srv
    srv.server.shutdown()
    srv.server.server_close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, listener):
    """One ingest over every hostile and odd-named file, listed by absolute path (raw frames, gzip)."""
    root = tmp_path_factory.mktemp("hostile")
    paths = make_corpus(root, listener.url)
    listing = root / "list.txt"
    listing.write_bytes(b"\n".join(os.fsencode(p) for p in paths.values()) + b"\n")
    out = str(root / "out")
    rc, printed = ingest("--input", str(listing), "--output", out, "--task", "next_frame", *FLAGS,
                         "--encoding", "raw", "--compression", "gzip", "--splits", "0.5,0.5",
                         # two threads: ffmpeg runs in parallel, and the death-signal guard is
                         # exercised on worker threads, not just the main one
                         "--direct_num_workers", "2", "--direct_running_mode", "multi_threading")
    assert rc == 0, printed
    with open(os.path.join(out, "dead_letter.jsonl")) as f:
        dead = [json.loads(line) for line in f]
    records = [r for recs in read_dataset(out).values() for r in recs]
    return {"root": root, "paths": paths, "out": out, "printed": printed, "dead": dead, "records": records,
            "connections_after_run": listener.connections}


def by_video(records) -> dict:
    out = collections.defaultdict(dict)
    for r in records:
        out[r["video_id"]][r["start_frame"]] = r
    return out


def test_every_hostile_file_is_dead_lettered_with_its_reason(hostile):
    rel = {os.path.relpath(d["path"], hostile["root"] / "videos"): d for d in hostile["dead"]}
    assert {k: (d["stage"], d["kind"]) for k, d in rel.items()} == HOSTILE
    for name, d in rel.items():
        assert d["reason"] and len(d["stderr"].encode()) <= 1024
        if d["kind"] == "format_not_allowed":  # refused by ffmpeg's own -format_whitelist, named
            fmt = "hls" if ".m3u8" in name or "_m3u8" in name else "concat"
            assert f"'{fmt}'" in d["reason"] and "Format not on whitelist" in d["stderr"], d
    assert "16000x16000" in rel["huge.mkv"]["reason"] and "2000 fps" in rel["fast.mp4"]["reason"]
    meta = DatasetMetadata.load(hostile["out"])
    assert meta.dead_letter["count"] == len(HOSTILE) == 18
    assert meta.dead_letter["reasons"]["format_not_allowed"] == 9
    assert not {r["video_id"] for r in hostile["records"]} & {"secret_clip.mkv", "secret.ffconcat"}


def test_odd_names_are_plain_files_and_ingested_whole(hostile):
    got = by_video(hostile["records"])
    for name, n in ODD_NAMES.items():
        vid = name  # its path under the input root
        assert sorted(got[vid]) == list(range(0, 2 * count_windows(n, 4, 2, 1), 2)), name
        for s, r in got[vid].items():
            assert [videos.frame_index(f) for f in r["frames"]] == list(range(s, s + 4))
            assert [videos.frame_index(f) for f in r["next_frames"]] == [s + 4]
    # one file name in two folders: two videos, each with its own windows
    assert len(got["one/same.mkv"]) == count_windows(6, 4, 2, 1)
    assert len(got["two/same.mkv"]) == count_windows(9, 4, 2, 1)
    assert os.fsdecode(b"caf\xe9 \xff.mkv") in got and "\udce9" in os.fsdecode(b"caf\xe9 \xff.mkv")


def test_variable_frame_rate_windows_are_aligned_to_fps(hostile):
    got = by_video(hostile["records"])["vfr.mkv"]
    # output frame k (time k/10 s) shows the last source frame that started at or before it
    shown = [max(i for i, t in enumerate(VFR_TICKS) if t <= k) for k in range(VFR_TICKS[-1] + 1)]
    assert shown == [0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 5]
    assert sorted(got) == list(range(0, 2 * count_windows(len(shown), 4, 2, 1), 2))
    for s, r in got.items():
        assert r["start_time"] == pytest.approx(s / 10)
        assert [videos.frame_index(f) for f in r["frames"]] == shown[s:s + 4]
        assert videos.frame_index(r["next_frames"][0]) == shown[s + 4]


def test_mp4_cut_at_the_tail_keeps_its_windows_and_is_counted(hostile):
    got = by_video(hostile["records"])["tail_cut.mp4"]
    full = videos.raw_decode(str(hostile["root"] / "whole.mp4"), 10, (16, 16), 1)
    assert 1 <= len(got) < count_windows(len(full), 4, 2, 1)  # some windows, not all 30 frames' worth
    for s, r in got.items():
        np.testing.assert_array_equal(r["frames"], full[s:s + 4])
    meta = DatasetMetadata.load(hostile["out"])
    assert meta.stats["partial_videos"] == 1 and "1 video(s) decoded with errors" in hostile["printed"]


def test_no_connection_reaches_the_listener(hostile, listener):
    assert hostile["connections_after_run"] == 0  # probes (shard estimate included) and decodes
    with socket.create_connection(("127.0.0.1", int(listener.url.rsplit(":", 1)[1])), timeout=5) as s:
        assert s.recv(64).startswith(b"HTTP/1.0 200")  # the listener does count what reaches it
    assert listener.connections == 1


def test_no_byte_of_a_referenced_file_is_in_the_output(hostile):
    secrets = [CANARY.encode(), *passwd_lines()]
    if os.path.exists("/etc/passwd") and b"root:x:0:0" in open("/etc/passwd", "rb").read():
        secrets.append(b"root:x:0:0")
    blobs = []
    for d, _, files in os.walk(hostile["out"]):
        for name in files:
            data = open(os.path.join(d, name), "rb").read()
            blobs.append(gzip.decompress(data) if name.endswith(".gz") else data)
    assert len(blobs) >= 4 and any(b"vfr.mkv" in b for b in blobs)  # the scan reads the shards' payloads
    leaked = sum(b.count(s) for b in blobs for s in secrets)
    assert leaked == 0


def test_protocol_whitelist_alone_still_stops_playlists(hostile, listener):
    """With hls and concat allowed (a misconfigured --formats), only local files open."""
    p, before = hostile["paths"], listener.connections
    lax = ProbeLimits(formats=DEFAULT_FORMATS + ("hls", "concat"))
    for name in ("http.m3u8", "http.ffconcat", "passwd.ffconcat", "passwd.m3u8"):
        with pytest.raises(VideoError) as e:
            probe_video(p[name], timeout=30, limits=lax)
        assert e.value.kind == "probe_failed", name
        assert any(m in e.value.stderr for m in ("not on whitelist 'file'", "Unsafe file name",
                                                  "not in allowed_segment_extensions")), e.value.stderr
        with pytest.raises(VideoError):
            list(FrameStream(p[name], SPEC, "stretch", timeout=30, limits=lax))
    assert listener.connections == before  # (the listener counts: see the test above)
    # What the allowlist is for: a concat file naming a local video would otherwise be read.
    assert probe_video(p["secret.ffconcat"], timeout=30, limits=lax).format_name == "concat"


def test_every_ffmpeg_and_ffprobe_call_is_fenced():
    name = "-i http:x %d.mp4"
    for args in (ffmpeg_args(name, SPEC, "stretch", formats=("mov", "mp4")), probe_args(name, ("mov", "mp4"))):
        i = args.index("file:" + os.path.abspath(name))  # the input, a plain file
        opts = dict(zip(args[:i], args[1:i]))
        assert opts["-protocol_whitelist"] == "file" and opts["-format_whitelist"] == "mov,mp4", args
        assert args.count("-protocol_whitelist") == args.count("-format_whitelist") == 1
    assert ffmpeg_args(name, SPEC)[:2] == ["ffmpeg", "-nostdin"]
    # the child reads an empty stdin and carries the death signal where util-linux provides it
    with ToolProcess([sys.executable, "-c", "import sys; print(repr(sys.stdin.read()))"], timeout=30) as tp:
        assert tp.stdout.read() == b"''\n" and tp.close(wait=True) == 0
    assert tp.proc.args[:len(die_with_parent_prefix())] == list(die_with_parent_prefix())
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv:  # util-linux's setpriv on PATH, wherever it lives: the guard must be used
        assert die_with_parent_prefix() == (setpriv, "--pdeathsig", "KILL", "--")


def test_limits_are_checked_from_ffprobes_answers(index_clip):
    # index_clip: 12 frames of 16x16 at 10 fps in Matroska
    for limits, kind in [(ProbeLimits(max_pixels=255), "too_many_pixels"), (ProbeLimits(max_duration=1.0), "too_long"),
                         (ProbeLimits(max_fps=9.0), "bad_frame_rate"), (ProbeLimits(formats=("avi", "mov")),
                                                                        "format_not_allowed")]:
        with pytest.raises(VideoError) as e:
            probe_video(index_clip, timeout=30, limits=limits)
        assert (e.value.stage, e.value.kind) == ("probe", kind)
    assert "'matroska,webm'" in e.value.reason or "'matroska'" in e.value.reason
    info = probe_video(index_clip, timeout=30, limits=ProbeLimits(max_pixels=256, max_duration=1.2, max_fps=10))
    assert (info.width * info.height, info.fps) == (256, 10.0)


def test_decode_stops_a_video_longer_than_its_header_said(index_clip):
    stream = FrameStream(index_clip, SPEC, "stretch", timeout=30, limits=ProbeLimits(max_duration=0.5))
    seen = []
    with pytest.raises(VideoError) as e:
        for f in stream:
            seen.append(videos.frame_index(f))
    assert e.value.kind == "too_long" and seen == [0, 1, 2, 3, 4, 5]  # 0.5 s at 10 fps, plus one
    assert stream.process.proc.returncode is not None


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A regression ingest whose labels file lacks one video's row and holds a NaN and an inf."""
    root = tmp_path_factory.mktemp("labels")
    (root / "videos").mkdir()
    for name in ("good.mkv", "nolabel.mkv", "nan.mkv", "inf.mkv"):
        videos.make_video(str(root / "videos" / name), frames=6)
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video", "target"], ["good.mkv", 1.5], ["nan.mkv", "nan"], ["inf.mkv", "inf"],
                                 ["not_in_corpus.mkv", 2.0]])
    out = str(root / "out")
    rc, _ = ingest("--input", str(root / "videos"), "--labels", str(root / "labels.csv"), "--output", out,
                   "--task", "regression", *FLAGS, "--splits", "1")
    assert rc == 0
    return out


def test_label_problems_are_dead_lettered(labelled):
    with open(os.path.join(labelled, "dead_letter.jsonl")) as f:
        dead = {d["video_id"]: d for d in map(json.loads, f)}
    assert {v: (d["stage"], d["kind"]) for v, d in dead.items()} == {
        "nolabel.mkv": ("labels", "no_label"), "nan.mkv": ("labels", "bad_target"),
        "inf.mkv": ("labels", "bad_target")}
    assert "row 2" in dead["nan.mkv"]["reason"] and "row 3" in dead["inf.mkv"]["reason"]
    recs = read_dataset(labelled)["train"]
    assert {r["video_id"] for r in recs} == {"good.mkv"} and len(recs) == count_windows(6, 4, 2)
    assert all(r["target"].tolist() == [1.5] for r in recs)


@pytest.mark.parametrize("flag,value,message", [
    ("--formats", "mov,hls;rm", "formats=('mov', 'hls;rm') is invalid"),
    ("--max-pixels", "0", "max_pixels=0 is invalid"),
    ("--max-duration", "-1", "max_duration=-1.0 is invalid"),
])
def test_bad_limit_flags_fail_before_any_work(tmp_path, index_clip, capsys, flag, value, message):
    rc, _ = ingest("--input", index_clip, "--output", str(tmp_path / "out"), "--task", "next_frame", *FLAGS,
                   flag, value)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_special_files_are_never_listed(tmp_path):
    (tmp_path / "folder.mp4").mkdir()
    os.mkfifo(tmp_path / "fifo.mp4")
    os.symlink("/dev/zero", tmp_path / "endless.mp4")
    videos.make_video(str(tmp_path / "real.mkv"), frames=5)
    listing = tmp_path / "list.txt"
    listing.write_text("fifo.mp4\nendless.mp4\nreal.mkv\n")
    for spec in (str(tmp_path), str(tmp_path / "*.m*")):
        refs, missing = list_videos(spec)
        assert [r.video_id for r in refs] == ["real.mkv"] and missing == [], spec
    refs, missing = list_videos(str(listing))
    assert [r.video_id for r in refs] == ["real.mkv"]
    assert missing == [str(tmp_path / "fifo.mp4"), str(tmp_path / "endless.mp4")]
