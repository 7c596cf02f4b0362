"""`clipforge retrain`: dataset reuse, the promotion gate and its baseline rule, forced promotion,
rollback, status, the atomic blessed switch and the lock."""
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

from clipforge import promotion, retrain, synth
from clipforge.retrain import LockHeld, PromoteConfig, gate, run_lock
from schemas.logs import get_logger


def _tree_digest(path: str) -> str:
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, path).encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def _write(root, name, cfg) -> str:
    path = str(root / name)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _logged(module: str = "clipforge.retrain"):
    """The lines MODULE's logger logs inside the block (INFO and above), whatever the console set-up."""
    logger, handler = get_logger(module), _Lines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _decisions(root: str) -> list[dict]:
    runs = sorted(d for d in os.listdir(os.path.join(root, "runs")) if d != promotion.HISTORY_FILE)
    return [json.load(open(os.path.join(root, "runs", r, "decision.json"))) for r in runs]


def _history(root: str) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(root, "runs", promotion.HISTORY_FILE))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("corpus"))
    synth.make_corpus(path, n_videos=10, seed=5, size=32, seconds=1.5)
    return path


_WINDOWS = {"frames": 4, "stride": 2, "fps": 12, "size": "24x24", "color": "gray", "splits": [0.6, 0.2, 0.2]}


@pytest.fixture
def regression_cfg(corpus, tmp_path):
    # A learning rate of 1 throws the weights far off in one epoch: finite predictions, far worse
    # than the training mean (skill around -1e6), as a misconfigured scheduled run would give.
    return {"root": str(tmp_path / "root"),
            "ingest": {"input": corpus, "labels": os.path.join(corpus, "labels.csv"), "task": "regression",
                       "target_columns": ["speed"], **_WINDOWS},
            "train": {"arch": "conv3d", "epochs": 1, "batch_size": 8, "learning_rate": 1.0,
                      "set": {"arch_options.filters": [4, 8]}},
            "promote": {"metric": "r2"}}


@pytest.fixture(scope="module")
def next_frame_runs(corpus, tmp_path_factory):
    """Three next_frame runs on one root: the first beats copy-last and is blessed, the second is held
    to an impossible min_improvement; two new videos arrive before the third, which appends them.
    Next-frame training starts at copy-last (a zero residual) and each step lowers the MSE, so two
    epochs reliably beat that baseline."""
    root = tmp_path_factory.mktemp("next_frame")
    videos_in = str(root / "videos")
    shutil.copytree(corpus, videos_in)
    cfg = {"root": str(root / "root"), "ingest": {"input": videos_in, "task": "next_frame", "horizon": 1, **_WINDOWS},
           "train": {"arch": "frames_as_channels", "epochs": 2, "batch_size": 8, "learning_rate": 0.003,
                     "set": {"arch_options.filters": [4, 8]}},
           "promote": {}}
    with _logged() as first_log:
        first = retrain.retrain(retrain.RetrainConfig(**cfg))
    blessed = retrain.current_blessed(cfg["root"])
    (dataset,) = os.listdir(os.path.join(cfg["root"], "datasets"))
    meta = os.path.join(cfg["root"], "datasets", dataset, "metadata.json")
    before = {"digest": _tree_digest(blessed) if blessed else None, "meta_mtime": os.stat(meta).st_mtime_ns}
    with _logged() as second_log:
        second = retrain.retrain(retrain.RetrainConfig(**dict(cfg, promote={"min_improvement": 1000.0})))
    before["meta_mtime_after_second"] = os.stat(meta).st_mtime_ns
    more = str(root / "more")
    synth.make_corpus(more, n_videos=2, seed=6, size=32, seconds=1.5)
    for name in [n for n in os.listdir(more) if not n.endswith(".csv")]:
        shutil.copy(os.path.join(more, name), os.path.join(videos_in, "new_" + name))
    with _logged() as third_log:
        third = retrain.retrain(retrain.RetrainConfig(**dict(cfg, promote={"min_improvement": 1000.0})))
    return {"cfg": cfg, "first": first, "second": second, "third": third, "before": before, "meta": meta,
            "logs": ("\n".join(first_log), "\n".join(second_log), "\n".join(third_log))}


def test_a_first_run_that_loses_to_its_baseline_is_not_promoted_and_the_switch_turns_the_rule_off(
        regression_cfg, tmp_path, capsys):
    root = regression_cfg["root"]
    assert retrain.run(["--config", _write(tmp_path, "loser.yaml", regression_cfg)]) == 0
    assert "not promoted: candidate loses to its baseline" in capsys.readouterr().out
    assert retrain.current_blessed(root) is None and not os.path.exists(os.path.join(root, "models"))
    (decision,) = _decisions(root)
    metrics = json.load(open(os.path.join(root, "runs", decision["run_id"], "eval_candidate", "metrics.json")))
    assert metrics["skill"] < 0 and metrics["model"]["mse"] > metrics["baseline"]["mse"]
    base = decision["baseline"]
    assert base == {"name": "training-mean baseline", "metric": "mse", "label": "MSE",
                    "model": metrics["model"]["mse"], "baseline": metrics["baseline"]["mse"], "beats": False,
                    "skill": metrics["skill"]}
    assert decision["promoted"] is False and decision["blessed_after"] is None
    reason = decision["reason"]
    assert "training-mean baseline" in reason
    assert f"{base['model']:.6g}" in reason and f"{base['baseline']:.6g}" in reason

    # The same kind of candidate with the rule switched off: the first promotion passes (no thresholds).
    off = dict(regression_cfg, promote={"metric": "r2", "require_beats_baseline": False})
    assert retrain.run(["--config", _write(tmp_path, "off.yaml", off)]) == 0
    log = capsys.readouterr().out
    assert "reusing finished dataset" in log and "PROMOTED: first promotion" in log
    second = _decisions(root)[1]
    assert second["promoted"] is True and second["baseline"]["beats"] is False
    assert "require_beats_baseline: false" in second["reason"] and "training-mean baseline" in second["reason"]
    assert retrain.current_blessed(root) == os.path.realpath(second["blessed_after"])
    assert [h["promoted"] for h in _history(root)] == [False, True]


def test_a_first_run_that_beats_its_baseline_is_blessed_and_a_worse_one_keeps_it(next_frame_runs):
    runs, root = next_frame_runs, next_frame_runs["cfg"]["root"]
    first_log, second_log, _ = runs["logs"]
    assert "ingesting into" in first_log and "PROMOTED: first promotion" in first_log
    first = runs["first"]
    assert first["promoted"] is True and first["baseline"]["name"] == "copy-last baseline"
    assert first["baseline"]["model"] > first["baseline"]["baseline"] and first["baseline"]["beats"] is True
    assert f"{first['baseline']['model']:.6g} > {first['baseline']['baseline']:.6g}" in first["reason"]
    blessed = retrain.current_blessed(root)
    assert blessed == os.path.realpath(os.path.join(root, "models", "versions", first["run_id"]))
    assert os.path.exists(os.path.join(blessed, "saved_model.pb"))

    assert "reusing finished dataset" in second_log and "warm-starting from" in second_log
    assert "not promoted" in second_log
    assert runs["before"]["meta_mtime_after_second"] == runs["before"]["meta_mtime"]
    assert retrain.current_blessed(root) == blessed and _tree_digest(blessed) == runs["before"]["digest"]
    second = runs["second"]
    assert second["promoted"] is False and "below min_improvement" in second["reason"]
    assert "of the copy-last baseline" in second["reason"]
    assert second["blessed_before"]["metrics"]["psnr"] is not None
    assert second["candidate"]["metrics"]["psnr"] is not None
    assert [d["run_id"] for d in _decisions(root)][:2] == [first["run_id"], second["run_id"]]
    history = _history(root)
    assert [(h["promoted"], h["forced"]) for h in history][:2] == [(True, False), (False, False)]
    assert history[0]["dataset_fingerprint"] == history[1]["dataset_fingerprint"] == first["dataset_fingerprint"]


def test_new_videos_are_appended_to_the_one_dataset_of_the_configuration(next_frame_runs):
    runs, root = next_frame_runs, next_frame_runs["cfg"]["root"]
    first, second, third = runs["first"], runs["second"], runs["third"]
    n_first = len([n for n in os.listdir(runs["cfg"]["ingest"]["input"]) if n.endswith(".mp4")]) - 2
    assert (first["videos_decoded"], second["videos_decoded"], third["videos_decoded"]) == (n_first, 0, 2)
    assert "appending to" in runs["logs"][2]
    assert first["dataset"] == second["dataset"] == third["dataset"]
    assert os.listdir(os.path.join(root, "datasets")) == [os.path.basename(first["dataset"])]
    meta = json.load(open(runs["meta"]))
    assert meta["generation"] == 1 and meta["fingerprint"] == third["dataset_fingerprint"] != first["dataset_fingerprint"]
    assert sum(s["videos"] for s in meta["splits"].values()) == n_first + 2


def test_forced_promotion_rollback_their_refusals_the_lock_and_status(next_frame_runs, tmp_path, capsys,
                                                                      monkeypatch):
    # A copy of the module's root, so this test's actions leave the other tests' state alone.
    root = str(tmp_path / "root")
    shutil.copytree(next_frame_runs["cfg"]["root"], root, symlinks=True)
    cfg = _write(tmp_path, "cfg.yaml", dict(next_frame_runs["cfg"], root=root))
    r1, r2 = next_frame_runs["first"]["run_id"], next_frame_runs["second"]["run_id"]
    v1, v2 = (os.path.realpath(os.path.join(root, "models", "versions", r)) for r in (r1, r2))
    monkeypatch.setenv("USER", "oncall")
    assert retrain.current_blessed(root) == v1

    assert retrain.run(["--config", cfg, "--status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"blessed: {r1}") and "psnr" in out and "copy-last baseline" in out
    rows = out.splitlines()[-3:]  # the fixture's third run (new videos appended) is not promoted either
    assert rows[0].split()[2:6] == [r1, "retrain", "PROMOTED", r1]
    assert rows[1].split()[2:5] == [r2, "retrain", "not"]
    assert rows[2].split()[2:5] == [next_frame_runs["third"]["run_id"], "retrain", "not"]

    with run_lock(root):
        assert retrain.run(["--config", cfg, "--promote", r2]) == 3
        assert retrain.run(["--config", cfg, "--rollback"]) == 3
        assert capsys.readouterr().err.count("another retrain run holds") == 2
    assert retrain.current_blessed(root) == v1 and len(_history(root)) == 3

    for bad, message in (("nope", "no run 'nope' to promote"), ("../runs", "a run id is a directory name")):
        assert retrain.run(["--config", cfg, "--promote", bad]) == 2
        assert message in capsys.readouterr().err
    assert retrain.run(["--config", cfg, "--rollback"]) == 2
    assert f"nothing to roll back to: {r1} is the first blessed version" in capsys.readouterr().err
    assert retrain.current_blessed(root) == v1 and len(_history(root)) == 3

    # The human overrides the gate: the held-back run is blessed, recorded as forced, who and when.
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    assert retrain.run(["--config", cfg, "--promote", r2]) == 0
    assert retrain.current_blessed(root) == v2
    assert _tree_digest(v2) == _tree_digest(os.path.join(root, "runs", r2, "train", "export"))
    forced = _history(root)[-1]
    assert forced["forced"] is True and forced["promoted"] is True and forced["action"] == "promote"
    assert forced["run_id"] == r2 and forced["by"] == f"oncall@{socket.gethostname()}"
    assert started <= dt.datetime.fromisoformat(forced["time"]) <= dt.datetime.now(dt.timezone.utc)
    assert os.path.realpath(forced["blessed_before"]) == v1 and os.path.realpath(forced["blessed_after"]) == v2

    assert retrain.run(["--config", cfg, "--rollback"]) == 0
    assert retrain.current_blessed(root) == v1
    back = _history(root)[-1]
    assert back["action"] == "rollback" and back["forced"] is True and back["run_id"] == r1
    assert retrain.run(["--config", cfg, "--rollback"]) == 2   # r2 was undone; r1 is the first again
    capsys.readouterr()
    # Promoting a version that exists re-points to it; rolling back to a deleted version is refused.
    assert retrain.run(["--config", cfg, "--promote", r2]) == 0 and retrain.current_blessed(root) == v2
    shutil.rmtree(v1)
    assert retrain.run(["--config", cfg, "--rollback"]) == 2
    assert f"previous blessed version {r1} is gone" in capsys.readouterr().err
    assert retrain.current_blessed(root) == v2
    # every switch went through a temporary link renamed over `blessed`: none is left behind
    assert sorted(os.listdir(os.path.join(root, "models"))) == ["blessed", "versions"]

    assert retrain.run(["--config", cfg, "--status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"blessed: {r2}")
    assert [r.split()[4] for r in out.splitlines()[-3:]] == ["FORCED", "rolled", "FORCED"]


def test_forced_promotion_refuses_a_run_with_nonfinite_metrics(next_frame_runs, tmp_path, capsys):
    root = str(tmp_path / "root")
    shutil.copytree(next_frame_runs["cfg"]["root"], root, symlinks=True)
    r2 = next_frame_runs["second"]["run_id"]
    path = os.path.join(root, "runs", r2, "eval_candidate", "metrics.json")
    metrics = json.load(open(path))
    metrics["model"]["psnr"] = None   # what evaluate writes for a NaN
    json.dump(metrics, open(path, "w"))
    cfg = _write(tmp_path, "cfg.yaml", dict(next_frame_runs["cfg"], root=root))
    assert retrain.run(["--config", cfg, "--promote", r2]) == 2
    assert "model.psnr is NaN or infinite (null) in metrics.json" in capsys.readouterr().err
    assert os.path.basename(retrain.current_blessed(root)) == next_frame_runs["first"]["run_id"]


def _regression(mse, base_mse=1.0, **model):
    return {"task": "regression", "status": "ok", "model": {"mse": mse, "r2": 1 - mse, **model},
            "baseline": {"mse": base_mse, "r2": 0.0}, "skill": 1 - mse / base_mse}


def test_gate_decisions():
    cfg = PromoteConfig(metric="r2", min_improvement=0.05, thresholds={"r2": 0.5, "mae": 3.0})
    good = _regression(0.2, mae=2.0)
    assert gate("regression", cfg, good, None)[0] is True
    assert gate("regression", cfg, _regression(0.6, mae=2.0), None) == (
        False, "candidate r2=0.4 fails the threshold >= 0.5; beats the baseline: MSE 0.6 < 1 of the "
               "training-mean baseline (skill 0.4)")
    assert gate("regression", cfg, _regression(0.2, mae=3.5), None)[1].startswith("candidate mae=3.5 fails")
    assert gate("regression", cfg, good, _regression(0.22))[0] is False   # +0.02 < 0.05
    assert gate("regression", cfg, good, _regression(0.3))[0] is True     # +0.10
    assert gate("regression", cfg, _regression(0.4, mae=2.5), _regression(0.2))[0] is False
    lower = PromoteConfig(metric="mae", min_improvement=0.1)
    assert gate("regression", lower, _regression(0.5, mae=1.0), _regression(0.5, mae=1.5))[0] is True
    assert gate("regression", lower, _regression(0.5, mae=1.45), _regression(0.5, mae=1.5))[0] is False


def test_gate_baseline_rule_per_task_and_its_switch():
    on, off = PromoteConfig(), PromoteConfig(require_beats_baseline=False)
    # regression: skill > 0, i.e. MSE below the training-mean baseline, first run included
    loser = _regression(2.64, mae=1.0)   # r2 = -1.64, the case
    promoted, reason = gate("regression", on, loser, None)
    assert not promoted and reason == ("candidate loses to its baseline: MSE 2.64 vs 1 of the training-mean "
                                       "baseline (skill -1.64)")
    assert gate("regression", off, loser, None)[0] is True
    assert gate("regression", on, _regression(1.0), None)[0] is False    # equal to the baseline is not beating it
    promoted, reason = gate("regression", on, _regression(0.5), None)
    assert promoted and "MSE 0.5 < 1 of the training-mean baseline (skill 0.5)" in reason
    # a candidate better than a blessed model that is itself worse than the baseline still loses
    assert gate("regression", on, _regression(1.5), _regression(2.64))[0] is False

    def clf(acc, base):
        return {"task": "classification", "model": {"accuracy": acc}, "baseline": {"accuracy": base,
                                                                                   "majority_class": "left"}}
    promoted, reason = gate("classification", on, clf(0.25, 0.25), None)
    assert not promoted and "accuracy 0.25 vs 0.25 of the majority-class baseline" in reason
    assert gate("classification", on, clf(0.3, 0.25), None)[0] is True
    assert gate("classification", on, clf(0.9, 0.25), clf(0.8, 0.25))[0] is True

    def nf(psnr, copy):
        return {"task": "next_frame", "model": {"psnr": psnr}, "baseline_copy_last": {"psnr": copy},
                "baseline_linear": {"psnr": 99.0}}
    promoted, reason = gate("next_frame", on, nf(19.5, 19.65), None)
    assert not promoted and reason.endswith("PSNR 19.5 vs 19.65 of the copy-last baseline")
    assert gate("next_frame", on, nf(19.7, 19.65), None)[0] is True
    assert gate("next_frame", off, nf(19.5, 19.65), None)[0] is True
    # multilabel: mAP against the class-frequency baseline, promoted on map by default
    def ml(m, base):
        return {"task": "multilabel", "model": {"map": m}, "baseline": {"map": base}}
    promoted, reason = gate("multilabel", on, ml(0.4, 0.45), None)
    assert not promoted and reason.endswith("mAP 0.4 vs 0.45 of the class-frequency baseline")
    promoted, reason = gate("multilabel", on, ml(0.8, 0.45), None)
    assert promoted and "mAP 0.8 > 0.45 of the class-frequency baseline" in reason
    assert gate("multilabel", on, ml(0.7, 0.45), ml(0.8, 0.45))[0] is False  # worse than the blessed map
    # a task with no baseline rule is not promoted unless the rule is switched off
    other = {"task": "captioning", "model": {"bleu": 0.4}}
    assert gate("captioning", PromoteConfig(metric="bleu"), other, None) == (
        False, "no baseline rule for task 'captioning'; set promote.require_beats_baseline: false")
    assert gate("captioning", PromoteConfig(metric="bleu", require_beats_baseline=False), other, None)[0] is True


def test_gate_never_promotes_a_nonfinite_metric():
    on, off = PromoteConfig(), PromoteConfig(require_beats_baseline=False)
    for bad in (math.nan, math.inf, None):
        promoted, reason = gate("regression", off, _regression(0.5) | {"model": {"r2": bad, "mse": 0.5}}, None)
        assert not promoted and "candidate model.r2 is NaN or infinite (null) in metrics.json" in reason
        promoted, reason = gate("regression", on, _regression(0.5), _regression(0.5) | {"model": {"r2": bad}})
        assert not promoted and reason.startswith("blessed model model.r2 is NaN or infinite")
    # NaN compares False with everything: a threshold on it must not pass silently
    nan_mae = _regression(0.5, mae=math.nan)
    promoted, reason = gate("regression", PromoteConfig(thresholds={"mae": 3.0}), nan_mae, None)
    assert not promoted and "model.mae is NaN or infinite" in reason
    assert "missing from" in gate("regression", PromoteConfig(thresholds={"mape": 3.0}), _regression(0.5), None)[1]
    nan_base = _regression(0.5)
    nan_base["baseline"]["mse"] = math.nan
    assert "missing or non-finite" in gate("regression", on, nan_base, None)[1]
    windows = _regression(0.5) | {"status": "nonfinite_predictions", "nonfinite_windows": 3, "windows": 40}
    promoted, reason = gate("regression", off, windows, None)
    assert not promoted and reason.startswith("candidate returned NaN or infinite predictions for 3 of 40 windows")


def test_rollback_follows_the_blessing_history():
    def entry(version, action="retrain", promoted=True, before=None):
        return {"action": action, "promoted": promoted, "blessed_after": f"/r/models/versions/{version}",
                "blessed_before": before and f"/r/models/versions/{before}"}
    history = [entry("a"), entry("b", promoted=False), entry("b"), entry("c", action="promote"),
               entry("b", action="rollback", promoted=False, before="c"), entry("d")]
    assert promotion.blessing_chain(history) == ["a", "b", "d"]
    # entries written before `action` existed (promoted + blessed_after only) still count
    assert promotion.blessing_chain([{"promoted": True, "blessed_after": "/x/v1"}]) == ["v1"]


def test_overlapping_run_exits_with_a_clear_message_and_stale_lock_is_taken_over(regression_cfg, tmp_path, capsys):
    root = str(tmp_path)
    with run_lock(root):
        with pytest.raises(LockHeld, match="another retrain run holds"):
            with run_lock(root, timeout=0.3):
                raise AssertionError("a second holder got the lock")
        cfg = _write(tmp_path, "cfg.yaml", dict(regression_cfg, root=root))
        assert retrain.run(["--config", cfg]) == 3
        assert "another retrain run holds" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(root, retrain.LOCK_FILE))
    # a lock left by a process that has exited is stale: the next run takes it over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(os.path.join(root, retrain.LOCK_FILE), "w") as f:
        json.dump({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0}, f)
    with _logged() as messages, run_lock(root) as path:
        assert json.load(open(path))["pid"] == os.getpid()
    assert messages and "taking over a stale lock" in messages[0]


def test_config_errors_name_the_field(tmp_path, capsys):
    cfg = _write(tmp_path, "bad.yaml", {"root": str(tmp_path), "ingest": {"input": "x", "task": "regression",
                                        "output": "y"}, "train": {"arch": "conv3d"}})
    assert retrain.run(["--config", cfg]) == 2
    assert "ingest.output" in capsys.readouterr().err
    base = {"root": str(tmp_path), "ingest": {"input": "x", "task": "regression"}, "train": {"arch": "conv3d"}}
    cfg = _write(tmp_path, "bad2.yaml", dict(base, promote={"min_improvment": 1}))
    assert retrain.run(["--config", cfg]) == 2
    assert "min_improvment" in capsys.readouterr().err
    cfg = _write(tmp_path, "bad3.yaml", dict(base, promote={"require_beats_baseline": "sometimes"}))
    assert retrain.run(["--config", cfg, "--status"]) == 2
    assert "promote.require_beats_baseline" in capsys.readouterr().err
    cfg = _write(tmp_path, "bad4.yaml", dict(base, promote={"thresholds": {"r2": float("nan")}}))
    assert retrain.run(["--config", cfg]) == 2
    assert "promote.thresholds.r2=nan: expected a finite number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        retrain.run(["--config", cfg, "--rollback", "--promote", "x"])
    assert "not allowed with argument" in capsys.readouterr().err
    # ingest: and train: are the stages' typed configs: a wrong key or value fails before any work
    good = {"root": str(tmp_path / "never"), "ingest": {"input": "x", "task": "next_frame"}, "train": {"arch": "conv3d"}}
    for section, key, value, named in (("ingest", "fram", 4, "ingest: unknown key(s) ['fram']"),
                                       ("ingest", "frames", "six", "ingest.frames='six': expected an integer"),
                                       ("ingest", "color", "blue", "ingest: color='blue' is invalid"),
                                       ("train", "epoch", 2, "unknown key(s) ['epoch']"),
                                       ("train", "set", {"arch_options.filter": 4}, "arch_options ['filter']"),
                                       ("train", "set", {"workdir": "/tmp/x"}, "train.workdir is chosen by retrain")):
        cfg = _write(tmp_path, "bad5.yaml", dict(good, **{section: {**good[section], key: value}}))
        assert retrain.run(["--config", cfg]) == 2
        assert named in capsys.readouterr().err
    assert not os.path.exists(good["root"])  # no lock taken, no run directory made
