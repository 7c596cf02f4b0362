"""Faults around ingest: reruns into a finished dataset, a killed run, retried bundles, a timeout,
and `clipforge validate` on sound, truncated and bit-flipped shards."""
import collections
import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipelines.dead_letters import DeadLetter
from pipelines.ingest.engine import VideoJob
from pipelines.ingest.stats import VideoSummary
from pipelines.inputs import VideoRef
from pipelines.windows import count_windows
from schemas.metadata import DatasetMetadata, MissingMetadataError
from schemas.spec import TargetSpec, WindowSpec
from schemas.tfrecord import iter_records
from tests import videos
from tests.helpers import ROOT, ingest, process_video, read_dataset, validate_run

FLAGS = ["--task", "next_frame", "--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16",
         "--color", "gray"]
CLIPS = {f"c{i}.mkv": 6 + i for i in range(6)}
# slow.mkv: one frame a second for an hour; resampled to 100 fps it is 360,000 frames, minutes
# of decoding, so a run over it is reliably caught mid-way.
SLOW = ["--fps", "100", "--frames", "4", "--stride", "4", "--size", "16x16", "--color", "gray",
        "--encoding", "raw", "--num-shards", "1", "--splits", "1", "--task", "next_frame"]


def snapshot(directory) -> dict:
    """{relative path: sha256} of every file under a directory."""
    out = {}
    for d, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(d, name)
            out[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def processes(parent: int | None = None, name: str | None = None) -> dict[int, tuple[str, str]]:
    """{pid: (state, command line)} from /proc, filtered by parent pid and executable name."""
    out = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:  # ended meanwhile
            continue
        fields = rest.split()
        comm = head.split("(", 1)[1]
        if (parent is None or int(fields[1]) == parent) and (name is None or comm == name):
            out[int(entry)] = (fields[0], cmd)
    return out


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    (root / "videos").mkdir()
    for name, n in CLIPS.items():
        videos.make_video(str(root / "videos" / name), frames=n)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=16x16:rate=1",
                    "-t", "3600", "-c:v", "ffv1", str(root / "slow.mkv")], check=True)
    return root


@pytest.fixture(scope="module")
def plain(corpus):
    out = str(corpus / "plain")
    assert ingest("--input", str(corpus / "videos"), "--output", out, *FLAGS, "--splits", "0.5,0.5",
                  "--num-shards", "2")[0] == 0
    return out


def raw_records(directory) -> dict[str, collections.Counter]:
    meta = DatasetMetadata.load(directory)
    return {split: collections.Counter(r for p in meta.shard_paths(directory, split) for r in iter_records(p))
            for split in meta.splits}


def test_retried_bundles_write_the_same_records(corpus, plain):
    repeated = str(corpus / "repeated")
    assert ingest("--input", str(corpus / "videos"), "--output", repeated, *FLAGS, "--splits", "0.5,0.5",
                  "--num-shards", "2", "--direct_runner_bundle_repeat=2")[0] == 0
    first, second = raw_records(plain), raw_records(repeated)
    assert first == second  # the same serialized records, each exactly once, in the same splits
    keys = [(r["video_id"], r["start_frame"]) for recs in read_dataset(repeated).values() for r in recs]
    assert len(keys) == len(set(keys)) == sum(count_windows(n, 4, 2, 1) for n in CLIPS.values())
    assert all(first[s] for s in first)  # both splits hold records
    a, b = DatasetMetadata.load(plain), DatasetMetadata.load(repeated)
    assert {s: (i["videos"], i["windows"]) for s, i in a.splits.items()} == \
        {s: (i["videos"], i["windows"]) for s, i in b.splits.items()}
    assert not [d for _, dirs, _ in os.walk(repeated) for d in dirs if d.startswith("beam-temp")]


def test_rerun_refuses_without_overwrite_and_replaces_whole_with_it(corpus, capsys):
    out = str(corpus / "rerun")
    argv = ["--input", str(corpus / "videos"), "--output", out, *FLAGS, "--splits", "0.5,0.5"]
    assert ingest(*argv, "--num-shards", "3")[0] == 0
    old = snapshot(out)
    assert sum(n.startswith("train/part-") for n in old) == 3
    assert ingest(*argv, "--num-shards", "1")[0] == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert snapshot(out) == old
    assert ingest(*argv, "--num-shards", "1", "--frames", "3", "--overwrite")[0] == 0
    new = snapshot(out)
    meta = DatasetMetadata.load(out)
    listed = {s["path"] for info in meta.splits.values() for s in info["shards"]}
    # only the new run's files: one shard per split, none of the three old train shards
    files = {"metadata.json", "dead_letter.jsonl", "videos.parquet", "drift_reference.json"}
    assert set(new) == listed | files and len(listed) == 2
    assert not set(new) & (set(old) - files)
    assert meta.spec.frames == 3 and validate_run(out)[0] == 0
    assert not [n for n in os.listdir(corpus) if n.startswith(".rerun")]  # no staging left behind


def start_ingest(argv, log_path):
    log = open(log_path, "wb")
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "clipforge.cli", "ingest", *argv], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)


def wait_for_decoder(proc, video: str, timeout: float = 90) -> int:
    """The pid of the ffmpeg that `proc` runs on `video`, once it is decoding."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "ingest ended before it could be killed"
        found = [pid for pid, (_, cmd) in processes(proc.pid, "ffmpeg").items() if video in cmd]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no ffmpeg decoding {video} after {timeout}s")


def test_killed_ingest_leaves_no_finished_dataset_and_no_orphan(corpus, plain):
    slow = str(corpus / "slow.mkv")
    fresh, existing = corpus / "killed_fresh", corpus / "killed_overwrite"
    shutil.copytree(plain, existing)
    before = snapshot(existing)
    runs = [start_ingest(["--input", slow, "--output", str(fresh), *SLOW], corpus / "fresh.log"),
            start_ingest(["--input", slow, "--output", str(existing), *SLOW, "--overwrite"], corpus / "over.log")]
    try:
        decoders = [wait_for_decoder(p, slow) for p in runs]
        # mid-run: the dataset being replaced is still the old, whole one
        assert snapshot(existing) == before and validate_run(str(existing))[0] == 0
        for p in runs:
            p.send_signal(signal.SIGKILL)
            assert p.wait(30) == -signal.SIGKILL
    finally:
        for p in runs:
            if p.poll() is None:
                p.kill()
    deadline = time.time() + 10  # the kernel's death signal takes ffmpeg down with its parent
    while any(alive(pid) for pid in decoders) and time.time() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in decoders if alive(pid)], "ffmpeg outlived the killed ingest"

    assert not fresh.exists()
    with pytest.raises(MissingMetadataError, match="killed_fresh does not exist"):
        DatasetMetadata.load(str(fresh))
    staged = [corpus / n for n in os.listdir(corpus) if n.startswith(".killed_fresh.tmp-") and (corpus / n).is_dir()]
    assert len(staged) == 1 and "metadata.json" not in os.listdir(staged[0])
    with pytest.raises(MissingMetadataError, match="has no metadata.json.*killed"):
        DatasetMetadata.load(str(staged[0]))
    rc, _, err = validate_run(str(staged[0]))
    assert rc == 2 and "has no metadata.json" in err  # a wrong path: a set-up error
    # the killed --overwrite run left the old dataset exactly as it was
    assert snapshot(existing) == before and validate_run(str(existing))[0] == 0
    # the next run for the same output removes the killed run's staging (its owner pid is gone)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc, _ = ingest("--input", str(corpus / "videos"), "--output", str(fresh), *FLAGS, "--splits", "1")
    assert rc == 0 and f"removed {staged[0]}: staging left by a killed run" in err.getvalue(), err.getvalue()
    assert not [n for n in os.listdir(corpus) if n.startswith(".killed_fresh")]  # nor its owner file
    assert DatasetMetadata.load(str(fresh)).splits["train"]["windows"] > 0


def test_ffmpeg_dies_with_a_killed_worker():
    """Even an ffmpeg that writes nothing to its pipe (so no broken pipe would stop it)."""
    code = ("import time; from pipelines.subprocess_guard import ToolProcess; "
            "tp = ToolProcess(['ffmpeg', '-nostdin', '-v', 'error', '-re', '-f', 'lavfi', '-i', "
            "'testsrc=size=16x16:rate=10', '-f', 'null', '-'], timeout=None); "
            "print(tp.proc.pid, flush=True); time.sleep(60)")
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    pid = int(worker.stdout.readline())
    try:
        time.sleep(0.5)
        assert alive(pid) and "testsrc" in processes(worker.pid, "ffmpeg")[pid][1]  # running in real time
        worker.kill()
        worker.wait(30)
        deadline = time.time() + 10
        while alive(pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "ffmpeg outlived its killed worker"
    finally:
        worker.stdout.close()
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_timeout_kills_ffmpeg_and_leaves_no_child(corpus):
    spec = WindowSpec(frames=4, stride=4, fps=100, height=16, width=16, channels=1, encoding="raw")
    job = VideoJob(spec=spec, target=TargetSpec("next_frame", horizon=1), timeout=1.0)
    start = time.time()
    outs = list(process_video(VideoRef(str(corpus / "slow.mkv"), "slow.mkv"), job, str(corpus)))
    elapsed = time.time() - start
    summary = outs[-1]
    # windows decoded before the timeout are kept, and the video is counted as partial
    assert isinstance(summary, VideoSummary) and not any(isinstance(o, DeadLetter) for o in outs)
    assert "did not finish in" in summary.partial and 0 < summary.windows < 90_000
    assert elapsed < 10
    assert processes(parent=os.getpid(), name="ffmpeg") == {}  # not even a zombie
    assert processes(parent=os.getpid(), name="ffprobe") == {}


def shard_with_records(directory, least: int = 2) -> tuple[str, list[int], list[int]]:
    """A shard (relative path) with >= `least` records, its record offsets and lengths."""
    meta = DatasetMetadata.load(directory)
    for info in meta.splits.values():
        for shard in info["shards"]:
            lengths = [len(r) for r in iter_records(os.path.join(directory, shard["path"]))]
            if len(lengths) >= least:
                offsets = [sum(16 + n for n in lengths[:i]) for i in range(len(lengths))]
                return shard["path"], offsets, lengths
    raise AssertionError("no shard with enough records")


def test_validate_passes_a_sound_dataset(plain):
    rc, out, err = validate_run(plain)
    assert rc == 0 and "OK: 0 problem(s)" in out and err == ""


def test_validate_names_the_shard_and_offset_of_a_truncated_record(plain, tmp_path):
    damaged = str(tmp_path / "truncated")
    shutil.copytree(plain, damaged)
    rel, offsets, lengths = shard_with_records(damaged)
    path = os.path.join(damaged, rel)
    last = len(offsets) - 1
    with open(path, "r+b") as f:
        f.truncate(offsets[last] + 12 + lengths[last] // 2)  # the last record's data cut in half
    rc, _, err = validate_run(damaged)
    assert rc == 1
    assert f"{rel}: record {last} at byte offset {offsets[last]}: truncated record data" in err


def test_validate_names_the_shard_and_offset_of_a_flipped_bit(plain, tmp_path):
    damaged = str(tmp_path / "flipped")
    shutil.copytree(plain, damaged)
    rel, offsets, lengths = shard_with_records(damaged)
    path = os.path.join(damaged, rel)
    data = bytearray(open(path, "rb").read())
    data[offsets[1] + 12 + lengths[1] // 2] ^= 0x10  # one bit in the second record's payload
    open(path, "wb").write(bytes(data))
    rc, _, err = validate_run(damaged)
    assert rc == 1
    assert f"{rel}: record 1 at byte offset {offsets[1]}: data checksum mismatch" in err
    assert f"read 1 of {len(offsets)} records before the error" in err
