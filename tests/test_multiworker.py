"""--strategy multiworker: two local CPU workers from TF_CONFIG, chief-only export, a lost peer."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from schemas.export import (EXAMPLES_INPUT, EXAMPLES_SIGNATURE, MODEL_CARD_FILE, PREDICTION,
                            SERVING_SIGNATURE)
from schemas.metadata import DatasetMetadata
from tests.datasets import make_dataset
from trainer.config import smoke_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--arch", "conv3d", "--batch-size", "4", *smoke_flags("conv3d")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("mw")), "regression", n_windows=16)


def free_ports(n):
    """n loopback ports that were free a moment ago (the workers bind them right after)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_workers(data, workdir, logs, *flags):
    """Starts one `clipforge train` process per worker of a 2-worker TF_CONFIG cluster."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        env = dict(os.environ, TF_CONFIG=tf_config, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
        out = open(os.path.join(logs, f"worker{i}.log"), "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "clipforge.cli", "train", "--data", data, "--workdir", workdir,
             "--strategy", "multiworker", *TINY, *flags],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True))
        out.close()
    return procs


def read_log(logs, i):
    with open(os.path.join(logs, f"worker{i}.log")) as f:
        return f.read()


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_two_workers_train_and_only_the_chief_exports(dataset, tmp_path):
    workdir = str(tmp_path / "w")
    procs = start_workers(dataset, workdir, str(tmp_path), "--epochs", "2")
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        stop(procs)
    assert codes == [0, 0], read_log(tmp_path, 0)[-3000:] + read_log(tmp_path, 1)[-3000:]
    chief, other = read_log(tmp_path, 0), read_log(tmp_path, 1)
    assert "_MultiWorkerStrategy x2" in chief and "Epoch 2/2" in chief
    assert f"export: {os.path.join(workdir, 'export')}" in chief
    assert "export: none (not the chief worker)" in other

    # Exactly one export and one model card in the whole workdir: the chief's.
    cards = [os.path.join(d, f) for d, _, files in os.walk(workdir) for f in files
             if f == MODEL_CARD_FILE]
    assert cards == [os.path.join(workdir, "export", MODEL_CARD_FILE)]
    assert not any(name.startswith(".export-") for _, dirs, _ in os.walk(workdir) for name in dirs)
    card = json.load(open(cards[0]))
    assert card["strategy"] == "_MultiWorkerStrategy" and card["replicas"] == 2
    assert card["epochs_run"] == 2
    with open(os.path.join(workdir, "training_log.csv")) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]

    import tensorflow as tf
    loaded = tf.saved_model.load(os.path.join(workdir, "export"))
    meta = DatasetMetadata.load(dataset)
    records = [r.numpy() for path in meta.shard_paths(dataset, "test")
               for r in tf.data.TFRecordDataset(path)]
    served = loaded.signatures[EXAMPLES_SIGNATURE](**{EXAMPLES_INPUT: tf.constant(records)})
    frames = tf.zeros((3,) + meta.spec.window_shape, tf.uint8)
    direct = loaded.signatures[SERVING_SIGNATURE](frames=frames)[PREDICTION].numpy()
    assert served[PREDICTION].shape == (len(records), 2) and direct.shape == (3, 2)
    assert np.all(np.isfinite(served[PREDICTION].numpy())) and np.all(np.isfinite(direct))


def test_killed_worker_fails_the_other_cleanly(dataset, tmp_path):
    workdir = str(tmp_path / "w")
    procs = start_workers(dataset, workdir, str(tmp_path), "--epochs", "500",
                          "--set", "collective_timeout=30")
    chief_log = os.path.join(workdir, "training_log.csv")
    try:
        deadline = time.time() + 180
        # Kill only once the workers are in lockstep: the chief has logged a finished epoch.
        while time.time() < deadline and all(p.poll() is None for p in procs):
            if os.path.exists(chief_log) and len(open(chief_log).read().splitlines()) >= 2:
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in procs), read_log(tmp_path, 0)[-3000:]
        procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        code = procs[0].wait(timeout=120)  # a hang fails the test here instead of hanging it
        waited = time.time() - killed
    finally:
        stop(procs)
    chief = read_log(tmp_path, 0)
    assert code == 1, chief[-3000:]
    assert "failed: multi-worker training lost contact with another worker" in chief
    assert "restart every worker with the same command" in chief and "Traceback" not in chief
    assert not os.path.exists(os.path.join(workdir, "export"))
    print(f"chief exited {code} {waited:.1f} s after its peer was killed")
    print(chief.strip().splitlines()[-1])
    assert waited < 60
