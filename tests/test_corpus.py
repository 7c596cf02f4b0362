"""Real corpus layouts: ids are paths under the root, folder labels, official split lists, groups."""
import collections
import contextlib
import io
import json
import os

import pytest

from pipelines.ingest import run
from pipelines.ingest.split import split_of
from pipelines.inputs import list_videos
from schemas.metadata import DatasetMetadata
from tests import videos
from tests.helpers import read_dataset

FLAGS = ["--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16", "--color", "gray", "--num-shards", "1"]
# A UCF101-like tree: class folders, clips named v_<class>_g<group>_c<clip>, official split lists.
CLIPS = {f"{c}/v_{c}_g{g:02d}_c{k:02d}.mkv": 5 + (g + k) % 3 for c in ("Archery", "Bowling") for g in (1, 2, 3)
         for k in (1, 2)}
TRAIN = [v for v in CLIPS if "_g03_" not in v and not v.endswith("g02_c02.mkv")]
TEST = [v for v in CLIPS if "_g03_" in v]
UNLISTED = [v for v in CLIPS if v.endswith("g02_c02.mkv")]


def ingest(*argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = run(list(argv))
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    tree = root / "UCF"
    for name, n in CLIPS.items():
        (tree / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
        videos.make_video(str(tree / name), frames=n)
    # official lists: "<id> <class index>" in the train list, "<id>" in the test list
    (root / "trainlist01.txt").write_text("".join(f"{v} {1 + v.startswith('Bowling')}\n" for v in TRAIN))
    (root / "testlist01.txt").write_text("".join(f"{v}\n" for v in TEST))
    return root


def test_ids_are_paths_under_the_root_for_every_kind_of_input(tmp_path):
    for name in ("cam_a/0001.mkv", "cam_b/0001.mkv", "cam_b/deep/x.mkv"):
        (tmp_path / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
        videos.make_video(str(tmp_path / name), frames=5)
    ids = lambda spec: [r.video_id for r in list_videos(spec)[0]]  # noqa: E731
    assert ids(str(tmp_path)) == ["cam_a/0001.mkv", "cam_b/0001.mkv", "cam_b/deep/x.mkv"]
    assert ids(str(tmp_path / "cam_*" / "*.mkv")) == ["cam_a/0001.mkv", "cam_b/0001.mkv"]
    assert ids(str(tmp_path / "cam_b" / "**")) == ["0001.mkv", "deep/x.mkv"]
    assert ids(str(tmp_path / "cam_b" / "0001.mkv")) == ["0001.mkv"]
    listing = tmp_path / "cam_b" / "list.txt"
    listing.write_text(f"deep/x.mkv\n{tmp_path}/cam_a/0001.mkv\n{tmp_path}/cam_b/0001.mkv\n")
    # relative entries: under the list's folder; absolute ones: under their longest common folder
    assert ids(str(listing)) == ["cam_a/0001.mkv", "cam_b/0001.mkv", "deep/x.mkv"]


def test_two_files_with_one_name_are_two_videos_and_a_bare_label_name_must_be_unique(tmp_path):
    d = tmp_path / "v"
    for name, n in (("cam_a/0001.mkv", 6), ("cam_b/0001.mkv", 9), ("cam_b/0002.mkv", 7)):
        (d / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
        videos.make_video(str(d / name), frames=n)
    labels = tmp_path / "labels.csv"
    labels.write_text("video,target\ncam_a/0001.mkv,1\ncam_b/0001.mkv,2\n0002.mkv,3\n")
    out = str(tmp_path / "out")
    rc, printed = ingest("--input", str(d), "--labels", str(labels), "--output", out, "--task", "regression",
                         "--splits", "1", *FLAGS)
    assert rc == 0, printed
    recs = read_dataset(out)["train"]
    got = collections.defaultdict(set)
    for r in recs:
        got[r["video_id"]].add(float(r["target"][0]))
    assert dict(got) == {"cam_a/0001.mkv": {1.0}, "cam_b/0001.mkv": {2.0}, "cam_b/0002.mkv": {3.0}}
    assert DatasetMetadata.load(out).schema_version == 2
    # a bare name that two videos share: an error before any work, naming both paths
    labels.write_text("video,target\n0001.mkv,1\n0002.mkv,3\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc, _ = ingest("--input", str(d), "--labels", str(labels), "--output", str(tmp_path / "out2"),
                       "--task", "regression", *FLAGS)
    assert rc == 2 and "'0001.mkv'" in err.getvalue()
    assert str(d / "cam_a" / "0001.mkv") in err.getvalue() and str(d / "cam_b" / "0001.mkv") in err.getvalue()
    assert not (tmp_path / "out2").exists()


def test_a_list_naming_one_path_twice_dead_letters_the_second(tmp_path):
    videos.make_video(str(tmp_path / "a.mkv"), frames=6)
    (tmp_path / "list.txt").write_text("a.mkv\n./a.mkv\n")
    out = str(tmp_path / "out")
    rc, printed = ingest("--input", str(tmp_path / "list.txt"), "--output", out, "--task", "next_frame", *FLAGS)
    assert rc == 0, printed
    with open(os.path.join(out, "dead_letter.jsonl")) as f:
        assert [json.loads(line)["kind"] for line in f] == ["duplicate_video_id"]


def test_ucf_tree_with_folder_labels_and_official_split_lists(ucf, tmp_path):
    out = str(tmp_path / "out")
    rc, printed = ingest("--input", str(ucf / "UCF"), "--labels-from-folders", "--output", out,
                         "--task", "classification", "--split-lists",
                         f"train={ucf / 'trainlist01.txt'},test={ucf / 'testlist01.txt'}", *FLAGS)
    assert rc == 0, printed
    meta = DatasetMetadata.load(out)
    assert meta.target.classes == ("Archery", "Bowling") and sorted(meta.splits) == ["test", "train"]
    data = read_dataset(out)
    where = collections.defaultdict(set)
    for split, recs in data.items():
        for r in recs:
            where[r["video_id"]].add(split)
            assert meta.target.classes[r["label"]] == r["video_id"].split("/")[0]
    assert {v for v, s in where.items() if s == {"train"}} == set(TRAIN)
    assert {v for v, s in where.items() if s == {"test"}} == set(TEST)
    with open(os.path.join(out, "dead_letter.jsonl")) as f:
        dead = {d["video_id"]: d["kind"] for d in map(json.loads, f)}
    assert dead == {v: "not_in_split_lists" for v in UNLISTED}


@pytest.mark.parametrize("train_extra,test_extra,message", [
    (["Archery/v_Archery_g03_c01.mkv"], [], "is in two split lists"),
    ([], ["Bowling/v_Bowling_g09_c01.mkv"], "nearest: 'Bowling/v_Bowling_g0"),
])
def test_split_list_errors_come_before_any_work(ucf, tmp_path, train_extra, test_extra, message):
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text("\n".join(TRAIN + train_extra) + "\n")
    test.write_text("\n".join(TEST + test_extra) + "\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc, _ = ingest("--input", str(ucf / "UCF"), "--labels-from-folders", "--output", str(tmp_path / "out"),
                       "--task", "classification", "--split-lists", f"train={train},test={test}", *FLAGS)
    assert rc == 2 and message in err.getvalue(), err.getvalue()
    assert (train_extra or test_extra)[0] in err.getvalue() and not (tmp_path / "out").exists()


def test_group_pattern_keeps_every_group_in_one_split(ucf, tmp_path):
    out = str(tmp_path / "out")
    rc, printed = ingest("--input", str(ucf / "UCF"), "--labels-from-folders", "--output", out,
                         "--task", "classification", "--group-pattern", r"_g(\d+)_", "--splits", "0.5,0.25,0.25",
                         *FLAGS)
    assert rc == 0, printed
    by_group = collections.defaultdict(set)
    for split, recs in read_dataset(out).items():
        for r in recs:
            by_group[r["video_id"].split("_g")[1][:2]].add(split)
    assert set(by_group) == {"01", "02", "03"} and all(len(s) == 1 for s in by_group.values()), by_group
    # a video the pattern does not match: an error before any work, naming it
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc, _ = ingest("--input", str(ucf / "UCF"), "--labels-from-folders", "--output", str(tmp_path / "o2"),
                       "--task", "classification", "--group-pattern", r"_c(01)", *FLAGS)
    assert rc == 2 and "_c02.mkv" in err.getvalue() and not (tmp_path / "o2").exists()


def test_group_split_is_a_hash_of_the_group_alone():
    names, fractions = ("train", "validation", "test"), (0.6, 0.2, 0.2)
    ids = [f"c/v_g{g:03d}_c{k}.avi" for g in range(200) for k in range(4)]
    groups = {v: v.split("_g")[1][:3] for v in ids}
    split = {v: split_of(v, fractions, names, groups=groups) for v in ids}
    per_group = collections.defaultdict(set)
    for v, s in split.items():
        per_group[groups[v]].add(s)
    assert all(len(s) == 1 for s in per_group.values())
    assert 0.45 < collections.Counter(split.values())["train"] / len(ids) < 0.75
    # adding videos (a corpus half the size, then the whole) moves no video
    half = {v: groups[v] for v in ids[:400]}
    assert all(split_of(v, fractions, names, groups=half) == split[v] for v in ids[:400])
    assert split_of("x", fractions, names, assigned={"x": "test"}) == "test"


def test_split_column_in_labels_places_videos(tmp_path):
    for i in range(6):
        videos.make_video(str(tmp_path / f"v{i}.mkv"), frames=6)
    labels = tmp_path / "labels.csv"
    labels.write_text("video,label,split\n" + "".join(
        f"v{i}.mkv,{'ab'[i % 2]},{['test', 'validation', ''][i % 3]}\n" for i in range(6)))
    out = str(tmp_path / "out")
    rc, printed = ingest("--input", str(tmp_path), "--labels", str(labels), "--output", out,
                         "--task", "classification", "--splits", "1", *FLAGS)
    assert rc == 0, printed
    where = {r["video_id"]: s for s, recs in read_dataset(out).items() for r in recs}
    assert where == {"v0.mkv": "test", "v1.mkv": "validation", "v2.mkv": "train",
                     "v3.mkv": "test", "v4.mkv": "validation", "v5.mkv": "train"}
    labels.write_text("video,label,split\nv0.mkv,a,holdout\nv1.mkv,b,\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc, _ = ingest("--input", str(tmp_path), "--labels", str(labels), "--output", str(tmp_path / "o2"),
                       "--task", "classification", *FLAGS)
    assert rc == 2 and "'holdout'" in err.getvalue()


def test_a_schema_version_1_dataset_still_loads(tmp_path):
    videos.make_video(str(tmp_path / "a.mkv"), frames=6)
    out = str(tmp_path / "out")
    assert ingest("--input", str(tmp_path / "a.mkv"), "--output", out, "--task", "next_frame", *FLAGS)[0] == 0
    path = os.path.join(out, "metadata.json")
    d = json.load(open(path))
    d["schema_version"] = 1
    for key in ("provenance", "leakage", "decoder"):
        d.pop(key, None)
    json.dump(d, open(path, "w"))
    meta = DatasetMetadata.load(out)
    assert meta.schema_version == 1 and [r["video_id"] for r in read_dataset(out)["train"]][0] == "a.mkv"
    d["schema_version"] = 99
    json.dump(d, open(path, "w"))
    with pytest.raises(Exception, match="schema_version 99"):
        DatasetMetadata.load(out)

