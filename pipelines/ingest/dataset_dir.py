"""The dataset directory: staged beside OUTPUT, counted, described by metadata.json, swapped in."""
from __future__ import annotations

import datetime
import json
import math
import os
import shutil

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.ingest.stats import DatasetStats
from schemas import tfrecord
from schemas.metadata import DEAD_LETTER_FILE, METADATA_FILE, DatasetMetadata
from schemas.spec import TargetSpec, WindowSpec

SHARD_PREFIX = "part"
PARTS_DIR = "beam-temp-parts"  # per-bundle part files, joined into shards, then removed
COPY_CHUNK = 8 << 20
MAX_SHARD_BYTES = 200 * 2 ** 20  # ceil(bytes / max) shards: each 100-200 MiB once a split passes 200
# Stored bytes per decoded byte: rough guesses for natural video, only used to pick a shard count
# when --num-shards is 0 (a factor of 2 off still gives 50-400 MiB shards). BENCHMARKS.md §4 measured
# png 0.49 and jpeg q95 0.32 on gray mandelbrot frames, which compress unlike camera footage.
STORED_RATIO = {"raw": 1.0, "png": 0.55, "jpeg": 0.15}
GZIP_RATIO = {"raw": 0.6, "png": 0.98, "jpeg": 0.98}


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
