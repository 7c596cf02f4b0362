"""The output directory: staging and atomic replacement, shard record counts, automatic shard counts."""
import os

import pytest

from pipelines import staging as staging_dir
from pipelines.ingest import dataset_dir as output
from pipelines.ingest.dataset_dir import MAX_SHARD_BYTES, estimate_num_shards
from pipelines.staging import prepare_output, publish
from schemas import tfrecord
from schemas.errors import SetupError
from schemas.spec import WindowSpec
from schemas.tfrecord import CorruptRecordError, write_records


@pytest.mark.parametrize("via", ["local", "filesystems"])
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_count_records_reads_only_the_headers(tmp_path, compression, via):
    count = output.count_records if via == "filesystems" else tfrecord.count_records
    path = str(tmp_path / "shard")
    records = [os.urandom(n) for n in (0, 1, 100, 70_000, 5)]
    assert write_records(path, records, compression) == 5
    assert count(path, compression) == 5
    empty = str(tmp_path / "empty")
    write_records(empty, [], compression)
    assert count(empty, compression) == 0


@pytest.mark.parametrize("count", [output.count_records, tfrecord.count_records])
def test_count_records_refuses_a_corrupt_header_and_a_cut_short_record(tmp_path, count):
    path = tmp_path / "shard"
    write_records(str(path), [b"abc", b"defg"])
    data = bytearray(path.read_bytes())
    data[3 + 16 + 2] ^= 0xFF  # a length byte of the second record
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="record 1 at byte offset 19: length checksum mismatch"):
        count(str(path), "none")
    write_records(str(path), [b"abc", b"defg"])
    path.write_bytes(path.read_bytes()[:-2])  # the second record loses half its data CRC
    with pytest.raises(CorruptRecordError, match="record 1 at byte offset 19: truncated record data"):
        count(str(path), "none")


@pytest.mark.parametrize("encoding", ["png", "jpeg", "raw"])
def test_automatic_shards_hold_100_to_200_mib(encoding):
    spec = WindowSpec(frames=16, stride=8, fps=10, height=112, width=112, channels=3, encoding=encoding)
    per_frame = {"raw": 1.0, "png": 0.55, "jpeg": 0.15}[encoding] * 112 * 112 * 3
    fractions = (0.8, 0.1, 0.1)
    for hours in [0.01 * 1.3 ** k for k in range(40)]:  # 36 s to ~1000 h
        counts = estimate_num_shards(hours * 3600, spec, 0, fractions, "none")
        total = hours * 3600 * 10 / 8 * 16 * per_frame
        for frac, n in zip(fractions, counts):
            if total * frac > MAX_SHARD_BYTES:
                assert 100 * 2 ** 20 < total * frac / n <= MAX_SHARD_BYTES, (hours, frac, n)
            else:
                assert n == 1


def test_staging_then_atomic_replacement(tmp_path):
    out = tmp_path / "data"
    first = prepare_output(str(out), overwrite=False)
    assert os.path.dirname(first.work) == str(tmp_path) and os.path.basename(first.work).startswith(".data.tmp-")
    (tmp_path / os.path.basename(first.work) / "old_shard").write_text("1")
    publish(first)
    assert os.listdir(out) == ["old_shard"]
    with pytest.raises(SetupError, match="already exists"):
        prepare_output(str(out), overwrite=False)
    second = prepare_output(str(out), overwrite=True)
    assert os.listdir(out) == ["old_shard"]  # untouched until the new dataset is complete
    (tmp_path / os.path.basename(second.work) / "new_shard").write_text("2")
    publish(second)
    assert os.listdir(out) == ["new_shard"] and sorted(os.listdir(tmp_path)) == ["data"]


def test_only_staging_of_a_dead_run_on_this_machine_is_removed(tmp_path):
    import json
    import socket
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a pid that has just exited
    owners = {"dead": {"host": socket.gethostname(), "pid": int(dead)},
              "live": {"host": socket.gethostname(), "pid": os.getpid()},
              "elsewhere": {"host": "another-machine.example", "pid": int(dead)}, "unreadable": None}
    for name, owner in owners.items():
        (tmp_path / f".data.tmp-{name}").mkdir()
        (tmp_path / f".data.tmp-{name}.owner").write_text("{not json" if owner is None else json.dumps(owner))
    assert staging_dir.remove_abandoned(str(tmp_path), "data") == [str(tmp_path / ".data.tmp-dead")]
    assert sorted(n for n in os.listdir(tmp_path) if not n.endswith(".owner")) == \
        [".data.tmp-elsewhere", ".data.tmp-live", ".data.tmp-unreadable"]
