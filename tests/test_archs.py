"""Every architecture x every task: build, train, export, reload, and serve the same predictions."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from schemas import example_proto as ex
from schemas import features as fk
from schemas.codec import RecordCodec
from schemas.export import (EMBED_SIGNATURE, EMBEDDING, EXAMPLES_SIGNATURE, KERAS_FILE, MODEL_CARD_FILE,
                            PREDICTION, SERVING_SIGNATURE, check_export_dir)
from schemas.metadata import DatasetMetadata
from schemas.tasks import NAMES, TASKS
from tests.datasets import make_dataset
from trainer.archs import ARCHS, arch_defaults
from trainer.config import TrainConfig, smoke
from trainer.heads import build_model, embedding_model
from trainer.train import train

# The smoke configuration (trainer/config.py) keeps every train+export run inside the test budget;
# the shapes are what matter.
# Backpropagating through MobileNetV3 dominates the suite's time; every task but the frame one
# trains it frozen (the first with the GRU temporal head), which covers freeze_backbone and both
# temporal heads.
OPTIONS = {("pretrained_2p5d", name): dict(freeze_backbone=True, **({"temporal": "gru"} if name == NAMES[0] else {}))
           for name, row in TASKS.items() if not row.target_frames}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    return {task: make_dataset(root, task, n_windows=8, horizon=2 if row.target_frames else 1)
            for task, row in TASKS.items()}


def _test_records(data_dir):
    """Serialized records of the test split and their parsed uint8 frames."""
    meta = DatasetMetadata.load(data_dir)
    paths = meta.shard_paths(data_dir, "test")
    records = [r.numpy() for r in tf.data.TFRecordDataset(paths)]
    parse = RecordCodec(meta.spec, meta.target).parse_fn()
    frames = np.stack([parse(tf.constant(r))[fk.FRAMES].numpy() for r in records])
    return records, frames


def _without_target(record: bytes) -> bytes:
    """The same record with only the window (what a prediction job sends)."""
    f = ex.parse_example(record)
    return ex.serialize_example({
        fk.VIDEO_ID: ex.bytes_feature(f[fk.VIDEO_ID]), fk.START_FRAME: ex.int64_feature(f[fk.START_FRAME]),
        fk.START_TIME: ex.float_feature(f[fk.START_TIME]), fk.FRAMES: ex.bytes_feature(f[fk.FRAMES])})


@pytest.mark.parametrize("task", NAMES)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_arch_trains_exports_and_serves(arch, task, datasets, tmp_path):
    import keras
    keras.backend.clear_session()
    options = OPTIONS.get((arch, task), {})
    cfg = TrainConfig(data=datasets[task], workdir=str(tmp_path), **smoke(arch, **options)).validate()
    result = train(cfg)

    assert result.epochs_run == 1 and np.isfinite(result.final_metrics["loss"])
    export = result.export_dir
    check_export_dir(export)
    records, frames = _test_records(datasets[task])
    expected = result.model.predict(frames, verbose=0)
    meta = DatasetMetadata.load(datasets[task])
    row = TASKS[task]
    shape = (len(frames),) + row.prediction_shape(meta.target, meta.spec)
    assert expected.shape == shape and shape[1] == (2 if row.target_frames else meta.target.num_outputs)
    assert expected.dtype == np.float32

    loaded = tf.saved_model.load(export)
    by_frames = loaded.signatures[SERVING_SIGNATURE](frames=tf.constant(frames))[PREDICTION]
    by_examples = loaded.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(records))[PREDICTION]
    tol = dict(rtol=1e-4, atol=1e-3 if row.target_frames else 1e-5)
    np.testing.assert_allclose(by_frames.numpy(), expected, **tol)
    np.testing.assert_allclose(by_examples.numpy(), expected, **tol)
    unlabelled = loaded.signatures[EXAMPLES_SIGNATURE](
        examples=tf.constant([_without_target(records[0])]))[PREDICTION]
    np.testing.assert_allclose(unlabelled.numpy(), expected[:1], **tol)
    if row.probabilities:
        assert ((expected >= 0) & (expected <= 1)).all()
    if row.label_kind == "class":  # one class per window: a softmax, summing to 1
        np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)

    # Reloading model.keras costs seconds; one task per arch, rotating, still covers every
    # backbone and every head (their custom layers and losses must deserialise).
    if task == NAMES[list(ARCHS).index(arch) % len(NAMES)]:
        reloaded = keras.saving.load_model(os.path.join(export, KERAS_FILE))
        np.testing.assert_allclose(reloaded(frames, training=False), expected, **tol)
    with open(os.path.join(export, MODEL_CARD_FILE)) as f:
        card = json.load(f)
    assert card["architecture"] == arch and card["task"] == task
    assert card["parameters"] == result.model.count_params() > 0
    assert card["dataset"]["fingerprint"] == meta.fingerprint
    assert card["arch_config"] == cfg.to_dict()["arch_options"]
    assert set(card["arch_config"]) == set(arch_defaults(arch))  # every knob, the defaults included
    frozen = options.get("freeze_backbone", False)
    assert (card["trainable_parameters"] < card["parameters"] / 2) == frozen

    # embed: the backbone's feature vector, D = the model card's embedding_dim.
    embedded = loaded.signatures[EMBED_SIGNATURE](frames=tf.constant(frames))[EMBEDDING].numpy()
    assert embedded.shape == (len(frames), card["embedding_dim"]) and embedded.dtype == np.float32
    np.testing.assert_allclose(embedded, embedding_model(result.model)(frames, training=False), rtol=1e-4, atol=1e-5)
    assert np.isfinite(embedded).all()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_untrained_next_frame_model_copies_the_last_frame(arch, datasets):
    import keras
    keras.backend.clear_session()
    frame_task = next(name for name, row in TASKS.items() if row.target_frames)
    meta = DatasetMetadata.load(datasets[frame_task])
    cfg = TrainConfig(data=datasets[frame_task], workdir="unused", **smoke(arch)).validate()
    model = build_model(meta, cfg)
    _, frames = _test_records(datasets[frame_task])
    predicted = model(frames, training=False).numpy()
    copy_last = np.repeat(frames[:, -1:].astype(np.float32), meta.target.horizon, axis=1)
    np.testing.assert_allclose(predicted, copy_last, atol=1e-4)
    assert not np.allclose(frames[:, -1], frames[:, 0])  # the baseline is not a trivial one
