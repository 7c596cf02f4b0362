"""clipforge's Apache Beam jobs: ingest (videos -> TFRecord shards) and predict (videos -> Parquet)."""
