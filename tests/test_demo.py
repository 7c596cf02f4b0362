"""`clipforge demo` end to end at a tiny size: corpus, ingest, train, evaluate, the printed table."""
import json
import os

import pytest

from clipforge import demo
from schemas.tasks import NAMES, TASKS


def test_demo_runs_the_whole_chain_and_prints_the_table(tmp_path, capsys):
    work = str(tmp_path / "demo")
    assert demo.run(["--workdir", work, "--videos", "10", "--epochs", "1", "--task", "regression"]) == 0
    out = capsys.readouterr().out
    metrics_path = os.path.join(work, "report_regression", "metrics.json")
    with open(metrics_path) as f:
        metrics = json.load(f)
    assert metrics["task"] == "regression" and metrics["windows"] > 0
    assert f"metrics: {metrics_path}" in out
    assert f"report:  {os.path.join(work, 'report_regression', 'report.html')}" in out
    # the table shows the model's R2 beside the baseline's, as written to metrics.json
    row = next(l for l in out.splitlines() if l.startswith("R2 "))
    assert row.split()[1:] == [f"{metrics['model']['r2']:.4f}", f"{metrics['baseline']['r2']:.4f}"]
    with open(os.path.join(work, "report_regression", "report.html")) as f:
        assert f.read().count("<img") >= 3


def test_demo_refuses_a_corpus_too_small_to_split(tmp_path, capsys):
    import pytest
    with pytest.raises(SystemExit):
        demo.run(["--workdir", str(tmp_path), "--videos", "3"])
    assert "--videos must be at least 10" in capsys.readouterr().err


def test_multilabel_demo_runs_on_the_multi_shape_corpus(tmp_path, capsys):
    from schemas.tasks import MULTILABEL
    work = str(tmp_path / "demo")
    assert demo.run(["--workdir", work, "--videos", "10", "--epochs", "1", "--task", MULTILABEL.name]) == 0
    out = capsys.readouterr().out
    with open(os.path.join(work, f"report_{MULTILABEL.name}", "metrics.json")) as f:
        metrics = json.load(f)
    # the corpus' labels.csv names each clip's shapes; the classes are their union
    assert metrics["task"] == MULTILABEL.name and set(metrics["model"]["per_class"]) <= set(demo_shapes())
    for label, model_key, base_key in MULTILABEL.headline:
        row = next(l for l in out.splitlines() if l.startswith(label + " "))
        model, base = (demo._get(metrics, k) for k in (model_key, base_key))
        assert row.split()[-2:] == [f"{model:.4f}", f"{base:.4f}"]
    assert "class-frequency baseline" in out


def demo_shapes():
    from clipforge import synth
    return synth.EXTRA_SHAPES


@pytest.mark.parametrize("task", NAMES)
def test_each_preset_is_a_checked_config_of_its_stage(task, tmp_path):
    """A task row's demo preset holds IngestConfig and TrainConfig fields: each step's typed config,
    checked before any work, holds them; the step header is the equivalent command line."""
    from trainer.config import load_config
    row = TASKS[task]
    corpus, data, workdir = (str(tmp_path / name) for name in ("corpus", "data", "train"))
    ingest = demo.ingest_config(task, corpus, data)
    assert (ingest.task, ingest.input, ingest.output, ingest.overwrite) == (task, corpus, data, True)
    assert ingest.labels == (os.path.join(corpus, "labels.csv") if row.labels else None)
    assert (ingest.fps, ingest.size, ingest.color, ingest.splits) == (12.0, "64x64", "gray", (0.7, 0.15, 0.15))
    for key, value in row.demo.ingest.items():
        assert getattr(ingest, key) == value, key
    train = load_config(demo.train_fields(task, data, workdir))
    assert (train.arch, train.epochs, train.seed) == (row.demo.arch, row.demo.epochs, 0)
    for key, value in row.demo.train.items():
        assert getattr(train, key) == value, key
    assert load_config(demo.train_fields(task, data, workdir, arch="conv3d", epochs=2)).epochs == 2
    shown = demo._flags(demo.train_fields(task, data, workdir), ("data", "workdir", "arch", "epochs", "batch_size"))
    assert shown.startswith(f"--data {data} --workdir {workdir} --arch {row.demo.arch} --epochs {row.demo.epochs} "
                            "--set seed=0 --batch-size ")
