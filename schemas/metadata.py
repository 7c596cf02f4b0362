"""metadata.json: the self-describing header of a finished dataset, written last by ingest."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from schemas.errors import SetupError
from schemas.spec import SpecError, TargetSpec, WindowSpec

# 2: video ids are paths under the input root (were file names); videos.parquet, provenance, leakage.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # a version 1 dataset reads the same: its ids are file names
METADATA_FILE = "metadata.json"
DEAD_LETTER_FILE = "dead_letter.jsonl"
COMPRESSIONS = ("none", "gzip")


class MissingMetadataError(SetupError, FileNotFoundError):
    """The directory is not a finished clipforge dataset (or export)."""


@dataclasses.dataclass
class DatasetMetadata:
    """Everything a reader needs to use a dataset directory.

    Attributes:
      spec: the WindowSpec every record follows.
      target: the TargetSpec (task and class names / output names / horizon).
      splits: {split: {"videos": n, "windows": n, "shards": [{"path": rel, "records": n}]}}.
      dead_letter: {"count": n, "path": "dead_letter.jsonl"}.
      stats: {"pixel_mean": [C], "pixel_std": [C], and "target_mean"/"target_std" [D] or
        "class_histogram" [K] (training split)}.
      config: the full ingest config, as given.
      fingerprint: hash of the inputs (paths, sizes, mtimes) plus config.
      compression: "none" or "gzip" for every shard.
      decoder: the ffmpeg build that decoded every video: {"name": bundled|system, "path",
        "version" (its `ffmpeg version` line), "configuration" (its build line), and "package"
        (the imageio-ffmpeg wheel) or "ffprobe"}; {} in datasets made before it was recorded.
      provenance: {"ffmpeg", "ffprobe": {"version", "configuration"}, "filter_graph", "clipforge",
        "python", "apache_beam", "numpy"}; {} before schema_version 2.
      leakage: {"exact_duplicates": [[ids]], "near_duplicates": [[ids]], "cross_split":
        {"exact_duplicates": n, "near_duplicates": n, "groups": n, "sets": [{"kind", "ids", "splits"}]}};
        {} before schema_version 2.
      manifest: "videos.parquet" (one row per input video); "" before schema_version 2.
      generation: 0 for a fresh ingest, +1 per `clipforge ingest --append` (its shards are named by it).
    """

    spec: WindowSpec
    target: TargetSpec
    splits: dict[str, dict[str, Any]]
    dead_letter: dict[str, Any]
    stats: dict[str, Any]
    config: dict[str, Any]
    fingerprint: str
    compression: str = "none"
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    decoder: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    leakage: dict[str, Any] = dataclasses.field(default_factory=dict)
    manifest: str = ""
    generation: int = 0

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "spec": self.spec.to_dict(),
            "target": self.target.to_dict(),
            "splits": self.splits,
            "dead_letter": self.dead_letter,
            "stats": self.stats,
            "compression": self.compression,
            "config": self.config,
            "decoder": self.decoder,
            "provenance": self.provenance,
            "leakage": self.leakage,
            "manifest": self.manifest,
            "generation": self.generation,
            "fingerprint": self.fingerprint,
            "created": self.created,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict, source: str = "metadata.json") -> "DatasetMetadata":
        version = d.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise SpecError(f"{source}: schema_version {version!r} is not supported (this clipforge reads "
                            f"{', '.join(map(str, READABLE_VERSIONS))})")
        missing = [k for k in ("spec", "target", "splits", "stats", "fingerprint") if k not in d]
        if missing:
            raise SpecError(f"{source} lacks field(s) {missing}")
        compression = d.get("compression", "none")
        if compression not in COMPRESSIONS:
            raise SpecError(f"{source}: compression={compression!r}, expected one of {COMPRESSIONS}")
        return cls(spec=WindowSpec.from_dict(d["spec"]), target=TargetSpec.from_dict(d["target"]),
                   splits=d["splits"], dead_letter=d.get("dead_letter", {"count": 0, "path": DEAD_LETTER_FILE}),
                   stats=d["stats"], config=d.get("config", {}), fingerprint=d["fingerprint"],
                   compression=compression, schema_version=version, created=d.get("created", ""),
                   decoder=d.get("decoder", {}), provenance=d.get("provenance", {}), leakage=d.get("leakage", {}),
                   manifest=d.get("manifest", ""), generation=int(d.get("generation", 0)))

    @classmethod
    def load(cls, directory: str) -> "DatasetMetadata":
        """Reads DIRECTORY/metadata.json.

        Raises:
          MissingMetadataError: the directory or its metadata.json does not exist, i.e. it is
            not a finished dataset (ingest still running, killed, or a wrong path).
          SpecError: the file exists but does not describe a dataset this version can read.
        """
        path = os.path.join(directory, METADATA_FILE)
        if not os.path.isdir(directory):
            raise MissingMetadataError(f"dataset directory {directory} does not exist")
        if not os.path.exists(path):
            present = sorted(os.listdir(directory))[:8]
            raise MissingMetadataError(
                f"{directory} has no {METADATA_FILE}, so it is not a finished clipforge dataset "
                f"(ingest wrote metadata.json last; it is missing when ingest failed, was killed or is "
                f"still running). Found: {present or 'an empty directory'}. Rerun `clipforge ingest`.")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise SpecError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(d, source=path)

    def write(self, directory: str) -> str:
        """Writes DIRECTORY/metadata.json atomically (temp file, then rename)."""
        path = os.path.join(directory, METADATA_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def shard_paths(self, directory: str, split: str) -> list[str]:
        """Absolute paths of a split's shards; raises KeyError naming the known splits."""
        if split not in self.splits:
            raise KeyError(f"split {split!r} not in dataset; it has {sorted(self.splits)}")
        return [os.path.join(directory, s["path"]) for s in self.splits[split]["shards"]]

    def num_windows(self, split: str) -> int:
        return int(self.splits.get(split, {}).get("windows", 0))
