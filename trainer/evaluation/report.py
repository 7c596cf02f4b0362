"""report.html: one self-contained page (header, metrics tables, matplotlib plots as base64 PNGs) per evaluation."""
from __future__ import annotations

import base64
import html
import io
import math
import os
from typing import Any

import numpy as np

from schemas.tasks import TASKS, task_of

# Section ids of the plots for each task (schemas/tasks.py report_sections); tests and readers rely on them.
PLOT_SECTIONS = {name: row.report_sections for name, row in TASKS.items()}
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}
th:first-child,td:first-child{text-align:left}.warn{background:#fdd;border:1px solid #c00;padding:1em}
img{max-width:100%}"""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "null"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _section(sid: str, title: str, fig) -> str:
    return (f'<section id="{sid}"><h3>{html.escape(title)}</h3>'
            f'<img alt="{sid}" src="data:image/png;base64,{_png(fig)}"></section>')


def _card_rows(card: dict) -> list[list[Any]]:
    """Architecture, parameter count and training time from the model card, then its other scalars."""
    rows = [["architecture", card.get("architecture")]]
    for key in ("parameters", "num_parameters", "params", "trainable_parameters"):
        if key in card:
            rows.append(["parameters", card[key]])
            break
    nested = {f"{k}.{kk}": vv for k, v in card.items() if isinstance(v, dict) for kk, vv in v.items()}
    times = {k: v for k, v in {**card, **nested}.items()
             if ("time" in k or "seconds" in k) and isinstance(v, (int, float))}
    rows += [[k, v] for k, v in times.items()]
    shown = {r[0] for r in rows} | {"parameters", "num_parameters", "params"}
    rows += [[k, v] for k, v in card.items() if k not in shown and isinstance(v, (str, int, float))]
    return rows


# ---------------------------------------------------------------- task sections

def _video_levels(metrics: dict) -> str:
    """Window-level and video-level figures side by side, model and baseline."""
    row, how = task_of(metrics["task"]), metrics.get("aggregate", "mean")
    base_key, base_name = row.baseline.section, row.baseline.name
    m, b = metrics["model"], metrics[base_key]
    if "video" not in m:
        return ""
    rows = [[k, m[k], m["video"].get(k), b[k], b["video"].get(k)] for k in row.video_keys]
    rows.append(["videos", None, m["video"]["videos"], None, b["video"]["videos"]])
    header = ["metric", "model per window", f"model per video ({how})", f"{base_name} per window",
              f"{base_name} per video ({how})"]
    return (f'<section id="video-metrics"><h3>Per window and per video</h3>{_table(header, rows)}'
            f"<p>Per video: each video's windows combined by <b>{html.escape(how)}</b> "
            f"(--aggregate), then every video weighs the same.</p></section>")


def _regression(metrics: dict, acc) -> tuple[str, list[str]]:
    import matplotlib.pyplot as plt
    m, b = metrics["model"], metrics["baseline"]
    keys = ("mae", "rmse", "r2", "pearson_r")
    rows = [[k, m[k], b[k]] for k in keys] + [["skill (1 - MSE/MSE_baseline)", metrics["skill"], None]]
    for name in acc.outputs:
        rows += [[f"{name}: {k}", m["per_output"][name][k], b["per_output"][name][k]] for k in keys]
    rows += [[f"per video: {k}", m["per_video"][k], b["per_video"][k]] for k in keys]
    tables = _table(["metric", "model", "baseline (training mean)"], rows)
    truth, pred = acc.sample()
    d = len(acc.outputs)
    plots = []
    fig, axes = plt.subplots(1, d, figsize=(4.2 * d, 4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.scatter(truth[:, i], pred[:, i], s=8, alpha=0.6, label="model")
        both = np.concatenate([truth[:, i], pred[:, i]])
        lo, hi = np.min(both[np.isfinite(both)]), np.max(both[np.isfinite(both)])
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
        ax.axhline(acc.train_mean[i], color="tab:red", lw=1, label="baseline (training mean)")
        ax.set(xlabel=f"true {acc.outputs[i]}", ylabel="predicted", title=acc.outputs[i])
        ax.legend(fontsize=7)
    plots.append(_section("plot-pred-vs-true", "Predicted vs true (sampled windows)", fig))
    fig, axes = plt.subplots(1, d, figsize=(4.2 * d, 3.5), squeeze=False)
    for i, ax in enumerate(axes[0]):
        res = pred[:, i] - truth[:, i]
        ax.hist(res[np.isfinite(res)], bins=30, alpha=0.7, label="model")
        ax.hist(acc.train_mean[i] - truth[:, i], bins=30, alpha=0.5, label="baseline")
        ax.set(xlabel=f"{acc.outputs[i]}: predicted - true", ylabel="windows")
        ax.legend(fontsize=7)
    plots.append(_section("plot-residuals", "Residuals", fig))
    fig, axes = plt.subplots(1, d, figsize=(4.2 * d, 3.5), squeeze=False)
    for i, ax in enumerate(axes[0]):
        for vid, points in acc.series.items():
            points = sorted(points, key=lambda p: p[0])
            ax.plot([p[0] for p in points], [p[2][i] - p[1][i] for p in points], marker=".", label=vid[:24])
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel="window start (s)", ylabel=f"{acc.outputs[i]}: predicted - true")
        ax.legend(fontsize=7)
    plots.append(_section("plot-error-time", "Error along time, a few videos", fig))
    return tables, plots


def _classification(metrics: dict, acc) -> tuple[str, list[str]]:
    import matplotlib.pyplot as plt
    m, b = metrics["model"], metrics["baseline"]
    keys = ("accuracy", "top_k_accuracy", "macro_f1", "video_accuracy")
    rows = [[k if k != "top_k_accuracy" else f"top-{m['k']} accuracy", m[k], b[k]] for k in keys]
    tables = _table(["metric", "model", f"baseline (majority class: {b['majority_class']})"], rows)
    tables += _table(["class", "precision", "recall", "f1", "support"],
                     [[c, v["precision"], v["recall"], v["f1"], v["support"]] for c, v in m["per_class"].items()])
    classes = acc.classes
    plots = []
    for sid, key, title, fmt in (("plot-confusion-counts", "confusion_matrix", "Confusion matrix (counts)", "d"),
                                 ("plot-confusion-normalized", "confusion_matrix_normalized",
                                  "Confusion matrix (row-normalised: recall per class)", ".2f")):
        cm = np.asarray(m[key], np.float64)
        size = 1.5 + 0.6 * len(classes)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        im = ax.imshow(np.nan_to_num(cm), cmap="Blues")
        fig.colorbar(im, ax=ax)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, "nan" if not np.isfinite(v) else format(int(v) if fmt == "d" else v, fmt),
                    ha="center", va="center", fontsize=8)
        ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true")
        ax.set_xticklabels(classes, rotation=45, ha="right")
        ax.set_yticklabels(classes)
        plots.append(_section(sid, title, fig))
    return tables, plots


def _next_frame(metrics: dict, acc) -> tuple[str, list[str]]:
    import matplotlib.pyplot as plt
    predictors = [("model", metrics["model"]), ("copy last", metrics["baseline_copy_last"])]
    if metrics["baseline_linear"] is not None:
        predictors.append(("linear", metrics["baseline_linear"]))
    keys = ("psnr", "ssim", "mse", "mae")
    tables = _table(["metric"] + [n for n, _ in predictors], [[k] + [p[k] for _, p in predictors] for k in keys])
    tables += f"<p>gain over copy-last: {_fmt(metrics['gain_db_over_copy_last'])} dB</p>"
    tables += _table(["step"] + [f"{n} psnr" for n, _ in predictors] + [f"{n} ssim" for n, _ in predictors],
                     [[i + 1] + [p["per_step"][i]["psnr"] for _, p in predictors]
                      + [p["per_step"][i]["ssim"] for _, p in predictors] for i in range(acc.horizon)])
    show = lambda ax, img: (ax.imshow(img.squeeze(), cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255),
                            ax.axis("off"))
    t = acc.samples[0][0].shape[0]
    # One error scale for the whole grid (99th percentile, at least 8 levels) so rows compare.
    errs = np.concatenate([np.abs(p - tr.astype(np.float32)).ravel() for _, tr, p in acc.samples])
    err_max = max(8.0, float(np.nanpercentile(errs, 99))) if np.isfinite(errs).any() else 255.0
    cols = t + 3 * acc.horizon
    fig, axes = plt.subplots(len(acc.samples), cols, figsize=(1.3 * cols, 1.4 * len(acc.samples)), squeeze=False)
    for r, (frames, truth, pred) in enumerate(acc.samples):
        for c in range(t):
            show(axes[r, c], frames[c])
        for h in range(acc.horizon):
            show(axes[r, t + h], truth[h])
            show(axes[r, t + acc.horizon + h], np.clip(np.nan_to_num(pred[h]), 0, 255).astype(np.uint8))
            err = np.abs(pred[h] - truth[h].astype(np.float32)).mean(axis=-1)
            axes[r, t + 2 * acc.horizon + h].imshow(np.nan_to_num(err, nan=255.0), cmap="inferno", vmin=0, vmax=err_max)
            axes[r, t + 2 * acc.horizon + h].axis("off")
        if r == 0:
            titles = [f"in {c + 1}" for c in range(t)] + [f"truth +{h + 1}" for h in range(acc.horizon)]
            titles += [f"pred +{h + 1}" for h in range(acc.horizon)]
            titles += [f"|err| +{h + 1} (0-{err_max:.0f})" for h in range(acc.horizon)]
            for c, title in enumerate(titles):
                axes[0, c].set_title(title, fontsize=7)
    plots = [_section("plot-frame-grid", "Input frames | truth | prediction | error", fig)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    steps = np.arange(1, acc.horizon + 1)
    for name, p in predictors:
        for ax, key in zip(axes, ("psnr", "ssim")):
            ax.plot(steps, [np.nan if s[key] is None else s[key] for s in p["per_step"]], marker="o", label=name)
    for ax, key in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set(xlabel="horizon step", ylabel=key, xticks=steps)
        ax.legend(fontsize=7)
    plots.append(_section("plot-step-metrics", "PSNR and SSIM per horizon step, model vs baselines", fig))
    return tables, plots


def _ranking(metrics: dict, acc) -> tuple[str, list[str]]:
    import matplotlib.pyplot as plt
    m, b = metrics["model"], metrics["baseline"]
    keys = ("map", "gap", "hit_at_1", "micro_f1", "macro_f1")
    rows = [[k, m[k], b[k]] for k in keys]
    rows.append(["classes skipped by mAP (no positive)", m["map_skipped_classes"], b["map_skipped_classes"]])
    tables = _table(["metric", "model", "baseline (training class frequencies)"], rows)
    tables += _table(["class", "AP", "baseline AP", "precision", "recall", "f1", "support"],
                     [[c, v["ap"], b["per_class"][c]["ap"], v["precision"], v["recall"], v["f1"], v["support"]]
                      for c, v in m["per_class"].items()])
    classes = list(m["per_class"])
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(classes), 3.5))
    x = np.arange(len(classes))
    nan = lambda v: np.nan if v is None else v
    ax.bar(x - 0.2, [nan(m["per_class"][c]["ap"]) for c in classes], 0.4, label="model")
    ax.bar(x + 0.2, [nan(b["per_class"][c]["ap"]) for c in classes], 0.4, label="baseline")
    ax.set(xticks=x, ylabel="average precision", ylim=(0, 1.02))
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.legend(fontsize=7)
    plots = [_section("plot-per-class-ap", "Average precision per class, model vs class-frequency baseline", fig)]
    fig, ax = plt.subplots(figsize=(5, 4))
    for c, (recall, precision) in acc.pr_curves().items():
        if len(recall):
            ax.step(recall, precision, where="post", label=c)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.legend(fontsize=7)
    plots.append(_section("plot-pr-curves", "Precision-recall curves per class (windows)", fig))
    return tables, plots


# The report builder of each task row (schemas/tasks.py `report`).
SECTIONS = {"moments": _regression, "confusion": _classification, "frames": _next_frame, "ranking": _ranking}


def write_report(path: str, metrics: dict, acc, card: dict, data_meta) -> str:
    """Writes the self-contained report.html for one evaluation.

    Args:
      path: the file to write.
      metrics: the dict `trainer.evaluation.evaluate` returns (`score`'s first item).
      acc: the metrics accumulator, for its bounded plot samples.
      card: the export's model_card.json.
      data_meta: the evaluated dataset's DatasetMetadata (fingerprint, dead-letter count).

    Returns:
      The path written.
    """
    import matplotlib
    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    task = metrics["task"]
    tables, plots = SECTIONS[task_of(task).report](metrics, acc)
    tables += _video_levels(metrics)
    warn = ""
    if metrics["nonfinite_windows"]:
        warn = (f'<div class="warn" id="warning"><b>The model returned NaN or infinite predictions for '
                f'{metrics["nonfinite_windows"]} of {metrics["windows"]} windows.</b> Its metrics are null.</div>')
    dataset_rows = [["dataset", metrics["data_dir"]], ["fingerprint", data_meta.fingerprint],
                    ["split", metrics["split"]], ["windows evaluated", metrics["windows"]],
                    ["videos evaluated", metrics["videos"]],
                    ["dead-lettered videos (ingest)", data_meta.dead_letter.get("count", 0)],
                    ["model trained on fingerprint", metrics["model_dataset_fingerprint"]]]
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>clipforge evaluation: {task}</title>",
            f"<style>{STYLE}</style></head><body>",
            f"<h1>clipforge evaluation: {html.escape(task)} on split {html.escape(metrics['split'])}</h1>", warn,
            '<section id="model-card"><h2>Model</h2>', _table(["field", "value"], _card_rows(card)),
            f"<p>{html.escape(metrics['model_dir'])}</p></section>",
            '<section id="dataset"><h2>Data</h2>', _table(["field", "value"], dataset_rows), "</section>",
            '<section id="metrics"><h2>Metrics</h2>', tables, "</section>",
            '<section id="plots"><h2>Plots</h2>', *plots, "</section></body></html>"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(page))
    return path
