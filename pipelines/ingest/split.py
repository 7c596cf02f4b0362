"""Stable split assignment: a hash of the video id, decided before any window is made."""
from __future__ import annotations

import hashlib
from typing import Mapping, Optional, Sequence

# Changing the salt reshuffles every dataset's splits; it is part of the on-disk contract.
_SALT = b"clipforge-split-v1:"


def split_point(video_id: str) -> float:
    """A uniform number in [0, 1) fixed by the video id alone (not by order, run or runner)."""
    digest = hashlib.sha256(_SALT + video_id.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def assign_split(video_id: str, fractions: Sequence[float], names: Sequence[str]) -> str:
    """The split a video belongs to; every window of the video goes there.

    Args:
      video_id: the video's id (its path under the input root), or the key of its group
        ("group:" + name), so that every video of a group lands in one split.
      fractions: split fractions summing to 1, in the order of `names`.
      names: split names, e.g. ("train", "validation", "test").

    Returns:
      One of `names`; a split with fraction 0 is never chosen.
    """
    u, edge = split_point(video_id), 0.0
    for name, frac in zip(names, fractions):
        edge += frac
        if u < edge and frac > 0:
            return name
    # Rounding can leave sum(fractions) a hair under 1: the last non-empty split takes the rest.
    return [n for n, f in zip(names, fractions) if f > 0][-1]


def group_key(group: str) -> str:
    """What a video of GROUP is hashed by: one key per group, never equal to a video id's hash input."""
    return "group:" + group


def split_of(video_id: str, fractions: Sequence[float], names: Sequence[str],
             assigned: Optional[Mapping[str, str]] = None, groups: Optional[Mapping[str, str]] = None) -> str:
    """A video's split: the one assigned to it (split lists, a labels `split` column), else a hash of
    its group when it has one, else a hash of its id. None of it depends on the other videos."""
    if assigned and video_id in assigned:
        return assigned[video_id]
    if groups and video_id in groups:
        return assign_split(group_key(groups[video_id]), fractions, names)
    return assign_split(video_id, fractions, names)
