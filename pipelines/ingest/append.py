"""`clipforge ingest --append`: decode only what the dataset's manifest does not know, into new shards."""
from __future__ import annotations

import collections
import datetime
import hashlib
import json
import os
import pickle
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import drift
from pipelines import staging as staging_dir
from pipelines.ingest import append_store as store
from pipelines.ingest import dataset_dir as out_dir
from pipelines.ingest import job as ingest
from pipelines.ingest.append_changes import (LISTING_KINDS, MAY_CHANGE, Changes, check_settings, check_splits,
                                             classify)
from pipelines.ingest.config import SPLIT_NAMES, IngestConfig
from pipelines.ingest.leakage import audit
from pipelines.ingest.manifest import (MANIFEST_FILE, STATS_COLUMNS, ManifestRow, complete_rows, dead_row,
                                       summary_row)
from pipelines.ingest.retarget import Retargeter, candidates
from pipelines.ingest.stats import DatasetStats, VideoSummary
from pipelines.ingest.transforms import MakeRecords, WriteShards
from pipelines.inputs import VideoRef, is_local
from pipelines.runners.options import create_pipeline, is_template_launch
from pipelines.sources import DEAD_LETTER, SUMMARY, ReadVideos
from schemas.errors import SetupError
from schemas.logs import get_logger
from schemas.metadata import DEAD_LETTER_FILE, DatasetMetadata, MissingMetadataError

log = get_logger(__name__)
ROWS_FILE = "rows.pickle"  # in the scratch directory: the decoded videos' manifest rows and dead letters


def summary_of(row: dict) -> VideoSummary:
    """A manifest row's VideoSummary: the exact sums DatasetStats adds up."""
    return VideoSummary(
        video_id=row["video_id"], split=row["split"], windows=int(row.get("windows") or 0),
        frames_decoded=int(row.get("frames") or 0), unlabelled_windows=int(row.get("unlabelled_windows") or 0),
        padded_windows=int(row.get("padded_windows") or 0), pixel_count=int(row.get("pixel_count") or 0),
        partial=(row.get("reason") or "") if row.get("kind") == "partial" else "",
        **{k: tuple(row.get(k) or ()) for k in STATS_COLUMNS if k not in (
            "pixel_count", "unlabelled_windows", "padded_windows")})


def _write_rows(_, rows, dead, *shards, path: str):
    del shards  # waited for only: the rows are written once every shard is final
    store.write_bytes(path, pickle.dumps({"rows": [r.values for r in rows], "dead": list(dead)}))
    yield path


def decode_new(plan: ingest.IngestPlan, options, refs: list[VideoRef], work: str, generation: int,
               num_shards: dict[str, int], pipeline=None) -> tuple[list[dict], list]:
    """Runs the ingest stages over REFS only, writing generation-named shards under WORK.

    Returns:
      (manifest row values of the decoded videos, their DeadLetters).
    """
    path = f"{store.scratch_dir(work, generation)}/{ROWS_FILE}"
    p = pipeline if pipeline is not None else create_pipeline(options)
    made = (p | "ReadVideos" >> ReadVideos(refs)
            | "MakeRecords" >> MakeRecords(plan.job, plan.decoder.describe()))
    shards = made["records"] | "WriteShards" >> WriteShards(work, num_shards, plan.config.compression,
                                                           generation)
    rows = ((made[SUMMARY] | "OkRows" >> beam.Map(summary_row),
             made[DEAD_LETTER] | "DeadRows" >> beam.Map(dead_row)) | "ManifestRows" >> beam.Flatten())
    _ = (p | "Once" >> beam.Create([None])
         | "WriteRows" >> beam.FlatMap(_write_rows, beam.pvalue.AsList(rows),
                                       beam.pvalue.AsList(made[DEAD_LETTER]),
                                       *[beam.pvalue.AsList(s) for s in shards.values()], path=path))
    p.run().wait_until_finish()
    done = pickle.loads(store.read_bytes(path))
    return done["rows"], done["dead"]


def _shard_counts(plan: ingest.IngestPlan, refs: list[VideoRef]) -> dict[str, int]:
    """New shards per split for REFS: sized for what they add (100-200 MiB each, estimated), only
    in the splits they go to."""
    placed = {}
    for r in refs:
        placed[plan.job.split_of(r.video_id)] = placed.get(plan.job.split_of(r.video_id), 0) + 1
    names = [n for n in SPLIT_NAMES if n in placed]
    limits = plan.job.limits
    counts = out_dir.estimate_num_shards(ingest._corpus_seconds(refs, plan.config.video_timeout, limits, plan.decoder),
                                         plan.job.spec, plan.job.horizon,
                                         tuple(placed[n] / len(refs) for n in names), plan.config.compression)
    return dict(zip(names, counts))


def _affected_shards(meta: DatasetMetadata, final: str, drop: dict[str, str], retarget: Retargeter) -> dict[str, str]:
    """{shard path: split} of the old shards that hold a record of a video in DROP ({id: split});
    the records of retarget candidates are checked against the new labels on the way."""
    out = {}
    for split in sorted(set(drop.values())):
        ids = {v for v, s in drop.items() if s == split}
        for shard in meta.splits.get(split, {}).get("shards", []):
            if not shard["records"]:
                continue
            for vid, record in store.read_records(f"{final.rstrip('/')}/{shard['path']}", meta.compression):
                if vid in ids:
                    out[shard["path"]] = split
                    if vid in retarget.ids:
                        retarget.scan(vid, record)
    return out


def _new_shards(work: str, num_shards: dict[str, int], compression: str, generation: int) -> dict[str, list]:
    """{split: [{"path", "records"}]} of the shards the decode wrote; empty ones are deleted."""
    out = {}
    for split, n in num_shards.items():
        for i in range(n):
            path = out_dir.shard_path(work, split, i, n, compression, generation)
            records = out_dir.count_records(path, compression) if FileSystems.exists(path) else 0
            if records:
                out.setdefault(split, []).append({"path": out_dir.relative(path, work), "records": records})
            elif FileSystems.exists(path):
                FileSystems.delete([path])
    return out


def _rewritten_shards(final: str, work: str, affected: dict[str, str], drop: set[str], compression: str,
                      generation: int, retarget: Retargeter) -> dict[str, list]:
    """Copies each affected old shard without the records of the videos in DROP, under a new name;
    the records of retargeted videos go, with their new targets, to one more shard per split."""
    out = {}
    suffix = out_dir.shard_suffix(compression)
    gen = f"{out_dir.SHARD_PREFIX}-g{generation:04d}"
    retargeted = {split: store.LazyShard(f"{work.rstrip('/')}/{split}/{gen}-t00000-of-00001{suffix}", compression)
                  for split in sorted(set(affected.values()))}
    for i, (path, split) in enumerate(sorted(affected.items())):
        rel = f"{split}/{gen}-r{i:05d}-of-{len(affected):05d}{suffix}"

        def dropped(vid, record, split=split):
            if vid in retarget.ids:
                retargeted[split].write(retarget.rewrite(vid, record))

        kept = store.rewrite_shard(f"{final.rstrip('/')}/{path}", f"{work.rstrip('/')}/{rel}", drop, compression,
                                   dropped)
        if kept:
            out.setdefault(split, []).append({"path": rel, "records": kept})
    for split, shard in retargeted.items():
        if shard.close():
            out.setdefault(split, []).append({"path": out_dir.relative(shard.path, work), "records": shard.records})
    return out


def _merge(plan: ingest.IngestPlan, meta: DatasetMetadata, changes: Changes, new_rows: list[dict], new_dead: list,
           affected: dict[str, str], drop: dict[str, str], staging: staging_dir.Staging, generation: int,
           num_shards: dict[str, int], retarget: Retargeter) -> tuple[DatasetMetadata, list[dict], list[str]]:
    """The new generation: its metadata.json, manifest rows and dead-letter lines, its shards written.

    Stats are summed again from every kept video's manifest row (exact integer pixel sums), so
    they are those of a fresh ingest of the same corpus, up to float rounding of target sums.
    """
    comp = meta.compression
    shards = {name: [s for s in info["shards"] if s["path"] not in affected] for name, info in meta.splits.items()}
    for extra in (_rewritten_shards(staging.final, staging.work, affected, set(drop), comp, generation, retarget),
                  _new_shards(staging.work, num_shards, comp, generation)):
        for split, listed in extra.items():
            shards.setdefault(split, []).extend(listed)
    paths = {r.video_id: r.path for r in plan.videos}
    kept = [{**row, "path": paths[vid], **{k: plan.static[vid].get(k) for k in (
        "size", "mtime", "group", "label", "label_hash")}} for vid, row in changes.unchanged.items()]
    kept += [{**changes.relabelled[vid], "path": paths[vid], **{k: plan.static[vid].get(k) for k in (
        "size", "mtime", "group", "label", "label_hash")}, **retarget.sums(vid)} for vid in sorted(changes.retargeted)]
    fresh = [*({**r, "generation": generation} for r in complete_rows([ManifestRow(v) for v in new_rows], plan.static)),
             *complete_rows([dead_row(d) for d in plan.rejected], plan.static)]
    rows = sorted(kept + changes.kept_missing + fresh, key=lambda r: (r["path"], r["video_id"], r["status"]))
    still_dead = {r["video_id"] for r in kept + changes.kept_missing if r.get("status") == "dead"}
    lines = [line for line in store.read_old_dead_letters(staging.final)
             if json.loads(line)["video_id"] in still_dead and json.loads(line)["kind"] not in LISTING_KINDS]
    lines += [d.to_json() for d in [*new_dead, *plan.rejected]]
    dead_counts = collections.Counter(json.loads(line)["kind"] for line in lines)
    stats = DatasetStats()
    for r in rows:
        if r.get("status") == "ok":
            stats.add(summary_of(r))
    target, spec = meta.target, meta.spec
    splits = {}
    for name in [n for n in SPLIT_NAMES if n in shards or n in plan.job.split_names]:
        totals = stats.splits.get(name)
        listed = sorted(shards.get(name, []), key=lambda s: s["path"])
        splits[name] = {"videos": totals.videos if totals else 0, "windows": sum(s["records"] for s in listed),
                        "shards": listed}
    new_meta = DatasetMetadata(
        spec=spec, target=target, splits=splits,
        dead_letter={"count": len(lines), "path": DEAD_LETTER_FILE, "reasons": dict(sorted(dead_counts.items()))},
        stats=stats.to_stats(target.task, spec.channels, len(target.outputs), len(target.classes)),
        config=plan.config.to_dict(), fingerprint=plan.fingerprint, compression=comp,
        decoder=plan.decoder.describe(), provenance=plan.provenance, leakage=audit(rows), manifest=MANIFEST_FILE,
        generation=generation, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return new_meta, rows, lines


def summary(plan: ingest.IngestPlan, changes: Changes, meta: DatasetMetadata, seconds: float) -> str:
    """The closing report: the append's counts, then the dataset as ingest's summary shows it."""
    plan.staging = staging_dir.Staging(plan.config.output, plan.config.output)
    lines = ingest.summary(plan, meta, seconds).splitlines()[1:-1]  # not its first and last (rates) lines
    head = [f"clipforge ingest --append: {changes.summary_line()} in {seconds:.1f}s -> {plan.config.output} "
            f"(generation {meta.generation})"]
    if changes.relabelled:
        head.append(f"  {len(changes.relabelled)} of the changed: same bytes, new label rows; "
                    f"{len(changes.retargeted)} of them rewritten with the new targets without decoding")
    if changes.kept_missing:
        head.append(f"  {len(changes.kept_missing)} of the unchanged: no longer in the input, kept (--keep-missing)")
    return "\n".join(head + lines)


def config_key(config: IngestConfig) -> str:
    """A name for the datasets of one ingest configuration (its data settings but the labels):
    `clipforge retrain` keeps one growing dataset per key under ROOT/datasets/."""
    settings = {k: v for k, v in config.to_dict(data_only=True).items() if k not in MAY_CHANGE}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def decoded_last(directory: str) -> int:
    """How many videos the run that made DIRECTORY's current generation decoded (every listed one
    for a fresh ingest; the manifest's `generation` column says which for an append)."""
    meta = out_dir.load_metadata(directory)
    rows = store.manifest_rows(directory)
    if not meta.generation:
        return sum(1 for r in rows if r.get("kind") not in LISTING_KINDS)
    return sum(1 for r in rows if r.get("generation") == meta.generation)


def append(config: IngestConfig, options, start: float, pipeline=None) -> DatasetMetadata:
    """`clipforge ingest --append` (called by `ingest.ingest`); returns the merged dataset's metadata.

    Set-up errors are raised before any work. PIPELINE, when given, runs the decode of the new videos.
    """
    final = os.path.abspath(config.output) if is_local(config.output) else config.output.rstrip("/")
    if is_template_launch(options):
        raise SetupError("--append waits for its job to finish (it merges the dataset afterwards): "
                         "not with a Flex Template launch")
    if is_local(final):
        staging_dir.remove_abandoned(os.path.dirname(final), os.path.basename(final))
    try:
        meta = out_dir.load_metadata(final)
    except (MissingMetadataError, OSError) as e:
        raise SetupError(f"--append: {config.output} is not a finished dataset ({e}); ingest it first "
                         "without --append") from None
    check_settings(config, meta)
    reference = drift.load_reference(final)
    if not is_local(final):
        store.recover_remote(final, meta)
    rows = store.manifest_rows(final) if meta.manifest else []
    if not meta.manifest or (rows and "label_hash" not in rows[0]):
        raise SetupError(f"--append: {config.output} was made by a clipforge without per-video statistics "
                         f"in {MANIFEST_FILE}; ingest it afresh once, then append")
    plan = ingest.prepare(config)
    if plan.job.target.to_dict() != meta.target.to_dict() or plan.job.spec.to_dict() != meta.spec.to_dict():
        raise SetupError(f"--append: the labels give target {plan.job.target.to_dict()}, the dataset has "
                         f"{meta.target.to_dict()} (e.g. a new class): ingest afresh into a new --output")
    if not plan.decoder.same_build(meta.decoder):
        raise SetupError(f"--append: this machine's {config.decoder} decoder ({plan.decoder.version!r}) is "
                         f"not the build that decoded the dataset ({meta.decoder.get('version')!r})")
    changes = classify(plan, rows, config.keep_missing)
    check_splits(plan, changes, rows)
    generation = meta.generation + 1
    old_ok = {r["video_id"]: r["split"] for r in rows if r.get("status") == "ok"}
    drop = {v: old_ok[v] for v in [*(r["video_id"] for r in changes.removed),
                                   *(r.video_id for r in changes.changed)] if v in old_ok}
    old_rows = {r["video_id"]: r for r in rows if r.get("kind") not in LISTING_KINDS}
    retarget = Retargeter(meta.spec, meta.target, plan.job.labels or {},
                          candidates(set(changes.relabelled), old_rows, plan.job.labels, meta.target))
    affected = _affected_shards(meta, final, drop, retarget)
    changes.retargeted = set(retarget.ids)
    staging = store.stage_local(final, set(affected)) if is_local(final) else staging_dir.Staging(final, final)
    try:
        new_rows, new_dead = [], []
        refs = changes.to_decode
        num_shards = _shard_counts(plan, refs) if refs else {}
        if refs:
            new_rows, new_dead = decode_new(plan, options, refs, staging.work, generation, num_shards, pipeline)
        result = _merge(plan, meta, changes, new_rows, new_dead, affected, drop, staging, generation,
                        num_shards, retarget)
        # Drift: this run's decoded videos against the training split as it was before the run (loaded
        # at launch: on remote outputs the reference is rewritten in place). drift.json is written even
        # when nothing was decoded, so a stale one from an earlier append cannot block a promotion.
        rows = result[1]
        decoded = [r for r in rows if r.get("generation") == generation and r.get("status") == "ok"]
        side = {drift.DRIFT_REFERENCE_FILE: drift.reference(rows)}
        if reference is not None:  # a dataset made before drift checks has nothing to compare with
            side[drift.DRIFT_FILE] = drift.compare(reference, decoded)
        store.commit(staging, *result, side_files=side)
    except BaseException:
        if staging.local:
            staging_dir.discard(staging)
        raise
    meta = out_dir.load_metadata(final)
    log.info(summary(plan, changes, meta, time.time() - start))
    return meta
