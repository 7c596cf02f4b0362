"""The leakage audit: each video's sha256 and content signature, made during its decode, and the
duplicate sets and groups that span more than one split."""
from __future__ import annotations

import functools
import hashlib
import itertools
import threading
from typing import Iterable, Iterator, Optional

import numpy as np

HASH_CHUNK = 1 << 20
THUMB = 8  # signature thumbnails are THUMB x THUMB gray
MAX_SAMPLES = 16  # sampled frames per signature
# Two videos are near duplicates when they decode to the same number of frames and their thumbnails
# differ by at most this mean absolute gray level (0..255): a re-encode, or a copy at another
# resolution, of one clip decodes to nearly the same frames at the dataset's size. Equal lengths
# keep a clip and a longer clip that starts with it (a trim, not a copy) apart.
NEAR_LEVELS = 8.0
MAX_LISTED = 100  # sets named in metadata.json `leakage.cross_split.sets`


class FileHasher:
    """sha256 of a local file, read in a background thread while ffmpeg decodes the same file.

    ffmpeg reads the file itself (it must seek in it), so the bytes cannot be teed off its
    input; hashing alongside reads the pages ffmpeg is pulling into the page cache at the same
    time, so the disk is read once and the hash costs no wall time on a core ffmpeg leaves idle.
    """

    def __init__(self, path: str):
        self.digest, self.error = "", ""
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: str) -> None:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
                    h.update(chunk)
            self.digest = h.hexdigest()
        except OSError as e:
            self.error = str(e)

    def result(self, timeout: Optional[float] = None) -> str:
        """The hex digest ("" when the file could not be read or the thread did not finish)."""
        self._thread.join(timeout)
        return self.digest


@functools.lru_cache(maxsize=16)
def _bins(n: int) -> np.ndarray:
    """(THUMB, n) averaging matrix: row k averages the pixels that fall into bin k."""
    m = np.zeros((THUMB, n), np.float32)
    m[np.arange(n) * THUMB // n, np.arange(n)] = 1.0
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """A THUMB x THUMB gray uint8 thumbnail of an (H, W, C) frame: block means of the channel mean."""
    h, w = pixels.shape[:2]
    rows, cols = _bins(h), _bins(w).T
    x = pixels.reshape(h, w, -1)
    acc = sum(rows @ x[:, :, c].astype(np.float32) @ cols for c in range(x.shape[2]))
    return np.round(acc / x.shape[2]).astype(np.uint8)


class SignatureWatcher:
    """Passes decoded frames through, keeping thumbnails of frames 0, step, 2*step, ... (global
    frame numbers, up to MAX_SAMPLES) that fall in [start, end)."""

    def __init__(self, step: int, start: int = 0, end: Optional[int] = None):
        self.step, self.start, self.end = max(1, int(step)), start, end
        self.samples: list[tuple[int, bytes]] = []

    def watch(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        limit = self.step * MAX_SAMPLES
        for i, pixels in enumerate(frames, self.start):
            if i % self.step == 0 and i < limit and (self.end is None or i < self.end):
                self.samples.append((i, thumbnail(pixels).tobytes()))
            yield pixels


def signature_step(fps: float) -> int:
    """Frames between signature samples: two per second of video."""
    return max(1, int(round(fps / 2)))


def merge_signatures(parts: Iterable[tuple]) -> tuple:
    """One video's signature from its segments' samples: thumbnail bytes in frame order."""
    samples = sorted(set(itertools.chain.from_iterable(parts)))
    return tuple(s for _, s in samples[:MAX_SAMPLES])


class _Sets:
    """Union-find over video ids."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[str]]:
        out: dict[str, list[str]] = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return sorted(sorted(g) for g in out.values() if len(g) > 1)


def near_duplicate_sets(videos: dict[str, tuple[int, tuple]], sha256: Optional[dict[str, str]] = None
                        ) -> list[list[str]]:
    """Sets of ids whose signatures match: {id: (frames decoded, signature)} in, sorted sets out.

    Only videos of the same decoded length are compared, so a corpus is compared in buckets, not
    all pairs; within one, equal signatures (equal files among them) join without a comparison,
    and a pair is compared in full only when the mean difference of its per-sample mean levels
    (a lower bound of the full mean difference) is within NEAR_LEVELS.

    Args:
      videos: {id: (frames decoded, signature)}.
      sha256: {id: hex digest}: files with equal bytes join one set (their signatures are equal).
    """
    sets = _Sets()
    buckets: dict[tuple[int, int], dict[str, list[str]]] = {}
    for vid, (frames, sig) in videos.items():
        if frames > 0 and sig:
            key = b"".join(sig)  # equal signatures (equal files among them) join without a comparison
            buckets.setdefault((frames, len(sig)), {}).setdefault(key, []).append(vid)
    for same in (ids for bucket in buckets.values() for ids in bucket.values()):
        for other in same[1:]:
            sets.union(same[0], other)
    by_hash: dict[str, str] = {}
    for vid, digest in (sha256 or {}).items():
        if vid in videos and digest:
            sets.union(by_hash.setdefault(digest, vid), vid)
    for bucket in buckets.values():
        heads = [ids[0] for ids in bucket.values()]
        if len(heads) < 2:
            continue
        arr = np.stack([np.frombuffer(b"".join(videos[v][1]), np.uint8) for v in heads]).astype(np.int16)
        samples = arr.reshape(len(heads), -1, THUMB * THUMB).mean(axis=2)  # (videos, samples) mean levels
        mean = samples.mean(axis=1)
        order = np.argsort(mean, kind="stable")
        arr, samples, mean, heads = arr[order], samples[order], mean[order], [heads[i] for i in order]
        ends = np.searchsorted(mean, mean + NEAR_LEVELS, side="right")
        for i in range(len(heads) - 1):
            if ends[i] > i + 1:
                near = i + 1 + np.flatnonzero(np.abs(samples[i + 1:ends[i]] - samples[i]).mean(axis=1) <= NEAR_LEVELS)
                if near.size:
                    d = np.abs(arr[near] - arr[i]).mean(axis=1)
                    for j in near[d <= NEAR_LEVELS]:
                        sets.union(heads[i], heads[int(j)])
    return sets.groups()


def audit(rows: list[dict]) -> dict:
    """metadata.json `leakage` from the manifest rows (videos.parquet).

    Exact duplicates are equal sha256s, near duplicates matching signatures (both over every
    input video, ingested or not); a set or a group spans splits when its ingested videos lie in
    more than one split.
    """
    by_hash: dict[str, list[str]] = {}
    for r in rows:
        if r.get("sha256"):
            by_hash.setdefault(r["sha256"], []).append(r["video_id"])
    exact = sorted(sorted(set(v)) for v in by_hash.values() if len(set(v)) > 1)
    near = near_duplicate_sets({r["video_id"]: (r.get("frames") or 0, r.get("signature") or ())
                                for r in rows if r.get("signature")},
                               {r["video_id"]: r["sha256"] for r in rows if r.get("sha256")})
    split_of = {r["video_id"]: r["split"] for r in rows if r.get("status") == "ok" and r.get("split")}
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r.get("group"):
            groups.setdefault(r["group"], []).append(r["video_id"])
    spanning = []
    for kind, found in (("exact_duplicate", exact), ("near_duplicate", near),
                        ("group", [sorted(v) for _, v in sorted(groups.items())])):
        for ids in found:
            splits = sorted({split_of[v] for v in ids if v in split_of})
            if len(splits) > 1:
                entry = {"kind": kind, "ids": ids, "splits": {v: split_of[v] for v in ids if v in split_of}}
                if kind == "group":
                    entry["group"] = next(r["group"] for r in rows if r["video_id"] == ids[0] and r.get("group"))
                spanning.append(entry)
    count = {k: sum(1 for s in spanning if s["kind"] == k) for k in ("exact_duplicate", "near_duplicate", "group")}
    return {"exact_duplicates": exact, "near_duplicates": near,
            "cross_split": {"exact_duplicates": count["exact_duplicate"], "near_duplicates": count["near_duplicate"],
                            "groups": count["group"], "sets": spanning[:MAX_LISTED]}}


def summary_line(leakage: dict) -> str:
    """The ingest summary's one line about leakage."""
    c = leakage.get("cross_split", {})
    return (f"  leakage: {len(leakage.get('exact_duplicates', []))} exact-duplicate set(s), "
            f"{len(leakage.get('near_duplicates', []))} near-duplicate set(s); across splits: "
            f"{c.get('exact_duplicates', 0)} exact, {c.get('near_duplicates', 0)} near, {c.get('groups', 0)} group(s)"
            + (" (clipforge validate fails on these)" if any(c.get(k) for k in ("exact_duplicates", "near_duplicates",
                                                                                "groups")) else ""))
