"""predict's transforms one at a time on TestPipeline, and predict(config, pipeline=...) end to end.

The export is a tiny real SavedModel: a two-layer Keras model for a real ingested dataset, written by
trainer/export.py (no training: the weights are random, the serving path is the real one).
"""
import json
import os

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import drift, ingest, signals
from pipelines.predict import PredictConfig, predict
from pipelines.predict.transforms import (VIDEOS_FILE, WINDOWS_DIR, CompareDrift, PredictWindows,
                                          WritePredictions)
from pipelines.predict.windows import VideoWindow
from pipelines.runners.options import local_runner
from schemas.export import load_export_metadata
from schemas.metadata import DatasetMetadata
from schemas.spec import TargetSpec
from tests.helpers import read_dataset
from tests.videos import make_video, zero_byte

CLASSES = ("down", "up")
EMBEDDING_DIM = 3


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """(dataset dir, export dir, new-videos dir): 2 gray 16x16 clips at 10 fps, T=4 stride 2, and the export
    of an untrained Flatten -> Dense(embedding) -> Dense(softmax) model for them."""
    import keras

    from trainer.export import export_model
    root = tmp_path_factory.mktemp("predict_transforms")
    videos, new = root / "videos", root / "new"
    videos.mkdir()
    new.mkdir()
    for name, frames in (("a.mkv", 12), ("b.mkv", 10)):
        make_video(str(videos / name), frames=frames)
        os.link(videos / name, new / name)
    zero_byte(str(new / "empty.mp4"))
    (root / "labels.csv").write_text("video,label\na.mkv,up\nb.mkv,down\n")
    data = str(root / "ds")
    assert ingest.run(["--input", str(videos), "--labels", str(root / "labels.csv"), "--output", data,
                       "--task", "classification", "--frames", "4", "--stride", "2", "--fps", "10",
                       "--size", "16x16", "--color", "gray"]) == 0
    meta = DatasetMetadata.load(data)
    assert meta.target.classes == CLASSES
    keras.utils.set_random_seed(7)
    frames = keras.Input(meta.spec.window_shape, dtype="uint8", name="frames")
    x = keras.layers.Flatten(name="flatten")(keras.layers.Rescaling(1 / 255.0, name="scale")(frames))
    x = keras.layers.Dense(EMBEDDING_DIM, activation="tanh", name="embedding")(x)
    x = keras.layers.Dense(len(CLASSES), name="logits")(x)
    model = keras.Model(frames, keras.layers.Softmax(name="prediction")(x), name="tiny")
    out = export_model(model, meta, data, str(root / "export"),
                       {"architecture": "tiny", "embedding_dim": EMBEDDING_DIM})
    return data, out, str(new)


def _serve(export_dir: str, frames: np.ndarray, signature: str = "serving_default", key: str = "prediction"):
    import tensorflow as tf
    return tf.saved_model.load(export_dir).signatures[signature](frames=tf.constant(frames))[key].numpy()


def _pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(runner=local_runner())


@pytest.mark.parametrize("embeddings", [False, True])
def test_predict_windows_rows_are_the_savedmodel_outputs(export, tmp_path, embeddings):
    _, model, _ = export
    meta, _ = load_export_metadata(model)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5,) + meta.spec.window_shape, dtype=np.uint8)
    windows = [VideoWindow("v.mkv" if i < 3 else "w.mkv", f"/in/{i}", 2 * i, 0.2 * i, frames[i], None, i % 2)
               for i in range(5)]
    probs = _serve(model, frames)
    embedded = _serve(model, frames, "embed", "embedding")
    assert not np.allclose(probs[0], probs[1])  # the rows below tell the windows apart

    def check(rows):
        rows = sorted(rows, key=lambda r: r["path"])
        assert [(r["video"], r["path"], r["start_frame"], r["start_time"], r["padded_frames"]) for r in rows] == [
            (w.video_id, w.path, w.start_frame, w.start_time, w.padded_frames) for w in windows]
        for r, p, e in zip(rows, probs, embedded):
            np.testing.assert_allclose(r["probabilities"], p, rtol=1e-5, atol=1e-6)
            assert (r["class_id"], r["class_name"]) == (int(np.argmax(p)), CLASSES[int(np.argmax(p))])
            if embeddings:
                assert len(r["embedding"]) == EMBEDDING_DIM
                np.testing.assert_allclose(r["embedding"], e, rtol=1e-5, atol=1e-6)
            else:
                assert "embedding" not in r

    with _pipeline() as p:
        rows = (p | beam.Create(windows)
                | PredictWindows(model, meta.target, str(tmp_path), batch_size=2, embeddings=embeddings))
        assert_that(rows, check)


def _row(video: str, start: int, probabilities: list[float]) -> dict:
    k = int(np.argmax(probabilities))
    return {"video": video, "path": f"/in/{video}", "start_frame": start, "start_time": start / 10,
            "padded_frames": 0, "class_id": k, "class_name": CLASSES[k], "probabilities": probabilities}


def test_write_predictions_writes_window_rows_and_a_row_per_video(tmp_path):
    target = TargetSpec("classification", classes=CLASSES)
    rows = [_row("a.mkv", 0, [0.9, 0.1]), _row("a.mkv", 2, [0.2, 0.8]), _row("a.mkv", 4, [0.7, 0.3]),
            _row("b.mkv", 0, [0.4, 0.6]), _row("b.mkv", 2, [0.3, 0.7])]
    out = str(tmp_path)
    with _pipeline() as p:
        written = p | beam.Create(rows) | WritePredictions(out, target)
        assert_that(written, equal_to([os.path.join(out, VIDEOS_FILE)]))
    got = pq.read_table(os.path.join(out, WINDOWS_DIR)).to_pylist()
    assert sorted(got, key=lambda r: (r["video"], r["start_frame"])) == rows
    videos = sorted(pq.read_table(os.path.join(out, VIDEOS_FILE)).to_pylist(), key=lambda r: r["video"])
    assert [(v["video"], v["windows"], v["majority_class"]) for v in videos] == [("a.mkv", 3, "down"),
                                                                                ("b.mkv", 2, "up")]
    np.testing.assert_allclose(videos[0]["mean_probabilities"], [0.6, 0.4])
    np.testing.assert_allclose(videos[1]["mean_probabilities"], [0.35, 0.65])


def test_write_predictions_scores_next_frame_windows_against_their_video_median(tmp_path):
    target = TargetSpec("next_frame", horizon=1)
    rows = [{"video": "a.mkv", "path": "/in/a.mkv", "start_frame": s, "start_time": s / 10, "padded_frames": 0,
             "frame_path": f"frames/a.mkv/{s:08d}.png", "psnr": psnr, "psnr_copy_last": 25.0}
            for s, psnr in ((0, 20.0), (2, 30.0), (4, 40.0))]
    with _pipeline() as p:
        _ = p | beam.Create(rows) | WritePredictions(str(tmp_path), target)
    got = sorted(pq.read_table(os.path.join(tmp_path, WINDOWS_DIR)).to_pylist(), key=lambda r: r["start_frame"])
    # MSE = 255^2 / 10^(psnr/10): 100x, 10x and 1x the 40 dB window's; the median is the 30 dB one
    np.testing.assert_allclose([r["anomaly_score"] for r in got], [10.0, 1.0, 0.1], rtol=1e-9)
    [video] = pq.read_table(os.path.join(tmp_path, VIDEOS_FILE)).to_pylist()
    assert video == {"video": "a.mkv", "windows": 3, "mean_psnr": 30.0, "mean_psnr_copy_last": 25.0}


def test_compare_drift_combines_each_videos_segments_before_comparing(tmp_path):
    facts = {"codec": "ffv1", "width": 16, "height": 16, "rotation": 0, "source_fps": 10.0, "duration": 1.0}
    parts = [signals.VideoSignals("a.mkv", 1, (100, 7000, 500000, 400, 100), facts),
             signals.VideoSignals("a.mkv", 0, (100, 5000, 300000, 200, 90), facts),
             signals.VideoSignals("b.mkv", 0, (50, 500, 10000, 0, 49), facts)]
    a = signals.signal_row("a.mkv", (200, 12000, 800000, 600, 190), facts)
    assert (a["pixel_mean"], a["pixel_std"]) == (60.0, 20.0)  # 12000/200; sqrt(800000/200 - 60^2)
    new_rows = [a, signals.signal_row("b.mkv", (50, 500, 10000, 0, 49), facts)]
    reference_rows = [dict(r, split="train", pixel_mean=r["pixel_mean"] + 100) for r in new_rows]
    ref = drift.reference(reference_rows)
    out = str(tmp_path)
    with _pipeline() as p:
        written = p | beam.Create(parts) | CompareDrift(ref, out)
        assert_that(written, equal_to([os.path.join(out, drift.DRIFT_FILE)]))
    found = drift.load_drift(out)
    assert found == json.loads(json.dumps(drift.compare(ref, new_rows)))
    assert found["new"]["videos"] == 2 and found["signals"]["pixel_mean"]["verdict"] == "shifted"
    assert found["signals"]["codec"]["psi"] == 0.0


def test_predict_end_to_end_on_a_test_pipeline(export, tmp_path):
    data, model, new = export
    out = str(tmp_path / "pred")
    config = PredictConfig(model=model, input=new, output=out, batch_size=3, report_videos=1)
    assert predict(config, pipeline=_pipeline()) == out
    assert sorted(os.listdir(out)) == ["dead_letter.jsonl", "drift.json", "report.html", "videos.parquet",
                                       "windows"]
    rows = {(r["video"], r["start_frame"]): r for r in pq.read_table(os.path.join(out, WINDOWS_DIR)).to_pylist()}
    # 12 and 10 frames, T=4, stride 2: windows start at 0..8 and 0..6
    assert sorted(rows) == [("a.mkv", s) for s in range(0, 9, 2)] + [("b.mkv", s) for s in range(0, 7, 2)]
    records = [d for split in read_dataset(data).values() for d in split]
    assert len(records) == len(rows)
    for d in records:  # the same windows as ingest decoded, through the same SavedModel
        want = _serve(model, d["frames"][None])[0]
        np.testing.assert_allclose(rows[(d["video_id"], d["start_frame"])]["probabilities"], want, atol=1e-5)
    videos = {v["video"]: v["windows"] for v in pq.read_table(os.path.join(out, VIDEOS_FILE)).to_pylist()}
    assert videos == {"a.mkv": 5, "b.mkv": 4}
    dead = [json.loads(line) for line in open(os.path.join(out, "dead_letter.jsonl"), encoding="utf-8")]
    assert [d["video_id"] for d in dead] == ["empty.mp4"]
    assert drift.load_drift(out)["new"]["videos"] == 2
    page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert page.count('<section class="timeline"') == 1 and "videos listed</td><td>3<" in page
