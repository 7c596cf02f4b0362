"""`clipforge retrain --config FILE.yaml`: the scheduled job: ingest, train, evaluate, promote behind a gate."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import socket
import time
from typing import Optional

from clipforge import promotion
# The gate and the blessed pointer live in promotion.py; these names stay importable from here.
from clipforge.promotion import (HISTORY_FILE, PRIMARY_METRIC, PromoteConfig, PromotionRefused,  # noqa: F401
                                 blessed_path, current_blessed, gate, promote)
from schemas.dirs import owner_gone
from schemas.configs import ConfigError, from_mapping, load_yaml
from schemas.errors import ClipforgeError, exits
from schemas.metadata import METADATA_FILE

LOCK_FILE = "retrain.lock"
DRIFT_FILE = "drift.json"  # pipelines/drift.py writes it; read here as a file, like metadata.json


class RetrainError(ClipforgeError, RuntimeError):
    """A step of the run failed; the run exits 1 and the blessed model is untouched."""

    label = ""


class LockHeld(RetrainError):
    """Another live run holds the lock; this run exits 3 without doing anything."""

    exit_code = 3


@dataclasses.dataclass
class RetrainConfig:
    """One retrain YAML: `root`, `ingest:` and `train:` (keys = the flags, snake_case), `promote:`."""

    root: str = ""
    ingest: dict = dataclasses.field(default_factory=dict)
    train: dict = dataclasses.field(default_factory=dict)
    promote: dict = dataclasses.field(default_factory=dict)
    lock_timeout: float = 0.0
    lock_stale_after: float = 6 * 3600.0

    def check(self) -> None:
        if not self.root:
            raise ConfigError("retrain config: `root` is required (where datasets/, models/, runs/ live)")
        for key in ("input", "task"):
            if key not in self.ingest:
                raise ConfigError(f"retrain config: ingest.{key} is required")
        for key in ("append", "overwrite"):
            if key in self.ingest:
                raise ConfigError(f"retrain config: ingest.{key} is chosen by retrain (it appends to its dataset); "
                                  "remove it")
        if "output" in self.ingest:
            raise ConfigError("retrain config: ingest.output is chosen by retrain (root/datasets/<config key>); "
                              "remove it")
        for key in ("data", "workdir"):
            if key in self.train:
                raise ConfigError(f"retrain config: train.{key} is chosen by retrain; remove it")
        if "arch" not in self.train:
            raise ConfigError("retrain config: train.arch is required")


def to_argv(section: dict) -> list[str]:
    """{'frames': 8, 'overwrite': True, 'splits': [0.8, 0.2]} -> ['--frames', '8', '--overwrite', '--splits', '0.8,0.2']."""
    argv: list[str] = []
    for key, value in section.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(str(v) for v in value)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


# ---------------- the lock ----------------
@contextlib.contextmanager
def run_lock(root: str, timeout: float = 0.0, log=print, stale_after: float = 6 * 3600.0):
    """Holds ROOT/retrain.lock for the run; a stale lock is taken over with a log line.

    A lock is stale when its process is dead (same host), or when it is older than `stale_after`
    seconds (any host: a Kubernetes pod killed mid-run never comes back to remove it).

    Raises:
      LockHeld: another live run holds the lock past `timeout` seconds.
    """
    path = os.path.join(root, LOCK_FILE)
    deadline = time.time() + timeout
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)
            break
        except FileExistsError:
            try:
                with open(path, encoding="utf-8") as f:
                    holder = json.load(f)
            except (OSError, ValueError):
                holder = {}
            dead = owner_gone(holder)
            old = time.time() - float(holder.get("started", time.time())) > stale_after
            if dead or old:
                why = "dead process" if dead else f"a run older than {stale_after:.0f}s on"
                log(f"retrain: taking over a stale lock {path} from {why} {holder.get('pid')}@{holder.get('host')}")
                os.unlink(path)
                continue
            if time.time() >= deadline:
                raise LockHeld(
                    f"another retrain run holds {path} (pid {holder.get('pid')} on {holder.get('host')}, "
                    f"started {dt.datetime.fromtimestamp(holder.get('started', 0)).isoformat(timespec='seconds')}); "
                    "exiting. Raise lock_timeout to wait, or remove the file if that run is gone.")
            time.sleep(min(2.0, max(0.1, deadline - time.time())))
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# ---------------- one run ----------------
def _ingest(cfg: RetrainConfig, log) -> tuple[str, int]:
    """The run's dataset, ROOT/datasets/<config key>: one per ingest configuration, appended to as the
    corpus grows (`ingest --append`), reused as it is when its inputs did not change.

    Returns:
      (the dataset directory, how many videos this run decoded).
    """
    from pipelines.ingest import append
    from pipelines import ingest
    from pipelines.ingest.config import parse_config
    argv = to_argv({k: v for k, v in cfg.ingest.items() if k != "keep_missing"})
    keep = ["--keep-missing"] if cfg.ingest.get("keep_missing") else []
    config, _ = parse_config([*argv, "--output", "unused"])
    fp = ingest.dataset_fingerprint(config)
    data = os.path.join(cfg.root, "datasets", append.config_key(config))
    if os.path.exists(os.path.join(data, METADATA_FILE)):
        with open(os.path.join(data, METADATA_FILE), encoding="utf-8") as f:
            if json.load(f).get("fingerprint") == fp:
                log(f"retrain: reusing finished dataset {data} (same inputs and ingest config)")
                return data, 0
        log(f"retrain: appending to {data} (inputs or labels changed)")
        rc = ingest.run(argv + ["--output", data, "--append", *keep])
        if rc == 0:
            return data, append.decoded_last(data)
        if rc != 2:
            raise RetrainError("ingest --append failed; see its output above")
        # refused before any work (e.g. another decoder build, a video's split would move): start afresh
        log(f"retrain: the append was refused (see above); ingesting {data} afresh")
    else:
        log(f"retrain: ingesting into {data}")
    if ingest.run(argv + ["--output", data, "--overwrite"]) != 0:
        raise RetrainError("ingest failed; see its output above")
    return data, append.decoded_last(data)


def _evaluate(export: str, data: str, out: str) -> dict:
    from trainer import evaluate
    rc = evaluate.run(["--model", export, "--data", data, "--split", "test", "--output", out])
    path = os.path.join(out, "metrics.json")
    if rc not in (0, 1) or not os.path.exists(path):
        raise RetrainError(f"evaluating {export} failed (exit {rc})")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _drift(data: str) -> Optional[dict]:
    """The dataset's drift.json (its newest videos against its training split), None when it has none.

    A fresh ingest has no new videos to compare and writes none; an append writes one.
    """
    try:
        with open(os.path.join(data, DRIFT_FILE), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RetrainError(f"cannot read {os.path.join(data, DRIFT_FILE)}: {e}") from None


def _warm_start(blessed: Optional[str], data: str, arch: str, log) -> Optional[str]:
    """The blessed model's .keras file when its architecture and window spec match the new run."""
    if not blessed:
        return None
    try:
        with open(os.path.join(blessed, "model_card.json"), encoding="utf-8") as f:
            card = json.load(f)
        with open(os.path.join(blessed, METADATA_FILE), encoding="utf-8") as f:
            old = json.load(f)
        with open(os.path.join(data, METADATA_FILE), encoding="utf-8") as f:
            new = json.load(f)
    except (OSError, ValueError):
        return None
    if card.get("architecture") != arch or old["spec"] != new["spec"] or old["target"] != new["target"]:
        log("retrain: training from scratch (blessed model's architecture or spec differs)")
        return None
    path = os.path.join(blessed, "model.keras")
    return path if os.path.exists(path) else None


def retrain(cfg: RetrainConfig, log=print) -> dict:
    """Runs one retrain under the lock; returns the decision written to runs/<run id>/decision.json."""
    cfg.check()
    promote_cfg = from_mapping(PromoteConfig, cfg.promote, "promote").check()
    os.makedirs(cfg.root, exist_ok=True)
    with run_lock(cfg.root, cfg.lock_timeout, log, cfg.lock_stale_after):
        run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        run_dir = os.path.join(cfg.root, "runs", run_id)
        os.makedirs(run_dir)
        data, decoded = _ingest(cfg, log)
        with open(os.path.join(data, METADATA_FILE), encoding="utf-8") as f:
            fingerprint = json.load(f)["fingerprint"]
        blessed = current_blessed(cfg.root)
        train_argv = to_argv({k: v for k, v in cfg.train.items() if k != "set"})
        for key, value in (cfg.train.get("set") or {}).items():
            train_argv += ["--set", f"{key}={value}"]
        warm = _warm_start(blessed, data, cfg.train["arch"], log)
        if warm:
            log(f"retrain: warm-starting from {warm}")
            train_argv += ["--set", f"warm_start={warm}"]
        from trainer import main as train_main
        workdir = os.path.join(run_dir, "train")
        if train_main.run(["--data", data, "--workdir", workdir, *train_argv]) != 0:
            raise RetrainError("training the candidate failed; see its output above")
        export = os.path.join(workdir, "export")
        cand = _evaluate(export, data, os.path.join(run_dir, "eval_candidate"))
        old = _evaluate(blessed, data, os.path.join(run_dir, "eval_blessed")) if blessed else None
        task = cand["task"]
        drift = _drift(data)
        promoted, reason = gate(task, promote_cfg, cand, old, drift)
        version = promote(cfg.root, export, run_id) if promoted else None
        decision = {"run_id": run_id, "promoted": promoted, "reason": reason,
                    "metric": promote_cfg.metric or PRIMARY_METRIC[task],
                    "baseline": promotion.baseline_comparison(task, cand),
                    "require_beats_baseline": promote_cfg.require_beats_baseline,
                    "max_drift_psi": promote_cfg.max_drift_psi,
                    "drift": {name: s.get("psi") for name, s in drift["signals"].items()} if drift else None,
                    "dataset": data, "dataset_fingerprint": fingerprint, "videos_decoded": decoded,
                    "candidate": {"export": export, "metrics": cand.get("model")},
                    "blessed_before": {"export": blessed, "metrics": old.get("model") if old else None},
                    "blessed_after": version or blessed, "time": dt.datetime.now(dt.timezone.utc).isoformat()}
        with open(os.path.join(run_dir, "decision.json"), "w", encoding="utf-8") as f:
            json.dump(decision, f, indent=2)
        promotion.append_history(cfg.root, {"action": "retrain", "forced": False, **{
            k: decision[k] for k in ("run_id", "promoted", "reason", "dataset_fingerprint", "blessed_after", "time")}})
        log(f"retrain: {'PROMOTED' if promoted else 'not promoted'}: {reason}")
        log(f"retrain: decision written to {os.path.join(run_dir, 'decision.json')}")
        return decision


def _human_action(cfg: RetrainConfig, args, log=print) -> int:
    """--promote RUN_ID / --rollback under the run lock; 0 done, 2 refused, 3 locked."""
    os.makedirs(cfg.root, exist_ok=True)
    with run_lock(cfg.root, cfg.lock_timeout, log, cfg.lock_stale_after):
        if args.promote is not None:
            promotion.force_promote(cfg.root, args.promote, log)
        else:
            promotion.rollback(cfg.root, log)
    return 0


@exits("clipforge retrain")
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="clipforge retrain",
        description="The scheduled job: ingest into ROOT/datasets/<config key> (one dataset per ingest "
                    "configuration: reused when its inputs did not change, else appended to), train a "
                    "candidate (warm-started from the blessed model when architecture and spec match), evaluate "
                    "it and the blessed model on the test split, and promote it to ROOT/models/blessed only when "
                    "its metrics are finite, it beats its baseline (promote.require_beats_baseline), passes "
                    "promote.thresholds and beats the blessed one by promote.min_improvement. Exit 0 whether or "
                    "not it promoted; 1 when a step failed; 2 for a bad config or a refused --promote/--rollback; "
                    "3 when another run holds the lock.")
    parser.add_argument("--config", required=True, metavar="FILE.yaml",
                        help="YAML with root, ingest:, train:, promote: (see README)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--promote", metavar="RUN_ID",
                        help="instead of a run: bless ROOT/runs/RUN_ID's candidate (a human decision, recorded in "
                             "history.jsonl with forced: true, who and when), under the lock")
    action.add_argument("--rollback", action="store_true",
                        help="instead of a run: re-point blessed to the version blessed before the current one")
    action.add_argument("--status", action="store_true",
                        help="print the blessed version, its metrics and the last runs' decisions, and exit")
    args = parser.parse_args(argv)
    cfg = from_mapping(RetrainConfig, load_yaml(args.config), args.config)
    cfg.check()
    from_mapping(PromoteConfig, cfg.promote, "promote").check()
    if args.status:
        print(promotion.status_text(cfg.root))
        return 0
    if args.promote is not None or args.rollback:
        return _human_action(cfg, args)
    retrain(cfg)
    return 0
