"""Multilabel: label sets in every label shape, their errors, records, AP/GAP by hand, predict columns, one PSNR."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.ingest.labels import check_training_classes, load_labels
from pipelines.predict import video_schema, window_schema
from schemas import features as fk
from schemas.codec import RecordCodec, RecordError
from schemas.errors import SetupError
from schemas.spec import TargetSpec, WindowSpec
from schemas.tasks import MULTILABEL, NEXT_FRAME, task_of
from trainer.evaluation import metrics as mt
from trainer.evaluation import ranking_metrics as rk

TASK = MULTILABEL.name


def _labels(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _at(table, video, t):
    v = table.videos[video].at(t)
    return None if v is None else [table.classes[k] for k in v]


# ------------------------------------------------------------------ labels


def test_per_video_label_sets_are_the_sorted_union(tmp_path):
    table = load_labels(_labels(tmp_path, "video,labels\na.mp4,dog;cat\nb.mp4,\nc.mp4, dog \n"), TASK, (), "labels")
    assert table.shape == "video" and table.classes == ("cat", "dog")
    assert _at(table, "a.mp4", 0) == ["cat", "dog"]
    assert _at(table, "b.mp4", 3.0) == []  # an empty cell: no class, still labelled
    assert _at(table, "c.mp4", 0) == ["dog"]


def test_segment_label_sets(tmp_path):
    table = load_labels(_labels(tmp_path, "video,start,end,tags\na,0,1,cat\na,1,2,\na,2,3,cat;bird\n"),
                        TASK, (), "tags")
    assert table.classes == ("bird", "cat")
    assert _at(table, "a", 0.5) == ["cat"] and _at(table, "a", 1.5) == [] and _at(table, "a", 2.5) == ["bird", "cat"]
    assert _at(table, "a", 3.5) is None  # outside every segment: unlabelled


def test_series_takes_the_row_at_or_before_the_time(tmp_path):
    table = load_labels(_labels(tmp_path, "video,time,labels\na,0,cat\na,1,dog;cat\na,2,\n"), TASK, (), "labels")
    assert table.shape == "series"
    assert _at(table, "a", -0.5) is None
    assert _at(table, "a", 0.0) == ["cat"] and _at(table, "a", 0.99) == ["cat"]
    assert _at(table, "a", 1.0) == ["cat", "dog"] and _at(table, "a", 1.5) == ["cat", "dog"]
    assert _at(table, "a", 9.0) == []  # after the last row: that row holds


@pytest.mark.parametrize("cell, message", [
    ("cat;;dog", "row 2: column 'labels' is 'cat;;dog': a class name is empty after trimming"),
    ("cat; ", "row 2: column 'labels' is 'cat; ': a class name is empty after trimming"),
])
def test_an_empty_class_name_names_the_row(tmp_path, cell, message):
    with pytest.raises(SetupError, match=message):
        load_labels(_labels(tmp_path, f"video,labels\na,cat\nb,{cell}\n"), TASK, (), "labels")


def test_a_malformed_cell_names_the_row(tmp_path):
    path = str(tmp_path / "labels.parquet")
    pq.write_table(pa.table({"video": ["a", "b"], "labels": [["cat"], ["dog", "cat"]]}), path)
    with pytest.raises(SetupError, match=r"row 1: column 'labels' holds \['cat'\], expected class names separated by ';'"):
        load_labels(path, TASK, (), "labels")


def test_no_class_at_all_and_a_missing_column_are_refused(tmp_path):
    with pytest.raises(SetupError, match="names no class in any row"):
        load_labels(_labels(tmp_path, "video,labels\na,\nb,\n"), TASK, (), "labels")
    with pytest.raises(SetupError, match=r"lacks column\(s\) \['labels'\] \(--label-column\)"):
        load_labels(_labels(tmp_path, "video,label\na,cat\n"), TASK, (), "labels")


def test_a_class_in_no_training_video_names_the_row(tmp_path):
    table = load_labels(_labels(tmp_path, "video,labels\na,cat\nb,cat;dog\nc,bird\n"), TASK, (), "labels")
    split = {"a": "train", "b": "test", "c": "train"}.get
    with pytest.raises(SetupError, match="row 2: class 'dog' is in no train video"):
        check_training_classes(table, split, {"a", "b", "c"})
    # a video that is not ingested teaches nothing either
    with pytest.raises(SetupError, match="row 3: class 'bird' is in no train video"):
        check_training_classes(table, lambda v: "train", {"a", "b"})
    check_training_classes(table, lambda v: "train", {"a", "b", "c"})


# ------------------------------------------------------------------ records


def test_records_carry_indices_and_parse_to_multi_hot():
    import tensorflow as tf
    spec = WindowSpec(frames=2, stride=2, fps=5.0, height=4, width=4, channels=1)
    codec = RecordCodec(spec, TargetSpec(TASK, classes=("bird", "cat", "dog")))
    frames = np.zeros((2, 4, 4, 1), np.uint8)
    for label, hot in (([2, 0], [1, 0, 1]), ([], [0, 0, 0]), ([1, 1], [0, 1, 0])):
        rec = codec.encode_window("v", 0, frames, label=label)
        assert codec.decode_numpy(rec)[fk.LABELS].tolist() == sorted(set(label))
        parsed = codec.parse_fn()(tf.constant(rec))
        assert parsed[fk.LABELS].dtype == tf.float32 and parsed[fk.LABELS].numpy().tolist() == hot
    with pytest.raises(RecordError, match=r"labels of v are \[3\], spec wants indices in \[0, 3\)"):
        codec.encode_window("v", 0, frames, label=[3])


# ------------------------------------------------------------------ metrics by hand


def test_average_precision_by_hand():
    # ranks: pos (P 1, R 1/2), neg, pos (P 2/3, R 1)
    assert rk.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # tied scores are one threshold: P 1/2 at R 1/2, then P 2/3 at R 1
    assert rk.average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.25 + 0.5 * 2 / 3)
    # a constant score gets the prevalence; no positive: undefined
    assert rk.average_precision([0, 1, 0, 0], [0.3] * 4) == pytest.approx(0.25)
    assert np.isnan(rk.average_precision([0, 0], [0.1, 0.9]))


TRUTH = np.array([[1, 0, 0, 0], [0, 1, 1, 0]], np.float64)
PROBS = np.array([[0.9, 0.2, 0.6, 0.15], [0.3, 0.8, 0.1, 0.05]])


def test_gap_hit_and_f1_by_hand():
    # top 2 of each window: (0.9 +), (0.6 -), (0.8 +), (0.3 -); 3 positives in all (one outside a top 2)
    assert rk.gap_at_k(TRUTH, PROBS, k=2) == pytest.approx((1 / 1 + 2 / 2) / 3)
    # k=20 takes every class: ranking .9+ .8+ .6- .3- .2- .15- .1+ .05- -> (1 + 1 + 3/7) / 3
    assert rk.gap_at_k(TRUTH, PROBS) == pytest.approx((1 + 1 + 3 / 7) / 3)
    assert rk.hit_at_1(TRUTH, PROBS) == 1.0
    assert rk.hit_at_1(TRUTH[::-1], PROBS) == 0.0
    r = rk.ranking_report(TRUTH, PROBS, ["a", "b", "c", "d"])
    # at 0.5: predicted {a, c} and {b}; tp 2, fp 1 (c in window 0), fn 1 (c in window 1)
    assert r["micro_f1"] == pytest.approx(2 / 3)
    assert r["macro_f1"] == pytest.approx((1 + 1 + 0) / 3)  # d: in no truth, never predicted: left out
    # AP a 1, b 1, c: .6 - then .1 + -> 1/2; d has no positive: skipped and counted
    assert r["map"] == pytest.approx(2.5 / 3) and r["map_classes"] == 3 and r["map_skipped_classes"] == 1
    assert np.isnan(r["per_class"]["d"]["ap"]) and r["per_class"]["c"]["support"] == 1
    assert r["per_class"]["c"] == {"ap": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_accumulator_streams_batches_and_scores_the_class_frequency_baseline():
    target = TargetSpec(TASK, classes=("a", "b", "c", "d"))
    acc = mt.make_accumulator(target, {"class_counts": [6, 2, 1, 0], "windows": 8})
    acc.update({fk.VIDEO_ID: ["v"], fk.LABELS: TRUTH[:1]}, PROBS[:1])
    acc.update({fk.VIDEO_ID: ["w"], fk.LABELS: TRUTH[1:]}, PROBS[1:])
    out = acc.result()
    assert out["model"]["map"] == pytest.approx(2.5 / 3) and acc.windows == 2
    base = out["baseline"]
    assert base["class_frequencies"] == {"a": 0.75, "b": 0.25, "c": 0.125, "d": 0.0}
    # every window scored alike: each AP is the prevalence (a, b, c: 1/2 each); a is >= 0.5 everywhere
    assert base["map"] == pytest.approx(0.5)
    assert base["hit_at_1"] == pytest.approx(0.5) and base["micro_f1"] == pytest.approx(2 * 1 / 2 * 1 / 3 / (1 / 2 + 1 / 3))
    assert out["model"]["video"]["videos"] == 2 and out["model"]["video"]["map"] == pytest.approx(2.5 / 3)


def test_video_level_averages_window_probabilities():
    target = TargetSpec(TASK, classes=("a", "b"))
    acc = mt.make_accumulator(target, {"class_counts": [1, 1], "windows": 2})
    # one video, two windows: a in the first only (the video holds a), b in neither
    acc.update({fk.VIDEO_ID: ["v", "v", "w"], fk.LABELS: np.array([[1, 0], [0, 0], [0, 1]])},
               np.array([[0.9, 0.2], [0.3, 0.6], [0.4, 0.7]]))
    video = acc.result()["model"]["video"]
    # v: mean probs (0.6, 0.4), truth {a}; w: (0.4, 0.7), truth {b} -> both APs 1
    assert video["map"] == pytest.approx(1.0) and video["micro_f1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="aggregate=vote applies to classification only, not multilabel"):
        mt.make_accumulator(target, {"class_counts": [1, 1], "windows": 2}, aggregate="vote")


# ------------------------------------------------------------------ predict columns, one PSNR


def test_predict_columns_per_window_and_per_video():
    target = TargetSpec(TASK, classes=("cat", "dog", "owl"))
    assert [f.name for f in window_schema(target)][-2:] == ["probabilities", "labels"]
    assert [f.name for f in video_schema(target)][-2:] == ["mean_probabilities", "labels"]
    row = task_of(target)
    rows = [row.window_row(target, np.array([0.9, 0.5, 0.1])), row.window_row(target, np.array([0.3, 0.2, 0.4]))]
    assert rows[0] == {"probabilities": [0.9, 0.5, 0.1], "labels": ["cat", "dog"]}  # p >= 0.5
    assert rows[1]["labels"] == []
    video = row.video_row(target, rows)
    assert video["mean_probabilities"] == pytest.approx([0.6, 0.35, 0.25]) and video["labels"] == ["cat"]


def test_predict_and_evaluate_give_the_same_psnr():
    """predict's per-window PSNR (its Parquet rows) and evaluate's (metrics.json) are one function."""
    rng = np.random.default_rng(0)
    target = TargetSpec(NEXT_FRAME.name, horizon=2)
    frames = rng.integers(0, 256, (1, 3, 8, 8, 1)).astype(np.uint8)
    truth = rng.integers(0, 256, (1, 2, 8, 8, 1)).astype(np.uint8)
    for pred in (rng.normal(128, 80, truth.shape), truth.astype(np.float64)):  # clipped values; a perfect frame
        acc = mt.make_accumulator(target)
        acc.update({fk.VIDEO_ID: ["v"], fk.FRAMES: frames, fk.NEXT_FRAMES: truth}, pred)
        evaluated = acc.result()
        row = NEXT_FRAME.window_row(target, pred[0], truth[0], frames[0, -1])
        assert row["psnr"] == pytest.approx(evaluated["model"]["psnr"], abs=1e-9)
        assert row["psnr_copy_last"] == pytest.approx(evaluated["baseline_copy_last"]["psnr"], abs=1e-9)
        assert row["psnr"] == pytest.approx(evaluated["model"]["video"]["psnr"], abs=1e-9)
    assert row["psnr"] == evaluated["model"]["psnr"] == 100.0  # the documented cap for a perfect frame
