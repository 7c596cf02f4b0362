"""Where an append writes: a staged local copy swapped in whole, or a remote dataset committed by metadata.json.

Local datasets: the new dataset is built in a hidden sibling directory (hard links to the old
shards the append keeps, copies of other files, new and rewritten shards, then videos.parquet,
dead_letter.jsonl and metadata.json) and renamed into place, as `ingest --overwrite` publishes; until that rename the
old directory is untouched, so a killed append leaves it exactly as it was.

Remote datasets (gs://...) have no directory rename: new and rewritten shards get names no
metadata.json refers to yet (part-gGGGG-...), the new manifest and dead letters wait in
DATASET/.append-gGGGG/, and writing metadata.json (generation G) is the commit. After it, the
waiting files are copied into place and the shards it no longer lists are deleted; the next
append finishes that step, or clears an uncommitted one, before it starts (`recover_remote`).
"""
from __future__ import annotations

import io
import json
import os
import shutil
from typing import Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from pipelines import staging as staging_dir
from pipelines.drift import DRIFT_FILE, DRIFT_REFERENCE_FILE
from pipelines.ingest import dataset_dir as out_dir
from pipelines.ingest.manifest import MANIFEST_FILE, write_manifest
from schemas.example_proto import parse_example
from schemas.metadata import DEAD_LETTER_FILE, METADATA_FILE, DatasetMetadata

# Files an append writes beside the manifest: moved into place with it after the commit (remote outputs).
SIDE_FILES = (DRIFT_REFERENCE_FILE, DRIFT_FILE)
SCRATCH_PREFIX = ".append-g"  # DATASET/.append-gGGGG/: one append's rows, manifest and dead letters in waiting


def scratch_dir(work: str, generation: int) -> str:
    return f"{work.rstrip('/')}/{SCRATCH_PREFIX}{generation:04d}"


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    if FileSystems.get_scheme(path) is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with FileSystems.create(path, mime_type="application/octet-stream") as f:
        f.write(data)


def _exists(path: str) -> bool:
    return FileSystems.exists(path)


def stage_local(final: str, keep_out: set[str]) -> staging_dir.Staging:
    """A hidden sibling of FINAL holding hard links to its shards and copies of its other files,
    less the relative paths in KEEP_OUT (the metadata, manifest and dead letters are written anew).

    The owner file beside it lets the next run for FINAL remove it if this one is killed
    (`pipelines.staging.remove_abandoned`). A file system without hard links gets copies.

    Raises:
      SetupError: the parent is not writable.
    """
    work = staging_dir.new_staging_dir(final, final)
    for d, _, files in os.walk(final):
        for f in files:
            src = os.path.join(d, f)
            rel = os.path.relpath(src, final).replace(os.sep, "/")
            if rel in keep_out or rel in (METADATA_FILE, MANIFEST_FILE, DEAD_LETTER_FILE):
                continue
            dest = os.path.join(work, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:  # a shard is never written in place again, so sharing its inode is safe; other files are copied
                if not f.startswith(out_dir.SHARD_PREFIX + "-"):
                    raise OSError
                os.link(src, dest)
            except OSError:
                shutil.copy2(src, dest)
    return staging_dir.Staging(final, work)


def read_records(path: str, compression: str):
    """Yields (video id, record) of a shard's records (read through FileSystems)."""
    with FileSystems.open(path, compression_type=out_dir.compression_type(compression)) as f:
        while (record := _TFRecordUtil.read_record(f)) is not None:
            yield parse_example(record)["video_id"][0].decode("utf-8", "surrogateescape"), record


class LazyShard:
    """A shard file opened at its first record (an empty shard is never written)."""

    def __init__(self, path: str, compression: str):
        self.path, self.compression, self.records, self._f = path, compression, 0, None

    def write(self, record: bytes) -> None:
        if self._f is None:
            if FileSystems.get_scheme(self.path) is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._f = FileSystems.create(self.path, compression_type=out_dir.compression_type(self.compression))
        _TFRecordUtil.write_record(self._f, record)
        self.records += 1

    def close(self) -> int:
        if self._f is not None:
            self._f.close()
            self._f = None
        return self.records


def rewrite_shard(src: str, dest: str, drop: set[str], compression: str, dropped=None) -> int:
    """Copies SRC's records to DEST, leaving out those of the videos in DROP (each handed to
    DROPPED(video id, record) when given); returns the records kept. DEST is written only when a
    record is kept (an empty shard is left out of the dataset)."""
    out = LazyShard(dest, compression)
    try:
        for vid, record in read_records(src, compression):
            if vid not in drop:
                out.write(record)
            elif dropped is not None:
                dropped(vid, record)
    finally:
        out.close()
    return out.records


def listed_shards(meta: DatasetMetadata) -> set[str]:
    return {s["path"] for info in meta.splits.values() for s in info["shards"]}


def finish_remote(final: str, meta: DatasetMetadata) -> None:
    """After metadata.json of generation G is written: moves G's manifest and dead letters into
    place, deletes the shards metadata.json no longer lists and the scratch directory."""
    root = final.rstrip("/")
    scratch = scratch_dir(root, meta.generation)
    for name in (MANIFEST_FILE, DEAD_LETTER_FILE, *SIDE_FILES):
        if _exists(f"{scratch}/{name}"):
            write_bytes(f"{root}/{name}", read_bytes(f"{scratch}/{name}"))
    listed = listed_shards(meta)
    stale = [m.path for m in FileSystems.match([root + "/**"])[0].metadata_list
             if "/" + out_dir.SHARD_PREFIX + "-" in m.path and out_dir.relative(m.path, root) not in listed]
    leftovers = [m.path for m in FileSystems.match([scratch + "/**"])[0].metadata_list]
    if stale or leftovers:
        FileSystems.delete(stale + leftovers)


def recover_remote(final: str, meta: DatasetMetadata) -> None:
    """Before a remote append: finishes a committed earlier one (its scratch directory is still
    there), or removes what an uncommitted (killed) one left: scratch and unlisted shards."""
    root = final.rstrip("/")
    found = [m.path for m in FileSystems.match([root + "/**"])[0].metadata_list]
    if meta.generation and any(f"/{SCRATCH_PREFIX}{meta.generation:04d}/" in p for p in found):
        finish_remote(root, meta)
        return
    listed = listed_shards(meta)
    stale = [p for p in found if f"/{SCRATCH_PREFIX}" in p
             or ("/" + out_dir.SHARD_PREFIX + "-" in p and out_dir.relative(p, root) not in listed)]
    if stale:
        FileSystems.delete(stale)


def commit(staging: staging_dir.Staging, meta: DatasetMetadata, rows: list[dict], dead_lines: list[str],
           side_files: Optional[dict[str, dict]] = None) -> None:
    """Writes the manifest, dead letters, SIDE_FILES ({file name: JSON data}, e.g. the drift files) and
    metadata.json of the new generation, then makes it the dataset."""
    dead = "".join(line + "\n" for line in dead_lines).encode("utf-8")
    side = {name: json.dumps(data, indent=1).encode("utf-8") for name, data in (side_files or {}).items()}
    if staging.local:
        write_manifest(rows, staging.work)
        write_bytes(f"{staging.work}/{DEAD_LETTER_FILE}", dead)
        for name, data in side.items():
            write_bytes(f"{staging.work}/{name}", data)
        shutil.rmtree(scratch_dir(staging.work, meta.generation), ignore_errors=True)
        out_dir.remove_beam_temp(staging.work)
        meta.write(staging.work)
        staging_dir.publish(staging)
        return
    scratch = scratch_dir(staging.work, meta.generation)
    write_manifest(rows, scratch)
    write_bytes(f"{scratch}/{DEAD_LETTER_FILE}", dead)
    for name, data in side.items():
        write_bytes(f"{scratch}/{name}", data)
    out_dir.remove_beam_temp(staging.work)
    out_dir.write_metadata(meta, staging.work)  # the commit
    finish_remote(staging.final, meta)


def read_old_dead_letters(final: str) -> list[str]:
    """The JSON lines of the dataset's dead_letter.jsonl."""
    path = f"{final.rstrip('/')}/{DEAD_LETTER_FILE}"
    if not _exists(path):
        return []
    return [line for line in read_bytes(path).decode("utf-8").splitlines() if line.strip()]


def manifest_rows(final: str) -> list[dict]:
    """The rows of DATASET/videos.parquet."""
    import pyarrow.parquet as pq
    return pq.read_table(io.BytesIO(read_bytes(f"{final.rstrip('/')}/{MANIFEST_FILE}"))).to_pylist()

