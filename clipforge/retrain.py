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

from clipforge import promotion, stages
from clipforge.gate import PRIMARY_METRIC, PromoteConfig, baseline_comparison, gate
from clipforge.promotion import current_blessed, promote
from pipelines.ingest.config import IngestConfig
from schemas.dirs import owner_gone
from schemas.configs import ConfigError, from_mapping, load_yaml
from schemas.errors import ClipforgeError, SetupError, exits
from schemas.export import KERAS_FILE, load_export_metadata
from schemas.logs import get_logger
from schemas.metadata import METADATA_FILE, DatasetMetadata
from trainer.config import TrainConfig, load_config

LOCK_FILE = "retrain.lock"
DRIFT_FILE = "drift.json"  # pipelines/drift.py writes it; read here as a file, like metadata.json
log = get_logger(__name__)


class RetrainError(ClipforgeError, RuntimeError):
    """A step of the run failed; the run exits 1 and the blessed model is untouched."""

    label = ""


class LockHeld(RetrainError):
    """Another live run holds the lock; this run exits 3 without doing anything."""

    exit_code = 3


@dataclasses.dataclass
class RetrainConfig:
    """One retrain YAML: `root`; `ingest:` (IngestConfig keys, as `clipforge ingest`'s flags in
    snake_case); `train:` (TrainConfig keys, `config:` a train YAML, `set:` {key: value}
    overrides); `promote:` (PromoteConfig keys)."""

    root: str = ""
    ingest: dict = dataclasses.field(default_factory=dict)
    train: dict = dataclasses.field(default_factory=dict)
    promote: dict = dataclasses.field(default_factory=dict)
    lock_timeout: float = 0.0
    lock_stale_after: float = 6 * 3600.0

    def check(self) -> "RetrainConfig":
        """Raises ConfigError naming the first bad key or value of any section; returns self."""
        self.configs()
        return self

    def configs(self) -> tuple[IngestConfig, TrainConfig, PromoteConfig]:
        """Every section as its stage's checked config, before any work.

        The paths retrain chooses are filled in as the run goes: the ingest output is ROOT/datasets
        (the run adds the config key) and the train data and workdir are ROOT/datasets and ROOT/runs.

        Raises:
          ConfigError: naming the first key or value that cannot work.
        """
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
            if key in self.train or key in (self.train.get("set") or {}):
                raise ConfigError(f"retrain config: train.{key} is chosen by retrain; remove it")
        if "arch" not in self.train:
            raise ConfigError("retrain config: train.arch is required")
        promote_cfg = from_mapping(PromoteConfig, self.promote, "promote").check()
        datasets = os.path.join(self.root, "datasets")
        return self._ingest_config(datasets), self._train_config(datasets, os.path.join(self.root, "runs")), promote_cfg

    def _ingest_config(self, output: str) -> IngestConfig:
        """The `ingest:` section as a checked IngestConfig writing OUTPUT (keep_missing: for appends only)."""
        values = {k: v for k, v in self.ingest.items() if k != "keep_missing"}
        if values.get("config"):  # an ingest YAML, as `clipforge ingest --config`: the section's keys win
            values = {**load_yaml(values["config"]), **values}
        values.pop("config", None)
        where = "retrain config: ingest"
        config = from_mapping(IngestConfig, {**values, "output": output}, where)
        try:
            config.check()
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        return config

    def _train_config(self, data: str, workdir: str) -> TrainConfig:
        """The `train:` section as a validated TrainConfig; as in `clipforge train`, its `config:`
        YAML < the section's keys < its `set:` keys."""
        flags = {k: v for k, v in self.train.items() if k not in ("config", "set")}
        flags.update(self.train.get("set") or {})
        return load_config({**flags, "data": data, "workdir": workdir}, self.train.get("config"))


# ---------------- the lock ----------------
@contextlib.contextmanager
def run_lock(root: str, timeout: float = 0.0, stale_after: float = 6 * 3600.0):
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
                log.info(f"retrain: taking over a stale lock {path} from {why} {holder.get('pid')}@{holder.get('host')}")
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
def _ingest(root: str, config: IngestConfig, keep_missing: bool) -> tuple[str, DatasetMetadata, int]:
    """The run's dataset, ROOT/datasets/<config key>: one per ingest configuration, appended to as the
    corpus grows (`ingest --append`), reused as it is when its inputs did not change.

    Returns:
      (the dataset directory, its metadata, how many videos this run decoded).
    """
    from pipelines.ingest import append, dataset_fingerprint  # Beam: only for a run, not for --status
    data = os.path.join(root, "datasets", append.config_key(config))
    config = dataclasses.replace(config, output=data)
    if os.path.exists(os.path.join(data, METADATA_FILE)):
        meta = DatasetMetadata.load(data)
        if meta.fingerprint == dataset_fingerprint(config):
            log.info(f"retrain: reusing finished dataset {data} (same inputs and ingest config)")
            return data, meta, 0
        log.info(f"retrain: appending to {data} (inputs or labels changed)")
        try:
            meta = stages.ingest(dataclasses.replace(config, append=True, keep_missing=keep_missing))
            return data, meta, append.decoded_last(data)
        except SetupError:
            # refused before any work (e.g. another decoder build, a video's split would move): start afresh
            log.info(f"retrain: the append was refused (see above); ingesting {data} afresh")
        except ClipforgeError as e:
            raise RetrainError("ingest --append failed; see its output above") from e
    else:
        log.info(f"retrain: ingesting into {data}")
    try:
        meta = stages.ingest(dataclasses.replace(config, overwrite=True))
    except ClipforgeError as e:
        raise RetrainError("ingest failed; see its output above") from e
    return data, meta, append.decoded_last(data)


def _evaluate(export: str, data: str, out: str) -> dict:
    """EXPORT scored on DATA's test split into OUT: its metrics.json (NaN predictions included)."""
    try:
        return stages.evaluate(export, data, out)
    except ClipforgeError as e:
        raise RetrainError(f"evaluating {export} failed (exit {e.exit_code})") from e


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


def _warm_start(blessed: Optional[str], data: DatasetMetadata, arch: str) -> Optional[str]:
    """The blessed model's .keras file when its architecture and window spec match the new run."""
    if not blessed:
        return None
    try:
        old, card = load_export_metadata(blessed)
    except (SetupError, OSError, ValueError):
        return None
    if card.get("architecture") != arch or old.spec != data.spec or old.target != data.target:
        log.info("retrain: training from scratch (blessed model's architecture or spec differs)")
        return None
    path = os.path.join(blessed, KERAS_FILE)
    return path if os.path.exists(path) else None


def retrain(cfg: RetrainConfig) -> dict:
    """Runs one retrain under the lock; returns the decision written to runs/<run id>/decision.json."""
    ingest_cfg, train_cfg, promote_cfg = cfg.configs()
    os.makedirs(cfg.root, exist_ok=True)
    with run_lock(cfg.root, cfg.lock_timeout, cfg.lock_stale_after):
        run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        run_dir = os.path.join(cfg.root, "runs", run_id)
        os.makedirs(run_dir)
        data, meta, decoded = _ingest(cfg.root, ingest_cfg, bool(cfg.ingest.get("keep_missing")))
        blessed = current_blessed(cfg.root)
        warm = _warm_start(blessed, meta, train_cfg.arch)
        if warm:
            log.info(f"retrain: warm-starting from {warm}")
        workdir = os.path.join(run_dir, "train")
        train_cfg = dataclasses.replace(train_cfg, data=data, workdir=workdir, warm_start=warm or train_cfg.warm_start)
        try:
            stages.train(train_cfg.validate())
        except ClipforgeError as e:
            raise RetrainError("training the candidate failed; see its output above") from e
        export = os.path.join(workdir, "export")
        cand = _evaluate(export, data, os.path.join(run_dir, "eval_candidate"))
        old = _evaluate(blessed, data, os.path.join(run_dir, "eval_blessed")) if blessed else None
        task = cand["task"]
        drift = _drift(data)
        promoted, reason = gate(task, promote_cfg, cand, old, drift)
        version = promote(cfg.root, export, run_id) if promoted else None
        decision = {"run_id": run_id, "promoted": promoted, "reason": reason,
                    "metric": promote_cfg.metric or PRIMARY_METRIC[task],
                    "baseline": baseline_comparison(task, cand),
                    "require_beats_baseline": promote_cfg.require_beats_baseline,
                    "max_drift_psi": promote_cfg.max_drift_psi,
                    "drift": {name: s.get("psi") for name, s in drift["signals"].items()} if drift else None,
                    "dataset": data, "dataset_fingerprint": meta.fingerprint, "videos_decoded": decoded,
                    "candidate": {"export": export, "metrics": cand.get("model")},
                    "blessed_before": {"export": blessed, "metrics": old.get("model") if old else None},
                    "blessed_after": version or blessed, "time": dt.datetime.now(dt.timezone.utc).isoformat()}
        with open(os.path.join(run_dir, "decision.json"), "w", encoding="utf-8") as f:
            json.dump(decision, f, indent=2)
        promotion.append_history(cfg.root, {"action": "retrain", "forced": False, **{
            k: decision[k] for k in ("run_id", "promoted", "reason", "dataset_fingerprint", "blessed_after", "time")}})
        log.info(f"retrain: {'PROMOTED' if promoted else 'not promoted'}: {reason}")
        log.info(f"retrain: decision written to {os.path.join(run_dir, 'decision.json')}")
        return decision


def _human_action(cfg: RetrainConfig, args) -> int:
    """--promote RUN_ID / --rollback under the run lock; 0 done, 2 refused, 3 locked."""
    os.makedirs(cfg.root, exist_ok=True)
    with run_lock(cfg.root, cfg.lock_timeout, cfg.lock_stale_after):
        if args.promote is not None:
            promotion.force_promote(cfg.root, args.promote)
        else:
            promotion.rollback(cfg.root)
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
    if args.status or args.promote is not None or args.rollback:
        cfg.check()
    if args.status:
        log.info(promotion.status_text(cfg.root))
        return 0
    if args.promote is not None or args.rollback:
        return _human_action(cfg, args)
    retrain(cfg)
    return 0
