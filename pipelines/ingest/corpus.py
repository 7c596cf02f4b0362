"""Corpus-level decisions made before any work: folder labels, official split lists, groups, duplicates."""
from __future__ import annotations

import difflib
import hashlib
import re
from typing import Optional

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.ingest.join import join_ids
from pipelines.ingest.label_columns import normalize_id
from pipelines.ingest.labels import LabelTable, VideoLabels
from pipelines.inputs import VideoRef
from schemas.errors import SetupError

HASH_CHUNK = 1 << 20


def folder_labels(refs: list[VideoRef]) -> LabelTable:
    """--labels-from-folders: a video's class is the name of the folder that directly holds it.

    Raises:
      SetupError: fewer than two classes.
    """
    names = {r.video_id: _parent_name(r.path) for r in refs}
    classes = tuple(sorted(set(names.values())))
    if len(classes) < 2:
        raise SetupError(f"--labels-from-folders: the videos lie in {len(classes)} folder(s) {list(classes)}; "
                         "classification needs at least two (root/<class>/<video>)")
    index = {c: i for i, c in enumerate(classes)}
    videos = {vid: VideoLabels("video", np.array([index[c]], np.int64), np.array([0])) for vid, c in names.items()}
    return LabelTable(path="folders", shape="video", join_column="folder", classes=classes, videos=videos,
                      ignored=[])


def _parent_name(path: str) -> str:
    parts = path.replace("\\", "/").rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def _read_text(path: str, what: str) -> str:
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read().decode("utf-8", "surrogateescape")
    except Exception as e:  # noqa: BLE001 - any filesystem's "cannot open" becomes one message
        raise SetupError(f"cannot read {what} {path}: {e}") from None


def read_split_lists(files: dict[str, str], refs: list[VideoRef]) -> dict[str, str]:
    """--split-lists: {video_id: split} from files of video ids (first token of each line).

    Raises:
      SetupError: a file unreadable; an id in two lists; a listed id that matches no video,
        naming it and the nearest id.
    """
    ids = sorted({r.video_id for r in refs})
    out: dict[str, str] = {}
    where: dict[str, tuple[str, int]] = {}
    for split, path in files.items():
        keys = []
        for n, line in enumerate(_read_text(path, f"--split-lists {split} file").splitlines(), 1):
            tokens = line.split()
            if tokens and not tokens[0].startswith("#"):
                keys.append((normalize_id(tokens[0]), n))
        matched = join_ids([k for k, _ in keys], refs, f"--split-lists {split} file {path}")
        for key, n in keys:
            vid = matched.get(key)
            if vid is None:
                near = difflib.get_close_matches(key, ids, n=1, cutoff=0.0)
                raise SetupError(f"--split-lists {split} file {path} line {n}: {key!r} matches no video under the "
                                 f"input root" + (f" (nearest: {near[0]!r})" if near else ""))
            if vid in out and out[vid] != split:
                other, m = where[vid]
                raise SetupError(f"video {vid!r} is in two split lists: {other} ({files[other]} line {m}) and "
                                 f"{split} ({path} line {n})")
            out[vid], where[vid] = split, (split, n)
    return out


def video_groups(refs: list[VideoRef], table_groups: Optional[dict[str, str]], pattern: Optional[str]
                 ) -> dict[str, str]:
    """{video_id: group}: the labels `group` column, else the first capture group of --group-pattern.

    Raises:
      SetupError: the pattern does not match a video's id, naming it.
    """
    out = dict(table_groups or {})
    if pattern is None:
        return out
    rx = re.compile(pattern)
    for r in refs:
        if r.video_id in out:
            continue
        m = rx.search(r.video_id)
        if m is None:
            raise SetupError(f"--group-pattern {pattern!r} does not match video id {r.video_id!r} ({r.path}); "
                             "every video needs a group (or a `group` labels cell)")
        out[r.video_id] = m.group(1) if rx.groups else m.group(0)
    return out


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks through Beam's FileSystems."""
    h = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while True:
            chunk = f.read(HASH_CHUNK)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


def exact_duplicates(refs: list[VideoRef]) -> list[list[VideoRef]]:
    """Sets (two or more, sorted by path) of byte-identical files, for --dedupe.

    Only files whose size another file shares are hashed, so a corpus without duplicates is
    hardly read here.
    """
    by_size: dict[int, list[VideoRef]] = {}
    for r in refs:
        by_size.setdefault(r.size, []).append(r)
    sets: dict[str, list[VideoRef]] = {}
    for same in by_size.values():
        if len(same) > 1:
            for r in same:
                try:
                    sets.setdefault(file_sha256(r.path), []).append(r)
                except OSError:
                    continue  # unreadable: its decode dead-letters it
    return sorted((sorted(s, key=lambda r: r.path) for s in sets.values() if len(s) > 1), key=lambda s: s[0].path)
