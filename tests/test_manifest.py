"""videos.parquet, provenance, the leakage audit (sha256, content signatures, --dedupe) and validate."""
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from clipforge import validate
from pipelines.decoder import resolve
from pipelines.ingest import run
from pipelines.ingest.leakage import near_duplicate_sets, thumbnail
from pipelines.ingest.manifest import COLUMNS
from pipelines.probe import VideoError, probe_video
from schemas.metadata import DatasetMetadata
from tests import videos
from tests.helpers import read_dataset

FLAGS = ["--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16", "--color", "gray", "--num-shards", "1"]
# video id -> split forced by the labels' split column
SPLITS = {"a/x.mkv": "train", "b/x_copy.mkv": "test", "c/t.mp4": "train", "c/t_small.mp4": "validation",
          "c/rot.mp4": "train", "d/g1_a.mkv": "train", "d/g1_b.mkv": "test", "short.mkv": "train",
          "song.mp4": "train", "audio.mp4": "train"}


def ingest(*argv):
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = run(list(argv))
    return rc, buf.getvalue() + err.getvalue()


def bundled(*args):
    subprocess.run([resolve("bundled").path, "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    d = root / "v"
    for sub in "abcd":
        (d / sub).mkdir(parents=True)
    videos.make_video(str(d / "a" / "x.mkv"), frames=8)
    shutil.copy(d / "a" / "x.mkv", d / "b" / "x_copy.mkv")  # the same bytes under another name
    videos.lavfi_video(str(d / "c" / "t.mp4"), "testsrc", seconds=1.2, size=(48, 64), fps=10)
    # a re-encode of t.mp4 at half the resolution: other bytes, the same clip
    bundled("-i", str(d / "c" / "t.mp4"), "-vf", "scale=32:24", "-c:v", "mpeg4", "-q:v", "3", str(d / "c" / "t_small.mp4"))
    videos.lavfi_video(str(root / "plain.mp4"), "mandelbrot", seconds=0.8, size=(32, 48), fps=10)
    bundled("-display_rotation", "90", "-i", str(root / "plain.mp4"), "-c", "copy", str(d / "c" / "rot.mp4"))
    videos.lavfi_video(str(d / "d" / "g1_a.mkv"), "rgbtestsrc", seconds=0.7, size=(16, 24), fps=10, codec="ffv1")
    videos.lavfi_video(str(d / "d" / "g1_b.mkv"), "smptebars", seconds=0.9, size=(16, 16), fps=10, codec="ffv1")
    videos.make_video(str(d / "short.mkv"), frames=3)
    videos.audio_only(str(d / "audio.mp4"))
    # an audio file whose only video stream is its cover art
    bundled("-f", "lavfi", "-i", "testsrc=size=32x32:rate=1", "-frames:v", "1", str(root / "cover.png"))
    bundled("-f", "lavfi", "-i", "sine=duration=0.5", "-i", str(root / "cover.png"), "-map", "0", "-map", "1",
            "-c:a", "aac", "-c:v", "png", "-disposition:v:0", "attached_pic", "-f", "mp4", str(d / "song.mp4"))
    labels = root / "labels.csv"
    labels.write_text("video,target,split,group\n" + "".join(
        f"{v},{i},{s},{'g1' if v.startswith('d/') else ''}\n" for i, (v, s) in enumerate(SPLITS.items())))
    out = str(root / "out")
    rc, printed = ingest("--input", str(d), "--labels", str(labels), "--output", out, "--task", "regression", *FLAGS)
    assert rc == 0, printed
    return {"root": root, "dir": d, "out": out, "printed": printed, "labels": labels}


def test_manifest_has_one_row_per_input_video_with_every_column(corpus):
    table = pq.read_table(os.path.join(corpus["out"], "videos.parquet"))
    assert tuple(table.column_names) == COLUMNS
    rows = {r["video_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == sorted(SPLITS)
    for vid, r in rows.items():
        path = corpus["dir"] / vid
        assert r["path"] == str(path) and r["size"] == os.path.getsize(path)
        assert r["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), vid
        assert abs(r["mtime"] - os.path.getmtime(path)) < 1e-3
    ok = {v for v, r in rows.items() if r["status"] == "ok"}
    assert ok == set(SPLITS) - {"short.mkv", "song.mp4", "audio.mp4"}
    assert all(rows[v]["split"] == SPLITS[v] and rows[v]["windows"] > 0 for v in ok)
    data = read_dataset(corpus["out"])
    for v in ok:
        assert rows[v]["windows"] == sum(r["video_id"] == v for recs in data.values() for r in recs)
    t = rows["c/t_small.mp4"]
    assert (t["width"], t["height"], t["codec"], t["frames"], t["source_fps"]) == (32, 24, "mpeg4", 12, 10.0)
    assert "mp4" in t["format"] and t["sar"] == "1:1" and t["vfr"] is False and abs(t["duration"] - 1.2) < 0.05
    assert rows["c/rot.mp4"]["rotation"] == 90.0 and rows["c/t.mp4"]["rotation"] == 0.0
    assert rows["a/x.mkv"]["label"] == "0" and rows["d/g1_a.mkv"]["group"] == "g1"
    assert (rows["short.mkv"]["status"], rows["short.mkv"]["kind"], rows["short.mkv"]["frames"]) == \
        ("dead", "too_short", 3)
    assert rows["short.mkv"]["width"] == 16 and rows["short.mkv"]["split"] is None
    assert rows["song.mp4"]["kind"] == "no_video_stream" and "attached picture" in rows["song.mp4"]["reason"]
    assert rows["audio.mp4"]["reason"] == "no video stream (streams: audio)"


@pytest.mark.parametrize("decoder", ["bundled", "system"])
def test_cover_art_is_no_video_stream_with_a_reason_that_says_so(corpus, decoder):
    if decoder == "system" and not shutil.which("ffprobe"):
        pytest.skip("no system ffprobe")
    with pytest.raises(VideoError) as e:
        probe_video(str(corpus["dir"] / "song.mp4"), 30, None, resolve(decoder))
    assert e.value.kind == "no_video_stream" and "cover art" in e.value.reason


def test_provenance_names_the_tools_and_the_filter_graph(corpus):
    meta = DatasetMetadata.load(corpus["out"])
    p = meta.provenance
    assert p["ffmpeg"]["version"] == meta.decoder["version"] and p["ffmpeg"]["configuration"].startswith("configuration:")
    assert p["filter_graph"] == "[0]fps=fps=10.0[s0];[s0]scale=16:16:flags=area[s1];[s1]format=gray[s2]"
    assert p["python"] == platform.python_version() and p["apache_beam"] and p["numpy"] and p["clipforge"]
    assert meta.manifest == "videos.parquet" and meta.schema_version == 2


def test_leakage_lists_exact_and_near_duplicates_and_what_spans_splits(corpus):
    leak = DatasetMetadata.load(corpus["out"]).leakage
    assert leak["exact_duplicates"] == [["a/x.mkv", "b/x_copy.mkv"]]
    assert ["c/t.mp4", "c/t_small.mp4"] in leak["near_duplicates"]
    assert ["a/x.mkv", "b/x_copy.mkv"] in leak["near_duplicates"]
    flat = [v for s in leak["near_duplicates"] for v in s]
    assert "c/rot.mp4" not in flat and "d/g1_b.mkv" not in flat  # other clips are not matched
    cross = leak["cross_split"]
    assert (cross["exact_duplicates"], cross["groups"]) == (1, 1) and cross["near_duplicates"] == 2
    assert "leakage: 1 exact-duplicate set(s), 2 near-duplicate set(s); across splits: 1 exact, 2 near, 1 group(s)" \
        in corpus["printed"]


def test_validate_exits_1_naming_the_leaking_ids_and_splits(corpus):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = validate.run([corpus["out"]])
    text = err.getvalue()
    assert rc == 1, out.getvalue()
    assert "exact duplicates (equal bytes) span splits test, train: a/x.mkv (train), b/x_copy.mkv (test)" in text
    assert "group 'g1' span splits test, train: d/g1_a.mkv (train), d/g1_b.mkv (test)" in text
    assert "c/t.mp4 (train), c/t_small.mp4 (validation)" in text
    assert "records OK" in out.getvalue() and "BAD" not in out.getvalue()  # the shards themselves are sound


def test_dedupe_keeps_the_first_path_of_equal_files(corpus, tmp_path):
    out = str(tmp_path / "out")
    rc, printed = ingest("--input", str(corpus["dir"]), "--labels", str(corpus["labels"]), "--output", out,
                         "--task", "regression", "--dedupe", *FLAGS)
    assert rc == 0, printed
    with open(os.path.join(out, "dead_letter.jsonl")) as f:
        dead = {d["video_id"]: d for d in map(json.loads, f)}
    assert dead["b/x_copy.mkv"]["kind"] == "duplicate_content" and "'a/x.mkv'" in dead["b/x_copy.mkv"]["reason"]
    leak = DatasetMetadata.load(out).leakage
    assert leak["cross_split"]["exact_duplicates"] == 0
    assert {r["video_id"] for recs in read_dataset(out).values() for r in recs} >= {"a/x.mkv"}


def test_near_duplicates_need_close_thumbnails_and_equal_lengths():
    import numpy as np
    a = np.zeros((16, 16, 1), np.uint8)
    a[:8] = 200
    b = a.copy()
    b[0, 0] = 190
    sig = lambda f: (thumbnail(f).tobytes(),)  # noqa: E731
    assert near_duplicate_sets({"a": (10, sig(a)), "b": (10, sig(b)), "c": (11, sig(a)), "d": (10, sig(255 - a))}) \
        == [["a", "b"]]
