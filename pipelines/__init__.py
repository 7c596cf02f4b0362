"""clipforge's Apache Beam jobs: ingest (videos -> TFRecord shards) and predict (videos -> Parquet)."""
import logging


class _KnownNoise(logging.Filter):
    """Drops two Beam warnings that are wrong for clipforge: it uses no BigQuery, and it frames
    TFRecord shards itself (schemas/tfrecord.py, CRC32C from the google-crc32c dependency)."""

    NOISE = ("apitools not found", "python-snappy or google-crc32c")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in str(record.msg) for n in self.NOISE)


# Logger filters see only records logged on that very logger, hence one per emitter.
for _name in ("", "apache_beam.io.tfrecordio"):
    logging.getLogger(_name).addFilter(_KnownNoise())
