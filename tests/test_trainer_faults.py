"""Training faults: corrupt latest backup -> the previous one; a failed export keeps the old."""
import json
import os
import resource
import subprocess
import sys

import pytest

from tests.datasets import make_dataset
from tests.runs import backup_epoch, kill_after_backup
from trainer.config import smoke_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--arch", "conv3d", "--batch-size", "4", *smoke_flags("conv3d")]
# Larger than every file training writes for TINY (the 70 kB backup and best-weights .h5),
# smaller than the export's saved_model.pb (137 kB): the export is the first write to fail.
FILE_SIZE_LIMIT = 100_000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("faults")), "regression", n_windows=8)


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)


def _cmd(data, workdir, *flags):
    return [sys.executable, "-m", "trainer", "--data", data, "--workdir", workdir, *TINY, *flags]


def test_corrupted_latest_backup_falls_back_to_the_previous_one(dataset, tmp_path):
    workdir = str(tmp_path / "w")
    backup = os.path.join(workdir, "backup")
    latest, previous = (os.path.join(backup, "training_metadata.json" + s) for s in ("", ".bkp"))
    cmd = _cmd(dataset, workdir, "--epochs", "8")
    kill_after_backup(cmd, _env(), REPO, latest, min_epoch=3)
    kept = backup_epoch(previous)
    assert kept == backup_epoch(latest) - 1 and kept >= 2
    # A kill in the middle of writing the latest backup leaves it cut short, like this.
    weights = os.path.join(backup, "latest.weights.h5")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)

    second = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (f"the latest backup in {backup} is unreadable" in second.stdout
            and f"falling back to the previous backup (epoch {kept})" in second.stdout), \
        second.stdout
    assert f"resuming from backup at epoch {kept}" in second.stdout
    assert f"Epoch {kept + 1}/8" in second.stdout and "Epoch 1/8" not in second.stdout
    assert f"done: 8 epochs (resumed at epoch {kept})" in second.stdout
    card = json.load(open(os.path.join(workdir, "export", "model_card.json")))
    assert card["resumed_at_epoch"] == kept and card["epochs_run"] == 8
    print(f"latest backup (epoch {kept + 1}) truncated; resumed at epoch {kept} of 8")


def _snapshot(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def _limit_file_size():
    # Like a full disk for the files that outgrow it: write() fails with EFBIG (Python ignores
    # SIGXFSZ, so the process is not killed but gets an error).
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_failed_export_never_replaces_a_good_export(dataset, tmp_path):
    workdir = str(tmp_path / "w")
    good = subprocess.run(_cmd(dataset, workdir, "--epochs", "1"), env=_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stderr[-3000:]
    export = os.path.join(workdir, "export")
    before = _snapshot(export)
    assert len(before["saved_model.pb"]) > FILE_SIZE_LIMIT

    # Same workdir, another seed: a different model whose export dies writing the SavedModel.
    bad = subprocess.run(_cmd(dataset, workdir, "--epochs", "2", "--seed", "1"), env=_env(),
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         preexec_fn=_limit_file_size)
    assert bad.returncode == 1, bad.stdout[-2000:] + bad.stderr[-3000:]
    assert f"clipforge train: failed: export to {export} failed (" in bad.stderr, bad.stderr[-3000:]
    assert "an earlier export there, if any, is unchanged" in bad.stderr
    assert "Traceback" not in bad.stderr and "Epoch 2/2" in bad.stdout  # training did finish
    assert _snapshot(export) == before  # byte for byte, every file
    assert sorted(n for n in os.listdir(workdir) if n.startswith(".export")) == []
    best = os.path.join(workdir, "checkpoints", "best.weights.h5")
    assert os.path.getsize(best) < FILE_SIZE_LIMIT
    print(f"export failed after training; {len(before)} files of the good export unchanged")
    print(bad.stderr.strip().splitlines()[-1])
