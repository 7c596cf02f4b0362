"""`clipforge retrain`: dataset reuse, the promotion gate, the atomic blessed switch and the lock."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from clipforge import retrain, synth
from clipforge.retrain import LockHeld, PromoteConfig, gate, run_lock


def _tree_digest(path: str) -> str:
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, path).encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain")
    corpus = str(root / "corpus")
    synth.make_corpus(corpus, n_videos=10, seed=5, size=32, seconds=1.5)
    base = {"root": str(root / "root"),
            "ingest": {"input": corpus, "labels": os.path.join(corpus, "labels.csv"), "task": "regression",
                       "target_columns": ["speed"], "frames": 4, "stride": 2, "fps": 12, "size": "24x24",
                       "color": "gray", "splits": [0.6, 0.2, 0.2]},
            "train": {"arch": "conv3d", "epochs": 1, "batch_size": 8, "set": {"filters": [4, 8]}},
            "promote": {"metric": "r2", "min_improvement": 0.0}}
    return root, base


def _write(root, name, cfg) -> str:
    path = str(root / name)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def test_two_runs_one_dataset_two_decisions_and_a_worse_candidate_keeps_blessed(setup, capsys):
    root, base = setup
    assert retrain.run(["--config", _write(root, "first.yaml", base)]) == 0
    first_log = capsys.readouterr().out
    assert "ingesting into" in first_log and "PROMOTED" in first_log
    blessed = retrain.current_blessed(base["root"])
    assert blessed and os.path.exists(os.path.join(blessed, "saved_model.pb"))
    datasets = os.listdir(os.path.join(base["root"], "datasets"))
    assert len(datasets) == 1
    meta_path = os.path.join(base["root"], "datasets", datasets[0], "metadata.json")
    meta_mtime = os.stat(meta_path).st_mtime_ns
    before = _tree_digest(blessed)

    # The second candidate must beat the blessed R2 by 1000: impossible, so it is not promoted.
    second = dict(base, promote={"metric": "r2", "min_improvement": 1000.0})
    assert retrain.run(["--config", _write(root, "second.yaml", second)]) == 0
    log = capsys.readouterr().out
    assert "reusing finished dataset" in log and "warm-starting from" in log and "not promoted" in log
    assert os.listdir(os.path.join(base["root"], "datasets")) == datasets
    assert os.stat(meta_path).st_mtime_ns == meta_mtime
    assert retrain.current_blessed(base["root"]) == blessed and _tree_digest(blessed) == before

    runs = sorted(d for d in os.listdir(os.path.join(base["root"], "runs")) if d != retrain.HISTORY_FILE)
    decisions = [json.load(open(os.path.join(base["root"], "runs", r, "decision.json"))) for r in runs]
    assert [d["promoted"] for d in decisions] == [True, False]
    assert decisions[1]["blessed_before"]["metrics"]["r2"] is not None
    assert decisions[1]["candidate"]["metrics"]["r2"] is not None
    assert "below min_improvement" in decisions[1]["reason"]
    assert {d["dataset_fingerprint"] for d in decisions} == set(datasets)
    history = [json.loads(l) for l in open(os.path.join(base["root"], "runs", retrain.HISTORY_FILE))]
    assert [h["promoted"] for h in history] == [True, False]


def test_gate_decisions():
    cfg = PromoteConfig(metric="r2", min_improvement=0.05, thresholds={"r2": 0.5, "mae": 3.0})
    good = {"model": {"r2": 0.8, "mae": 2.0}}
    assert gate("regression", cfg, good, None)[0] is True
    assert gate("regression", cfg, {"model": {"r2": 0.4, "mae": 2.0}}, None) == (
        False, "candidate r2=0.4 fails the threshold >= 0.5")
    assert gate("regression", cfg, {"model": {"r2": 0.8, "mae": 3.5}}, None)[1].startswith("candidate mae=3.5 fails")
    assert gate("regression", cfg, good, {"model": {"r2": 0.78}})[0] is False   # +0.02 < 0.05
    assert gate("regression", cfg, good, {"model": {"r2": 0.70}})[0] is True    # +0.10
    worse = {"model": {"r2": 0.6, "mae": 2.5}}
    assert gate("regression", cfg, worse, {"model": {"r2": 0.8}})[0] is False
    lower = PromoteConfig(metric="mae", min_improvement=0.1)
    assert gate("regression", lower, {"model": {"mae": 1.0}}, {"model": {"mae": 1.5}})[0] is True
    assert gate("regression", lower, {"model": {"mae": 1.45}}, {"model": {"mae": 1.5}})[0] is False
    assert gate("classification", PromoteConfig(), {"model": {"accuracy": None}}, None)[0] is False


def test_overlapping_run_exits_with_a_clear_message_and_stale_lock_is_taken_over(setup, tmp_path, capsys):
    root = str(tmp_path)
    with run_lock(root):
        with pytest.raises(LockHeld, match="another retrain run holds"):
            with run_lock(root, timeout=0.3):
                raise AssertionError("a second holder got the lock")
        cfg = _write(tmp_path, "cfg.yaml", dict(setup[1], root=root))
        assert retrain.run(["--config", cfg]) == 3
        assert "another retrain run holds" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(root, retrain.LOCK_FILE))
    # a lock left by a process that has exited is stale: the next run takes it over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(os.path.join(root, retrain.LOCK_FILE), "w") as f:
        json.dump({"pid": int(dead.stdout), "host": __import__("socket").gethostname(), "started": 0}, f)
    messages = []
    with run_lock(root, log=messages.append) as path:
        assert json.load(open(path))["pid"] == os.getpid()
    assert messages and "taking over a stale lock" in messages[0]


def test_config_errors_name_the_field(tmp_path, capsys):
    cfg = _write(tmp_path, "bad.yaml", {"root": str(tmp_path), "ingest": {"input": "x", "task": "regression",
                                        "output": "y"}, "train": {"arch": "conv3d"}})
    assert retrain.run(["--config", cfg]) == 2
    assert "ingest.output" in capsys.readouterr().err
    cfg = _write(tmp_path, "bad2.yaml", {"root": str(tmp_path), "ingest": {"input": "x", "task": "regression"},
                                         "train": {"arch": "conv3d"}, "promote": {"min_improvment": 1}})
    assert retrain.run(["--config", cfg]) == 2
    assert "min_improvment" in capsys.readouterr().err
