"""What an append finds changed since the dataset's last generation: new, changed, relabelled and
removed videos (against videos.parquet), and the settings it refuses to change."""
from __future__ import annotations

import dataclasses
import hashlib

from apache_beam.io.filesystems import FileSystems

from pipelines.ingest import job as ingest
from pipelines.ingest.config import NON_DATA_FIELDS, IngestConfig
from pipelines.inputs import VideoRef
from schemas.errors import SetupError
from schemas.metadata import DatasetMetadata

# Dead letters found while listing: every run finds them afresh, so old rows of these kinds are dropped.
LISTING_KINDS = ("duplicate_video_id", "missing_file", "not_in_split_lists", "duplicate_content")
MAY_CHANGE = ("labels",)  # settings an append may change (besides NON_DATA_FIELDS)


@dataclasses.dataclass
class Changes:
    """What an append does to each video, decided from the manifest before any decode.

    Attributes:
      new, changed: the new refs and the changed ones (bytes or label rows differ).
      relabelled: {video_id: old manifest row} of the changed ones whose bytes are the same.
      retargeted: the relabelled ids whose windows get new targets without a decode (pipelines/ingest/retarget.py).
      unchanged: {video_id: old manifest row} kept as they are (decode outcome rows only).
      removed: old rows of videos no longer in the input (dropped unless --keep-missing).
      kept_missing: old rows of videos no longer in the input, kept (--keep-missing).
    """

    new: list[VideoRef] = dataclasses.field(default_factory=list)
    changed: list[VideoRef] = dataclasses.field(default_factory=list)
    relabelled: dict[str, dict] = dataclasses.field(default_factory=dict)
    retargeted: set[str] = dataclasses.field(default_factory=set)
    unchanged: dict[str, dict] = dataclasses.field(default_factory=dict)
    removed: list[dict] = dataclasses.field(default_factory=list)
    kept_missing: list[dict] = dataclasses.field(default_factory=list)

    @property
    def to_decode(self) -> list[VideoRef]:
        redo = [r for r in self.changed if r.video_id not in self.retargeted]
        return sorted(self.new + redo, key=lambda r: r.path)

    def summary_line(self) -> str:
        return (f"decoded {len(self.new)} new, {len(self.changed)} changed, {len(self.removed)} removed, "
                f"{len(self.unchanged) + len(self.kept_missing)} unchanged (not decoded)")


def check_settings(config: IngestConfig, meta: DatasetMetadata) -> None:
    """Raises SetupError naming the first setting that differs from the dataset's metadata.json config."""
    skip = set(NON_DATA_FIELDS) | set(MAY_CHANGE)
    new = {k: v for k, v in config.to_dict().items() if k not in skip}
    old = meta.config
    for key, value in new.items():
        if key in old and _norm(old[key]) != _norm(value):
            raise SetupError(f"--append: {key}={value!r} differs from the dataset's {key}={old[key]!r} "
                             f"({config.output}/metadata.json config); an append needs the same settings "
                             "(only --labels may change): use them, or ingest afresh into a new --output")


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with FileSystems.open(path, compression_type="uncompressed") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def classify(plan: ingest.IngestPlan, rows: list[dict], keep_missing: bool) -> Changes:
    """Sorts the listed videos into new, changed (bytes or label rows) and unchanged, and the
    manifest's other videos into removed or kept: id, size and mtime equal is the same file;
    when only the mtime differs the sha256 decides (a frame folder is decoded again)."""
    old = {r["video_id"]: r for r in rows if r.get("kind") not in LISTING_KINDS}
    out = Changes()
    listed = {v.video_id for v in plan.videos}
    present = set(plan.static)
    for ref in plan.videos:
        row = old.get(ref.video_id)
        if row is None:
            out.new.append(ref)
            continue
        same = row.get("size") == ref.size and (row.get("mtime") == ref.mtime or (
            bool(row.get("sha256")) and not ref.frames_root and _sha256(ref.path) == row["sha256"]))
        if same and row.get("label_hash") == plan.static[ref.video_id].get("label_hash"):
            out.unchanged[ref.video_id] = row
        else:
            out.changed.append(ref)
            if same:
                out.relabelled[ref.video_id] = row
    for vid, row in old.items():
        if vid not in listed:
            (out.kept_missing if keep_missing and vid not in present else out.removed).append(row)
    return out


def check_splits(plan: ingest.IngestPlan, changes: Changes, rows: list[dict]) -> None:
    """Raises SetupError when the split rules now put a known video in another split: an append
    never moves a video (a changed labels `split`/`group` column or split list would)."""
    split_of = {r["video_id"]: r["split"] for r in rows if r.get("status") == "ok" and r.get("split")}
    known = [*changes.unchanged, *(r.video_id for r in changes.changed)]
    moved = [(v, split_of[v], plan.job.split_of(v)) for v in known
             if v in split_of and plan.job.split_of(v) != split_of[v]]
    if moved:
        listed = ", ".join(f"{v!r} {a} -> {b}" for v, a, b in moved[:5])
        raise SetupError(f"--append would move {len(moved)} video(s) between splits ({listed}); an append never "
                         "moves a video: restore the labels split/group column or split lists, or ingest afresh")
