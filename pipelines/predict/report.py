"""OUTPUT/report.html of `clipforge predict`: what was read, then one timeline per video (plots embedded)."""
from __future__ import annotations

import base64
import collections
import html
import io
import json
import math
import os
from typing import Any, Iterable, Optional

import numpy as np

from schemas.tasks import task_of

REPORT_FILE = "report.html"
ANOMALY_THRESHOLD = 2.0  # a window whose error is twice its video's median starts an anomalous range
TOP_RANGES = 20
MSE_FLOOR = 1e-10
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%}"""


def mse_of_psnr(psnr: Optional[float]) -> Optional[float]:
    """The mean squared error (0..255 scale) a PSNR in dB stands for."""
    return None if psnr is None else 255.0 ** 2 / 10 ** (psnr / 10.0)


def anomaly_scores(rows: Iterable[dict]) -> list[dict]:
    """The rows of one video with `anomaly_score`: the window's prediction MSE over the video's median.

    1 is a typical window of that video; next-frame error far above the video's own median marks
    motion the model did not expect (the usual anomaly signal in surveillance and machinery
    footage). None where the window has no truth to score (psnr is None).
    """
    rows = [dict(r) for r in rows]
    errors = [mse_of_psnr(r.get("psnr")) for r in rows]
    known = [e for e in errors if e is not None]
    median = max(float(np.median(known)), MSE_FLOOR) if known else None
    for r, e in zip(rows, errors):
        r["anomaly_score"] = None if e is None or median is None else float(e / median)
    return rows


def anomalous_ranges(rows: list[dict], window_seconds: float, threshold: float = ANOMALY_THRESHOLD) -> list[dict]:
    """Runs of consecutive windows of one video scoring >= threshold: {video, start, end, peak, windows}."""
    ranges, current = [], None
    for r in sorted(rows, key=lambda r: r["start_time"]):
        score = r.get("anomaly_score")
        if score is not None and score >= threshold:
            if current is None:
                current = {"video": r["video"], "start": r["start_time"], "peak": score, "windows": 0}
                ranges.append(current)
            current["end"] = r["start_time"] + window_seconds
            current["peak"] = max(current["peak"], score)
            current["windows"] += 1
        else:
            current = None
    return ranges


def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "null"
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _timeline(video: str, rows: list[dict], target, ranges: list[dict]) -> str:
    """One video's outputs over time as an embedded PNG."""
    import matplotlib.pyplot as plt
    rows = sorted(rows, key=lambda r: r["start_time"])
    t = [r["start_time"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 2.6))
    task = task_of(target)
    if task.probabilities:
        probs = np.array([r["probabilities"] for r in rows])
        for k, name in enumerate(target.classes):
            ax.plot(t, probs[:, k], marker=".", label=name)
        ax.set(ylabel="probability", ylim=(-0.02, 1.02))
    elif not task.target_frames:
        for name in target.outputs:
            ax.plot(t, [r[f"pred_{name}"] for r in rows], marker=".", label=name)
        ax.set(ylabel="prediction")
    else:
        nan = lambda v: np.nan if v is None else v
        ax.plot(t, [nan(r["psnr"]) for r in rows], marker=".", label="model")
        ax.plot(t, [nan(r["psnr_copy_last"]) for r in rows], marker=".", label="copy last")
        for span in ranges:
            ax.axvspan(span["start"], span["end"], color="tab:red", alpha=0.15)
        ax.set(ylabel="PSNR (dB)")
    ax.set(xlabel="time (s)", title=video[:80])
    ax.legend(fontsize=7, loc="best")
    return (f'<section class="timeline" data-video="{html.escape(video, quote=True)}">'
            f'<img alt="timeline" src="data:image/png;base64,{_png(fig)}"></section>')


def write_report(output_dir: str, target, card: dict, meta, videos_read: int, max_videos: int = 50) -> str:
    """Writes OUTPUT/report.html from the Parquet files and dead letters a predict run wrote.

    Args:
      output_dir: a local predict output directory (windows/, videos.parquet, dead_letter.jsonl).
      target: the model's TargetSpec.
      card: the export's model card.
      meta: the export's DatasetMetadata (spec for the window length, fingerprint).
      videos_read: input videos listed.
      max_videos: timelines drawn (the first videos by name); 0 draws none.

    Returns:
      The path written.
    """
    import matplotlib
    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import pyarrow.parquet as pq

    from pipelines.predict.transforms import WINDOWS_DIR  # it imports this module
    windows_dir = os.path.join(output_dir, WINDOWS_DIR)
    rows = pq.read_table(windows_dir).to_pylist() if os.listdir(windows_dir) else []
    by_video: dict[str, list[dict]] = collections.defaultdict(list)
    for r in rows:
        by_video[r["video"]].append(r)
    dead_path = os.path.join(output_dir, "dead_letter.jsonl")
    dead = [json.loads(line) for line in open(dead_path, encoding="utf-8")] if os.path.exists(dead_path) else []
    kinds = collections.Counter(d.get("kind") or d.get("stage") or "unknown" for d in dead)
    summary = [["videos listed", videos_read], ["videos predicted", len(by_video)], ["windows", len(rows)],
               ["dead-lettered videos", len(dead)]]
    summary += [[f"dead letters: {k}", n] for k, n in sorted(kinds.items())]
    summary += [["model", card.get("architecture")], ["task", target.task],
                ["trained on dataset fingerprint", meta.fingerprint],
                ["window", f"{meta.spec.frames} frames at {meta.spec.fps} fps, {meta.spec.height}x{meta.spec.width}"]]
    window_seconds = meta.spec.frames / meta.spec.fps
    frames = task_of(target).target_frames
    ranges = {v: anomalous_ranges(r, window_seconds) for v, r in by_video.items()} if frames else {}
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>clipforge predict: {target.task}</title>",
            f"<style>{STYLE}</style></head><body><h1>clipforge predict: {html.escape(target.task)}</h1>",
            '<section id="summary"><h2>What was read</h2>', _table(["field", "value"], summary), "</section>"]
    page.append(_drift_section(output_dir))
    if frames:
        page.append(_anomaly_section(by_video, ranges))
    names = sorted(by_video)[:max_videos]
    page.append(f'<section id="timelines"><h2>Timelines</h2><p>{len(names)} of {len(by_video)} videos '
                f"(--report-videos), time axis in seconds from the start of the video.</p>")
    page += [_timeline(v, by_video[v], target, ranges.get(v, [])) for v in names]
    page.append("</section></body></html>")
    path = os.path.join(output_dir, REPORT_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(page))
    return path


def _anomaly_section(by_video: dict, ranges: dict) -> str:
    """Videos ranked by their peak anomaly score, then the highest-scoring time ranges."""
    ranked = []
    for video, rows in by_video.items():
        scored = [r for r in rows if r.get("anomaly_score") is not None]
        if scored:
            peak = max(scored, key=lambda r: r["anomaly_score"])
            ranked.append([video, peak["anomaly_score"], peak["start_time"],
                           float(np.median([r["psnr"] for r in scored])), len(ranges.get(video, []))])
    ranked.sort(key=lambda r: -r[1])
    spans = sorted((s for v in ranges.values() for s in v), key=lambda s: -s["peak"])[:TOP_RANGES]
    return ('<section id="anomalies"><h2>Where the prediction error is highest</h2>'
            f"<p>anomaly_score = a window's next-frame MSE over its video's median window MSE; ranges are "
            f"consecutive windows scoring at least {ANOMALY_THRESHOLD:g}.</p>"
            + _table(["video", "peak anomaly_score", "at (s)", "median PSNR (dB)", "ranges"], ranked)
            + _table(["video", "from (s)", "to (s)", "peak anomaly_score", "windows"],
                     [[s["video"], s["start"], s["end"], s["peak"], s["windows"]] for s in spans])
            + "</section>")


def _drift_section(output_dir: str) -> str:
    """drift.json as a table of signals (PSI, verdict), with a histogram for each shifted one."""
    from pipelines import drift
    found = drift.load_drift(output_dir)
    head = '<section id="drift"><h2>Drift against the training data</h2>'
    if found is None:
        return (head + f"<p>Not checked: the model has no {drift.DRIFT_REFERENCE_FILE} (it was exported before "
                "drift checks); re-train it to compare new videos with its training split.</p></section>")
    ref, new = found["reference"], found["new"]
    rows = [[s, v["kind"], v["psi"], v["verdict"]] for s, v in found["signals"].items()]
    text = (f"<p>{new['videos']} video(s) predicted against the {ref['videos']} video(s) of the model's "
            f"{html.escape(str(ref['split']))} split: population stability index (PSI) per signal; "
            f"stable &lt; {drift.MODERATE:g} &le; moderate &lt; {drift.SHIFTED:g} &le; shifted.</p>")
    plots = [_drift_plot(s, v) for s, v in found["signals"].items() if v["verdict"] == "shifted"]
    return head + text + _table(["signal", "kind", "PSI", "verdict"], rows) + "".join(plots) + "</section>"


def _drift_plot(signal: str, v: dict) -> str:
    """The reference and new shares per bin (or category) of one signal, side by side."""
    import matplotlib.pyplot as plt
    if v["kind"] == "numeric":
        e = [f"{x:.3g}" for x in v["edges"]]
        labels = [f"<={e[0]}"] + [f"{a}-{b}" for a, b in zip(e, e[1:])] + [f">{e[-1]}"] if e else ["all"]
    else:
        labels = [str(c)[:16] for c in v["categories"]]
    shares = [np.asarray(v[k], np.float64) / max(sum(v[k]), 1) for k in ("reference", "new")]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 2.4))
    ax.bar(x - 0.2, shares[0], 0.4, label="training split")
    ax.bar(x + 0.2, shares[1], 0.4, label="predicted videos")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="share of videos", title=f"{signal}: PSI {v['psi']:.3g}")
    ax.legend(fontsize=7)
    return (f'<figure class="drift" data-signal="{html.escape(signal, quote=True)}">'
            f'<img alt="{html.escape(signal, quote=True)} histogram" src="data:image/png;base64,{_png(fig)}"></figure>')
