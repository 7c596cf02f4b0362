"""End to end: real ffmpeg + Beam runs of `clipforge ingest`, shards read back and checked exactly."""
import collections
import json
import os

import numpy as np
import pytest
import tfrecord_lite

from pipelines.ingest import dataset_fingerprint
from pipelines.ingest.config import parse_config
from pipelines.ingest.split import assign_split
from pipelines.windows import count_windows
from schemas.metadata import DatasetMetadata
from schemas.tfrecord import count_records
from tests import videos
from tests.helpers import ingest, read_dataset

# Good index clips (name -> frames at 10 fps) and the bad inputs with the reason each must get.
GOOD = {"a.mkv": 12, "-dash name.mkv": 8, "it's 100% %d.mkv": 6, "exact.mkv": 4,
        **{f"v{i:02d}.mkv": 5 + i % 4 for i in range(8)}}
LOSSY = "testsrc.mp4"  # 1 s of H.264 testsrc at 48x64: 10 frames
BAD = {"zero.mp4": "probe_failed", "text.mp4": "probe_failed", "audio.mp4": "no_video_stream",
       "short.mkv": "too_short", "nolabel.mkv": "no_label", "nan.mkv": "bad_target"}
FLAGS = ["--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16", "--color", "gray"]


def target_of(name):
    return float(len(name))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    d = root / "videos"
    d.mkdir()
    for name, n in GOOD.items():
        videos.make_video(str(d / name), frames=n)
    videos.lavfi_video(str(d / LOSSY), "testsrc", seconds=1.0, size=(48, 64), fps=10)
    videos.zero_byte(str(d / "zero.mp4"))
    videos.text_file(str(d / "text.mp4"))
    videos.audio_only(str(d / "audio.mp4"))
    videos.make_video(str(d / "short.mkv"), frames=3)
    videos.make_video(str(d / "nolabel.mkv"), frames=8)
    videos.make_video(str(d / "nan.mkv"), frames=8)
    (d / "notes.txt").write_text("not a video extension: never listed\n")
    labelled = [n for n in [*GOOD, LOSSY, *BAD] if n != "nolabel.mkv"]
    rows = [f'"{n}",{"nan" if n == "nan.mkv" else target_of(n)},extra' for n in labelled]
    (root / "labels.csv").write_text("video,target,comment\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def regression_run(corpus):
    out = str(corpus / "out_regression")
    rc, printed = ingest("--input", str(corpus / "videos"), "--labels", str(corpus / "labels.csv"),
                         "--output", out, "--task", "regression", "--splits", "0.5,0.25,0.25", *FLAGS)
    assert rc == 0
    return out, printed, read_dataset(out)


@pytest.fixture(scope="module")
def raw_frames(corpus):
    """Independent decodes (ffmpeg command line) of every good video."""
    d = corpus / "videos"
    return {n: videos.raw_decode(str(d / n), 10, (16, 16), 1) for n in [*GOOD, LOSSY]}


def test_bad_inputs_are_dead_lettered_with_their_reason(regression_run):
    out, printed, _ = regression_run
    with open(os.path.join(out, "dead_letter.jsonl")) as f:
        dead = [json.loads(line) for line in f]
    assert {d["video_id"]: d["kind"] for d in dead} == BAD
    for d in dead:
        assert set(d) >= {"path", "video_id", "stage", "reason", "stderr"} and d["reason"]
        assert d["path"].endswith(d["video_id"]) and len(d["stderr"].encode()) <= 1024
        if d["kind"] == "probe_failed":
            assert "Invalid data" in d["stderr"]
    meta = DatasetMetadata.load(out)
    assert meta.dead_letter["count"] == 6 and meta.dead_letter["reasons"] == dict(collections.Counter(BAD.values()))
    assert "dead-lettered 6 (bad_target: 1, no_label: 1, no_video_stream: 1, probe_failed: 2, too_short: 1)" in printed


def test_every_good_video_is_written_whole(regression_run):
    _, _, data = regression_run
    per_video = collections.Counter(r["video_id"] for recs in data.values() for r in recs)
    expected = {n: count_windows(f, 4, 2) for n, f in {**GOOD, LOSSY: 10}.items()}
    assert per_video == expected
    assert count_windows(4, 4, 2) == 1 and per_video["exact.mkv"] == 1


def test_record_counts_match_metadata_and_tfrecord_lite(regression_run):
    out, printed, data = regression_run
    meta = DatasetMetadata.load(out)
    for split, info in meta.splits.items():
        assert info["windows"] == len(data[split]) == sum(s["records"] for s in info["shards"])
        lite = []
        for shard in info["shards"]:
            path = os.path.join(out, shard["path"])
            assert count_records(path) == shard["records"]
            lite += list(tfrecord_lite.tf_record_iterator(path))
        assert [(r["video_id"][0].decode(), int(r["start_frame"][0]), float(r["target"][0])) for r in lite] == \
            [(r["video_id"], r["start_frame"], float(r["target"][0])) for r in data[split]]
        assert f"{split:<10}" in printed and f"{info['windows']:>8} windows" in printed


def test_frames_and_targets_match_an_independent_decode(regression_run, raw_frames):
    _, _, data = regression_run
    assert sum(map(len, data.values())) > 0  # the loop below must have records to check
    for recs in data.values():
        for r in recs:
            s = r["start_frame"]
            np.testing.assert_array_equal(r["frames"], raw_frames[r["video_id"]][s:s + 4], err_msg=r["video_id"])
            assert r["start_time"] == pytest.approx(s / 10)
            assert r["target"][0] == target_of(r["video_id"])


def test_each_video_lands_in_its_hash_split_only(regression_run):
    _, _, data = regression_run
    where = collections.defaultdict(set)
    for split, recs in data.items():
        for r in recs:
            where[r["video_id"]].add(split)
    assert all(len(s) == 1 for s in where.values())
    names = ("train", "validation", "test")
    assert {v: s.pop() for v, s in where.items()} == \
        {v: assign_split(v, (0.5, 0.25, 0.25), names) for v in where}
    assert sum(1 for recs in data.values() if recs) >= 2  # the check spans more than one split


def test_stats_are_over_the_training_frames(regression_run, raw_frames):
    out, _, data = regression_run
    meta = DatasetMetadata.load(out)
    train = {r["video_id"] for r in data["train"]}
    # every frame stored in a train window, each counted once
    pixels = np.concatenate([raw_frames[v][:max(r["start_frame"] for r in data["train"] if r["video_id"] == v) + 4]
                             .reshape(-1) for v in sorted(train)]).astype(np.float64)
    assert meta.stats["split"] == "train" and meta.stats["pixels"] == pixels.size
    assert meta.stats["pixel_mean"][0] == pytest.approx(pixels.mean(), rel=1e-12)
    assert meta.stats["pixel_std"][0] == pytest.approx(pixels.std(), rel=1e-9)
    targets = np.array([r["target"][0] for r in data["train"]], np.float64)
    assert meta.stats["target_mean"][0] == pytest.approx(targets.mean(), rel=1e-6)
    assert meta.stats["target_std"][0] == pytest.approx(targets.std(), rel=1e-6)
    assert meta.splits["train"]["videos"] == len(train)


def test_metadata_describes_the_run_and_nothing_is_left_beside_it(regression_run, corpus):
    out, _, _ = regression_run
    meta = DatasetMetadata.load(out)
    assert meta.spec.window_shape == (4, 16, 16, 1) and meta.spec.encoding == "png"
    assert meta.target.outputs == ("target",) and meta.compression == "none"
    assert meta.config["task"] == "regression" and meta.config["splits"] == [0.5, 0.25, 0.25]
    assert len(meta.fingerprint) == 64 and meta.created
    assert sorted(os.listdir(corpus)) == ["labels.csv", "out_regression", "videos"]  # no staging dir
    assert sorted(os.listdir(out)) == ["dead_letter.jsonl", "drift_reference.json", "metadata.json", "test", "train",
                                       "validation", "videos.parquet"]
    for split in meta.splits:  # no Beam temp files
        assert all(f.startswith("part-") for f in os.listdir(os.path.join(out, split)))


def test_same_splits_and_records_from_a_reordered_list_on_two_workers(regression_run, corpus):
    _, _, first = regression_run
    # in the videos' folder, so that ids (paths under the list's folder) are those of the directory run
    names = sorted(os.listdir(corpus / "videos"), reverse=True)
    listing = corpus / "videos" / "list.txt"
    listing.write_text("# the same videos, reversed\n" + "\n".join(names) + "\n")
    out = str(corpus / "out_listed")
    rc, _ = ingest("--input", str(listing), "--labels", str(corpus / "labels.csv"), "--output", out,
                   "--task", "regression", "--splits", "0.5,0.25,0.25", "--num-shards", "2", *FLAGS,
                   "--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
    assert rc == 0
    second = read_dataset(out)

    def keyed(data):
        return sorted((split, r["video_id"], r["start_frame"], r["frames"].tobytes())
                      for split, recs in data.items() for r in recs)
    assert keyed(second) == keyed(first)
    assert all(len(info["shards"]) == 2 for info in DatasetMetadata.load(out).splits.values())


def test_segments_classification_rgb_jpeg_gzip(corpus):
    names = ["a.mkv", "-dash name.mkv", LOSSY]
    listing = corpus / "three.txt"
    listing.write_text("\n".join(str(corpus / "videos" / n) for n in names) + "\n")
    segs = corpus / "segments.csv"
    segs.write_text("video_id,start,end,label\n"
                    + "\n".join(f'"{n}",0.0,0.5,still\n"{n}",0.5,0.9,moving' for n in names) + "\n")
    out = str(corpus / "out_segments")
    rc, _ = ingest("--input", str(listing), "--labels", str(segs), "--output", out, "--task", "classification",
                   "--frames", "3", "--stride", "1", "--fps", "10", "--size", "8x12", "--color", "rgb",
                   "--compression", "gzip", "--num-shards", "2", "--splits", "1")
    assert rc == 0
    meta = DatasetMetadata.load(out)
    assert meta.spec.encoding == "jpeg" and meta.target.classes == ("moving", "still")
    assert [s["path"].endswith(".tfrecord.gz") for s in meta.splits["train"]["shards"]] == [True, True]
    recs = read_dataset(out)["train"]
    # last frame of window s is s+2 at (s+2)/10 s: [0, 0.5) -> still, [0.5, 0.9) -> moving, later: none
    got = collections.defaultdict(dict)
    for r in recs:
        got[r["video_id"]][r["start_frame"]] = meta.target.classes[r["label"]]
    frames = {**GOOD, LOSSY: 10}
    expected = {n: {s: "still" if (s + 2) / 10 < 0.5 else "moving" for s in range(min(7, frames[n] - 2))}
                for n in names}
    assert got == expected
    hist = collections.Counter(c for v in expected.values() for c in v.values())
    assert meta.stats["class_histogram"] == [hist["moving"], hist["still"]] == [11, 9]
    assert meta.stats["unlabelled_windows"] == sum(frames[n] - 2 for n in names) - 20
    decoded = {n: videos.raw_decode(str(corpus / "videos" / n), 10, (8, 12), 3) for n in names}
    for r in recs:  # jpeg is lossy: close to the independent rgb decode, not equal
        src = decoded[r["video_id"]][r["start_frame"]:r["start_frame"] + 3].astype(float)
        if r["video_id"] == LOSSY:  # 4:2:0 chroma on 8x12 colour bars: only the DC survives well
            assert np.abs(r["frames"].mean(axis=(1, 2)) - src.mean(axis=(1, 2))).max() < 3
        else:
            assert np.abs(r["frames"] - src).max() <= 2


def test_next_frame_raw_with_horizon(corpus):
    out = str(corpus / "out_next")
    rc, _ = ingest("--input", str(corpus / "videos" / "a.mkv"), "--output", out, "--task", "next_frame",
                   "--horizon", "2", "--encoding", "raw", "--frames", "4", "--stride", "3", "--fps", "10",
                   "--size", "16x16", "--color", "gray", "--resize", "pad", "--splits", "1")
    assert rc == 0
    recs = read_dataset(out)["train"]
    # 12 frames, windows of 4 + 2 next frames every 3: starts 0, 3, 6 (9 would need frames up to 14)
    assert sorted(r["start_frame"] for r in recs) == [0, 3, 6] == list(range(0, count_windows(12, 4, 3, 2) * 3, 3))
    for r in recs:
        s = r["start_frame"]
        assert [videos.frame_index(f) for f in r["frames"]] == list(range(s, s + 4))
        assert [videos.frame_index(f) for f in r["next_frames"]] == [s + 4, s + 5]
    assert DatasetMetadata.load(out).target.to_dict() == {"task": "next_frame", "horizon": 2}


def test_series_targets_are_interpolated_at_the_last_frame(corpus):
    series = corpus / "series.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"video": ["a.mkv", "a.mkv", "a.mkv"], "time": [0.0, 0.5, 1.1],
                             "speed": [0.0, 5.0, 20.0], "heading": [1.0, 1.0, 1.0]}), str(series))
    out = str(corpus / "out_series")
    rc, _ = ingest("--input", str(corpus / "videos" / "a.mkv"), "--labels", str(series), "--output", out,
                   "--task", "regression", "--target-columns", "speed,heading", *FLAGS, "--splits", "1")
    assert rc == 0
    got = {r["start_frame"]: r["target"].tolist() for r in read_dataset(out)["train"]}
    expected_speed = {s: float(np.interp((s + 3) / 10, [0.0, 0.5, 1.1], [0.0, 5.0, 20.0])) for s in (0, 2, 4, 6, 8)}
    assert sorted(got) == sorted(expected_speed)
    for s, (speed, heading) in got.items():
        assert speed == pytest.approx(expected_speed[s], rel=1e-6) and heading == 1.0


def test_fingerprint_is_known_before_the_run_and_tracks_inputs_and_settings(regression_run, corpus):
    out, _, _ = regression_run
    argv = ["--input", str(corpus / "videos"), "--labels", str(corpus / "labels.csv"), "--task", "regression",
            "--splits", "0.5,0.25,0.25", *FLAGS]
    def fp(flags):
        return dataset_fingerprint(parse_config([*flags, "--output", "unused"])[0])
    assert fp(argv) == DatasetMetadata.load(out).fingerprint
    assert fp([*argv, "--frames", "5"]) != fp(argv)
    touched = corpus / "videos" / "exact.mkv"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))
    try:
        assert fp(argv) != DatasetMetadata.load(out).fingerprint
    finally:
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_progress_line_per_video(tmp_path, capsys):
    from pipelines.ingest import run
    from tests.videos import make_video
    src = tmp_path / "in"
    src.mkdir()
    make_video(str(src / "a.mkv"), frames=10, fps=10)
    assert run(["--input", str(src), "--output", str(tmp_path / "out"), "--task", "next_frame",
                "--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16", "--color", "gray"]) == 0
    err = capsys.readouterr().err
    # frames 0..9, T=4 plus 1 next frame: windows start at 0, 2, 4
    assert "ingest: a.mkv: 3 windows from 10 frames in" in err
