"""The trainer's tf.data input and its config: shapes, compression, batching, augmentation, errors."""
import numpy as np
import pytest
import tensorflow as tf

from schemas import features as fk
from schemas.codec import RecordCodec
from schemas.configs import ConfigError
from schemas.metadata import DatasetMetadata
from tests.datasets import make_dataset
from trainer.augment import augment_fn
from trainer.config import TrainConfig, load_config
from trainer.input import make_dataset as input_dataset
from trainer.input import shard_plan
from trainer.train import class_weights



@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("input"))


@pytest.mark.parametrize("task,target_shape,target_dtype", [
    ("regression", (2,), tf.float32), ("classification", (), tf.int64),
    ("next_frame", (2, 12, 10, 3), tf.uint8)])
def test_batches_have_the_spec_shapes(root, task, target_shape, target_dtype):
    d = make_dataset(root, task, frames=3, size=(12, 10), channels=3, n_windows=10, horizon=2,
                     compression="gzip", encoding="jpeg")
    meta = DatasetMetadata.load(d)
    train = list(input_dataset(d, meta, "train", 4, training=True, augment=("crop", "flip")))
    # 10 windows, batch 4: training drops the partial batch, evaluation keeps every window.
    assert [int(x.shape[0]) for x, _ in train] == [4, 4]
    val = list(input_dataset(d, meta, "validation", 4, training=False))
    assert sum(int(x.shape[0]) for x, _ in val) == meta.num_windows("validation") == 5
    frames, target = train[0]
    assert frames.dtype == tf.uint8 and tuple(frames.shape[1:]) == (3, 12, 10, 3)
    assert target.dtype == target_dtype and tuple(target.shape[1:]) == target_shape


def test_evaluation_reads_every_record_exactly_once(root):
    d = make_dataset(root, "regression", n_windows=12, shards=3, seed=1)
    meta = DatasetMetadata.load(d)
    got = np.concatenate([y.numpy() for _, y in input_dataset(d, meta, "train", 5, training=False)])
    codec = RecordCodec(meta.spec, meta.target)
    want = np.stack([codec.decode_numpy(r.numpy())[fk.TARGET]
                     for r in tf.data.TFRecordDataset(meta.shard_paths(d, "train"))])
    assert got.shape == want.shape == (12, 2)
    np.testing.assert_array_equal(got[np.lexsort(got.T)], want[np.lexsort(want.T)])


def test_training_order_changes_between_epochs_but_not_between_runs(root):
    d = make_dataset(root, "regression", n_windows=16, shards=2)
    meta = DatasetMetadata.load(d)

    def epochs(ds, n=2):
        return [np.concatenate([y.numpy()[:, 0] for _, y in ds]) for _ in range(n)]

    a = epochs(input_dataset(d, meta, "train", 4, training=True, seed=3))
    b = epochs(input_dataset(d, meta, "train", 4, training=True, seed=3))
    assert not np.array_equal(a[0], a[1])  # reshuffled each epoch
    np.testing.assert_array_equal(a[0], b[0])  # same seed, same order
    np.testing.assert_array_equal(a[1], b[1])


def test_augmentations_keep_shape_dtype_and_move_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 16, 16, 1), dtype=np.uint8)
    # Seven copies of one image: a transform applied alike to the window and its target frames
    # leaves all seven equal; a different crop or flip for the target would not.
    frames, target = tf.constant(np.repeat(image, 5, 0)), tf.constant(np.repeat(image, 2, 0))
    fn = augment_fn(("crop", "flip", "brightness"), "next_frame")
    changed = 0
    for i in range(8):
        f, t = fn(frames, target, tf.constant([i, 7], tf.int64))
        assert f.shape == frames.shape and t.shape == target.shape and f.dtype == tf.uint8
        stack = np.concatenate([f.numpy(), t.numpy()])
        assert all(np.array_equal(stack[0], s) for s in stack[1:])
        changed += int(not np.array_equal(f.numpy(), frames.numpy()))
    assert changed >= 6
    jitter = augment_fn(("jitter",), "classification")
    seq = tf.constant(np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8))
    ends = set()
    for i in range(30):
        out = jitter(seq, 0, tf.constant([i, 1], tf.int64))[0].numpy()[:, 0, 0, 0]
        assert np.all(np.diff(out.astype(int)) >= 0) and np.ptp(out) >= 3  # still in order
        ends.add((int(out[0]), int(out[-1])))
    assert ends == {(0, 3), (0, 4), (1, 4)}  # shifted by -1, 0 or +1 frame, edge repeated
    assert augment_fn((), "regression") is None


def test_shard_plan_keeps_workers_in_step(tmp_path):
    meta = DatasetMetadata.from_dict({
        "schema_version": 1, "spec": {"frames": 2, "stride": 1, "fps": 5.0, "height": 4, "width": 4,
                                      "channels": 1},
        "target": {"task": "regression", "outputs": ["y"]}, "stats": {}, "fingerprint": "x",
        "splits": {"even": {"windows": 40, "shards": [{"path": f"s{i}", "records": 10} for i in range(4)]},
                   "uneven": {"windows": 40, "shards": [{"path": "a", "records": 30}, {"path": "b", "records": 10}]},
                   "one": {"windows": 10, "shards": [{"path": "a", "records": 10}]}}})
    assert shard_plan(meta, "even", 1, 8) == "none"    # one machine: nothing to split
    assert shard_plan(meta, "even", 2, 8) == "file"    # 20 windows per worker each
    assert shard_plan(meta, "uneven", 2, 8) == "data"  # by file it would be 30 vs 10 windows
    assert shard_plan(meta, "one", 2, 8) == "data"     # fewer shards than workers
    # Worker 1 of 2 reads only the shards dealt to it.
    d = make_dataset(str(tmp_path), "regression", n_windows=16, shards=4, seed=2)
    meta = DatasetMetadata.load(d)
    mine = np.concatenate([y.numpy() for _, y in input_dataset(
        d, meta, "train", 4, training=False, num_workers=2, worker_index=1)])
    codec = RecordCodec(meta.spec, meta.target)
    paths = meta.shard_paths(d, "train")
    want = [codec.decode_numpy(r.numpy())[fk.TARGET] for r in tf.data.TFRecordDataset(paths[1::2])]
    assert mine.shape == (8, 2)
    np.testing.assert_array_equal(np.sort(mine, axis=0), np.sort(np.stack(want), axis=0))


def test_config_precedence_and_field_errors(tmp_path):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("arch: conv3d\nepochs: 3\nrnn: gru\nfilters: [8, 16]\nlearning-rate: 0.01\n")
    cfg = load_config({"data": "d", "workdir": "w", "epochs": 5, "batch_size": None},
                      str(yaml_file), ["learning_rate=0.5", "freeze_backbone=true"])
    # the old top-level knobs reach arch_options; those conv3d does not take are ignored, as before
    assert (cfg.epochs, cfg.arch_options, cfg.learning_rate) == (5, {"filters": (8, 16), "units": 128}, 0.5)
    assert cfg.batch_size == 32
    yaml_file.write_text("arch: cnn_rnn\narch_options: {rnn: gru, filters: [8]}\n")
    cfg = load_config({"data": "d", "workdir": "w"}, str(yaml_file), ["arch_options.units=16"])
    assert cfg.arch_options == {"filters": (8,), "units": 16, "rnn": "gru"}
    with pytest.raises(ConfigError, match=r"arch_options \['pooling'\] are not options of cnn_rnn; it takes: filters"):
        load_config({"data": "d", "workdir": "w", "arch": "cnn_rnn"}, None, ["arch_options.pooling=max"])
    with pytest.raises(ConfigError, match=r"rnn='transformer'.*lstm \| gru"):
        load_config({"data": "d", "workdir": "w", "arch": "cnn_rnn"}, None, ["rnn=transformer"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['rnn_type'\]"):
        load_config({"data": "d", "workdir": "w", "arch": "cnn_rnn"}, None, ["rnn_type=gru"])
    with pytest.raises(ConfigError, match="valid: conv3d, cnn_rnn"):
        load_config({"data": "d", "workdir": "w", "arch": "resnet3d"})
    with pytest.raises(ConfigError, match="augment='crop,warp'"):
        load_config({"data": "d", "workdir": "w", "arch": "conv3d"}, None, ["augment=crop,warp"])
    cfg = TrainConfig(data="d", workdir="w", arch="conv3d", loss="huber").validate()
    cfg.check_task("regression")
    with pytest.raises(ConfigError, match="loss='huber'.*next_frame"):
        cfg.check_task("next_frame")


def test_balanced_class_weights_from_the_histogram(root):
    d = make_dataset(root, "classification", n_windows=12, seed=4)
    meta = DatasetMetadata.load(d)
    hist = meta.stats["class_histogram"]
    weights = class_weights(meta, "balanced")
    for k, n in enumerate(hist):
        assert weights[k] == pytest.approx(sum(hist) / (3 * n) if n else 1.0)
    assert class_weights(meta, "none") is None


def test_cached_input_gives_every_window_once_per_epoch_reshuffled(root):
    d = make_dataset(root, "regression", n_windows=16, shards=2, seed=5)
    meta = DatasetMetadata.load(d)
    ds = input_dataset(d, meta, "train", 4, training=True, seed=3, cache=True)
    epochs = [np.concatenate([y.numpy() for _, y in ds]) for _ in range(3)]
    streamed = np.concatenate([y.numpy() for _, y in input_dataset(d, meta, "train", 4, training=False)])

    def rows(a):
        return sorted(map(tuple, a.tolist()))
    assert all(rows(e) == rows(streamed) for e in epochs) and len(epochs[0]) == 16
    assert not np.array_equal(epochs[1], epochs[2])  # the cached split is reshuffled each epoch
    again = input_dataset(d, meta, "train", 4, training=True, seed=3, cache=True)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in again]), epochs[0])


def test_arch_knobs_are_read_from_the_builders_without_tensorflow():
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT
    code = ("import sys; from trainer.archs import arch_defaults, check_arch_options; "
            "print(arch_defaults('cnn_rnn'), check_arch_options('pretrained_2p5d', {'temporal': 'gru'})['temporal'], "
            "'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}).stdout.split()
    assert out[-2:] == ["gru", "False"]  # checked, and TensorFlow never started
    assert "'rnn':" in " ".join(out) and "'lstm'}" in " ".join(out)
    from trainer.archs import _source_knobs
    from trainer.archs.pretrained_2p5d import BACKBONES
    assert _source_knobs("pretrained_2p5d")[1]["backbone"] == tuple(BACKBONES)  # one list of backbones
