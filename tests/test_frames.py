"""Frame folders are videos: natural order, source rate, mixed sizes, bad frames, symlinks, gaps."""
import contextlib
import io
import json
import os
import subprocess

import pyarrow.parquet as pq
import pytest

from pipelines.frames import natural_key, numbering_gaps
from pipelines.ingest import run
from tests import videos
from tests.helpers import read_dataset

FLAGS = ["--task", "next_frame", "--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16", "--color",
         "gray", "--num-shards", "1", "--splits", "1", "--frame-folders"]


def ingest(*argv):
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = run(list(argv))
    return rc, buf.getvalue() + err.getvalue()


def write_image(path, index, size=(16, 16)):
    """One uniform gray image of index clip frame INDEX, in the format its extension names."""
    frame = videos.index_frames(index + 1, size[0], size[1], 1)[index]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray", "-s",
                    f"{size[1]}x{size[0]}", "-i", "pipe:", "-frames:v", "1", "-f", "image2",
                    "-c:v", {"png": "png", "jpg": "mjpeg", "bmp": "bmp"}[os.path.splitext(path)[1][1:].lower()],
                    "-pix_fmt", "gray" if path.lower().endswith((".png",)) else "yuvj420p" if
                    path.lower().endswith(".jpg") else "bgr24", path],
                   input=frame.tobytes(), check=True)


def by_video(out):
    got = {}
    for recs in read_dataset(out).values():
        for r in recs:
            got.setdefault(r["video_id"], {})[r["start_frame"]] = [videos.frame_index(f) for f in r["frames"]]
    return got


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    d = root / "in"
    # natural order: 2.png must come before 10.png; 20 frames at 20 fps, numbered 1..21 without 7
    seq = d / "cam" / "seq"
    seq.mkdir(parents=True)
    for i in range(20):
        write_image(str(seq / f"{i + 1 if i < 6 else i + 2}.png"), i)
    mixed = d / "mixed"  # frames of two sizes, resized like video frames
    mixed.mkdir()
    for i in range(10):
        write_image(str(mixed / f"f{i:03d}.png"), i, (16, 16) if i % 2 else (32, 24))
    jpg = d / "JPG"
    jpg.mkdir()
    for i in range(10):
        write_image(str(jpg / f"IMG_{i}.JPG"), i)
    bad = d / "bad"
    bad.mkdir()
    for i in range(8):
        write_image(str(bad / f"{i}.png"), i)
    (bad / "5.png").write_bytes(b"this is not an image")
    link = d / "link"
    link.mkdir()
    for i in range(8):
        write_image(str(link / f"{i}.png"), i)
    write_image(str(root / "outside.png"), 3)
    os.remove(link / "3.png")
    os.symlink(root / "outside.png", link / "3.png")
    big = d / "big"
    big.mkdir()
    for i in range(8):
        write_image(str(big / f"{i}.png"), i, (64, 64) if i == 4 else (16, 16))
    short = d / "short"
    short.mkdir()
    for i in range(3):
        write_image(str(short / f"{i}.png"), i)
    both = d / "both"  # holds a video file: its images are not a frame folder
    both.mkdir()
    videos.make_video(str(both / "clip.mkv"), frames=6)
    write_image(str(both / "poster.png"), 0)
    labels = root / "fps.csv"
    return {"root": root, "dir": d, "labels": labels}


def test_frame_folders_are_videos_with_their_path_as_id(tree, tmp_path):
    out = str(tmp_path / "out")
    rc, printed = ingest("--input", str(tree["dir"]), "--output", out, "--source-fps", "20", "--max-pixels", "3000",
                         *FLAGS)
    assert rc == 0, printed
    got = by_video(out)
    assert set(got) == {"cam/seq", "mixed", "JPG", "both/clip.mkv"}
    # 20 frames at 20 fps resampled to 10 fps: every other frame, in natural order
    assert got["cam/seq"] == {s: [2 * k for k in range(s, s + 4)] for s in range(0, 5, 2)}
    assert got["mixed"] == {0: [0, 2, 4, 6]}  # 10 frames at 20 fps: 5 at 10 fps, sizes mixed
    assert got["JPG"] == {0: [0, 2, 4, 6]}
    with open(os.path.join(out, "dead_letter.jsonl")) as f:
        dead = {d["video_id"]: d for d in map(json.loads, f)}
    assert {k: d["kind"] for k, d in dead.items()} == {"bad": "bad_frame", "link": "frame_outside_root",
                                                       "big": "too_many_pixels", "short": "too_short"}
    assert str(tree["dir"] / "bad" / "5.png") in dead["bad"]["reason"]
    assert str(tree["dir"] / "link" / "3.png") in dead["link"]["reason"]
    assert str(tree["dir"] / "big" / "4.png") in dead["big"]["reason"] and "64x64" in dead["big"]["reason"]
    rows = {r["video_id"]: r for r in pq.read_table(os.path.join(out, "videos.parquet")).to_pylist()}
    seq = rows["cam/seq"]
    assert (seq["frame_gaps"], seq["frames"], seq["source_fps"], seq["format"], seq["codec"]) == \
        (1, 10, 20.0, "frames", "png")
    assert rows["JPG"]["codec"] == "jpeg" and len(rows["JPG"]["sha256"]) == 64
    assert rows["both/clip.mkv"]["frame_gaps"] is None


def test_labels_fps_column_overrides_source_fps(tree, tmp_path):
    tree["labels"].write_text("video,label,fps\ncam/seq,a,10\nmixed,b,\n")
    out = str(tmp_path / "out")
    flags = [f for f in FLAGS if f not in ("--task", "next_frame")]
    rc, printed = ingest("--input", str(tree["dir"]), "--output", out, "--source-fps", "20", "--task",
                         "classification", "--labels", str(tree["labels"]), *flags)
    assert rc == 0, printed
    got = by_video(out)
    assert got["cam/seq"][0] == [0, 1, 2, 3]  # its own 10 fps: every frame
    assert got["mixed"][0] == [0, 2, 4, 6]  # --source-fps 20


@pytest.mark.parametrize("extra,message", [
    ([], "source_fps"),
    (["--source-fps", "10", "--input-is-glob"], "needs a local directory"),
])
def test_frame_folder_setup_errors_come_before_any_work(tree, tmp_path, extra, message):
    spec = str(tree["dir"] / "*") if "--input-is-glob" in extra else str(tree["dir"])
    extra = [e for e in extra if e != "--input-is-glob"]
    rc, printed = ingest("--input", spec, "--output", str(tmp_path / "out"), *FLAGS, *extra)
    assert rc == 2 and message in printed and not (tmp_path / "out").exists()


def test_natural_order_and_gaps():
    assert sorted(["10.jpg", "2.jpg", "1.jpg", "a10.png", "a9.png"], key=natural_key) == \
        ["1.jpg", "2.jpg", "10.jpg", "a9.png", "a10.png"]
    assert numbering_gaps(["f001.jpg", "f002.jpg", "f005.jpg", "f006.jpg"]) == 2
