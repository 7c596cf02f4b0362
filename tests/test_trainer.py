"""`clipforge train` end to end: CLI errors, NaN, corrupt shards, offline ImageNet, tf.distribute, resume."""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from schemas.export import PREDICTION, SERVING_SIGNATURE
from schemas.metadata import DatasetMetadata
from tests.datasets import make_dataset
from tests.runs import backup_epoch, kill_after_backup
from trainer import cpu
from trainer.archs import ARCHS
from trainer.config import smoke, smoke_flags
from trainer.main import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = smoke_flags("conv3d")  # the tests below train conv3d


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    env.update(extra)
    return env


def _train_cmd(data, workdir, *flags):
    return [sys.executable, "-m", "trainer", "--data", data, "--workdir", workdir, *flags]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cli"))
    return {"regression": make_dataset(root, "regression", n_windows=8),
            "one_shard": make_dataset(os.path.join(root, "one"), "regression", n_windows=16, shards=1)}


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    import keras
    keras.mixed_precision.set_dtype_policy("float32")


def test_list_archs_prints_the_registry(capsys):
    assert run(["--list-archs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(ARCHS)
    assert "rnn='lstm'" in lines[list(ARCHS).index("cnn_rnn")] and "filters=(16, 32, 64)" in lines[0]


def test_dataset_without_metadata_is_refused(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train-00000-of-00001.tfrecord").write_bytes(b"")
    rc = run(["--data", str(tmp_path), "--workdir", str(tmp_path / "w"), "--arch", "conv3d"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path} has no metadata.json" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_unknown_arch_and_bad_values_name_the_field(data, tmp_path, capsys):
    assert run(["--data", data["regression"], "--workdir", str(tmp_path), "--arch", "vit"]) == 2
    assert "arch='vit' is not a known architecture; valid: conv3d, cnn_rnn" in capsys.readouterr().err
    assert run(["--data", data["regression"], "--workdir", str(tmp_path), "--arch", "cnn_rnn",
                "--set", "rnn=transformer"]) == 2
    err = capsys.readouterr().err
    assert "arch_options.rnn='transformer' is invalid: expected lstm | gru" in err
    assert "`rnn` is now `arch_options.rnn`" in err  # the old spelling still reaches the option, with a line
    assert run(["--data", data["regression"], "--workdir", str(tmp_path), "--arch", "conv3d",
                "--set", "arch_options.rnn=gru"]) == 2
    assert ("arch_options ['rnn'] are not options of conv3d; it takes: filters (default (16, 32, 64)), "
            "units (default 128)") in capsys.readouterr().err
    assert run(["--data", data["regression"], "--workdir", str(tmp_path), "--arch", "conv3d",
                "--batch-size", "64"]) == 2
    assert "batch_size=64 is larger than the 8 windows" in capsys.readouterr().err


def test_nan_loss_fails_with_no_export(data, tmp_path, capsys):
    # A learning rate of 1e30 makes Adam's first update ~1e30 per weight: the next forward pass
    # overflows float32 and the loss becomes NaN.
    rc = run(["--data", data["regression"], "--workdir", str(tmp_path), "--arch", "conv3d",
              "--epochs", "2", "--batch-size", "2", "--learning-rate", "1e30", *TINY])
    err = capsys.readouterr().err
    assert rc == 1 and re.search(r"loss became (nan|inf) at epoch 1", err) and "no export" in err
    assert not (tmp_path / "export").exists()


def test_corrupt_shard_is_named(tmp_path, capsys):
    d = make_dataset(str(tmp_path), "regression", n_windows=8, shards=2)
    bad = DatasetMetadata.load(d).shard_paths(d, "train")[1]
    raw = bytearray(open(bad, "rb").read())
    raw[len(raw) // 2: len(raw) // 2 + 8] = b"\xff" * 8  # breaks the record's CRC
    open(bad, "wb").write(bytes(raw))
    rc = run(["--data", d, "--workdir", str(tmp_path / "w"), "--arch", "frames_as_channels",
              "--epochs", "1", "--batch-size", "2", *TINY])
    err = capsys.readouterr().err
    assert rc == 1 and f"unreadable shard(s): {bad}: record" in err
    assert not (tmp_path / "w" / "export").exists()


def test_mixed_precision_keeps_float32_outputs(data, tmp_path, capsys):
    import tensorflow as tf

    from schemas.logs import console
    from trainer.config import TrainConfig
    from trainer.train import train
    cfg = TrainConfig(data=data["regression"], workdir=str(tmp_path), mixed_precision=True,
                      **smoke("temporal_pooling", filters=(4,))).validate()
    console()  # the library call logs; show its lines as the CLI does
    result = train(cfg)
    err = capsys.readouterr().err
    # Where the CPU has no bf16 units the run falls back to float32 and says so.
    native = cpu.has_native_bf16()
    assert result.model.layers[-2].compute_dtype == "float32"
    assert any(layer.compute_dtype == "bfloat16" for layer in result.model.layers) == native
    assert ("warning: --mixed-precision ignored" in err) != native
    card = json.load(open(os.path.join(result.export_dir, "model_card.json")))
    assert card["dtype_policy"] == ("mixed_bfloat16" if native else "float32")
    served = tf.saved_model.load(result.export_dir).signatures[SERVING_SIGNATURE](
        frames=tf.zeros((2, 4, 16, 16, 1), tf.uint8))[PREDICTION]
    assert served.dtype == tf.float32 and np.all(np.isfinite(served.numpy()))


def test_pretrained_imagenet_without_network_fails_clearly(data, tmp_path):
    # An empty Keras cache and a proxy on a closed local port: the weights download fails
    # at once, as on a machine without network, and nothing reaches the internet.
    closed = "http://127.0.0.1:9"
    env = _env(KERAS_HOME=str(tmp_path / "keras"), https_proxy=closed, HTTPS_PROXY=closed,
               http_proxy=closed, HTTP_PROXY=closed, no_proxy="", NO_PROXY="")
    cmd = [sys.executable, "-m", "clipforge.cli", "train", "--data", data["regression"],
           "--workdir", str(tmp_path / "w"), "--arch", "pretrained_2p5d", "--set",
           "arch_options.backbone_weights=imagenet", "--batch-size", "4"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "backbone_weights=imagenet needs the ImageNet weights of MobileNetV3Small" in proc.stderr
    assert "backbone_weights=none" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "w" / "export").exists()


def test_mirrored_over_two_cpus_matches_default(data, tmp_path):
    script = tmp_path / "two_cpus.py"
    script.write_text(
        "import sys\nimport tensorflow as tf\n"
        "# Logical devices must be configured before TensorFlow initialises: a fresh process.\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from trainer.main import run\n"
        "*flags, workdir = sys.argv[1:]\n"
        "for strategy in ('default', 'mirrored'):\n"
        "    if run(flags + ['--workdir', f'{workdir}/{strategy}', '--strategy', strategy]):\n"
        "        sys.exit(1)\n")
    # One shard and no shuffle buffer: both runs see the windows in the same order (a seeded
    # reshuffle depends on how many iterators were made, which differs between strategies).
    # No dropout: each replica would draw its own mask. Batch norm is synchronised across
    # replicas, so it sees the global batch either way.
    flags = ["--data", data["one_shard"], "--arch", "frames_as_channels", "--epochs", "2",
             "--batch-size", "8", "--deterministic", *TINY, "--set", "dropout=0",
             "--set", "augment=none", "--set", "shuffle_buffer=1"]
    proc = subprocess.run([sys.executable, str(script), *flags, str(tmp_path)], env=_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy x2" in proc.stdout

    def losses(strategy):
        with open(tmp_path / strategy / "training_log.csv") as f:
            return np.array([[float(r["loss"]), float(r["val_loss"])] for r in csv.DictReader(f)])

    default, mirrored = losses("default"), losses("mirrored")
    assert default.shape == (2, 2) and default[0, 0] != default[1, 0]
    np.testing.assert_allclose(mirrored, default, rtol=1e-4)


def test_killed_run_resumes_from_backup(data, tmp_path):
    workdir = str(tmp_path / "w")
    cmd = _train_cmd(data["regression"], workdir, "--arch", "conv3d", "--epochs", "8",
                     "--batch-size", "4", *TINY)
    state = os.path.join(workdir, "backup", "training_metadata.json")
    kill_after_backup(cmd, _env(), REPO, state, min_epoch=2)
    assert not os.path.exists(os.path.join(workdir, "export"))
    backed_up = backup_epoch(state)
    assert 2 <= backed_up < 8

    second = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from backup at epoch {backed_up}" in second.stdout
    assert "CPU settings: TF_ENABLE_ONEDNN_OPTS=" in second.stdout  # what `python -m trainer` chose
    assert f"Epoch {backed_up + 1}/8" in second.stdout and "Epoch 1/8" not in second.stdout
    assert f"done: 8 epochs (resumed at epoch {backed_up})" in second.stdout
    with open(os.path.join(workdir, "training_log.csv")) as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs[-(8 - backed_up):] == list(range(backed_up, 8))
    assert os.path.exists(os.path.join(workdir, "export", "saved_model.pb"))
    assert not os.path.exists(os.path.join(workdir, "backup"))  # removed once training finished


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # the refused, mismatched load
def test_warm_start_loads_an_export_and_refuses_another_arch(data, tmp_path, capsys):
    import keras

    from schemas.configs import ConfigError
    from schemas.export import KERAS_FILE
    from schemas.logs import console
    from trainer.config import TrainConfig
    from trainer.heads import build_model
    from trainer.train import train, warm_start
    cfg = TrainConfig(data=data["regression"], workdir=str(tmp_path), **smoke("frames_as_channels", filters=(4,))).validate()
    source = os.path.join(train(cfg).export_dir, KERAS_FILE)
    meta = DatasetMetadata.load(data["regression"])
    fresh = build_model(meta, cfg)
    assert not all(np.array_equal(a, b) for a, b in
                   zip(fresh.get_weights(), keras.saving.load_model(source).get_weights()))
    console()
    capsys.readouterr()
    warm_start(fresh, source)
    for a, b in zip(fresh.get_weights(), keras.saving.load_model(source).get_weights()):
        np.testing.assert_array_equal(a, b)
    assert capsys.readouterr().out == f"warm-started from {source}\n"
    other = build_model(meta, TrainConfig(data="d", workdir="w", **smoke("conv3d", filters=(4,))).validate())
    with pytest.raises(ConfigError, match="warm_start=.*does not fit conv3d_regression"):
        warm_start(other, source)


def test_shard_shorter_than_metadata_says_is_named(tmp_path, capsys):
    import tensorflow as tf
    d = make_dataset(str(tmp_path), "regression", n_windows=8, shards=2)
    short = DatasetMetadata.load(d).shard_paths(d, "train")[0]
    records = [r.numpy() for r in tf.data.TFRecordDataset(short)]
    with tf.io.TFRecordWriter(short) as w:  # a shard that lost its last record
        for r in records[:-1]:
            w.write(r)
    rc = run(["--data", d, "--workdir", str(tmp_path / "w"), "--arch", "frames_as_channels",
              "--epochs", "1", "--batch-size", "1", *TINY])
    err = capsys.readouterr().err
    assert rc == 1 and f"{short}: holds {len(records) - 1} records, metadata.json says {len(records)}" in err


def test_failed_export_leaves_the_previous_export_intact(data, tmp_path):
    from trainer.config import TrainConfig
    from trainer.export import export_model
    from trainer.heads import build_model
    meta = DatasetMetadata.load(data["regression"])
    model = build_model(meta, TrainConfig(data="d", workdir="w", **smoke("frames_as_channels", filters=(4,))).validate())
    target = str(tmp_path / "export")
    export_model(model, meta, data["regression"], target, {"run": 1})
    before = {f: open(os.path.join(target, f), "rb").read()
              for f in ("saved_model.pb", "model_card.json", "metadata.json")}
    # The second export fails half-way: its SavedModel is written, then metadata.json cannot
    # be copied from a dataset directory that lacks it.
    with pytest.raises(FileNotFoundError):
        export_model(model, meta, str(tmp_path / "no_dataset_here"), target, {"run": 2})
    after = {f: open(os.path.join(target, f), "rb").read() for f in before}
    assert after == before and json.loads(after["model_card.json"]) == {"run": 1}
    assert sorted(os.listdir(tmp_path)) == ["export"]  # no temporary folder left behind
