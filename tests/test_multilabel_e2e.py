"""`--task multilabel` end to end: real ingest of the multi-shape corpus, training, evaluate, predict, errors."""
import csv
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipforge import synth
from pipelines import ingest, predict
from schemas import features as fk
from schemas.metadata import DatasetMetadata
from schemas.tasks import MULTILABEL
from tests.conftest import read_dataset
from trainer import evaluation
from trainer import main as train_main

WINDOW_FLAGS = ["--frames", "4", "--stride", "2", "--fps", "12", "--size", "24x24", "--color", "gray"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    corpus = str(root / "corpus")
    clips = synth.make_corpus(corpus, n_videos=10, seed=0, size=32, seconds=1.5, extra_shapes=2)
    labels = os.path.join(corpus, "labels.csv")
    data = str(root / "data")
    assert ingest.run(["--input", corpus, "--labels", labels, "--output", data, "--task", MULTILABEL.name,
                       "--label-column", "shapes", "--splits", "0.6,0,0.4", *WINDOW_FLAGS]) == 0
    work = str(root / "train")
    assert train_main.run(["--data", data, "--workdir", work, "--arch", "conv3d", "--epochs", "1",
                           "--batch-size", "8", "--set", "class_weights=balanced"]) == 0
    return root, clips, data, os.path.join(work, "export")


def test_ingest_writes_label_sets_classes_and_per_class_counts(run):
    _, clips, data, _ = run
    meta = DatasetMetadata.load(data)
    assert meta.target.task == MULTILABEL.name
    assert meta.target.classes == tuple(sorted({s for c in clips for s in c.shapes}))
    by_video = {c.video: c.shapes for c in clips}
    records = read_dataset(data)
    counts = np.zeros(len(meta.target.classes), int)
    for rec in records["train"]:
        names = [meta.target.classes[k] for k in rec[fk.LABELS]]
        assert names == by_video[rec[fk.VIDEO_ID]]
        counts[rec[fk.LABELS]] += 1
    assert meta.stats["class_counts"] == counts.tolist() and meta.stats["windows"] == len(records["train"])


def test_evaluate_writes_the_multilabel_keys(run, tmp_path):
    root, _, data, export = run
    out = str(tmp_path / "eval")
    assert evaluation.run(["--model", export, "--data", data, "--split", "test", "--output", out]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    classes = DatasetMetadata.load(data).target.classes
    for side in ("model", "baseline"):
        block = m[side]
        for key in ("map", "gap", "hit_at_1", "micro_f1", "macro_f1", "map_skipped_classes"):
            assert key in block and key in block["video"], (side, key)
        assert set(block["per_class"]) == set(classes)
        assert set(block["per_class"][classes[0]]) == {"ap", "precision", "recall", "f1", "support"}
        assert block["video"]["videos"] == m["videos"]
    assert 0 <= m["model"]["map"] <= 1 and 0 <= m["baseline"]["map"] <= 1
    html = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert all(f'id="{sid}"' in html for sid in MULTILABEL.report_sections)


def test_predict_writes_probabilities_and_label_names(run, tmp_path):
    root, clips, data, export = run
    out = str(tmp_path / "pred")
    assert predict.run(["--model", export, "--input", str(root / "corpus"), "--output", out]) == 0
    classes = DatasetMetadata.load(data).target.classes
    windows = pq.read_table(os.path.join(out, "windows")).to_pylist()
    videos = pq.read_table(os.path.join(out, "videos.parquet")).to_pylist()
    assert len(videos) == len(clips)
    for r in windows:
        assert len(r["probabilities"]) == len(classes) and all(0 <= p <= 1 for p in r["probabilities"])
        assert r["labels"] == [c for c, p in zip(classes, r["probabilities"]) if p >= 0.5]
    for v in videos:
        mine = [r["probabilities"] for r in windows if r["video"] == v["video"]]
        np.testing.assert_allclose(v["mean_probabilities"], np.mean(mine, axis=0), rtol=1e-9)
        assert v["labels"] == [c for c, p in zip(classes, v["mean_probabilities"]) if p >= 0.5]


def test_a_class_in_no_training_video_stops_ingest_before_any_work(run, tmp_path, capsys):
    root, clips, _, _ = run
    labels = str(tmp_path / "labels.csv")
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "shapes", "split"])
        for i, c in enumerate(clips):
            w.writerow([c.video, ";".join(c.shapes + ["zebra"] * (i == 3)), "test" if i == 3 else "train"])
    out = str(tmp_path / "never")
    assert ingest.run(["--input", str(root / "corpus"), "--labels", labels, "--output", out,
                       "--task", MULTILABEL.name, "--label-column", "shapes", *WINDOW_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "row 4: class 'zebra' is in no train video" in err
    assert not os.path.exists(out)
