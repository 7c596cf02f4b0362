"""Long videos split into time segments: exact seeks, the same windows and stats as a whole decode."""
import collections
import dataclasses
import os
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from pipelines.ingest.engine import SegmentResult, VideoJob, finish_video, plan_video, process_segment
from pipelines.ingest.labels import VideoLabels
from pipelines.ingest.stats import VideoSummary
from pipelines.inputs import VideoRef
from pipelines.segments import Segment, plan_segments
from schemas.codec import RecordCodec
from schemas.metadata import DatasetMetadata
from schemas.spec import TargetSpec, WindowSpec
from tests.helpers import decode_all, ingest, process_video, read_dataset

# Frame i of a barcode clip shows the 12 bits of i as a 4x3 grid of black/white 4x4-pixel blocks:
# any frame of a decode at the same size says which source frame it is.
SIDE, BITS = 4, 12
H, W = 4 * SIDE, 3 * SIDE
SECONDS = 60
# name -> (source frame rate, encoder args): lossless intra (ffv1), H.264 with B-frames and
# 2 s GOPs (seeks land on earlier keyframes), and rates that do not divide the output rate:
# 24 fps puts frames exactly half-way between output frames (rounding ties), 7.5 fps leaves
# seek points without a frame, and AVI's 2/15 s time base cannot represent every second.
CLIPS = {
    "ffv1_10fps.mkv": (10, ["-c:v", "ffv1", "-pix_fmt", "gray"]),
    "ffv1_7.5fps.mkv": ("7.5", ["-c:v", "ffv1", "-pix_fmt", "gray"]),
    "h264_24fps.mp4": (24, ["-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-g", "48", "-bf", "2",
                            "-pix_fmt", "yuv420p"]),
    "mjpeg_7.5fps.avi": ("7.5", ["-c:v", "mjpeg", "-q:v", "1", "-pix_fmt", "yuvj420p"]),
}
FPS = 10
SPEC = WindowSpec(frames=4, stride=3, fps=FPS, height=H, width=W, channels=1, encoding="raw")
NEXT = TargetSpec("next_frame", horizon=2)
SEGMENT_SECONDS = 10  # 60 s clips: 6 segments of about 10 s, each seek followed by a lead


def barcode_frames(n: int) -> np.ndarray:
    bits = (np.arange(n)[:, None] >> np.arange(BITS)[None]) & 1
    return (bits.reshape(n, 4, 3) * 255).astype(np.uint8).repeat(SIDE, 1).repeat(SIDE, 2)[..., None]


def barcode_index(frames: np.ndarray) -> list[int]:
    """The source frame index each decoded frame shows."""
    on = frames.reshape(-1, 4, SIDE, 3, SIDE).mean(axis=(2, 4)) > 127
    return [int(v) for v in (on.reshape(-1, BITS) * (1 << np.arange(BITS))).sum(axis=1)]


def expected_sources(rate: Fraction, n_source: int, n_out: int) -> list[int]:
    """Which source frame ffmpeg's fps filter shows at each output frame: the last one whose
    time, rounded half up to the output grid, is not after it."""
    ticks = [int(Fraction(i) / rate * FPS + Fraction(1, 2)) for i in range(n_source)]
    return [max(i for i, t in enumerate(ticks) if t <= k) for k in range(n_out)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    for name, (rate, codec) in CLIPS.items():
        n = int(SECONDS * Fraction(rate))
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray",
                        "-s", f"{W}x{H}", "-r", str(rate), "-i", "pipe:", *codec, str(d / name)],
                       input=barcode_frames(n).tobytes(), check=True)
    return d


def ref(clips, name):
    return VideoRef(str(clips / name), name)


def split_run(video: VideoRef, job: VideoJob):
    """Plans and decodes a video segment by segment, as the pipeline does on separate workers."""
    segments = list(plan_video(video, job))
    records, results = [], []
    for seg in segments:
        for out in process_segment(seg, job, "/tmp"):
            (results if isinstance(out, SegmentResult) else records).append(out)
    return segments, records, finish_video(results, job)


def whole_run(video: VideoRef, job: VideoJob):
    out = list(process_video(video, job, "/tmp"))
    return out[:-1], out[-1]


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_segments_give_exactly_the_windows_of_a_whole_decode(clips, name):
    video, rate = ref(clips, name), Fraction(CLIPS[name][0])
    job = VideoJob(SPEC, NEXT, segment_seconds=SEGMENT_SECONDS)
    segments, records, summary = split_run(video, job)
    whole_records, whole_summary = whole_run(video, job)
    assert len(segments) == 6 and all(s.seek > 0 and s.lead > 0 for s in segments[1:])
    assert all(a.end == b.start and b.start % 3 == 0 for a, b in zip(segments, segments[1:]))
    assert sorted(records) == sorted(whole_records)  # byte for byte: none lost, none doubled
    assert summary == whole_summary and summary.partial == ""  # stats count each frame once
    assert summary.frames_decoded == len(decode_all(video.path, SPEC)) == SECONDS * FPS
    codec = RecordCodec(SPEC, NEXT)
    starts = []
    sources = expected_sources(rate, int(SECONDS * rate), SECONDS * FPS)
    for _, record in records:
        r = codec.decode_numpy(record)
        s = r["start_frame"]
        starts.append(s)
        shown = barcode_index(np.concatenate([r["frames"], r["next_frames"]]))
        assert shown == sources[s:s + 6], (name, s)
        if rate == FPS:
            assert shown == list(range(s, s + 6))
    assert sorted(starts) == list(range(0, SECONDS * FPS - 5, 3))


def test_stats_count_frames_shared_by_segments_once_whatever_the_labels(clips):
    video = ref(clips, "h264_24fps.mp4")
    # Windows whose last frame falls in the gaps (9.8-10.3 s, 19.9-20.4 s: at segment boundaries,
    # 10 s and 20 s) have no label, so frames shared across a boundary are only in some windows.
    labels = VideoLabels("segments", np.array([0, 1, 0]), np.array([1, 2, 3]), start=np.array([0.0, 10.3, 20.4]),
                         end=np.array([9.8, 19.9, 60.0]))
    target = TargetSpec("classification", classes=("a", "b"))
    spec = WindowSpec(frames=5, stride=2, fps=FPS, height=H, width=W, channels=1, encoding="png")
    job = VideoJob(spec, target, labels={video.video_id: labels}, segment_seconds=SEGMENT_SECONDS)
    segments, records, summary = split_run(video, job)
    whole_records, whole_summary = whole_run(video, job)
    assert len(segments) == 6 and [s.start for s in segments[:3]] == [0, 100, 200]
    assert sorted(records) == sorted(whole_records)
    assert summary.unlabelled_windows == whole_summary.unlabelled_windows > 0
    assert (summary.pixel_count, summary.pixel_sum, summary.pixel_sumsq) == \
        (whole_summary.pixel_count, whole_summary.pixel_sum, whole_summary.pixel_sumsq)
    assert summary == whole_summary and sum(summary.class_hist) == summary.windows == len(records)


def test_plans_align_to_the_stride_and_the_exact_seek_grid():
    video = VideoRef("/v.mp4", "v.mp4")
    spec = WindowSpec(frames=16, stride=16, fps=10, height=8, width=8, channels=1)
    tb = Fraction(1, 12800)
    plan = plan_segments(video, 7200.0, tb, spec, 0, 300)  # 2 hours at 10 fps in 300 s pieces
    assert len(plan) == 24 and plan[-1].end is None and plan[0].seek == 0
    assert all(a.end == b.start and b.start % 16 == 0 for a, b in zip(plan, plan[1:]))
    assert {p.end - p.start for p in plan[:-1]} == {3008}  # 300.8 s: the nearest multiple of the stride
    assert all(p.lead == 1.0 and p.skip == 0 and p.seek + p.lead == p.start / 10 for p in plan[1:])
    assert plan[3].stop_after(16) == 3008 + 15
    # 12.5 fps from a 1/12 s time base: seeks on multiples of 2 s (25 frames, 24 units), starts on
    # multiples of the stride (7), the frames in between decoded and skipped
    odd = plan_segments(video, 600.0, Fraction(1, 12), WindowSpec(frames=4, stride=7, fps=12.5, height=8, width=8,
                                                                   channels=1), 0, 20)
    assert len(odd) == 30 and all(p.start % 7 == 0 for p in odd) and {p.skip for p in odd[1:]} > {0}
    assert all(p.seek % 2 == 0 and p.lead == 2 and 0 <= p.skip < 25 and
               Fraction(p.seek + p.lead) * Fraction(25, 2) == p.start - p.skip for p in odd[1:])
    # 29.97 fps from a 1/30000 time base: exact only every 100 s (2997 frames); no lead that long,
    # and no split at all when that is more than half a segment
    ntsc_spec = WindowSpec(frames=8, stride=1, fps=29.97, height=8, width=8, channels=1)
    ntsc = plan_segments(video, 3600.0, Fraction(1, 30000), ntsc_spec, 0, 300)
    assert [p.seek for p in ntsc[1:4]] == [300.0, 600.0, 900.0] and {p.lead for p in ntsc} == {0.0}
    assert len(plan_segments(video, 3600.0, Fraction(1, 30000), ntsc_spec, 0, 200)) == 18
    assert plan_segments(video, 3600.0, Fraction(1, 30000), ntsc_spec, 0, 150) == [Segment(video, probed=True)]
    # not long enough, no duration or time base, or splitting off: one whole segment
    whole = [Segment(video, probed=True)]
    assert plan_segments(video, 440.0, tb, spec, 0, 300) == whole and len(plan_segments(video, 460.0, tb, spec, 0,
                                                                                         300)) == 2
    assert plan_segments(video, None, tb, spec, 0, 300) == plan_segments(video, 7200.0, None, spec, 0, 300) == \
        plan_segments(video, 7200.0, tb, spec, 0, 0) == whole


def test_segments_that_do_not_rejoin_mark_the_video_partial():
    video = VideoRef("/v.mp4", "v.mp4")
    job = VideoJob(SPEC, NEXT)

    def part(index, tail, head, windows=3):
        s = VideoSummary("v.mp4", "train", windows=windows, frames_decoded=60, pixel_count=10, pixel_sum=(5,),
                         pixel_sumsq=(9,))
        return SegmentResult(video, index, 3, index * 60, s, head=head, tail=tail)

    same = [part(0, (5, "aa"), (0, "")), part(1, (5, "bb"), (5, "aa")), part(2, (0, ""), (5, "bb"))]
    ok = finish_video(same[::-1], job)  # the order results arrive in does not matter
    assert ok.partial == "" and (ok.windows, ok.frames_decoded, ok.pixel_sum) == (9, 180, (15,))
    shifted = [same[0], same[1], part(2, (0, ""), (5, "cc"))]
    assert finish_video(shifted, job).partial.startswith("segment 2 (from frame 120) does not continue segment 1")
    assert "1 of its 3 segments went missing" in finish_video(same[:2], job).partial
    empty = [part(i, (0, ""), (0, ""), windows=0) for i in range(3)]
    assert finish_video(empty, job).kind == "too_short"


def test_ingest_writes_the_same_dataset_with_and_without_segments(clips, tmp_path):
    listing = tmp_path / "two.txt"  # a lossy and a lossless clip, at rates that do not divide 10 fps
    listing.write_text("\n".join(str(clips / n) for n in ("h264_24fps.mp4", "ffv1_7.5fps.mkv")) + "\n")
    flags = ["--input", str(listing), "--task", "next_frame", "--horizon", "2", "--frames", "4", "--stride", "3",
             "--fps", str(FPS), "--size", f"{H}x{W}", "--color", "gray", "--encoding", "raw", "--splits", "1"]
    split, whole = str(tmp_path / "split"), str(tmp_path / "whole")
    assert ingest(*flags, "--output", split, "--segment-seconds", str(SEGMENT_SECONDS))[0] == 0
    assert ingest(*flags, "--output", whole, "--segment-seconds", "0")[0] == 0

    def keyed(d):
        return sorted((r["video_id"], r["start_frame"], r["frames"].tobytes(), r["next_frames"].tobytes())
                      for r in read_dataset(d)["train"])
    got = keyed(split)
    assert got == keyed(whole) and len(got) == 2 * len(range(0, SECONDS * FPS - 5, 3))
    assert collections.Counter(k[:2] for k in got).most_common(1)[0][1] == 1
    a, b = DatasetMetadata.load(split), DatasetMetadata.load(whole)
    assert a.stats == b.stats and a.splits["train"]["windows"] == b.splits["train"]["windows"]
    assert a.stats["frames_decoded"] == 2 * SECONDS * FPS and a.stats["partial_videos"] == 0
    assert a.fingerprint == b.fingerprint  # segmenting does not change the data
    assert sorted(os.listdir(split)) == ["dead_letter.jsonl", "drift_reference.json", "metadata.json", "train",
                                         "videos.parquet"]


def test_predict_windows_of_segments_are_those_of_a_whole_decode(clips):
    """predict's decode (video_windows) over the planned segments: same windows, pixel for pixel."""
    import apache_beam as beam
    from apache_beam.testing import test_pipeline
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.predict.windows import DecodeWindows, video_windows
    from pipelines.probe import ProbeLimits
    from pipelines.runners.options import local_runner
    from pipelines.signals import VideoSignals
    from pipelines.sources import ReadVideos
    from pipelines.streams import plan_decode

    def key(w):
        return w.video_id, w.start_frame, w.frames.tobytes(), w.next_frames.tobytes()

    video = ref(clips, "h264_24fps.mp4")
    segments = list(plan_decode(video, SPEC, 2, 60, ProbeLimits(), SEGMENT_SECONDS))
    assert len(segments) == 6
    parts = [key(w) for s in segments for w in video_windows(s, SPEC, horizon=2)]
    whole = [key(w) for w in video_windows(video, SPEC, horizon=2)]
    assert sorted(parts) == sorted(whole) and len(whole) == len(range(0, SECONDS * FPS - 5, 3))
    # the drift signals' sums of the segments add up to the whole decode's, exactly
    signals = [out for s in segments for out in video_windows(s, SPEC, horizon=2, signals=True)
               if isinstance(out, VideoSignals)]
    alone = [out for out in video_windows(video, SPEC, horizon=2, signals=True) if isinstance(out, VideoSignals)]
    assert len(signals) == 6 and len(alone) == 1 and alone[0].sums[0] == SECONDS * FPS * H * W
    assert tuple(sum(v) for v in zip(*[s.sums for s in signals])) == alone[0].sums
    # the same through the Beam transform, segments spread by its reshuffle
    with test_pipeline.TestPipeline(runner=local_runner()) as p:
        out = p | ReadVideos([video]) | DecodeWindows(SPEC, horizon=2, segment_seconds=SEGMENT_SECONDS)
        assert_that(out["windows"] | beam.Map(key), equal_to(whole))


def test_a_failed_segment_is_dead_lettered_by_name(clips, tmp_path):
    from pipelines.dead_letters import DeadLetter
    from pipelines.predict.windows import video_windows
    from pipelines.probe import ProbeLimits
    from pipelines.streams import plan_decode
    segments = list(plan_decode(ref(clips, "ffv1_10fps.mkv"), SPEC, 2, 60, ProbeLimits(), SEGMENT_SECONDS))
    gone = str(tmp_path / "gone.mkv")  # the file vanished between planning and decoding
    seg = dataclasses.replace(segments[3], ref=VideoRef(gone, "ffv1_10fps.mkv"))
    out = list(video_windows(seg, SPEC, horizon=2))
    assert len(out) == 1 and isinstance(out[0], DeadLetter)
    assert out[0].reason.startswith("segment 4/6 (from frame ") and out[0].video_id == "ffv1_10fps.mkv"
