"""`clipforge predict` end to end: real ingest, a real trained export, Beam RunInference, Parquet out."""
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipforge import synth
from pipelines import ingest, predict
from tests.helpers import read_dataset
from tests.videos import text_file, zero_byte
from trainer import main as train_main

TASK_FLAGS = {
    "classification": ["--task", "classification", "--label-column", "direction"],
    "next_frame": ["--task", "next_frame", "--horizon", "1"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    synth.make_corpus(str(root / "corpus"), n_videos=8, seed=3, size=32, seconds=1.5)
    broken = root / "new_videos"
    broken.mkdir()
    for name in sorted(os.listdir(root / "corpus"))[:3]:
        if name.endswith(".mp4"):
            os.link(root / "corpus" / name, broken / name)
    zero_byte(str(broken / "empty.mp4"))
    text_file(str(broken / "notes.mp4"))
    return root


_EXPORTS = {}


def _train(corpus, task):
    """Ingests the corpus and trains a 1-epoch conv3d for TASK once per module; returns the export."""
    if task in _EXPORTS:
        return _EXPORTS[task]
    data = str(corpus / f"ds_{task}")
    labels = ["--labels", str(corpus / "corpus" / "labels.csv")] if task != "next_frame" else []
    rc = ingest.run(["--input", str(corpus / "corpus"), *labels, "--output", data, "--frames", "4", "--stride", "2", "--fps", "12", "--size", "24x24",
                     "--color", "gray", *TASK_FLAGS[task]])
    assert rc == 0
    work = str(corpus / f"train_{task}")
    assert train_main.run(["--data", data, "--workdir", work, "--arch", "conv3d", "--epochs", "1",
                           "--batch-size", "8"]) == 0
    _EXPORTS[task] = (task, os.path.join(work, "export"))
    return _EXPORTS[task]


@pytest.fixture(scope="module", params=sorted(TASK_FLAGS))
def export(request, corpus):
    return _train(corpus, request.param)


def test_predict_writes_a_row_per_window_and_dead_letters_broken_videos(corpus, export, capsys):
    task, model = export
    out = str(corpus / f"pred_{task}")
    assert predict.run(["--model", model, "--input", str(corpus / "new_videos"), "--output", out,
                        "--batch-size", "4"]) == 0
    windows = pq.read_table(os.path.join(out, "windows")).to_pylist()
    videos = pq.read_table(os.path.join(out, "videos.parquet")).to_pylist()
    # 1.5 s at 12 fps = 18 frames; T=4, stride 2 -> windows start at 0,2,..,14 (next_frame needs 1 more frame)
    per_video = 8 if task == "classification" else 7
    assert len(videos) == 3 and all(v["windows"] == per_video for v in videos)
    assert len(windows) == 3 * per_video
    starts = sorted(r["start_frame"] for r in windows if r["video"] == videos[0]["video"])
    assert starts == list(range(0, 2 * per_video, 2))
    assert all(abs(r["start_time"] - r["start_frame"] / 12) < 1e-6 for r in windows)
    if task == "classification":
        with open(os.path.join(model, "metadata.json")) as f:
            classes = json.load(f)["target"]["classes"]
        for r in windows:
            assert abs(sum(r["probabilities"]) - 1) < 1e-4
            assert r["class_name"] == classes[r["class_id"]]
            assert r["class_id"] == int(np.argmax(r["probabilities"]))
    else:
        for r in windows:
            assert os.path.getsize(os.path.join(out, r["frame_path"])) > 0
            assert 0 < r["psnr"] <= 100 and 0 < r["psnr_copy_last"] <= 100
    dead = [json.loads(l) for l in open(os.path.join(out, "dead_letter.jsonl"))]
    assert sorted(d["video_id"] for d in dead) == ["empty.mp4", "notes.mp4"]
    assert all(d["reason"] for d in dead)
    assert "3 video(s)" in capsys.readouterr().out
    assert all(r["padded_frames"] == 0 for r in windows)


def _records(data: str):
    """Every decoded record of the dataset at DATA, all splits."""
    return [d for split in read_dataset(data).values() for d in split]


def test_predict_matches_the_savedmodel_called_directly(corpus):
    """The Beam path prepares windows exactly as ingest did: same inputs, same predictions."""
    import tensorflow as tf

    from schemas.metadata import DatasetMetadata
    _, model = _train(corpus, "classification")
    out = str(corpus / "pred_all")
    assert predict.run(["--model", model, "--input", str(corpus / "corpus"), "--output", out]) == 0
    rows = {(r["video"], r["start_frame"]): r for r in pq.read_table(os.path.join(out, "windows")).to_pylist()}
    data = str(corpus / "ds_classification")
    meta = DatasetMetadata.load(data)
    serve = tf.saved_model.load(model).signatures["serving_default"]
    checked = 0
    for d in _records(data):
        p = serve(frames=tf.constant(d["frames"][None]))["prediction"].numpy()[0]
        np.testing.assert_allclose(rows[(d["video_id"], d["start_frame"])]["probabilities"], p, atol=1e-5)
        checked += 1
    assert checked == sum(s["windows"] for s in meta.splits.values()) > 0


def test_predict_short_videos_pad_writes_one_padded_window(corpus, tmp_path):
    """--short-videos pad: a clip shorter than one window (4 frames + horizon 1) gives one row saying how many
    frames repeat its last one; the default drops it as too_short, as ingest does."""
    from tests.videos import make_video
    _, model = _train(corpus, "next_frame")
    new = tmp_path / "short"
    new.mkdir()
    make_video(str(new / "two.mkv"), frames=2, size=(32, 32), fps=12)  # 2 frames at the model's 12 fps
    out = str(tmp_path / "pad")
    assert predict.run(["--model", model, "--input", str(new), "--output", out, "--short-videos", "pad"]) == 0
    [row] = pq.read_table(os.path.join(out, "windows")).to_pylist()
    assert (row["video"], row["start_frame"], row["padded_frames"]) == ("two.mkv", 0, 3)
    assert 0 < row["psnr"] <= 100
    out = str(tmp_path / "drop")
    assert predict.run(["--model", model, "--input", str(new), "--output", out]) == 0
    dead = [json.loads(l) for l in open(os.path.join(out, "dead_letter.jsonl"))]
    assert [(d["video_id"], d["kind"]) for d in dead] == [("two.mkv", "too_short")]


def test_predict_setup_errors_exit_2(tmp_path, capsys):
    assert predict.run(["--model", str(tmp_path / "nope"), "--input", str(tmp_path), "--output",
                        str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_applies_the_limits_the_model_was_ingested_with():
    limits = predict.limits_of({"formats": ["mp4"], "max_pixels": 1000, "max_duration": 5})
    assert (limits.formats, limits.max_pixels, limits.max_duration) == (("mp4",), 1000, 5.0)
    default = predict.limits_of({})
    assert "matroska" in default.formats and "hls" not in default.formats


def test_predict_splits_long_videos_into_segments_with_the_same_rows(corpus):
    """--segment-seconds spreads a video over workers; the rows equal those of whole decodes."""
    from pipelines.inputs import VideoRef
    from pipelines.streams import plan_decode
    from schemas.export import load_export_metadata
    _, model = _train(corpus, "classification")
    meta, _ = load_export_metadata(model)
    clip = sorted(n for n in os.listdir(corpus / "new_videos") if n.startswith("clip"))[0]
    planned = list(plan_decode(VideoRef(str(corpus / "new_videos" / clip), clip), meta.spec, 0, 60,
                               predict.limits_of(meta.config), 0.5))
    assert len(planned) >= 2  # the flag below really splits these 1.5 s clips

    def rows(out, *flags):
        assert predict.run(["--model", model, "--input", str(corpus / "new_videos"), "--output", out, *flags,
                            "--direct_num_workers", "2"]) == 0
        table = pq.read_table(os.path.join(out, "windows")).to_pylist()
        return sorted((r["video"], r["start_frame"], tuple(np.round(r["probabilities"], 5))) for r in table)
    split = rows(str(corpus / "pred_split"), "--segment-seconds", "0.5")
    assert split == rows(str(corpus / "pred_whole"), "--segment-seconds", "0") and len(split) == 3 * 8
    assert predict.run(["--model", model, "--input", str(corpus / "new_videos"), "--output",
                        str(corpus / "pred_bad"), "--segment-seconds", "-1"]) == 2


def test_predict_embeddings_are_the_export_embed_signature(corpus, tmp_path, capsys):
    """--embeddings: per-window `embedding` (length D of the card) and per-video `mean_embedding`."""
    import shutil

    import tensorflow as tf
    _, model = _train(corpus, "classification")
    with open(os.path.join(model, "model_card.json")) as f:
        card = json.load(f)
    out = str(corpus / "pred_embed")
    assert predict.run(["--model", model, "--input", str(corpus / "new_videos"), "--output", out,
                        "--embeddings"]) == 0
    windows = pq.read_table(os.path.join(out, "windows"))
    import pyarrow as pa
    assert windows.schema.field("embedding").type.value_type == pa.float32()
    rows = {(r["video"], r["start_frame"]): r for r in windows.to_pylist()}
    assert len(rows) == 3 * 8 and all(len(r["embedding"]) == card["embedding_dim"] > 0 for r in rows.values())
    embed = tf.saved_model.load(model).signatures["embed"]
    checked = 0
    for d in _records(str(corpus / "ds_classification")):
        if (d["video_id"], d["start_frame"]) in rows:  # the same decode path as training
            want = embed(frames=tf.constant(d["frames"][None]))["embedding"].numpy()[0]
            np.testing.assert_allclose(rows[(d["video_id"], d["start_frame"])]["embedding"], want,
                                       rtol=1e-4, atol=1e-5)
            checked += 1
    assert checked == len(rows)
    for v in pq.read_table(os.path.join(out, "videos.parquet")).to_pylist():
        mine = [r["embedding"] for r in rows.values() if r["video"] == v["video"]]
        np.testing.assert_allclose(v["mean_embedding"], np.mean(mine, axis=0), rtol=1e-5, atol=1e-6)
    # An export without the embed signature (its card has no embedding_dim) is refused up front.
    old = str(tmp_path / "old_export")
    shutil.copytree(model, old)
    card.pop("embedding_dim")
    with open(os.path.join(old, "model_card.json"), "w") as f:
        json.dump(card, f)
    assert predict.run(["--model", old, "--input", str(corpus / "new_videos"), "--output",
                        str(tmp_path / "o"), "--embeddings"]) == 2
    assert "--embeddings" in capsys.readouterr().err and not os.path.exists(tmp_path / "o")


def test_predict_report_and_next_frame_anomaly_scores(corpus, export, tmp_path):
    """report.html: what was read, one timeline per video (up to --report-videos); next_frame anomaly_score."""
    import re
    task, model = export
    out = str(tmp_path / "pred")
    assert predict.run(["--model", model, "--input", str(corpus / "new_videos"), "--output", out,
                        "--report-videos", "2"]) == 0
    page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    windows = pq.read_table(os.path.join(out, "windows")).to_pylist()
    with open(os.path.join(model, "model_card.json")) as f:
        card = json.load(f)
    assert re.search(r"videos listed</td><td>5<", page) and re.search(r"videos predicted</td><td>3<", page)
    assert re.search(rf"windows</td><td>{len(windows)}<", page)
    assert re.search(r"dead-lettered videos</td><td>2<", page)
    assert "dead letters: " in page and card["dataset"]["fingerprint"] in page and card["architecture"] in page
    names = sorted({r["video"] for r in windows})
    timelines = re.findall(r'<section class="timeline" data-video="([^"]+)"><img alt="timeline" '
                           r'src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', page)
    assert timelines == names[:2]
    assert 'src="http' not in page and "<link" not in page  # self-contained: plots are embedded
    if task == "next_frame":
        assert 'id="anomalies"' in page
        for video in names:
            rows = [r for r in windows if r["video"] == video]
            mse = np.array([255.0 ** 2 / 10 ** (r["psnr"] / 10) for r in rows])
            np.testing.assert_allclose([r["anomaly_score"] for r in rows], mse / np.median(mse), rtol=1e-9)
    else:
        assert 'id="anomalies"' not in page and "anomaly_score" not in windows[0]
    assert predict.run(["--model", model, "--input", str(corpus / "new_videos"), "--output",
                        str(tmp_path / "bad"), "--report-videos", "-1"]) == 2


def test_predict_reads_frame_folders_as_ingest_does(corpus, tmp_path, capsys):
    """--frame-folders --source-fps: a folder of images is one video, decoded by the same code as at ingest;
    its rows equal those of the same frames as a (lossless) video file."""
    from PIL import Image

    from tests.videos import index_frames, write_frames
    _, model = _train(corpus, "next_frame")
    frames = index_frames(10, 32, 32, 1)
    folder = tmp_path / "folders" / "cam" / "seq"
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f[:, :, 0], "L").save(folder / f"{i + 1}.png")  # 1.png .. 10.png, natural order
    video = tmp_path / "video"
    video.mkdir()
    write_frames(str(video / "seq.mkv"), frames, 12)

    def rows(inp, out, *flags):
        assert predict.run(["--model", model, "--input", str(inp), "--output", str(tmp_path / out), *flags]) == 0
        table = pq.read_table(os.path.join(tmp_path / out, "windows")).to_pylist()
        return [(r["video"], r["start_frame"], round(r["psnr"], 4)) for r in sorted(table, key=lambda r: r["start_frame"])]
    got = rows(tmp_path / "folders", "pred_folders", "--frame-folders", "--source-fps", "12")
    # 10 frames at 12 fps, T=4 + horizon 1, stride 2: windows at 0, 2, 4
    assert [(v, s) for v, s, _ in got] == [("cam/seq", 0), ("cam/seq", 2), ("cam/seq", 4)]
    assert [p for _, _, p in got] == [p for _, _, p in rows(video, "pred_video")]
    assert predict.run(["--model", model, "--input", str(tmp_path / "folders"), "--output",
                        str(tmp_path / "bad"), "--frame-folders"]) == 2
    assert "--source-fps" in capsys.readouterr().err
