"""`clipforge evaluate` end to end: a real SavedModel and real shards, metrics checked against numpy."""
import json
import os
import re

import numpy as np
import pytest

from clipforge import cli
from schemas import export as ex
from schemas.codec import RecordCodec
from schemas.metadata import DatasetMetadata
from schemas.spec import TargetSpec, WindowSpec
from tests.helpers import unexplained_flags
from trainer.evaluation import build_parser, report

SPEC = WindowSpec(frames=3, stride=2, fps=5.0, height=12, width=14, channels=1, encoding="png")
RGB_SPEC = WindowSpec(frames=3, stride=1, fps=5.0, height=12, width=12, channels=3, encoding="raw")
TARGETS = {
    "regression": TargetSpec("regression", outputs=("speed", "level")),
    "classification": TargetSpec("classification", classes=("dark", "mid", "bright")),
    "next_frame": TargetSpec("next_frame", horizon=2),
}
STATS = {"regression": {"target_mean": [6.0, 1.0]}, "classification": {"class_histogram": [4, 20, 6]},
         "next_frame": {}}
N_VIDEOS, PER_VIDEO = 5, 4


# ---- the models: simple deterministic functions of the frames, mirrored in numpy ----

def _model_tf(task):
    import tensorflow as tf

    def regression(frames):
        x = tf.cast(frames, tf.float32)
        return tf.stack([tf.reduce_mean(x, [1, 2, 3, 4]) / 10.0, tf.reduce_mean(x[:, -1], [1, 2, 3]) / 20.0 - 3.0], 1)

    def classification(frames):
        m = tf.reduce_mean(tf.cast(frames, tf.float32), [1, 2, 3, 4])
        return tf.nn.softmax(-tf.abs(m[:, None] - tf.constant([[60.0, 128.0, 196.0]])) / 8.0)

    def next_frame(frames):
        x = tf.cast(frames, tf.float32)
        return tf.stack([0.5 * (x[:, -1] + x[:, -2]), x[:, -1] + 3.0], 1)

    def nan_regression(frames):
        return regression(frames) * np.float32("nan")

    return {"regression": regression, "classification": classification, "next_frame": next_frame,
            "nan": nan_regression}[task]


def _model_np(task, frames):
    x = frames.astype(np.float64)
    if task == "regression":
        return np.stack([x.mean((1, 2, 3, 4)) / 10.0, x[:, -1].mean((1, 2, 3)) / 20.0 - 3.0], 1)
    if task == "classification":
        z = -np.abs(x.mean((1, 2, 3, 4))[:, None] - np.array([[60.0, 128.0, 196.0]])) / 8.0
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    return np.stack([0.5 * (x[:, -1] + x[:, -2]), x[:, -1] + 3.0], 1)


def save_export(export_dir, task, meta, fn_task=None):
    import tensorflow as tf
    spec = meta.spec
    module = tf.Module()
    fn = _model_tf(fn_task or task)
    module.serve = tf.function(lambda frames: {ex.PREDICTION: fn(frames)},
                               input_signature=[tf.TensorSpec((None,) + spec.window_shape, tf.uint8, name="frames")])
    tf.saved_model.save(module, export_dir, signatures={ex.SERVING_SIGNATURE: module.serve})
    meta.write(export_dir)
    with open(os.path.join(export_dir, ex.MODEL_CARD_FILE), "w") as f:
        json.dump({"architecture": f"test_{task}", "parameters": 0, "timings": {"train_seconds": 1.5}}, f)


# ---- the data: windows whose brightness drives both the model and the targets ----

def make_windows(task, spec, rng):
    n = N_VIDEOS * PER_VIDEO
    level = rng.uniform(20, 230, n)
    frames = np.clip(level[:, None, None, None, None] + rng.normal(0, 25, (n,) + spec.window_shape), 0, 255)
    frames = frames.astype(np.uint8)
    out = {"video": np.array([f"vid{i // PER_VIDEO}.mp4" for i in range(n)]),
           "start": np.array([2 * (i % PER_VIDEO) for i in range(n)]), "frames": frames}
    if task == "regression":
        out["target"] = np.stack([level / 10 + rng.normal(0, 1, n), rng.normal(2, 1, n)], 1)
    elif task == "classification":
        out["label"] = np.where(rng.uniform(size=n) < 0.8, np.digitize(level, [94, 162]), rng.integers(0, 3, n))
    else:
        out["next"] = np.clip(frames[:, -2:].astype(int) + rng.integers(-20, 21, (n, 2) + spec.frame_shape), 0, 255
                              ).astype(np.uint8)
    return out


def write_dataset(root, task, spec, data, compression="none", split="test", windows=None):
    import tensorflow as tf
    codec = RecordCodec(spec, TARGETS[task])
    os.makedirs(os.path.join(root, split), exist_ok=True)
    rel = f"{split}/shard-00000-of-00001.tfrecord" + (".gz" if compression == "gzip" else "")
    n = len(data["video"]) if windows is None else windows
    order = np.random.default_rng(7).permutation(n)  # shards are shuffled, as ingest writes them
    with tf.io.TFRecordWriter(os.path.join(root, rel), "GZIP" if compression == "gzip" else "") as w:
        for i in order:
            kw = {"target": data.get("target", [None] * n)[i], "label": data.get("label", [None] * n)[i],
                  "next_frames": data["next"][i] if "next" in data else None}
            w.write(codec.encode_window(str(data["video"][i]), int(data["start"][i]), data["frames"][i], **kw))
    meta = DatasetMetadata(spec, TARGETS[task], splits={split: {"videos": N_VIDEOS, "windows": n, "shards": [
        {"path": rel, "records": n}]}}, dead_letter={"count": 2, "path": "dead_letter.jsonl"},
        stats=STATS[task], config={}, fingerprint=f"fp-{task}-{spec.height}", compression=compression)
    meta.write(root)
    return meta


@pytest.fixture(scope="module", params=sorted(TARGETS))
def evaluated(request, tmp_path_factory):
    task = request.param
    spec = RGB_SPEC if task == "next_frame" else SPEC
    root = tmp_path_factory.mktemp(task)
    data = make_windows(task, spec, np.random.default_rng(0))
    compression = "gzip" if task == "classification" else "none"
    meta = write_dataset(str(root / "data"), task, spec, data, compression=compression)
    save_export(str(root / "export"), task, meta)
    rc = cli.main(["evaluate", "--model", str(root / "export"), "--data", str(root / "data"),
                   "--output", str(root / "out"), "--batch-size", "6"])
    with open(root / "out" / "metrics.json") as f:
        metrics = json.load(f)
    return task, rc, metrics, (root / "out" / "report.html").read_text(), data, root


def test_metrics_json_matches_numpy(evaluated):
    task, rc, m, _, data, _ = evaluated
    assert rc == 0 and m["task"] == task and m["status"] == "ok"
    assert m["windows"] == N_VIDEOS * PER_VIDEO and m["videos"] == N_VIDEOS and m["nonfinite_windows"] == 0
    pred = _model_np(task, data["frames"])
    if task == "regression":
        y = data["target"]
        r2 = 1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
        assert m["model"]["per_output"]["speed"]["r2"] == pytest.approx(r2[0], rel=1e-4)
        assert m["model"]["r2"] == pytest.approx(r2.mean(), rel=1e-4)
        assert m["model"]["mae"] == pytest.approx(np.abs(y - pred).mean(), rel=1e-4)
        assert m["model"]["pearson_r"] == pytest.approx(
            np.mean([np.corrcoef(y[:, k], pred[:, k])[0, 1] for k in range(2)]), rel=1e-4)
        base = np.array(STATS["regression"]["target_mean"])
        assert m["baseline"]["rmse"] == pytest.approx(np.sqrt(((y - base) ** 2).mean()), rel=1e-5)
        assert m["skill"] == pytest.approx(1 - ((y - pred) ** 2).mean() / ((y - base) ** 2).mean(), rel=1e-4)
        vt, vp = y.reshape(N_VIDEOS, PER_VIDEO, 2).mean(1), pred.reshape(N_VIDEOS, PER_VIDEO, 2).mean(1)
        assert m["model"]["per_video"]["mae"] == pytest.approx(np.abs(vt - vp).mean(), rel=1e-4)
        assert m["baseline"]["pearson_r"] is None  # constant baseline: undefined, written as null
    elif task == "classification":
        labels, guess = data["label"], pred.argmax(1)
        assert m["model"]["accuracy"] == pytest.approx((labels == guess).mean())
        cm = np.zeros((3, 3), int)
        np.add.at(cm, (labels, guess), 1)
        assert m["model"]["confusion_matrix"] == cm.tolist()
        assert m["baseline"]["majority_class"] == "mid"
        assert m["baseline"]["accuracy"] == pytest.approx((labels == 1).mean())
        assert m["model"]["k"] == 2 and 0 <= m["model"]["macro_f1"] <= 1
    else:
        import tensorflow as tf
        truth = data["next"].astype(np.float64)
        pred = np.clip(pred, 0, 255)
        mse = ((pred - truth) ** 2).mean((0, 2, 3, 4))
        assert [s["mse"] for s in m["model"]["per_step"]] == pytest.approx(mse, rel=1e-5)
        assert m["model"]["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse.mean()), rel=1e-5)
        ssim1 = tf.image.ssim(tf.constant(truth[:, 0], tf.float32), tf.constant(pred[:, 0], tf.float32), 255.0)
        assert m["model"]["per_step"][0]["ssim"] == pytest.approx(float(tf.reduce_mean(ssim1)), rel=1e-4)
        copy = np.repeat(data["frames"][:, -1:].astype(np.float64), 2, 1)
        copy_mse = ((copy - truth) ** 2).mean()
        assert m["baseline_copy_last"]["mse"] == pytest.approx(copy_mse, rel=1e-6)
        assert m["gain_db_over_copy_last"] == pytest.approx(10 * np.log10(copy_mse / mse.mean()), rel=1e-4)
        assert len(m["baseline_linear"]["per_step"]) == 2


def test_report_holds_every_plot(evaluated):
    task, _, m, page, _, _ = evaluated
    for sid in ("model-card", "dataset", "metrics") + report.PLOT_SECTIONS[task]:
        assert f'id="{sid}"' in page
    imgs = re.findall(r'<img alt="([\w-]+)" src="data:image/png;base64,([A-Za-z0-9+/=]{200,})"', page)
    assert [a for a, _ in imgs] == list(report.PLOT_SECTIONS[task])
    assert f"fp-{task}" in page and f"test_{task}" in page and "train_seconds" in page
    assert re.search(r"dead-lettered videos \(ingest\)</td><td>2<", page)
    assert 'id="warning"' not in page


@pytest.fixture(scope="module")
def regression_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    data = make_windows("regression", SPEC, np.random.default_rng(1))
    meta = write_dataset(str(root / "data"), "regression", SPEC, data)
    save_export(str(root / "export"), "regression", meta)
    return root, data


def test_nan_model_is_reported(regression_setup, tmp_path, capsys):
    root, _ = regression_setup
    meta = DatasetMetadata.load(str(root / "data"))
    save_export(str(tmp_path / "nan_export"), "regression", meta, fn_task="nan")
    rc = cli.main(["evaluate", "--model", str(tmp_path / "nan_export"), "--data", str(root / "data"),
                   "--output", str(tmp_path / "out")])
    assert rc == 1
    assert "NaN or infinite predictions for 20 of 20 windows" in capsys.readouterr().err
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["status"] == "nonfinite_predictions" and m["model"]["r2"] is None
    assert m["baseline"]["mae"] is not None
    assert 'id="warning"' in (tmp_path / "out" / "report.html").read_text()


def test_spec_mismatch_names_the_field(regression_setup, tmp_path, capsys):
    root, data = regression_setup
    other = WindowSpec(frames=3, stride=2, fps=5.0, height=10, width=14, channels=1)
    small = dict(data, frames=data["frames"][:, :, :10])
    write_dataset(str(tmp_path / "data"), "regression", other, small)
    rc = cli.main(["evaluate", "--model", str(root / "export"), "--data", str(tmp_path / "data"),
                   "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "spec.height=10" in err and "spec.height=12" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_empty_or_unknown_split_and_missing_model_fail_clearly(regression_setup, tmp_path, capsys):
    root, data = regression_setup
    write_dataset(str(tmp_path / "data"), "regression", SPEC, data, split="test", windows=0)
    base = ["evaluate", "--model", str(root / "export"), "--output", str(tmp_path / "out")]
    assert cli.main(base + ["--data", str(tmp_path / "data")]) == 2
    assert "split 'test'" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(root / "data"), "--split", "val"]) == 2
    assert "split 'val' not in dataset" in capsys.readouterr().err
    rc = cli.main(["evaluate", "--model", str(tmp_path), "--data", str(root / "data"), "--output", str(tmp_path / "o")])
    assert rc == 2 and "not a finished clipforge export" in capsys.readouterr().err


def test_a_corrupt_shard_is_failed_work_not_a_wrong_set_up(regression_setup, tmp_path, capsys):
    root, data = regression_setup
    write_dataset(str(tmp_path / "data"), "regression", SPEC, data)
    meta = DatasetMetadata.load(str(tmp_path / "data"))
    [shard] = meta.shard_paths(str(tmp_path / "data"), "test")
    raw = bytearray(open(shard, "rb").read())
    raw[40] ^= 0xFF  # a byte inside the first record's data: its CRC no longer matches
    open(shard, "wb").write(bytes(raw))
    rc = cli.main(["evaluate", "--model", str(root / "export"), "--data", str(tmp_path / "data"),
                   "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "clipforge evaluate: failed: reading split 'test'" in err and "Traceback" not in err
    assert f"clipforge validate {tmp_path / 'data'}" in err  # the command it suggests runs
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_help_explains_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    parser = build_parser()
    assert len(parser._actions) > 5 and unexplained_flags(parser, out) == []


def _video_reference(task, data, how):
    """Video-level figures of the model and the baseline computed directly in numpy."""
    pred = _model_np(task, data["frames"])
    by_video = lambda a: a.reshape((N_VIDEOS, PER_VIDEO) + a.shape[1:])  # windows are in video order
    combine = (lambda a: by_video(a).max(1)) if how == "max" else (lambda a: by_video(a).mean(1))
    if task == "regression":
        vt, vp = combine(data["target"]), combine(pred)
        base = np.array(STATS["regression"]["target_mean"])
        return {"mae": np.abs(vt - vp).mean(), "rmse": np.sqrt(((vt - vp) ** 2).mean())}, \
               {"mae": np.abs(vt - base).mean()}
    if task == "classification":
        truth = np.eye(3)[data["label"]].reshape(N_VIDEOS, PER_VIDEO, 3).sum(1).argmax(1)
        if how == "vote":
            votes = np.eye(3)[pred.argmax(1)].reshape(N_VIDEOS, PER_VIDEO, 3).sum(1)
            guess = np.array([max(np.flatnonzero(v == v.max()), key=lambda k: s[k])
                              for v, s in zip(votes, by_video(pred).sum(1))])
        else:
            guess = combine(pred).argmax(1)
        return {"accuracy": (truth == guess).mean()}, {"accuracy": (truth == 1).mean()}
    truth = data["next"].astype(np.float64)
    window_mse = ((np.clip(pred, 0, 255) - truth) ** 2).mean((1, 2, 3, 4))
    copy_mse = ((np.repeat(data["frames"][:, -1:].astype(np.float64), 2, 1) - truth) ** 2).mean((1, 2, 3, 4))
    psnr = lambda mse: np.mean(10 * np.log10(255 ** 2 / combine(mse)))
    return {"psnr": psnr(window_mse)}, {"psnr": psnr(copy_mse)}


def test_video_level_figures_for_every_task_and_rule(evaluated, tmp_path, capsys):
    task, _, m, page, data, root = evaluated
    base_key = "baseline_copy_last" if task == "next_frame" else "baseline"
    rules = {"regression": ["max"], "classification": ["max", "vote"], "next_frame": ["max"]}[task]
    results = {"mean": m}
    for how in rules:
        out = tmp_path / how
        assert cli.main(["evaluate", "--model", str(root / "export"), "--data", str(root / "data"),
                         "--output", str(out), "--aggregate", how, "--no-report"]) == 0
        results[how] = json.loads((out / "metrics.json").read_text())
    for how, got in results.items():
        assert got["aggregate"] == how
        assert got["model"]["video"]["videos"] == got[base_key]["video"]["videos"] == N_VIDEOS
        model, base = _video_reference(task, data, how)
        for k, v in model.items():
            assert got["model"]["video"][k] == pytest.approx(v, rel=1e-4), (how, k)
        for k, v in base.items():
            assert got[base_key]["video"][k] == pytest.approx(v, rel=1e-4), (how, k)
    # Window-level figures do not depend on the rule; the report shows both levels.
    assert all(r["model"]["mse" if task != "classification" else "accuracy"] ==
               m["model"]["mse" if task != "classification" else "accuracy"] for r in results.values())
    assert 'id="video-metrics"' in page and "per window" in page and "per video (mean)" in page
    if task != "classification":
        rc = cli.main(["evaluate", "--model", str(root / "export"), "--data", str(root / "data"),
                       "--output", str(tmp_path / "vote"), "--aggregate", "vote"])
        err = capsys.readouterr().err
        assert rc == 2 and "aggregate=vote applies to classification only" in err
        assert not (tmp_path / "vote" / "metrics.json").exists()
