"""The dataset directory: staged beside OUTPUT, counted, described by metadata.json, swapped in."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import json
import math
import os
import shutil
import socket
import sys
import uuid

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.config import SetupError
from pipelines.process import owner_gone
from pipelines.stats import DatasetStats
from schemas.metadata import DEAD_LETTER_FILE, METADATA_FILE, DatasetMetadata
from schemas.spec import TargetSpec, WindowSpec
from schemas import tfrecord

SHARD_PREFIX = "part"
PARTS_DIR = "beam-temp-parts"  # per-bundle part files, joined into shards, then removed
COPY_CHUNK = 8 << 20
OWNER_SUFFIX = ".owner"  # beside a local staging dir: {"host", "pid"} of the run writing it
MAX_SHARD_BYTES = 200 * 2 ** 20  # ceil(bytes / max) shards: each 100-200 MiB once a split passes 200
# Stored bytes per decoded byte: rough guesses for natural video, only used to pick a shard count
# when --num-shards is 0 (a factor of 2 off still gives 50-400 MiB shards). BENCHMARKS.md §4 measured
# png 0.49 and jpeg q95 0.32 on gray mandelbrot frames, which compress unlike camera footage.
STORED_RATIO = {"raw": 1.0, "png": 0.55, "jpeg": 0.15}
GZIP_RATIO = {"raw": 0.6, "png": 0.98, "jpeg": 0.98}


@dataclasses.dataclass(frozen=True)
class Staging:
    """Where a run writes (`work`) and where the finished dataset ends up (`final`).

    Local outputs are written to a hidden sibling directory and renamed into place at the
    end, so a reader never sees a half-written dataset and old and new shards never mix.
    Remote outputs (gs://...) have no atomic rename: they are written in place, with
    metadata.json last as the only mark of a finished dataset.
    """

    final: str
    work: str

    @property
    def local(self) -> bool:
        return FileSystems.get_scheme(self.final) is None


def prepare_output(output: str, overwrite: bool) -> Staging:
    """Checks OUTPUT and creates the staging directory (the writability test), before any work.

    Raises:
      SetupError: OUTPUT exists without --overwrite, is a file, or its parent is not writable.
    """
    if FileSystems.get_scheme(output) is not None:
        root = output.rstrip("/")
        old = [m.path for m in FileSystems.match([root + "/**"])[0].metadata_list]
        if old and not overwrite:
            raise SetupError(f"--output {output} is not empty; pass --overwrite to replace it")
        if old:  # no atomic rename on object stores: the old dataset goes first, metadata.json with it
            FileSystems.delete(sorted(old, key=lambda p: not p.endswith(METADATA_FILE)))
        return Staging(root, root)
    final = os.path.abspath(output)
    if os.path.isfile(final):
        raise SetupError(f"--output {output} is a file, not a directory")
    if os.path.exists(final) and not overwrite:
        raise SetupError(f"--output {output} already exists; pass --overwrite to replace it, or choose a new path")
    remove_abandoned(os.path.dirname(final), os.path.basename(final))
    return Staging(final, new_staging_dir(final, output))


def new_staging_dir(final: str, shown: str) -> str:
    """Creates the hidden sibling `.NAME.tmp-xxxxxxxx` of FINAL and its owner file (host, pid), which
    lets the next run for FINAL remove it if this one is killed (`remove_abandoned`).

    Raises:
      SetupError: the parent is not writable (named as --output SHOWN).
    """
    parent = os.path.dirname(final)
    work = os.path.join(parent, f".{os.path.basename(final)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(work)
        with open(work + OWNER_SUFFIX, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
    except OSError as e:
        raise SetupError(f"--output {shown} is not writable: {e.strerror} ({e.filename})") from None
    return work


def _owner_gone(owner_file: str) -> bool:
    """Whether the run that wrote OWNER_FILE ran on this machine and is no longer running."""
    try:
        with open(owner_file) as f:
            return owner_gone(json.load(f))
    except (OSError, ValueError):
        return False


def remove_abandoned(parent: str, name: str) -> list[str]:
    """Deletes the staging directories of earlier runs for PARENT/NAME that were killed.

    A run killed outright (SIGKILL, out of memory, a lost machine) cannot clean up; its hidden
    staging directory is recognised by the owner file beside it (host and pid) when the next
    run for the same output starts on the same machine. Staging of live runs, of other machines
    and without an owner file is left alone.
    """
    removed = []
    final = os.path.join(parent, name)
    for owner in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.tmp-*{OWNER_SUFFIX}")):
        work = owner[:-len(OWNER_SUFFIX)]
        if not os.path.exists(final) and os.path.isdir(f"{work}.old") and _owner_gone(owner):
            # killed between publish's two renames: the finished new dataset, else the old one, goes back
            done = os.path.exists(os.path.join(work, METADATA_FILE))
            os.rename(work if done else f"{work}.old", final)
            print(f"restored {final} from {work if done else work + '.old'}: a run was killed while "
                  "publishing it", file=sys.stderr)
    for owner in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.tmp-*{OWNER_SUFFIX}")):
        if _owner_gone(owner):
            work = owner[:-len(OWNER_SUFFIX)]
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(f"{work}.old", ignore_errors=True)
            with contextlib.suppress(OSError):
                os.remove(owner)
            print(f"removed {work}: staging left by a killed run", file=sys.stderr)
            removed.append(work)
    return removed


def publish(staging: Staging) -> None:
    """Moves the finished staging directory into place, replacing an old dataset if any."""
    if not staging.local:
        return
    old = None
    if os.path.exists(staging.final):
        old = f"{staging.work}.old"
        os.rename(staging.final, old)
    os.rename(staging.work, staging.final)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.remove(staging.work + OWNER_SUFFIX)


def discard(staging: Staging) -> None:
    """Removes a failed run's staging directory (never the final one of a remote output)."""
    if staging.local:
        shutil.rmtree(staging.work, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.remove(staging.work + OWNER_SUFFIX)


def count_records(path: str, compression: str) -> int:
    """Counts a shard's records (schemas.tfrecord.count_records) through Beam's FileSystems, so local and
    remote shards alike."""
    return tfrecord.count_records(path, compression,
                                  opener=lambda p: FileSystems.open(p, compression_type=compression_type(compression)))


def compression_type(compression: str) -> str:
    return CompressionTypes.GZIP if compression == "gzip" else CompressionTypes.UNCOMPRESSED


def shard_suffix(compression: str) -> str:
    return ".tfrecord.gz" if compression == "gzip" else ".tfrecord"


def shard_path(work: str, split: str, shard: int, num_shards: int, compression: str, generation: int = 0) -> str:
    """OUTPUT/<split>/part-SSSSS-of-NNNNN.tfrecord[.gz]; part-gGGGG-SSSSS-of-NNNNN... for an append's."""
    gen = f"g{generation:04d}-" if generation else ""
    return (f"{work.rstrip('/')}/{split}/{SHARD_PREFIX}-{gen}{shard:05d}-of-{num_shards:05d}"
            f"{shard_suffix(compression)}")


def part_path(parts_dir: str, split: str, shard: int, bundle: str, compression: str) -> str:
    return f"{parts_dir}/{split}/{shard:05d}-{bundle}{shard_suffix(compression)}"


def concat_parts(parts: list[str], dest: str) -> str:
    """Joins part files into the shard DEST byte for byte and deletes them; returns DEST.

    TFRecord files concatenate into a TFRecord file, and gzip files into a multi-member gzip
    file, which tf.data and Python's gzip both read. A single part is renamed; no part gives an
    empty shard (an empty gzip member for .gz).
    """
    present = [p for p in parts if FileSystems.exists(p)]
    if parts and not present and FileSystems.exists(dest):
        return dest  # a retry of a join that already finished
    parts = present
    if FileSystems.exists(dest):
        FileSystems.delete([dest])
    if len(parts) == 1:
        if FileSystems.get_scheme(dest) is None:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
        FileSystems.rename(parts, [dest])
        return dest
    ctype = CompressionTypes.GZIP if dest.endswith(".gz") and not parts else CompressionTypes.UNCOMPRESSED
    with FileSystems.create(dest, compression_type=ctype) as out:
        for part in parts:
            with FileSystems.open(part, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                shutil.copyfileobj(f, out, COPY_CHUNK)
    if parts:
        FileSystems.delete(parts)
    return dest


def relative(path: str, root: str) -> str:
    return path[len(root.rstrip("/")) + 1:] if path.startswith(root.rstrip("/") + "/") else path


def list_shards(work: str, split: str) -> list[str]:
    """The shard files of a split, found on disk.

    Listed rather than taken from the sink's output: when Beam retries a finalize step (e.g.
    --direct_runner_bundle_repeat), the retry renames nothing and reports no files.
    """
    found = FileSystems.match([f"{work.rstrip('/')}/{split}/{SHARD_PREFIX}-*"])[0].metadata_list
    return sorted(m.path for m in found)


def remove_beam_temp(work: str) -> None:
    """Deletes the beam-temp-* leftovers that retried sink steps can leave under WORK."""
    if FileSystems.get_scheme(work) is None:
        for d, dirs, _ in os.walk(work):
            for name in [n for n in dirs if n.startswith("beam-temp-")]:
                shutil.rmtree(os.path.join(d, name), ignore_errors=True)
        return
    leftovers = [m.path for m in FileSystems.match([work.rstrip("/") + "/**"])[0].metadata_list
                 if "/beam-temp-" in m.path]
    if leftovers:
        FileSystems.delete(leftovers)


def build_metadata(work: str, spec: WindowSpec, target: TargetSpec, config: dict, fingerprint: str,
                   split_names: list[str], stats: DatasetStats, dead_counts: dict[str, int],
                   decoder: dict | None = None, provenance: dict | None = None, leakage: dict | None = None,
                   manifest: str = "") -> DatasetMetadata:
    """Assembles metadata.json from what the sinks wrote: shards (counted), stats, dead letters, the
    decoder build every worker checked it ran (`Decoder.describe()`), provenance, the leakage audit and
    the manifest's file name."""
    compression = config.get("compression", "none")
    splits = {}
    for name in split_names:
        shards = [{"path": relative(p, work), "records": count_records(p, compression)}
                  for p in list_shards(work, name)]
        totals = stats.splits.get(name)
        splits[name] = {"videos": totals.videos if totals else 0,
                        "windows": sum(s["records"] for s in shards), "shards": shards}
    return DatasetMetadata(
        spec=spec, target=target, splits=splits,
        dead_letter={"count": int(sum(dead_counts.values())), "path": DEAD_LETTER_FILE,
                     "reasons": dict(sorted(dead_counts.items()))},
        stats=stats.to_stats(target.task, spec.channels, len(target.outputs), len(target.classes)),
        config=config, fingerprint=fingerprint, compression=compression, decoder=dict(decoder or {}),
        provenance=dict(provenance or {}), leakage=dict(leakage or {}), manifest=manifest,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def write_metadata(meta: DatasetMetadata, work: str) -> str:
    """Writes WORK/metadata.json (atomically when local); call it after everything else."""
    if FileSystems.get_scheme(work) is None:
        return meta.write(work)
    path = work.rstrip("/") + "/" + METADATA_FILE
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(meta.to_json().encode("utf-8"))
    return path


def load_metadata(directory: str) -> DatasetMetadata:
    """metadata.json of a finished dataset, local or remote."""
    if FileSystems.get_scheme(directory) is None:
        return DatasetMetadata.load(directory)
    with FileSystems.open(directory.rstrip("/") + "/" + METADATA_FILE) as f:
        return DatasetMetadata.from_dict(json.loads(f.read()), source=directory)


def estimate_num_shards(seconds: float, spec: WindowSpec, horizon: int, fractions: tuple[float, ...],
                        compression: str) -> list[int]:
    """Shards per split of 100-200 MiB each (one when smaller), from the corpus duration.

    Used when --num-shards is 0; the sizes are estimates (STORED_RATIO), not measurements.
    """
    per_frame = spec.height * spec.width * spec.channels * STORED_RATIO[spec.encoding]
    if compression == "gzip":
        per_frame *= GZIP_RATIO[spec.encoding]
    total = seconds * spec.fps / spec.stride * (spec.frames + horizon) * per_frame
    return [max(1, math.ceil(total * f / MAX_SHARD_BYTES)) for f in fractions]


def dir_size(path: str) -> int:
    """Bytes under a local directory (0 for remote outputs)."""
    if FileSystems.get_scheme(path) is not None:
        return 0
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
