"""Stable split assignment: a hash of the video id, decided before any window is made."""
from __future__ import annotations

import hashlib
from typing import Sequence

# Changing the salt reshuffles every dataset's splits; it is part of the on-disk contract.
_SALT = b"clipforge-split-v1:"


def split_point(video_id: str) -> float:
    """A uniform number in [0, 1) fixed by the video id alone (not by order, run or runner)."""
    digest = hashlib.sha256(_SALT + video_id.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def assign_split(video_id: str, fractions: Sequence[float], names: Sequence[str]) -> str:
    """The split a video belongs to; every window of the video goes there.

    Args:
      video_id: the video's id (its file name).
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
