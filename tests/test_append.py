"""`clipforge ingest --append`: the same dataset as a fresh ingest, new shards only, changes, kills, settings."""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from clipforge import validate
from pipelines.ingest import run
from schemas.metadata import DatasetMetadata
from tests import videos
from tests.helpers import ROOT, read_dataset
from tests.test_ingest_faults import snapshot, start_ingest, wait_for_decoder

FLAGS = ["--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16", "--color", "gray",
         "--task", "regression", "--splits", "0.5,0.25,0.25"]
# video id -> frames; ids chosen so that each split gets videos (a hash of the id decides)
CLIPS = {f"v{i}.mkv": 6 + i for i in range(8)}
FIRST = [f"v{i}.mkv" for i in range(0, 8, 2)]


def ingest(*argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = run(list(argv))
    return rc, buf.getvalue()


def write_labels(path, targets: dict) -> str:
    with open(path, "w") as f:
        f.write("video,target\n" + "".join(f"{v},{t}\n" for v, t in sorted(targets.items())))
    return str(path)


def windows(directory) -> dict:
    """{(video id, start frame): (split, frames bytes, target)} of every record."""
    out = {}
    for split, records in read_dataset(str(directory)).items():
        for r in records:
            key = (r["video_id"], int(r["start_frame"]))
            assert key not in out, f"window {key} twice"
            out[key] = (split, r["frames"].tobytes(), [round(float(t), 6) for t in r["target"]])
    return out


def manifest(directory) -> dict:
    rows = pq.read_table(os.path.join(directory, "videos.parquet")).to_pylist()
    return {r["video_id"]: r for r in rows}


def assert_same_dataset(appended, fresh):
    """The windows, stats, split counts and manifest of APPENDED equal those of a FRESH ingest."""
    assert windows(appended) == windows(fresh)
    a, f = DatasetMetadata.load(str(appended)), DatasetMetadata.load(str(fresh))
    for key in ("split", "videos", "windows", "pixels", "frames_decoded", "unlabelled_windows", "padded_windows"):
        assert a.stats[key] == f.stats[key], key
    for key in ("pixel_mean", "pixel_std", "target_mean", "target_std"):
        assert a.stats[key] == pytest.approx(f.stats[key], rel=1e-12, abs=1e-12), key
    assert {s: (i["videos"], i["windows"]) for s, i in a.splits.items()} == \
        {s: (i["videos"], i["windows"]) for s, i in f.splits.items()}
    assert a.dead_letter["count"] == f.dead_letter["count"] and a.dead_letter["reasons"] == f.dead_letter["reasons"]
    assert a.leakage == f.leakage and a.fingerprint == f.fingerprint
    keep = ("split", "status", "kind", "windows", "frames", "sha256", "size", "label_hash", "pixel_sum", "pixel_sumsq")
    assert {v: {k: r[k] for k in keep} for v, r in manifest(appended).items()} == \
        {v: {k: r[k] for k in keep} for v, r in manifest(fresh).items()}
    assert validate.validate_dataset(str(appended), log=lambda *_: None) == []
    # the drift reference is the training split's as a fresh ingest computes it
    assert json.load(open(os.path.join(appended, "drift_reference.json"))) == \
        json.load(open(os.path.join(fresh, "drift_reference.json")))


@pytest.fixture()
def corpus(tmp_path):
    """tmp/all (8 index clips), tmp/in (the first half of them), labels for all."""
    (tmp_path / "all").mkdir()
    (tmp_path / "in").mkdir()
    for name, n in CLIPS.items():
        videos.make_video(str(tmp_path / "all" / name), frames=n)
    for name in FIRST:
        shutil.copy2(tmp_path / "all" / name, tmp_path / "in" / name)
    videos.text_file(str(tmp_path / "in" / "bad.mp4"))  # dead-lettered once, never decoded again
    labels = write_labels(tmp_path / "labels.csv", {**{v: i * 0.5 for i, v in enumerate(CLIPS)}, "bad.mp4": 1.0})
    rc, out = ingest("--input", str(tmp_path / "in"), "--labels", labels, "--output", str(tmp_path / "ds"), *FLAGS)
    assert rc == 0, out
    return tmp_path, labels


def add_rest(root):
    for name in CLIPS:
        if name not in FIRST:
            shutil.copy2(root / "all" / name, root / "in" / name)


def fresh_ingest(root, labels, name="fresh"):
    rc, out = ingest("--input", str(root / "in"), "--labels", labels, "--output", str(root / name), *FLAGS)
    assert rc == 0, out
    return root / name


def test_append_half_to_half_equals_a_fresh_ingest_and_keeps_old_shards(corpus):
    root, labels = corpus
    ds = root / "ds"
    before = DatasetMetadata.load(str(ds))
    old = {s["path"]: os.stat(ds / s["path"]) for i in before.splits.values() for s in i["shards"]}
    add_rest(root)
    rc, out = ingest("--input", str(root / "in"), "--labels", labels, "--output", str(ds), "--append", *FLAGS)
    assert rc == 0, out
    assert "decoded 4 new, 0 changed, 0 removed, 5 unchanged (not decoded)" in out
    assert_same_dataset(ds, fresh_ingest(root, labels))
    meta = DatasetMetadata.load(str(ds))
    assert meta.generation == 1 and meta.dead_letter["count"] == 1
    # drift.json compares the 4 decoded videos with the training split of the first half
    drift = json.load(open(ds / "drift.json"))
    assert drift["new"]["videos"] == 4 and drift["reference"]["videos"] == before.stats["videos"]
    assert set(drift["signals"]) >= {"pixel_mean", "pixel_std", "motion_energy", "resolution"}
    assert "drift vs the train split" in out
    assert [json.loads(line)["video_id"] for line in open(ds / "dead_letter.jsonl")] == ["bad.mp4"]
    assert manifest(ds)["bad.mp4"]["generation"] is None and manifest(ds)["v1.mkv"]["generation"] == 1
    listed = {s["path"] for i in meta.splits.values() for s in i["shards"]}
    # the old shards are the same files (hard links of the same inodes), the new ones are named by generation
    assert set(old) <= listed
    assert all(os.stat(ds / p).st_ino == st.st_ino for p, st in old.items())
    assert all("/part-g0001-" in "/" + p for p in listed - set(old)) and listed - set(old)
    # a second append with nothing new decodes nothing and changes no window
    rc, out = ingest("--input", str(root / "in"), "--labels", labels, "--output", str(ds), "--append", *FLAGS)
    assert rc == 0 and "decoded 0 new, 0 changed, 0 removed, 9 unchanged (not decoded)" in out, out
    assert_same_dataset(ds, root / "fresh")
    assert json.load(open(ds / "drift.json"))["new"]["videos"] == 0  # the last run's drift, not a stale one
    assert not [n for n in os.listdir(root) if n.startswith(".ds.tmp-")]


def test_changed_removed_relabelled_and_touched_videos(corpus):
    root, labels = corpus
    ds, inp = root / "ds", root / "in"
    add_rest(root)
    assert ingest("--input", str(inp), "--labels", labels, "--output", str(ds), "--append", *FLAGS)[0] == 0
    videos.write_frames(str(inp / "v0.mkv"), videos.index_frames(9)[::-1].copy(), fps=10)  # other bytes
    os.remove(inp / "v1.mkv")
    os.utime(inp / "v2.mkv", (1e9, 1e9))  # only the mtime: the sha256 says it is the same file
    targets = {**{v: i * 0.5 for i, v in enumerate(CLIPS) if v != "v1.mkv"}, "bad.mp4": 1.0}
    targets["v3.mkv"] = 42.0  # new label rows, same bytes
    labels = write_labels(root / "labels2.csv", targets)
    rc, out = ingest("--input", str(inp), "--labels", labels, "--output", str(ds), "--append", *FLAGS)
    assert rc == 0, out
    assert "decoded 0 new, 2 changed, 1 removed, 6 unchanged (not decoded)" in out
    assert "1 of the changed: same bytes, new label rows; 1 of them rewritten with the new targets without " \
        "decoding" in out
    fresh = fresh_ingest(root, labels)
    assert_same_dataset(ds, fresh)
    assert {t[2][0] for k, t in windows(ds).items() if k[0] == "v3.mkv"} == {42.0}
    assert manifest(ds)["v2.mkv"]["mtime"] == 1e9
    listed = [s["path"] for i in DatasetMetadata.load(str(ds)).splits.values() for s in i["shards"]]
    assert "test/part-g0002-t00000-of-00001.tfrecord" in listed  # v3's windows, retargeted
    assert "ingest: v0.mkv:" in out and "ingest: v3.mkv:" not in out  # the workers' progress lines
    # --keep-missing: a video gone from the input keeps its windows and manifest row
    kept = {k: v for k, v in windows(ds).items() if k[0] == "v4.mkv"}
    os.remove(inp / "v4.mkv")
    rc, out = ingest("--input", str(inp), "--labels", labels, "--output", str(ds), "--append", "--keep-missing", *FLAGS)
    assert rc == 0 and "decoded 0 new, 0 changed, 0 removed, 8 unchanged (not decoded)" in out, out
    assert kept and {k: v for k, v in windows(ds).items() if k[0] == "v4.mkv"} == kept
    assert "v4.mkv" in manifest(ds)
    # without it, the next append removes it: the dataset is a fresh ingest of what is left
    rc, out = ingest("--input", str(inp), "--labels", labels, "--output", str(ds), "--append", *FLAGS)
    assert rc == 0 and "decoded 0 new, 0 changed, 1 removed, 7 unchanged (not decoded)" in out, out
    assert_same_dataset(ds, fresh_ingest(root, labels, "fresh2"))


def test_changed_settings_are_refused_before_any_work(corpus):
    root, labels = corpus
    ds = root / "ds"
    before = snapshot(ds)
    add_rest(root)
    flags = [f if f != "16x16" else "8x8" for f in FLAGS]
    rc, out = ingest("--input", str(root / "in"), "--labels", labels, "--output", str(ds), "--append", *flags)
    assert rc == 2 and "size='8x8' differs from the dataset's size='16x16'" in out, out
    rc, out = ingest("--input", str(root / "in"), "--labels", labels, "--output", str(ds), "--append",
                     "--overwrite", *FLAGS)
    assert rc == 2 and "overwrite" in out, out
    rc, out = ingest("--input", str(root / "in"), "--labels", labels, "--output", str(root / "none"), "--append",
                     *FLAGS)
    assert rc == 2 and "not a finished dataset" in out, out
    # the labels split column may not move a known video
    moved = root / "moved.csv"
    moved.write_text("video,target,split\n" + "".join(f"{v},1.0,{'test' if v == 'v0.mkv' else ''}\n"
                                                        for v in CLIPS))
    assert manifest(ds)["v0.mkv"]["split"] == "validation"  # by the hash of its id
    rc, out = ingest("--input", str(root / "in"), "--labels", str(moved), "--output", str(ds), "--append", *FLAGS)
    assert rc == 2 and "would move 1 video(s) between splits ('v0.mkv' validation -> test)" in out, out
    assert snapshot(ds) == before


def test_killed_append_leaves_the_dataset_as_it_was(corpus):
    root, labels = corpus
    ds, inp = root / "ds", root / "in"
    add_rest(root)
    # a 10-minute clip at 1 fps resampled to 10 fps: 6,000 frames, long enough to be caught mid-decode
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=16x16:rate=1",
                    "-t", "600", "-c:v", "ffv1", "-pix_fmt", "gray", str(inp / "slow.mkv")], check=True)
    write_labels(labels, {**{v: i * 0.5 for i, v in enumerate(CLIPS)}, "bad.mp4": 1.0, "slow.mkv": 1.0})
    before = snapshot(ds)
    proc = start_ingest(["--input", str(inp), "--labels", labels, "--output", str(ds), "--append", *FLAGS,
                         "--video-timeout", "600"], root / "append.log")
    try:
        wait_for_decoder(proc, "slow.mkv")
        staged = [n for n in os.listdir(root) if n.startswith(".ds.tmp-") and (root / n).is_dir()]
        assert staged and snapshot(ds) == before
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert snapshot(ds) == before and validate.validate_dataset(str(ds), log=lambda *_: None) == []
    os.remove(inp / "slow.mkv")
    rc, out = ingest("--input", str(inp), "--labels", labels, "--output", str(ds), "--append", *FLAGS)
    assert rc == 0 and "decoded 4 new, 0 changed, 0 removed, 5 unchanged (not decoded)" in out, out
    assert "staging left by a killed run" in out
    assert not [n for n in os.listdir(root) if n.startswith(".ds.tmp-")]
    assert_same_dataset(ds, fresh_ingest(root, labels))


def test_append_killed_while_publishing_is_put_back(corpus):
    """Killed between publish's two renames: the old dataset is gone from its path; the next append restores it."""
    root, labels = corpus
    ds = root / "ds"
    before = snapshot(ds)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    work = root / ".ds.tmp-deadbeef"
    os.rename(ds, f"{work}.old")
    work.mkdir()
    (root / ".ds.tmp-deadbeef.owner").write_text(json.dumps({"host": os.uname().nodename,
                                                             "pid": int(dead.stdout)}))
    add_rest(root)
    rc, out = ingest("--input", str(root / "in"), "--labels", labels, "--output", str(ds), "--append", *FLAGS)
    assert rc == 0 and f"restored {ds}" in out, out
    assert "decoded 4 new, 0 changed, 0 removed, 5 unchanged (not decoded)" in out
    assert set(before) - {"metadata.json", "videos.parquet", "dead_letter.jsonl"} <= set(snapshot(ds))
    assert not [n for n in os.listdir(root) if n.startswith(".ds.tmp-")]


def test_append_through_the_cli_on_dask(corpus):
    root, labels = corpus
    pytest.importorskip("distributed")
    add_rest(root)
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-m", "clipforge.cli", "ingest", "--input", str(root / "in"), "--labels",
                          labels, "--output", str(root / "ds"), "--append", *FLAGS, "--runner", "dask"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "decoded 4 new, 0 changed, 0 removed, 5 unchanged (not decoded)" in out.stdout
    assert_same_dataset(root / "ds", fresh_ingest(root, labels))


def test_append_to_a_remote_dataset_commits_by_metadata_and_recovers(corpus):
    """A dataset behind a URL scheme (tests/remote_fs.py) takes the gs:// path: no directory rename,
    new files first, metadata.json as the commit, then the manifest moved into place."""
    from tests import remote_fs
    root, labels = corpus
    inp, local = root / "in", root / "remote"
    ds = remote_fs.url(local)
    rc, out = ingest("--input", str(inp), "--labels", labels, "--output", ds, *FLAGS)
    assert rc == 0, out
    add_rest(root)
    os.remove(inp / "v0.mkv")  # its shard holds no other video: rewritten to nothing, dropped
    # what a killed, uncommitted append of generation 1 leaves: a shard no metadata.json lists, a scratch dir
    stray = local / "train" / "part-g0001-00000-of-00001.tfrecord"
    stray.write_bytes(b"half a shard")
    (local / ".append-g0001").mkdir()
    (local / ".append-g0001" / "rows.pickle").write_bytes(b"")
    rc, out = ingest("--input", str(inp), "--labels", labels, "--output", ds, "--append", *FLAGS)
    assert rc == 0 and "decoded 4 new, 0 changed, 1 removed, 4 unchanged (not decoded)" in out, out
    assert stray.read_bytes() != b"half a shard" and not list((local / ".append-g0001").iterdir())
    assert_same_dataset(local, fresh_ingest(root, labels))
    on_disk = {os.path.relpath(os.path.join(d, f), local) for d, _, fs in os.walk(local) for f in fs}
    listed = {s["path"] for i in DatasetMetadata.load(str(local)).splits.values() for s in i["shards"]}
    assert on_disk == listed | {"metadata.json", "videos.parquet", "dead_letter.jsonl", "drift_reference.json",
                                "drift.json"}
    # killed after its metadata.json (the commit), before the manifest was moved into place: the next
    # append finishes that first, so it knows the videos generation 1 decoded
    new_manifest = (local / "videos.parquet").read_bytes()
    (local / ".append-g0001" / "videos.parquet").write_bytes(new_manifest)
    (local / "videos.parquet").write_bytes(b"stale")
    rc, out = ingest("--input", str(inp), "--labels", labels, "--output", ds, "--append", *FLAGS)
    assert rc == 0 and "decoded 0 new, 0 changed, 0 removed, 8 unchanged (not decoded)" in out, out
    assert_same_dataset(local, root / "fresh")


def test_relabelled_segments_retarget_or_fall_back_to_a_decode(tmp_path):
    """New segment rows: a video whose windows all keep a label gets new targets without a decode; one
    with a window the new rows leave uncovered is decoded again, as a fresh ingest would skip it."""
    inp = tmp_path / "in"
    inp.mkdir()
    for name, n in CLIPS.items():
        videos.make_video(str(inp / name), frames=n)

    def segments(path, rows):
        with open(path, "w") as f:
            f.write("video,start,end,target\n" + "".join(f"{v},{a},{b},{t}\n" for v, a, b, t in rows))
        return str(path)

    rows = [(v, 0, 100, i) for i, v in enumerate(CLIPS)]
    ds = tmp_path / "ds"
    first = segments(tmp_path / "a.csv", rows)
    assert ingest("--input", str(inp), "--labels", first, "--output", str(ds), *FLAGS)[0] == 0
    rows = [(v, a, b, t) for v, a, b, t in rows if v not in ("v5.mkv", "v6.mkv")]
    rows += [("v5.mkv", 0, 0.6, 7.5), ("v6.mkv", 0, 0.45, 1.0), ("v6.mkv", 0.45, 100, 2.0)]
    labels = segments(tmp_path / "b.csv", rows)
    rc, out = ingest("--input", str(inp), "--labels", labels, "--output", str(ds), "--append", *FLAGS)
    assert rc == 0, out
    assert "decoded 0 new, 2 changed, 0 removed, 6 unchanged (not decoded)" in out
    assert "2 of the changed: same bytes, new label rows; 1 of them rewritten with the new targets" in out
    assert "ingest: v5.mkv:" in out and "ingest: v6.mkv:" not in out
    fresh = tmp_path / "fresh"
    assert ingest("--input", str(inp), "--labels", labels, "--output", str(fresh), *FLAGS)[0] == 0
    assert_same_dataset(ds, fresh)
    got = windows(ds)
    assert sorted((k[1], v[2][0]) for k, v in got.items() if k[0] == "v6.mkv") == \
        [(0, 1.0), (2, 2.0), (4, 2.0), (6, 2.0), (8, 2.0)]
    assert DatasetMetadata.load(str(ds)).stats["unlabelled_windows"] == 2  # v5's last two windows


def test_classification_relabel_is_retargeted_and_a_new_class_refused(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for name, n in CLIPS.items():
        videos.make_video(str(inp / name), frames=n)
    flags = ["classification" if f == "regression" else f for f in FLAGS]

    def labels(path, classes):
        with open(path, "w") as f:
            f.write("video,label\n" + "".join(f"{v},{c}\n" for v, c in zip(CLIPS, classes)))
        return str(path)

    ds = tmp_path / "ds"
    assert ingest("--input", str(inp), "--labels", labels(tmp_path / "a.csv", "abababab"), "--output", str(ds),
                  *flags)[0] == 0
    relabelled = labels(tmp_path / "b.csv", "bbababab")  # v0: a -> b
    rc, out = ingest("--input", str(inp), "--labels", relabelled, "--output", str(ds), "--append", *flags)
    assert rc == 0 and "decoded 0 new, 1 changed, 0 removed, 7 unchanged (not decoded)" in out, out
    assert "1 of them rewritten with the new targets without decoding" in out and "ingest: v0.mkv:" not in out
    fresh = tmp_path / "fresh"
    assert ingest("--input", str(inp), "--labels", relabelled, "--output", str(fresh), *flags)[0] == 0
    assert windows_cls(ds) == windows_cls(fresh)
    assert DatasetMetadata.load(str(ds)).stats == DatasetMetadata.load(str(fresh)).stats
    before = snapshot(ds)
    rc, out = ingest("--input", str(inp), "--labels", labels(tmp_path / "c.csv", "cbababab"), "--output", str(ds),
                     "--append", *flags)
    assert rc == 2 and "a new class" in out and "'classes': ['a', 'b', 'c']" in out, out
    assert snapshot(ds) == before


def windows_cls(directory) -> dict:
    return {(r["video_id"], int(r["start_frame"])): (split, r["frames"].tobytes(), int(r["label"]))
            for split, records in read_dataset(str(directory)).items() for r in records}
