"""The `blessed` pointer and history.jsonl: bless, force, roll back and report, for retrain (the rules are gate.py)."""
from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import shutil
import socket
from typing import Optional

from clipforge.gate import PRIMARY_METRIC, baseline_comparison, baseline_text, fmt, nonfinite_reason
from schemas.errors import SetupError
from schemas.logs import get_logger

HISTORY_FILE = "history.jsonl"
EXPORT_SUBDIR = os.path.join("train", "export")
METRICS_SUBPATH = os.path.join("eval_candidate", "metrics.json")
log = get_logger(__name__)


class PromotionRefused(SetupError, RuntimeError):
    """A forced promotion or rollback that cannot be done (no such run or version); nothing changed (exit 2)."""

    label = "refused"


# ---------------- blessed model: a symlink switched atomically ----------------
def blessed_path(root: str) -> str:
    return os.path.join(root, "models", "blessed")


def versions_dir(root: str) -> str:
    return os.path.join(root, "models", "versions")


def current_blessed(root: str) -> Optional[str]:
    """The export directory `blessed` points at, or None before the first promotion."""
    link = blessed_path(root)
    return os.path.realpath(link) if os.path.islink(link) else None


def _point_blessed(root: str, version_dir: str) -> None:
    link_tmp = blessed_path(root) + f".{os.path.basename(version_dir)}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link_tmp)
    os.symlink(os.path.relpath(version_dir, os.path.dirname(link_tmp)), link_tmp)
    os.replace(link_tmp, blessed_path(root))  # rename(2) over the old link: readers see old or new, never half


def promote(root: str, candidate_export: str, run_id: str) -> str:
    """Copies the candidate to models/versions/<run_id> and repoints `blessed` in one rename."""
    os.makedirs(versions_dir(root), exist_ok=True)
    final = os.path.join(versions_dir(root), run_id)
    tmp = final + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(candidate_export, tmp)
    os.replace(tmp, final)
    _point_blessed(root, final)
    return final


# ---------------- history.jsonl and the human actions ----------------
def history_path(root: str) -> str:
    return os.path.join(root, "runs", HISTORY_FILE)


def read_history(root: str) -> list[dict]:
    """The entries of ROOT/runs/history.jsonl, oldest first.

    Raises:
      PromotionRefused: a line that is not JSON, named by its number.
    """
    path = history_path(root)
    if not os.path.exists(path):
        return []
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError as e:
                raise PromotionRefused(f"{path} line {number} is not JSON ({e}); fix or remove that line") from None
    return entries


def append_history(root: str, entry: dict) -> None:
    os.makedirs(os.path.dirname(history_path(root)), exist_ok=True)
    with open(history_path(root), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")  # one write of one line: concurrent readers never see half


def _version_id(path: Optional[str]) -> Optional[str]:
    return os.path.basename(os.path.normpath(path)) if path else None


def blessing_chain(history: list[dict]) -> list[str]:
    """The version ids blessed in turn, each rollback undoing the version it rolled back from."""
    chain: list[str] = []
    for entry in history:
        if entry.get("action") == "rollback":
            before = _version_id(entry.get("blessed_before"))
            if before in chain:
                del chain[len(chain) - 1 - chain[::-1].index(before):]
        elif entry.get("promoted") and entry.get("blessed_after"):
            chain.append(_version_id(entry["blessed_after"]))
    return chain


def who() -> str:
    """user@host of whoever runs the command, from the environment (a pod may have no passwd entry)."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_metrics(root: str, run_id: str) -> Optional[dict]:
    """The candidate metrics.json that run `run_id` evaluated, or None when it has none."""
    path = os.path.join(root, "runs", run_id, METRICS_SUBPATH)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _run_decision(root: str, run_id: str) -> dict:
    try:
        with open(os.path.join(root, "runs", run_id, "decision.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _has_model(path: str) -> bool:
    return os.path.exists(os.path.join(path, "saved_model.pb"))


def force_promote(root: str, run_id: str) -> Optional[dict]:
    """Blesses run `run_id` by a human decision; returns its history entry (None when already blessed).

    The run's export is copied to models/versions/<run_id> unless it is there from an earlier
    promotion; then `blessed` is switched in one rename, as the gate does.

    Raises:
      PromotionRefused: no such run or version, or its candidate metrics are non-finite.
    """
    if not run_id or os.path.basename(run_id) != run_id or run_id in (".", ".."):
        raise PromotionRefused(f"--promote {run_id!r}: a run id is a directory name under {root}/runs")
    version = os.path.join(versions_dir(root), run_id)
    export = os.path.join(root, "runs", run_id, EXPORT_SUBDIR)
    if not (_has_model(version) or _has_model(export)):
        runs_dir = os.path.join(root, "runs")
        known = sorted(d for d in os.listdir(runs_dir) if _has_model(os.path.join(runs_dir, d, EXPORT_SUBDIR))) \
            if os.path.isdir(runs_dir) else []
        raise PromotionRefused(f"no run {run_id!r} to promote: neither {export} nor {version} holds a SavedModel; "
                               f"runs with an export: {', '.join(known[-5:]) or 'none'}")
    metrics = run_metrics(root, run_id)
    if metrics is not None:
        metric = _run_decision(root, run_id).get("metric") or PRIMARY_METRIC.get(metrics.get("task"))
        why = nonfinite_reason(f"run {run_id}'s candidate", metrics, [metric] if metric else [])
        if why:
            raise PromotionRefused(why + ", not even by --promote")
    before = current_blessed(root)
    if _version_id(before) == run_id:
        log.info(f"retrain: {run_id} is already blessed ({before}); nothing changed")
        return None
    if _has_model(version):
        _point_blessed(root, version)
    else:
        version = promote(root, export, run_id)
    by = who()
    entry = {"run_id": run_id, "action": "promote", "forced": True, "promoted": True,
             "reason": f"forced promotion by {by}", "by": by, "blessed_before": before,
             "blessed_after": version, "time": _utc_now()}
    append_history(root, entry)
    log.info(f"retrain: PROMOTED (forced by {by}): blessed is now {version} (was {before})")
    return entry


def rollback(root: str) -> dict:
    """Re-points `blessed` to the version blessed before the current one; returns its history entry.

    Raises:
      PromotionRefused: nothing is blessed, history.jsonl has no earlier blessed version, or that
        version's directory is gone.
    """
    current = current_blessed(root)
    if current is None:
        raise PromotionRefused(f"nothing to roll back: {blessed_path(root)} does not exist (nothing promoted yet)")
    cur = _version_id(current)
    chain = blessing_chain(read_history(root))
    if cur not in chain:
        raise PromotionRefused(f"{blessed_path(root)} points at {current}, which {history_path(root)} does not "
                               "record as blessed; choose the version with --promote RUN_ID")
    idx = len(chain) - 1 - chain[::-1].index(cur)
    if idx == 0:
        raise PromotionRefused(f"nothing to roll back to: {cur} is the first blessed version in {history_path(root)}")
    target = os.path.join(versions_dir(root), chain[idx - 1])
    if not _has_model(target):
        raise PromotionRefused(f"the previous blessed version {chain[idx - 1]} is gone ({target} holds no "
                               "SavedModel); choose another with --promote RUN_ID")
    _point_blessed(root, target)
    by = who()
    entry = {"run_id": chain[idx - 1], "action": "rollback", "forced": True, "promoted": False,
             "reason": f"rollback from {cur} by {by}", "by": by, "blessed_before": current,
             "blessed_after": target, "time": _utc_now()}
    append_history(root, entry)
    log.info(f"retrain: ROLLED BACK (by {by}): blessed is now {target} (was {current})")
    return entry


# ---------------- what the on-call person looks at first ----------------
def _decision_word(entry: dict) -> str:
    if entry.get("action") == "rollback":
        return "rolled back"
    if entry.get("forced"):
        return "FORCED"
    return "PROMOTED" if entry.get("promoted") else "not promoted"


def status_text(root: str, last: int = 10) -> str:
    """The blessed version, its metrics, and the last `last` entries of history.jsonl as a table."""
    lines = []
    current = current_blessed(root)
    if current is None:
        lines.append(f"blessed: none yet ({blessed_path(root)} does not exist)")
    else:
        vid = _version_id(current)
        lines.append(f"blessed: {vid}  ({current})")
        metrics = run_metrics(root, vid)
        if metrics is None:
            lines.append(f"  metrics: none recorded (no {os.path.join(root, 'runs', vid, METRICS_SUBPATH)})")
        else:
            scalars = {k: v for k, v in metrics.get("model", {}).items()
                       if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
            lines.append(f"  {metrics.get('task')}, {metrics.get('windows')} windows of split "
                         f"{metrics.get('split')!r} of run {vid}: "
                         + ", ".join(f"{k} {fmt(v)}" for k, v in scalars.items()))
            cmp = baseline_comparison(metrics.get("task", ""), metrics)
            if cmp:
                lines.append(f"  {baseline_text(cmp)}")
    try:
        history = read_history(root)
    except PromotionRefused as e:
        lines.append(str(e))
        history = []
    rows = [(str(e.get("time", ""))[:19].replace("T", " "), str(e.get("run_id", "")), e.get("action", "retrain"),
             _decision_word(e), _version_id(e.get("blessed_after")) or "-", str(e.get("reason", "")))
            for e in history[-last:]]
    if not rows:
        lines.append(f"no runs recorded in {history_path(root)}")
        return "\n".join(lines)
    lines.append(f"last {len(rows)} of {len(history)} entries in {history_path(root)}:")
    header = ("time (UTC)", "run", "action", "decision", "blessed after", "reason")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return "\n".join(lines)
