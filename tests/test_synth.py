"""The synthetic corpus: real mp4 files whose measured motion matches labels.csv."""
import csv
import json
import subprocess

import numpy as np
import pytest

from clipforge import synth

SIZE, FPS, SECONDS = 32, 10.0, 1.5
FRAMES = 15


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    clips = synth.make_corpus(str(out), n_videos=8, seed=5, size=SIZE, fps=FPS, seconds=SECONDS)
    with open(out / synth.LABELS_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    return out, clips, rows


def _decode(path):
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "pipe:1"], check=True, capture_output=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, SIZE, SIZE, 3)


def _circular_centroid(mask):
    """Centroid (x, y) of a mask on a torus: the shape may straddle an edge after wrapping."""
    ys, xs = np.nonzero(mask)
    angle = lambda v: np.angle(np.exp(2j * np.pi * v / SIZE).mean()) * SIZE / (2 * np.pi)
    return np.array([angle(xs), angle(ys)])


def test_labels_csv_and_balanced_directions(corpus):
    _, clips, rows = corpus
    assert list(rows[0]) == ["video", "speed", "direction"]
    assert [r["video"] for r in rows] == [c.video for c in clips]
    assert sorted(r["direction"] for r in rows) == sorted(list(synth.DIRECTIONS) * 2)
    speeds = [float(r["speed"]) for r in rows]
    assert all(2 * FPS <= s <= 6 * FPS for s in speeds) and len(set(speeds)) == len(speeds)


def test_videos_probe_to_expected_frames_and_size(corpus):
    out, clips, _ = corpus
    for clip in clips[:4]:
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                "stream=width,height,nb_read_frames,codec_name", "-of", "json",
                                str(out / clip.video)], check=True, capture_output=True, timeout=60)
        stream = json.loads(probe.stdout)["streams"][0]
        assert (stream["width"], stream["height"], int(stream["nb_read_frames"])) == (SIZE, SIZE, FRAMES)
        assert stream["codec_name"] == "h264"


def test_measured_motion_matches_labels(corpus):
    out, _, rows = corpus
    for row in rows:
        frames = _decode(out / row["video"]).astype(np.int32)
        assert frames.shape[0] == FRAMES
        background = np.median(frames, axis=0)  # the shape covers any pixel in well under half the frames
        masks = np.abs(frames - background).sum(-1) > 120
        assert all(m.sum() >= 9 for m in masks), row["video"]  # the shape is visible in every frame
        centroids = np.array([_circular_centroid(m) for m in masks])
        steps = (np.diff(centroids, axis=0) + SIZE / 2) % SIZE - SIZE / 2  # shortest way round the torus
        velocity = steps.mean(0) * FPS
        want = np.array(synth.DIRECTIONS[row["direction"]]) * float(row["speed"])
        assert np.linalg.norm(velocity - want) < 0.03 * float(row["speed"]), (row, velocity)


def test_same_seed_same_corpus_other_seed_differs(tmp_path):
    a = synth.make_corpus(str(tmp_path / "a"), n_videos=2, seed=11, size=16, fps=8, seconds=1)
    b = synth.make_corpus(str(tmp_path / "b"), n_videos=2, seed=11, size=16, fps=8, seconds=1)
    c = synth.plan_corpus(2, seed=12, size=16, speed_range=(16, 48))
    assert a == b and a != c
    assert (tmp_path / "a" / "labels.csv").read_bytes() == (tmp_path / "b" / "labels.csv").read_bytes()
    assert (tmp_path / "a" / a[0].video).read_bytes() == (tmp_path / "b" / b[0].video).read_bytes()


def test_bad_arguments_fail_before_writing(tmp_path):
    with pytest.raises(ValueError, match="size=15"):
        synth.make_corpus(str(tmp_path / "x"), n_videos=2, size=15)
    with pytest.raises(ValueError, match="speed_range"):
        synth.make_corpus(str(tmp_path / "x"), n_videos=2, size=16, speed_range=(5, 1))
    assert not (tmp_path / "x").exists()
