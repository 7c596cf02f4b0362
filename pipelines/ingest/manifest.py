"""DATASET/videos.parquet (one row per input video, ingested or not) and metadata.json `provenance`."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import platform
import subprocess
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from pipelines.dead_letters import DeadLetter
from pipelines.ingest.stats import VideoSummary
from pipelines.signals import signal_columns

MANIFEST_FILE = "videos.parquet"
# Each ingested video's exact sufficient statistics (pipelines/ingest/stats.py VideoSummary): an append
# recombines the dataset's stats from these rows, so removing or replacing a video stays exact.
STATS_COLUMNS = ("pixel_count", "pixel_sum", "pixel_sumsq", "target_sum", "target_sumsq", "class_hist",
                 "unlabelled_windows", "padded_windows")
COLUMNS = ("video_id", "path", "split", "group", "label", "sha256", "size", "mtime", "format", "codec", "width",
           "height", "rotation", "sar", "source_fps", "vfr", "duration", "frames", "windows", "status", "kind",
           "reason", "frame_gaps", "pixel_mean", "pixel_std", "motion_energy", "label_hash", "signature",
           *STATS_COLUMNS, "generation")
FACTS = ("format", "codec", "width", "height", "rotation", "sar", "source_fps", "vfr", "duration", "frame_gaps")


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    """One row on its way to the manifest: a dataclass, which Beam pickles, so a non-UTF-8 file name
    (surrogate escapes) passes where Beam's str coder would refuse it in a plain dict."""

    values: dict


def summary_row(s: VideoSummary) -> ManifestRow:
    """A manifest row of an ingested video (plus its signature, which the audit uses, not the file)."""
    return ManifestRow({"video_id": s.video_id, "path": s.path, "split": s.split, **{k: s.facts.get(k) for k in FACTS},
            "sha256": s.sha256 or None, "frames": s.frames_decoded, "windows": s.windows, "status": "ok",
            "kind": "partial" if s.partial else None, "reason": s.partial or None, "signature": s.signature,
            **signal_columns(s.signals), **{k: getattr(s, k) for k in STATS_COLUMNS}})


def dead_row(d: DeadLetter) -> ManifestRow:
    """A manifest row of a dead-lettered video."""
    facts = d.facts or {}
    return ManifestRow({"video_id": d.video_id, "path": d.path, "split": None, **{k: facts.get(k) for k in FACTS},
            "sha256": d.sha256 or None, "frames": d.frames or None, "windows": 0, "status": "dead", "kind": d.kind,
            "reason": d.reason, "signature": ()})


def complete_rows(rows: list[ManifestRow], static: dict[str, dict]) -> list[dict]:
    """Adds what the launcher knew (size, mtime, group, label, label rows' hash, planned split) and
    sorts by path, id.

    Args:
      rows: summary_row / dead_row results.
      static: {video_id: {"size", "mtime", "group", "label", "label_hash", "split"}} from the plan.
    """
    out = []
    for r in (row.values for row in rows):
        known = static.get(r["video_id"], {})
        r = {**r, "size": known.get("size"), "mtime": known.get("mtime"), "group": known.get("group"),
             "label": known.get("label"), "label_hash": known.get("label_hash")}
        if r["status"] == "ok" and not r.get("split"):
            r["split"] = known.get("split")
        out.append(r)
    return sorted(out, key=lambda r: (r["path"], r["video_id"], r["status"]))


def label_hash(labels, fps: Optional[float] = None) -> str:
    """The manifest's `label_hash`: a digest of one video's label rows (`VideoLabels`, None when the
    labels file has no row for it) and labels `fps` cell, without their row numbers (rows added for
    other videos do not change it). A dataset without labels has none (None)."""
    if labels is None:
        return "none"
    parts = [labels.shape, *(None if a is None else a.tolist() for a in
                             (labels.values, labels.start, labels.end, labels.time)), fps]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def write_manifest(rows: list[dict], work: str) -> str:
    """Writes WORK/videos.parquet with COLUMNS (any Beam filesystem); returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    schema = pa.schema([("video_id", pa.string()), ("path", pa.string()), ("split", pa.string()),
                        ("group", pa.string()), ("label", pa.string()), ("sha256", pa.string()),
                        ("size", pa.int64()), ("mtime", pa.float64()), ("format", pa.string()),
                        ("codec", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                        ("rotation", pa.float64()), ("sar", pa.string()), ("source_fps", pa.float64()),
                        ("vfr", pa.bool_()), ("duration", pa.float64()), ("frames", pa.int64()),
                        ("windows", pa.int64()), ("status", pa.string()), ("kind", pa.string()),
                        ("reason", pa.string()), ("frame_gaps", pa.int64()), ("pixel_mean", pa.float64()),
                        ("pixel_std", pa.float64()), ("motion_energy", pa.float64()), ("label_hash", pa.string()),
                        ("signature", pa.list_(pa.binary())), ("pixel_count", pa.int64()),
                        ("pixel_sum", pa.list_(pa.int64())), ("pixel_sumsq", pa.list_(pa.int64())),
                        ("target_sum", pa.list_(pa.float64())), ("target_sumsq", pa.list_(pa.float64())),
                        ("class_hist", pa.list_(pa.int64())), ("unlabelled_windows", pa.int64()),
                        ("padded_windows", pa.int64()), ("generation", pa.int64())])
    # a non-UTF-8 file name (surrogate escapes) is stored with the escapes replaced
    clean = [{k: _text(r.get(k)) for k in COLUMNS} for r in rows]
    for r in clean:  # a signature is () for a video that has none; tuples of stats are lists to Arrow
        r.update({k: list(r[k]) if isinstance(r[k], tuple) else r[k] for k in ("signature", *STATS_COLUMNS)})
    table = pa.Table.from_pylist(clean, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = f"{work.rstrip('/')}/{MANIFEST_FILE}"
    with FileSystems.create(path, mime_type="application/octet-stream") as f:
        f.write(buf.getvalue())
    return path


def _text(v):
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return v


def _version_lines(exe: str) -> dict:
    try:
        out = subprocess.run([exe, "-hide_banner", "-version"], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, errors="replace", timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": str(e)}
    return {"version": next((l for l in out if " version " in l), ""),
            "configuration": next((l for l in out if l.startswith("configuration:")), "")}


def _package(name: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def provenance(decoder: dict, filter_graph: str, ffprobe: Optional[str]) -> dict:
    """metadata.json `provenance`: the tools and versions that made the dataset.

    Args:
      decoder: `Decoder.describe()` (ffmpeg's version and configuration lines).
      filter_graph: the ffmpeg filter graph every video was decoded through.
      ffprobe: the ffprobe that probed (system decoder), or None (the bundled ffmpeg probes itself).
    """
    import apache_beam
    import numpy
    return {"ffmpeg": {"version": decoder.get("version", ""), "configuration": decoder.get("configuration", "")},
            "ffprobe": _version_lines(ffprobe) if ffprobe else
            {"version": "none: the decoding ffmpeg's own stream header is the probe", "configuration": ""},
            "filter_graph": filter_graph, "clipforge": _package("clipforge"), "python": platform.python_version(),
            "apache_beam": apache_beam.__version__, "numpy": numpy.__version__}


def filter_graph(args: list[str]) -> str:
    """The -filter_complex value of an ffmpeg command (`decode.ffmpeg_args`)."""
    return args[args.index("-filter_complex") + 1] if "-filter_complex" in args else ""
