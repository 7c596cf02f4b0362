"""--short-videos drop|pad: a video shorter than one window is dead-lettered or padded to one window."""
import glob
import json
import os

import numpy as np
import pytest

from pipelines import ingest
from pipelines.ingest.config import parse_config
from pipelines.ingest.engine import VideoJob
from pipelines.ingest.labels import VideoLabels
from pipelines.ingest.stats import VideoSummary
from pipelines.inputs import VideoRef
from pipelines.windows import iter_windows, padded_frames
from schemas import example_proto as ex
from schemas import features as fk
from schemas.codec import RecordCodec
from schemas.configs import ConfigError
from schemas.spec import TargetSpec, WindowSpec
from schemas.tfrecord import iter_records
from tests import videos
from tests.helpers import process_video

SPEC = WindowSpec(frames=4, stride=1, fps=10, height=16, width=16, channels=1, encoding="png")
FLAGS = ["--task", "next_frame", "--frames", "4", "--stride", "1", "--fps", "10", "--size", "16x16",
         "--color", "gray", "--horizon", "1", "--splits", "1"]


def test_ring_buffer_pads_only_a_stream_shorter_than_one_span():
    frames = lambda n: (np.full((1,), i, np.uint8) for i in range(n))  # noqa: E731
    [(start, window)] = list(iter_windows(frames(3), 4, 1, 1, pad=True))
    assert start == 0 and [f.index for f in window] == [0, 1, 2, 2, 2] and padded_frames(start, window) == 2
    assert window[2] is window[4]  # the same Frame: encoded once
    assert list(iter_windows(frames(3), 4, 1, 1)) == []  # drop
    assert list(iter_windows(frames(0), 4, 1, 1, pad=True)) == []  # nothing decoded: nothing to pad
    long = list(iter_windows(frames(7), 4, 1, 1, pad=True))
    assert [s for s, _ in long] == [0, 1, 2] and all(padded_frames(s, w) == 0 for s, w in long)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("short")
    os.mkdir(root / "in")
    videos.make_video(str(root / "in" / "short.mkv"), frames=3)  # 3 frames: a window needs 4 + horizon 1
    videos.make_video(str(root / "in" / "ok.mkv"), frames=8)
    return root


def _records(out):
    codec = RecordCodec(SPEC, TargetSpec("next_frame", horizon=1))
    recs = [codec.decode_numpy(r) for p in sorted(glob.glob(f"{out}/**/*.tfrecord*", recursive=True))
            for r in iter_records(p)]
    by_video = {}
    for r in recs:
        by_video.setdefault(r[fk.VIDEO_ID], []).append(r)
    return by_video


def test_ingest_pad_writes_one_window_repeating_the_last_frame(corpus, capsys):
    out = str(corpus / "pad")
    assert ingest.run(["--input", str(corpus / "in"), "--output", out, *FLAGS, "--short-videos", "pad"]) == 0
    printed = capsys.readouterr().out
    by_video = _records(out)
    [short] = by_video["short.mkv"]
    assert short[fk.START_FRAME] == 0 and short[fk.PADDED_FRAMES] == 2
    assert [videos.frame_index(f) for f in short[fk.FRAMES]] == [0, 1, 2, 2]
    assert [videos.frame_index(f) for f in short[fk.NEXT_FRAMES]] == [2]
    np.testing.assert_array_equal(short[fk.FRAMES][3], short[fk.FRAMES][2])
    assert len(by_video["ok.mkv"]) == 4 and all(r[fk.PADDED_FRAMES] == 0 for r in by_video["ok.mkv"])
    with open(os.path.join(out, "metadata.json")) as f:
        meta = json.load(f)
    assert meta["config"]["short_videos"] == "pad" and meta["stats"]["padded_windows"] == 1
    assert "1 window(s) padded" in printed
    assert not os.path.exists(os.path.join(out, "dead_letter.jsonl")) or \
        "short.mkv" not in open(os.path.join(out, "dead_letter.jsonl")).read()


def test_ingest_drop_is_the_default_and_dead_letters_too_short(corpus):
    out = str(corpus / "drop")
    assert ingest.run(["--input", str(corpus / "in"), "--output", out, *FLAGS]) == 0
    by_video = _records(out)
    assert "short.mkv" not in by_video and len(by_video["ok.mkv"]) == 4
    dead = [json.loads(line) for line in open(os.path.join(out, "dead_letter.jsonl"))]
    assert [(d["video_id"], d["kind"]) for d in dead] == [("short.mkv", "too_short")]
    with open(os.path.join(out, "metadata.json")) as f:
        meta = json.load(f)
    assert meta["config"]["short_videos"] == "drop" and meta["stats"]["padded_windows"] == 0


def test_short_videos_flag_is_checked():
    with pytest.raises(ConfigError, match="short-videos"):
        parse_config(["--input", "x", "--output", "y", "--task", "next_frame", "--short-videos", "stretch"])


def test_padded_label_is_read_at_the_last_real_frame(tmp_path):
    path = videos.make_video(str(tmp_path / "three.mkv"), frames=3)  # frames at 0, 0.1, 0.2 s
    # the segment covers the last real frame (0.2 s) but not the padded window's nominal last frame (0.3 s)
    labels = {"three.mkv": VideoLabels("segments", np.array([[5.0]]), np.array([1]), start=np.array([0.0]),
                                       end=np.array([0.25]))}
    target = TargetSpec("regression", outputs=("v",))
    out = list(process_video(VideoRef(path, "three.mkv"), VideoJob(SPEC, target, labels=labels, short_videos="pad"),
                             "/tmp"))
    [(_, record)], [summary] = [o for o in out if isinstance(o, tuple)], [o for o in out if not isinstance(o, tuple)]
    assert isinstance(summary, VideoSummary) and summary.windows == 1 and summary.padded_windows == 1
    assert summary.pixel_count == 3 * 16 * 16  # the repeated frame is counted once in the stats
    rec = RecordCodec(SPEC, target).decode_numpy(record)
    assert rec[fk.TARGET].tolist() == [5.0] and rec[fk.PADDED_FRAMES] == 1
    [dead] = list(process_video(VideoRef(path, "three.mkv"), VideoJob(SPEC, target, labels=labels), "/tmp"))
    assert dead.kind == "too_short"


def test_records_without_padded_frames_parse_as_zero():
    """Datasets written before --short-videos have no padded_frames feature."""
    import tensorflow as tf
    target = TargetSpec("next_frame", horizon=1)
    codec = RecordCodec(SPEC, target)
    frame = codec.encode_frame(np.zeros(SPEC.frame_shape, np.uint8))
    old = ex.serialize_example({
        fk.VIDEO_ID: ex.bytes_feature([b"old.mp4"]), fk.START_FRAME: ex.int64_feature([3]),
        fk.START_TIME: ex.float_feature([0.3]), fk.FRAMES: ex.bytes_feature([frame] * 4),
        fk.NEXT_FRAMES: ex.bytes_feature([frame])})
    assert codec.decode_numpy(old)[fk.PADDED_FRAMES] == 0
    assert int(codec.parse_fn()(tf.constant(old))[fk.PADDED_FRAMES]) == 0
    new = codec.serialize("new.mp4", 0, 0.0, [frame] * 4, encoded_next=[frame], padded_frames=3)
    assert codec.decode_numpy(new)[fk.PADDED_FRAMES] == 3
    assert int(codec.parse_fn()(tf.constant(new))[fk.PADDED_FRAMES]) == 3
