"""The leakage audit: each video's sha256 and content signature, made during its decode, and the
duplicate sets and groups that span more than one split."""
from __future__ import annotations

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


def _bins(n: int) -> np.ndarray:
    """(THUMB, n) averaging matrix: row k averages the pixels that fall into bin k."""
    m = np.zeros((THUMB, n), np.float32)
    m[np.arange(n) * THUMB // n, np.arange(n)] = 1.0
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """A THUMB x THUMB gray uint8 thumbnail of an (H, W, C) frame by block means."""
    gray = pixels.astype(np.float32).mean(axis=2) if pixels.ndim == 3 else pixels.astype(np.float32)
    h, w = gray.shape
    return np.round(_bins(h) @ gray @ _bins(w).T).astype(np.uint8)


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


def near_duplicate_sets(videos: dict[str, tuple[int, tuple]]) -> list[list[str]]:
    """Sets of ids whose signatures match: {id: (frames decoded, signature)} in, sorted sets out.

    Only videos of the same decoded length are compared, so a corpus is compared in small
    buckets, not all pairs.
    """
    by_len: dict[int, list[tuple[str, np.ndarray]]] = {}
    for vid, (frames, sig) in videos.items():
        if frames > 0 and sig:
            arr = np.frombuffer(b"".join(sig), np.uint8).reshape(len(sig), -1).astype(np.int16)
            by_len.setdefault(frames, []).append((vid, arr))
    sets = _Sets()
    for members in by_len.values():
        for i, (a, sa) in enumerate(members):
            for b, sb in members[i + 1:]:
                if len(sa) == len(sb) and float(np.abs(sa - sb).mean()) <= NEAR_LEVELS:
                    sets.union(a, b)
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
                                for r in rows if r.get("signature")})
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
