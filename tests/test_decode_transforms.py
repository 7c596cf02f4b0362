"""The Beam transforms predict reuses: DecodeWindows on task-free windows, dead letters included."""
import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.dead_letters import WriteDeadLetter
from pipelines.inputs import VideoRef
from pipelines.predict.windows import DecodeWindows
from pipelines.runners.options import local_runner
from pipelines.sources import DEAD_LETTER, ReadVideos
from schemas.spec import WindowSpec
from tests import videos


def test_decode_windows_yields_pixels_and_dead_letters(tmp_path, index_clip):
    broken = videos.text_file(str(tmp_path / "broken.mp4"))
    spec = WindowSpec(frames=4, stride=3, fps=10, height=16, width=16, channels=1)
    refs = [VideoRef(index_clip, "index12.mkv"), VideoRef(broken, "broken.mp4")]
    with test_pipeline.TestPipeline(runner=local_runner()) as p:
        out = p | ReadVideos(refs) | DecodeWindows(spec, horizon=1)
        summary = out["windows"] | beam.Map(lambda w: (
            w.video_id, w.start_frame, w.start_time, [videos.frame_index(f) for f in w.frames],
            [videos.frame_index(f) for f in w.next_frames], w.frames.shape))
        expected = [("index12.mkv", s, s / 10, list(range(s, s + 4)), [s + 4], (4, 16, 16, 1)) for s in (0, 3, 6)]
        assert_that(summary, equal_to(expected), label="windows")
        dead = out[DEAD_LETTER] | beam.Map(lambda d: (d.video_id, d.stage, d.kind))
        assert_that(dead, equal_to([("broken.mp4", "probe", "probe_failed")]), label="dead")
        _ = out[DEAD_LETTER] | WriteDeadLetter(str(tmp_path / "predict_out"))
    assert "broken.mp4" in (tmp_path / "predict_out" / "dead_letter.jsonl").read_text()
