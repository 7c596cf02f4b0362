"""`clipforge ingest`: videos -> windows -> sharded TFRecords, dead_letter.jsonl, metadata.json last.

The stage (`job.py`: `ingest(config, pipeline=None, options=None)`, `run(argv)`) and its rooms:
  config      the typed IngestConfig, from flags or YAML, checked before any work
  corpus, labels, split, leakage
              what is decided per corpus and per video before a frame is read
  engine      the Beam-free per-video work: plan, decode into records, rejoin segments
  transforms  the composite PTransforms: MakeRecords, WriteShards, WriteMetadata
  stats, manifest, dataset_dir
              what a dataset directory holds: stats, videos.parquet, shards and metadata.json
  append, append_store, retarget
              `--append`: decode only what the manifest does not know
"""
from pipelines.ingest.job import (IngestPlan, build_pipeline, dataset_fingerprint, ingest, prepare, run,
                                  summary)

__all__ = ["IngestPlan", "build_pipeline", "dataset_fingerprint", "ingest", "prepare", "run", "summary"]
