"""Drift: PSI of new videos' signals against the training split; drift.json and drift_reference.json."""
from __future__ import annotations

import json
import math
from typing import Optional

import numpy as np
from apache_beam.io.filesystems import FileSystems

from schemas.export import DRIFT_REFERENCE_FILE

DRIFT_FILE = "drift.json"
NUMERIC = ("pixel_mean", "pixel_std", "motion_energy", "duration", "source_fps")
CATEGORICAL = ("resolution", "codec", "rotation")
SIGNALS = NUMERIC + CATEGORICAL
BINS = (10, 5, 4, 2)  # numeric bins: reference deciles, fewer when either side has few videos
PER_BIN = 30          # videos per bin on the smaller side (below it, chance alone reads as drift)
FINE = 100            # drift_reference.json keeps percentiles, so any of BINS can be cut from them
EPSILON = 1e-4       # the share an empty bin counts as, so ln(q / p) stays finite
MODERATE, SHIFTED = 0.1, 0.25   # the usual PSI thresholds
CONSTANT_TOLERANCE = 1e-6       # relative: a constant reference value's own bin is c +- this
UNKNOWN = "unknown"  # the category of a missing fact; the verdict when one side has no values


# ---------------- the values of one signal ----------------
def _number(v) -> Optional[float]:
    if v is None or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def category(row: dict, name: str) -> str:
    """A row's category for resolution ("WxH"), codec or rotation (degrees); UNKNOWN when missing."""
    if name == "resolution":
        w, h = row.get("width"), row.get("height")
        return f"{int(w)}x{int(h)}" if w and h else UNKNOWN
    if name == "rotation":
        r = _number(row.get("rotation"))
        return UNKNOWN if r is None else f"{r:g}"
    v = row.get(name)
    return str(v) if v not in (None, "") else UNKNOWN


def numbers(rows: list[dict], name: str) -> list[float]:
    """The finite values of a numeric signal (a row without one is left out)."""
    return [v for v in (_number(r.get(name)) for r in rows) if v is not None]


# ---------------- PSI ----------------
def quantile_edges(values: list[float], bins: int = BINS[0]) -> list[float]:
    """Interior bin edges: the reference's quantiles at 1/bins .. (bins-1)/bins, ties merged.

    Bins are right-closed, the outer ones open: (-inf, e0], (e0, e1], ..., (e_last, inf). A
    constant reference c gets edges c -+ CONSTANT_TOLERANCE * max(|c|, 1): below, c, above.
    """
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return []
    lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        tol = CONSTANT_TOLERANCE * max(abs(lo), 1.0)
        return [lo - tol, lo + tol]
    return sorted(set(float(q) for q in np.quantile(x, np.arange(1, bins) / bins)))


def bin_counts(values: list[float], edges: list[float]) -> list[int]:
    """How many values fall in each of the len(edges) + 1 right-closed bins."""
    idx = np.searchsorted(np.asarray(edges, np.float64), np.asarray(values, np.float64), side="left")
    return np.bincount(idx, minlength=len(edges) + 1).astype(int).tolist()


def psi(reference: list[int], new: list[int], epsilon: float = EPSILON) -> Optional[float]:
    """Population stability index of two histograms over the same bins.

    PSI = sum_b (q_b - p_b) * ln(q_b / p_b), where p_b and q_b are the reference's and the new
    values' shares of bin b, each at least `epsilon` (an empty bin on either side). None when
    either side is empty.
    """
    p, q = np.asarray(reference, np.float64), np.asarray(new, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    p, q = np.maximum(p / p.sum(), epsilon), np.maximum(q / q.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def verdict(value: Optional[float]) -> str:
    """stable (< 0.1), moderate (< 0.25), shifted; unknown when there was nothing to compare."""
    if value is None:
        return UNKNOWN
    return "stable" if value < MODERATE else "moderate" if value < SHIFTED else "shifted"


# ---------------- reference, compare ----------------
def bins_for(n_reference: int, n_new: int) -> int:
    """Numeric bins for a comparison: the most of BINS with PER_BIN videos each on the smaller side."""
    return next((b for b in BINS if min(n_reference, n_new) >= b * PER_BIN), BINS[-1])


def _numeric_reference(values: list[float]) -> dict:
    """Percentiles and the counts between them, from which `_cut` makes any of BINS exactly."""
    x = np.asarray(values, np.float64)
    quantiles = np.quantile(x, np.arange(1, FINE) / FINE).tolist() if x.size else []
    constant = bool(x.size) and float(x.min()) == float(x.max())
    edges = quantile_edges(values, FINE) if x.size else []
    return {"kind": "numeric", "videos": int(x.size), "constant": constant, "quantiles": quantiles,
            "edges": edges, "counts": bin_counts(values, edges) if x.size else []}


def _cut(r: dict, bins: int) -> tuple[list[float], list[int]]:
    """The reference's `bins` quantile bins (edges, counts), merged from its percentile bins."""
    if r["constant"] or not r["quantiles"]:
        return r["edges"], r["counts"]
    step = FINE // bins
    edges = sorted(set(r["quantiles"][k * step - 1] for k in range(1, bins)))
    # percentile bins nest in these (their edges are a subset): each falls where its upper edge does
    uppers = np.asarray(r["edges"] + [np.inf], np.float64)
    idx = np.searchsorted(np.asarray(edges, np.float64), uppers, side="left")
    counts = np.bincount(idx, weights=np.asarray(r["counts"], np.float64), minlength=len(edges) + 1)
    return edges, [int(round(c)) for c in counts]


def reference(rows: list[dict], split: str = "train") -> dict:
    """drift_reference.json: each signal's reference distribution over the ok videos of `split`.

    Args:
      rows: manifest rows (videos.parquet); dead rows are left out. When no ok row is in
        `split`, every ok row is the reference (as metadata.json's stats fall back to "all").
      split: the training split.
    """
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    train = [r for r in ok if r.get("split") == split]
    name = split if train else "all"
    ref = train or ok
    signals = {s: _numeric_reference(numbers(ref, s)) for s in NUMERIC}
    for s in CATEGORICAL:
        counts: dict[str, int] = {}
        for r in ref:
            c = category(r, s)
            counts[c] = counts.get(c, 0) + 1
        signals[s] = {"kind": "categorical", "counts": dict(sorted(counts.items()))}
    return {"split": name, "videos": len(ref), "signals": signals}


def compare(ref: dict, new_rows: list[dict]) -> dict:
    """drift.json: each signal's PSI of `new_rows` against the reference, its histograms, its verdict.

    Args:
      ref: `reference(...)` (a drift_reference.json).
      new_rows: rows of the new videos (manifest rows or `signal_row`s); dead rows are left out.
    """
    new_rows = [r for r in new_rows if r.get("status", "ok") == "ok"]
    out = {}
    for s, r in ref["signals"].items():
        if r["kind"] == "numeric":
            values = numbers(new_rows, s)
            bins = bins_for(r["videos"], len(values))
            edges, counts = _cut(r, bins)
            new = bin_counts(values, edges) if values else [0] * (len(edges) + 1)
            value = psi(counts, new)
            out[s] = {"kind": "numeric", "psi": value, "verdict": verdict(value), "bins": len(edges) + 1,
                      "edges": edges, "reference": counts, "new": new}
        else:
            counts = {}
            for row in new_rows:
                c = category(row, s)
                counts[c] = counts.get(c, 0) + 1
            cats = sorted(set(r["counts"]) | set(counts))
            p, q = [r["counts"].get(c, 0) for c in cats], [counts.get(c, 0) for c in cats]
            value = psi(p, q)
            out[s] = {"kind": "categorical", "psi": value, "verdict": verdict(value), "categories": cats,
                      "reference": p, "new": q}
    return {"reference": {"split": ref.get("split"), "videos": ref.get("videos")},
            "new": {"videos": len(new_rows)},
            "method": {"bins": list(BINS), "videos_per_bin": PER_BIN, "epsilon": EPSILON,
                       "thresholds": {"moderate": MODERATE, "shifted": SHIFTED}},
            "signals": out,
            "shifted": [s for s, v in out.items() if v["verdict"] == "shifted"],
            "moderate": [s for s, v in out.items() if v["verdict"] == "moderate"]}


def compare_rows(reference_rows: list[dict], new_rows: list[dict], split: str = "train") -> dict:
    """`compare` against the `split` videos of `reference_rows` (e.g. another dataset's manifest)."""
    return compare(reference(reference_rows, split), new_rows)


def summary_line(drift: dict) -> str:
    """The ingest/predict summary line, e.g. `  drift vs the train split (40 videos): 8 new video(s);
    PSI >= 0.1: pixel_mean 0.91 (shifted), codec 0.12 (moderate)`."""
    head = (f"  drift vs the {drift['reference']['split']} split ({drift['reference']['videos']} videos): "
            f"{drift['new']['videos']} new video(s)")
    hits = [(s, v["psi"]) for s, v in drift["signals"].items() if v["verdict"] in ("moderate", "shifted")]
    few = min(drift["new"]["videos"], drift["reference"]["videos"] or 0) < 2 * PER_BIN
    note = f" (under {2 * PER_BIN} videos on a side: coarse bins, read PSI with care)" if few else ""
    if not drift["new"]["videos"]:
        return head
    if not hits:
        return head + f"; every signal stable (PSI < {MODERATE:g})" + note
    hits.sort(key=lambda h: -h[1])
    return head + f"; PSI >= {MODERATE:g}: " + ", ".join(
        f"{s} {v:.2f} ({drift['signals'][s]['verdict']})" for s, v in hits) + note


# ---------------- files ----------------
def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


def write_json(data: dict, directory: str, name: str) -> str:
    """Writes DIRECTORY/NAME (any Beam filesystem); returns its path."""
    path = _join(directory, name)
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(json.dumps(data, indent=1).encode("utf-8"))
    return path


def write_reference(rows: list[dict], directory: str, split: str = "train") -> str:
    """Writes DIRECTORY/drift_reference.json from the manifest rows (ingest, beside videos.parquet)."""
    return write_json(reference(rows, split), directory, DRIFT_REFERENCE_FILE)


def _load_json(directory: str, name: str) -> Optional[dict]:
    path = _join(directory, name)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return json.loads(f.read())


def load_reference(directory: str) -> Optional[dict]:
    """DIRECTORY/drift_reference.json (a dataset or an export), or None when it has none."""
    return _load_json(directory, DRIFT_REFERENCE_FILE)


def load_drift(directory: str) -> Optional[dict]:
    """DIRECTORY/drift.json, or None when there is none."""
    return _load_json(directory, DRIFT_FILE)


def dataset_lines(directory: str) -> list[str]:
    """The ingest summary's drift line: drift.json's verdicts (an append), else the reference written."""
    drift = load_drift(directory)
    if drift is not None:
        return [summary_line(drift)]
    ref = load_reference(directory)
    if ref is None:
        return []
    return [f"  drift reference: {ref['videos']} video(s) of the {ref['split']} split -> {DRIFT_REFERENCE_FILE} "
            "(new videos are compared with it at append and predict)"]
