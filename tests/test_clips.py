"""Temporal jitter: clip_frames / clip_strides spans in training, the centre crop inside the model."""
import json
import os

import numpy as np
import pytest

from schemas.configs import ConfigError
from schemas.export import MODEL_CARD_FILE, PREDICTION, SERVING_SIGNATURE
from schemas.metadata import DatasetMetadata
from tests.datasets import make_dataset
from trainer.config import TrainConfig, load_config, smoke
from trainer.input import make_dataset as input_dataset

T, K = 8, 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("clips"))
    return {task: make_dataset(root, task, frames=T, n_windows=12, shards=2, seed=4)
            for task in ("regression", "next_frame")}


def _originals(d, meta):
    """{regression target: the window's T frames}, read without training."""
    out = {}
    for x, y in input_dataset(d, meta, "train", 4, training=False):
        for frames, target in zip(x.numpy(), y.numpy()):
            out[tuple(target.tolist())] = frames
    return out


def _spans(ds, originals, start):
    """(offset, stride) of the span each window carries at the model's crop position."""
    spans = {}
    for x, y in ds:
        for frames, target in zip(x.numpy(), y.numpy()):
            source = originals[tuple(target.tolist())]
            index = [next(i for i in range(T) if np.array_equal(source[i], f)) for f in frames[start:start + K]]
            steps = set(np.diff(index).tolist())
            assert len(steps) == 1, f"not an evenly strided span: {index}"
            spans[tuple(target.tolist())] = (index[0], steps.pop())
    return spans


def test_spans_are_fresh_each_epoch_and_repeat_with_the_seed(data):
    d = data["regression"]
    meta = DatasetMetadata.load(d)
    originals = _originals(d, meta)
    start = (T - K) // 2

    def run(seed):
        ds = input_dataset(d, meta, "train", 4, training=True, seed=seed, cache=True,
                           clip_frames=K, clip_strides=(1, 2))
        return [_spans(ds, originals, start) for _ in range(2)]

    first, second = run(3)
    assert len(first) == len(originals) == 12
    assert first != second  # a new offset / stride each epoch
    assert run(3) == [first, second]  # the same seed draws the same spans
    assert run(4)[0] != first
    drawn = list(first.values()) + list(second.values())
    assert {s for _, s in drawn} == {1, 2}
    assert len({o for o, _ in drawn}) >= 3
    assert all(0 <= o and o + s * (K - 1) <= T - 1 for o, s in drawn)


def test_next_frame_spans_end_at_the_last_frame(data):
    d = data["next_frame"]
    meta = DatasetMetadata.load(d)
    ds = input_dataset(d, meta, "train", 4, training=True, seed=1, cache=True, clip_frames=K,
                       clip_strides=(1, 2))
    plain = {y.numpy().tobytes(): x.numpy() for x, y in
             ((x[i], y[i]) for x, y in input_dataset(d, meta, "train", 4, training=False) for i in range(len(x)))}
    strides = set()
    for x, y in ds:
        for frames, following in zip(x.numpy(), y.numpy()):
            source = plain[following.tobytes()]  # the target frames are untouched
            seen = frames[T - K:]
            np.testing.assert_array_equal(seen[-1], source[-1])
            stride = next(s for s in (1, 2) if np.array_equal(seen, source[T - 1 - s * (K - 1)::s]))
            strides.add(stride)
    assert strides == {1, 2}


def test_clip_settings_are_checked_against_the_dataset(data):
    cfg = load_config({"data": "d", "workdir": "w", "arch": "conv3d"},
                      overrides=["clip_frames=4", "clip_strides=1,2"])
    assert cfg.clip_frames == 4 and cfg.clip_strides == (1, 2) and cfg.clip_length(T) == 4
    assert load_config({"data": "d", "workdir": "w", "arch": "conv3d"},
                       overrides=["clip_strides=2"]).clip_strides == (2,)
    assert TrainConfig(data="d", workdir="w", arch="conv3d").clip_length(T) == T  # default: no crop
    with pytest.raises(ConfigError, match="clip_frames=9 .*at most the dataset's 8 frames"):
        TrainConfig(data="d", workdir="w", arch="conv3d", clip_frames=9).clip_length(T)
    with pytest.raises(ConfigError, match=r"clip_strides=\(1, 3\).*3 \* 3 = 9"):
        TrainConfig(data="d", workdir="w", arch="conv3d", clip_frames=3, clip_strides=(1, 3)).clip_length(T)
    for bad in (["clip_frames=-1"], ["clip_strides=0"]):
        with pytest.raises(ConfigError, match=bad[0].split("=")[0]):
            load_config({"data": "d", "workdir": "w", "arch": "conv3d"}, overrides=bad)


def test_model_sees_only_the_centre_span_and_card_records_it(data, tmp_path):
    import tensorflow as tf

    from trainer.train import train
    d = data["regression"]
    cfg = TrainConfig(data=d, workdir=str(tmp_path), **smoke("conv3d", filters=(4,)), clip_frames=K,
                      clip_strides=(1, 2)).validate()
    result = train(cfg)
    with open(os.path.join(result.export_dir, MODEL_CARD_FILE)) as f:
        card = json.load(f)
    start = (T - K) // 2
    assert card["clip"] == {"frames": T, "clip_frames": K, "clip_strides": [1, 2],
                            "eval_span": "centre", "eval_start": start}
    serve = tf.saved_model.load(result.export_dir).signatures[SERVING_SIGNATURE]
    frames = np.stack(list(_originals(d, DatasetMetadata.load(d)).values())[:4])
    base = serve(frames=tf.constant(frames))[PREDICTION].numpy()
    outside = frames.copy()
    outside[:, :start] = 0
    outside[:, start + K:] = 255
    np.testing.assert_allclose(serve(frames=tf.constant(outside))[PREDICTION].numpy(), base, rtol=1e-5, atol=1e-5)
    inside = frames.copy()
    inside[:, start + 1] = 255 - inside[:, start + 1]
    assert not np.allclose(serve(frames=tf.constant(inside))[PREDICTION].numpy(), base, atol=1e-4)
