"""`clipforge demo` end to end at a tiny size: corpus, ingest, train, evaluate, the printed table."""
import json
import os

from clipforge import demo


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
