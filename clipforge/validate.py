"""`clipforge validate`: read every shard of a dataset and check it against its metadata.json."""
from __future__ import annotations

import argparse
import os
import time

from schemas.codec import RecordCodec, RecordError
from schemas.errors import ClipforgeError, exits
from schemas.logs import get_logger
from schemas.metadata import DatasetMetadata
from schemas.tfrecord import CorruptRecordError, iter_records

log = get_logger(__name__)


def validate_shard(path: str, codec: RecordCodec, compression: str, expected: int,
                   decode: bool = True) -> tuple[int, list[str]]:
    """Checks one shard: framing and CRCs, every record parses and decodes, the count matches.

    Returns:
      (records read, problems), each problem naming the shard and the record index/offset.
    """
    name = os.path.basename(path)
    if not os.path.exists(path):
        return 0, [f"{path}: shard listed in metadata.json is missing"]
    problems, n, offset = [], 0, 0
    try:
        for record in iter_records(path, compression):
            if decode:
                try:
                    codec.decode_numpy(record)
                except (RecordError, OSError, ValueError) as e:
                    problems.append(f"{path}: record {n} at byte offset {offset}: does not decode with the spec: {e}")
            offset += 16 + len(record)
            n += 1
    except CorruptRecordError as e:
        problems.append(str(e))
    if n != expected and not problems:
        problems.append(f"{path}: holds {n} records, metadata.json says {expected}")
    elif n != expected:
        problems.append(f"{name}: read {n} of {expected} records before the error")
    return n, problems


def leakage_problems(meta: DatasetMetadata) -> list[str]:
    """One problem per group, exact-duplicate or near-duplicate set that spans two splits, naming its
    ids and their splits (metadata.json `leakage`, absent from datasets before schema_version 2)."""
    cross = meta.leakage.get("cross_split", {})
    out = []
    for s in cross.get("sets", []):
        what = {"group": f"group {s.get('group')!r}", "exact_duplicate": "exact duplicates (equal bytes)",
                "near_duplicate": "near duplicates (matching content signatures)"}.get(s["kind"], s["kind"])
        where = ", ".join(f"{v} ({split})" for v, split in sorted(s["splits"].items()))
        out.append(f"leakage: {what} span splits {', '.join(sorted(set(s['splits'].values())))}: {where}")
    listed = len(cross.get("sets", []))
    total = sum(int(cross.get(k, 0)) for k in ("exact_duplicates", "near_duplicates", "groups"))
    if total > listed:
        out.append(f"leakage: {total - listed} more set(s) span splits (metadata.json lists the first {listed})")
    return out


def validate_dataset(directory: str, splits: list[str] | None = None, decode: bool = True,
                     log=print) -> list[str]:
    """Validates every shard of DIRECTORY and its leakage audit; returns the problems found (empty when sound)."""
    meta = DatasetMetadata.load(directory)
    codec = RecordCodec(meta.spec, meta.target)
    problems: list[str] = []
    for split in splits or sorted(meta.splits):
        info = meta.splits[split]
        total = 0
        for shard in info["shards"]:
            path = os.path.join(directory, shard["path"])
            n, p = validate_shard(path, codec, meta.compression, int(shard["records"]), decode)
            total += n
            problems += p
            log(f"  {shard['path']}: {n} records {'OK' if not p else 'BAD'}")
        if total != int(info["windows"]):
            problems.append(f"split {split}: {total} records in its shards, metadata.json says {info['windows']} windows")
    return problems + leakage_problems(meta)


@exits("clipforge validate")
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="clipforge validate",
        description="Read every shard of a dataset written by `clipforge ingest`: record counts against "
                    "metadata.json, TFRecord CRCs, every record parses with the spec and its frames decode; "
                    "and no group, exact duplicate or near duplicate spans two splits (metadata.json leakage). "
                    "Exit 0 when sound, 1 with each problem (shard name and record offset, or the leaking "
                    "ids and their splits) otherwise.")
    parser.add_argument("dataset", help="dataset directory (holds metadata.json)")
    parser.add_argument("--split", action="append", help="only this split (repeatable); default: all")
    parser.add_argument("--no-decode", action="store_true", help="check framing, CRCs and counts only")
    args = parser.parse_args(argv)
    start = time.time()
    log.info(f"validating {args.dataset}")
    try:  # a missing or unreadable metadata.json is a wrong path: SetupError (exit 2)
        problems = validate_dataset(args.dataset, args.split, decode=not args.no_decode)
    except KeyError as e:  # a metadata.json without a field it must have: a broken dataset
        raise ClipforgeError(f"{args.dataset}/metadata.json has no {e.args[0]!r}") from None
    for p in problems:
        log.error(f"PROBLEM {p}")
    log.info(f"{'FAILED' if problems else 'OK'}: {len(problems)} problem(s) in {time.time() - start:.1f}s")
    return 1 if problems else 0
