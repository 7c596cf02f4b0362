"""Label tables: the three shapes, CSV and Parquet, lookups at a window's time, and set-up errors."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.ingest.labels import load_labels
from schemas.errors import SetupError


def write_csv(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_per_video_regression_csv_and_parquet_agree(tmp_path):
    csv = write_csv(tmp_path, "video,speed,angle,notes\n./a.mp4,1.5,-2,x\nb.mp4,3,4,y\n")
    pqt = str(tmp_path / "labels.parquet")
    pq.write_table(pa.table({"video_id": ["a.mp4", "b.mp4"], "speed": [1.5, 3.0], "angle": [-2, 4]}), pqt)
    for path, join in ((csv, "video"), (pqt, "video_id")):
        t = load_labels(path, "regression", ("speed", "angle"), "label")
        assert (t.shape, t.join_column, sorted(t.videos)) == ("video", join, ["a.mp4", "b.mp4"])
        np.testing.assert_array_equal(t.videos["a.mp4"].at(123.0), [1.5, -2.0])
        np.testing.assert_array_equal(t.videos["b.mp4"].at(0.0), [3.0, 4.0])
    assert load_labels(csv, "regression", ("speed", "angle"), "label").ignored == ["notes"]


def test_class_order_is_numeric_for_integer_labels_else_sorted(tmp_path):
    ints = write_csv(tmp_path, "video,label\na,10\nb,9\nc,2\n", "ints.csv")
    t = load_labels(ints, "classification", ("target",), "label")
    assert t.classes == ("2", "9", "10") and t.videos["a"].at(0) == 2 and t.videos["c"].at(0) == 0
    names = write_csv(tmp_path, "video,label\na,walk\nb,run\nc,walk\n", "names.csv")
    t = load_labels(names, "classification", ("target",), "label")
    assert t.classes == ("run", "walk") and t.videos["a"].at(0) == 1


def test_segments_cover_start_inclusive_end_exclusive(tmp_path):
    path = write_csv(tmp_path, "video,start,end,label\nv,1.0,2.0,b\nv,0.0,1.0,a\nv,3.0,4.0,a\n")
    v = load_labels(path, "classification", ("target",), "label").videos["v"]
    assert [v.at(t) for t in (0.0, 0.99, 1.0, 1.99)] == [0, 0, 1, 1]
    assert v.at(2.0) is None and v.at(2.5) is None and v.at(3.0) == 0 and v.at(4.0) is None
    assert v.at(-0.1) is None


def test_series_is_interpolated_linearly_and_not_extrapolated(tmp_path):
    path = write_csv(tmp_path, "video,time,speed\nv,1.0,10\nv,0.0,0\nv,2.0,40\nw,0.0,5\n")
    t = load_labels(path, "regression", ("speed",), "label")
    v = t.videos["v"]
    assert t.shape == "series"
    np.testing.assert_allclose([v.at(x)[0] for x in (0.0, 0.25, 1.0, 1.5, 2.0)], [0, 2.5, 10, 25, 40])
    assert v.at(2.01) is None and v.at(-0.01) is None
    np.testing.assert_allclose(t.videos["w"].at(0.0), [5.0])


def test_non_finite_targets_are_kept_for_the_dead_letter(tmp_path):
    path = write_csv(tmp_path, "video,speed\na,nan\nb,\nc,inf\nd,1\n")
    t = load_labels(path, "regression", ("speed",), "label")
    assert "row 1" in t.videos["a"].problem(("speed",))
    assert "row 2" in t.videos["b"].problem(("speed",))
    assert "inf" in t.videos["c"].problem(("speed",))
    assert t.videos["d"].problem(("speed",)) is None


@pytest.mark.parametrize("text,task,match", [
    ("name,target\na,1\n", "regression", "no 'video' or 'video_id' column"),
    ("video,speed\na,1\n", "regression", r"lacks column\(s\) \['target'\]"),
    ("video,target\na,1\nb,fast\n", "regression", "row 2: column 'target' holds 'fast'"),
    ("video,target\na,1\nb,2\na,3\n", "regression", r"rows \[1, 3\] all label video 'a'"),
    ("video,time,target\na,0,1\na,1,2\na,1,3\n", "regression", "rows 2 and 3 both give video 'a' at time 1"),
    ("video,time,target\na,0,1\na,x,2\n", "regression", "row 2: column 'time' holds 'x'"),
    ("video,start,end,label\na,0,2,x\na,1,3,y\n", "classification", "rows 1 and 2 give overlapping segments"),
    ("video,start,end,label\na,2,1,x\nb,0,1,y\n", "classification", "row 1: segment of 'a' has end 1 <= start 2"),
    ("video,start,label\na,0,x\n", "classification", "'start' without 'end'"),
    ("video,time,label\na,0,x\n", "classification", "only --task regression | multilabel read one"),
    ("video,label\na,x\nb,x\n", "classification", "at least two classes"),
    ("video,label\na,x\nb,\n", "classification", "row 2: column 'label' is empty"),
])
def test_setup_errors_name_the_problem(tmp_path, text, task, match):
    path = write_csv(tmp_path, text)
    with pytest.raises(SetupError, match=match) as e:
        load_labels(path, task, ("target",), "label")
    assert path in str(e.value)


def test_unreadable_labels_file(tmp_path):
    with pytest.raises(SetupError, match="cannot read labels file"):
        load_labels(str(tmp_path / "missing.csv"), "regression", ("target",), "label")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    with pytest.raises(SetupError, match="not readable CSV or Parquet"):
        load_labels(str(bad), "regression", ("target",), "label")
