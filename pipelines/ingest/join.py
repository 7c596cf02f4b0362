"""The ids a table names (labels rows, split lists) joined to the corpus' video ids (paths under the root)."""
from __future__ import annotations

import dataclasses

from pipelines.ingest.labels import LabelTable
from schemas.errors import SetupError


def join_ids(keys: list[str], refs: list, what: str) -> dict[str, str]:
    """Maps the ids a table names to video ids: itself, or a bare file name to the one video of that name.

    Args:
      keys: ids as the table gives them.
      refs: the VideoRefs (path, video_id) of the corpus.
      what: the table, for messages.

    Returns:
      {table key: video_id} for the keys that name a video (others are left out).

    Raises:
      SetupError: a bare file name matches two or more videos, naming their paths.
    """
    ids = {r.video_id for r in refs}
    by_name: dict[str, list] = {}
    for r in refs:
        by_name.setdefault(r.video_id.rsplit("/", 1)[-1], []).append(r)
    out = {}
    for k in keys:
        if k in ids:
            out[k] = k
        elif "/" not in k and k in by_name:
            found = by_name[k]
            if len(found) > 1:
                raise SetupError(f"{what}: {k!r} is a bare file name and matches {len(found)} videos "
                                 f"({', '.join(r.path for r in found[:4])}); name it by its path under the input "
                                 f"root, e.g. {found[0].video_id!r}")
            out[k] = found[0].video_id
    return out


def rekey(table: LabelTable, refs: list) -> LabelTable:
    """The table keyed by video ids (`join_ids`): bare file names resolved to paths under the root."""
    m = join_ids(list(table.videos) + list(table.splits) + list(table.groups) + list(table.fps), refs,
                 f"labels file {table.path}")
    seen: dict[str, str] = {}
    for k in table.videos:
        if k in m and seen.setdefault(m[k], k) != k:
            raise SetupError(f"labels file {table.path}: rows for {seen[m[k]]!r} and {k!r} both label video "
                             f"{m[k]!r}; keep one")
    return dataclasses.replace(
        table, videos={m.get(k, k): v for k, v in table.videos.items()},
        splits={m.get(k, k): v for k, v in table.splits.items()},
        groups={m.get(k, k): v for k, v in table.groups.items()},
        fps={m.get(k, k): v for k, v in table.fps.items()})
