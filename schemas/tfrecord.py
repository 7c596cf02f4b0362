"""TFRecord framing with CRC checks, without TensorFlow: read, count and locate corrupt records."""
from __future__ import annotations

import gzip
import io
import struct
from typing import BinaryIO, Callable, Iterator, Optional

from schemas.errors import ClipforgeError

try:  # hardware CRC32C (SSE4.2 / ARMv8), ~50x crcmod's C extension here; Beam's TFRecord sink uses it too
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover - google-crc32c is a dependency; crcmod comes with Beam
    import crcmod.predefined
    _crc32c = crcmod.predefined.mkCrcFun("crc-32c")


class CorruptRecordError(ClipforgeError, ValueError):
    """A shard's framing or checksum is wrong at a given record offset."""

    def __init__(self, path: str, index: int, offset: int, reason: str):
        super().__init__(f"{path}: record {index} at byte offset {offset}: {reason}")
        self.path, self.index, self.offset, self.reason = path, index, offset, reason


def masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _open(path: str, compression: str) -> BinaryIO:
    raw = open(path, "rb")
    return gzip.GzipFile(fileobj=raw, mode="rb") if compression == "gzip" else raw


def iter_records(path: str, compression: str = "none", check_crc: bool = True) -> Iterator[bytes]:
    """Yields each record's payload; raises CorruptRecordError naming the file and record offset.

    Args:
      path: a local shard file.
      compression: "none" or "gzip" (the dataset's metadata says which).
      check_crc: verify the length and data CRC32C of every record.
    """
    with _open(path, compression) as f:
        index = offset = 0
        while True:
            try:
                header = f.read(12)
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise CorruptRecordError(path, index, offset, f"unreadable: {e}") from e
            if not header:
                return
            if len(header) < 12:
                raise CorruptRecordError(path, index, offset, "truncated record header")
            length, length_crc = struct.unpack("<QI", header)
            if check_crc and masked_crc(header[:8]) != length_crc:
                raise CorruptRecordError(path, index, offset, "length checksum mismatch")
            try:
                body = f.read(length + 4)
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise CorruptRecordError(path, index, offset, f"unreadable: {e}") from e
            if len(body) < length + 4:
                raise CorruptRecordError(path, index, offset, "truncated record data")
            data = body[:length]
            if check_crc and masked_crc(data) != struct.unpack("<I", body[length:])[0]:
                raise CorruptRecordError(path, index, offset, "data checksum mismatch")
            yield data
            index += 1
            offset += 12 + length + 4


def count_records(path: str, compression: str = "none",
                  opener: Optional[Callable[[str], BinaryIO]] = None) -> int:
    """Counts a shard's records from the length headers (checked), seeking over the payloads.

    Args:
      path: the shard.
      compression: "none" or "gzip".
      opener: fn(path) -> a readable binary file of the uncompressed framing that can seek forward
        (Beam's `FileSystems.open(path, compression_type=...)` for remote shards); by default the
        local file, gunzipped when compression is gzip.

    Raises:
      CorruptRecordError: a header is truncated or fails its CRC, or the last record is cut short.
    """
    n = offset = 0
    with (opener or (lambda p: _open(p, compression)))(path) as f:
        while True:
            header = f.read(12)
            if not header:
                return n
            if len(header) < 12:
                raise CorruptRecordError(path, n, offset, "truncated record header")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc(header[:8]) != length_crc:
                raise CorruptRecordError(path, n, offset, "length checksum mismatch")
            f.seek(length, io.SEEK_CUR)
            if len(f.read(4)) < 4:  # the data CRC is the record's last 4 bytes: a cut-short record lacks it
                raise CorruptRecordError(path, n, offset, "truncated record data")
            n += 1
            offset += 16 + length


def write_records(path: str, records, compression: str = "none") -> int:
    """Writes records with TFRecord framing (tests and tools; ingest's WriteShards writes through Beam's FileSystems)."""
    n = 0
    raw = open(path, "wb")
    f = gzip.GzipFile(fileobj=raw, mode="wb") if compression == "gzip" else raw
    try:
        for r in records:
            header = struct.pack("<Q", len(r))
            f.write(header + struct.pack("<I", masked_crc(header)) + r + struct.pack("<I", masked_crc(r)))
            n += 1
    finally:
        f.close()
        if f is not raw:
            raw.close()
    return n
