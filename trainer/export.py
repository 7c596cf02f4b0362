"""WORKDIR/export/: the SavedModel, its signatures, metadata.json, model_card.json, model.keras, drift_reference.json.

The layout is the contract in schemas/export.py. Everything is written to a temporary folder
beside the target and swapped in only when complete, so a failed export (a full disk, a kill)
never replaces or damages a good one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Optional

import keras
import numpy as np
import tensorflow as tf

import schemas
from schemas import features as fk
from schemas.codec import RecordCodec
from schemas.dirs import swap_in
from schemas.export import (DRIFT_REFERENCE_FILE, EMBED_SIGNATURE, EMBEDDING, EXAMPLES_INPUT, EXAMPLES_SIGNATURE,
                            FRAMES_INPUT, KERAS_FILE, MODEL_CARD_FILE, PREDICTION, SERVING_SIGNATURE,
                            check_export_dir)
from schemas.metadata import METADATA_FILE, DatasetMetadata
from schemas.tasks import task_of
from trainer.augment import span_start
from trainer.config import TrainConfig
from trainer.heads import EMBEDDING_LAYER, embedding_model

if TYPE_CHECKING:
    from trainer.train import TrainResult


def write_saved_model(model: keras.Model, meta: DatasetMetadata, path: str) -> None:
    """Writes the SavedModel with serving_default (uint8 frames), serve_examples (records) and embed.

    Args:
      model: the trained task model (uint8 frames in, float32 prediction out).
      meta: the dataset metadata; serve_examples parses records with its spec.
      path: an empty or missing directory.
    """
    window = meta.spec.window_shape
    # Without the target: records of new, unlabelled windows must parse too.
    parse = RecordCodec(meta.spec, meta.target).parse_fn(with_target=False)

    def serve_frames(frames):
        return {PREDICTION: tf.cast(model(frames, training=False), tf.float32)}

    def serve_examples(examples):
        frames = tf.map_fn(lambda s: parse(s)[fk.FRAMES], examples,
                           fn_output_signature=tf.TensorSpec(window, tf.uint8))
        return serve_frames(frames)

    embedder = embedding_model(model)  # shares the model's layers and variables

    def embed(frames):
        return {EMBEDDING: tf.cast(embedder(frames, training=False), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_SIGNATURE, serve_frames, input_signature=[
        tf.TensorSpec((None,) + window, tf.uint8, name=FRAMES_INPUT)])
    archive.add_endpoint(EXAMPLES_SIGNATURE, serve_examples, input_signature=[
        tf.TensorSpec((None,), tf.string, name=EXAMPLES_INPUT)])
    archive.add_endpoint(EMBED_SIGNATURE, embed, input_signature=[
        tf.TensorSpec((None,) + window, tf.uint8, name=FRAMES_INPUT)])
    archive.write_out(path, verbose=False)


def export_model(model: keras.Model, meta: DatasetMetadata, data_dir: str, export_dir: str,
                 card: dict) -> str:
    """Writes a complete export directory and swaps it in atomically.

    Args:
      model: the trained model.
      meta: the dataset metadata (copied beside the SavedModel as metadata.json).
      data_dir: the dataset directory the metadata came from; its drift_reference.json, when it
        has one, is copied too (predict compares new videos with it).
      export_dir: the destination, e.g. WORKDIR/export.
      card: the model card (written as model_card.json).

    Returns:
      export_dir.
    """
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-tmp-", dir=parent)
    try:
        write_saved_model(model, meta, tmp)
        shutil.copyfile(os.path.join(data_dir, METADATA_FILE), os.path.join(tmp, METADATA_FILE))
        if os.path.exists(os.path.join(data_dir, DRIFT_REFERENCE_FILE)):
            shutil.copyfile(os.path.join(data_dir, DRIFT_REFERENCE_FILE), os.path.join(tmp, DRIFT_REFERENCE_FILE))
        model.save(os.path.join(tmp, KERAS_FILE))
        # The card goes last: check_export_dir treats a folder with it as finished.
        with open(os.path.join(tmp, MODEL_CARD_FILE), "w", encoding="utf-8") as f:
            json.dump(card, f, indent=2, default=_jsonable)
        check_export_dir(tmp)
        _swap_in(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return export_dir


def model_card(cfg: TrainConfig, meta: DatasetMetadata, model, result: "TrainResult", strategy,
               policy: str, val_split: Optional[str]) -> dict:
    """The model_card.json content of a finished run (export_model writes it beside the SavedModel)."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frames = meta.spec.frames
    k = cfg.clip_length(frames)
    return {
        "architecture": cfg.arch,
        "arch_config": cfg.to_dict()["arch_options"],
        "task": meta.target.task,
        "target": meta.target.to_dict(),
        "parameters": result.parameters,
        "trainable_parameters": trainable,
        # What the backbone sees of each T-frame window: training draws a K-frame span at a
        # random offset and stride; evaluation and serving crop span_start() at stride 1.
        "clip": {"frames": frames, "clip_frames": k, "clip_strides": list(cfg.clip_strides),
                 "eval_span": "last" if task_of(meta.target).target_frames else "centre",
                 "eval_start": span_start(frames, k, meta.target.task)},
        "embedding_dim": int(model.get_layer(EMBEDDING_LAYER).output.shape[-1]),
        "train_config": cfg.to_dict(),
        "dataset": {"path": os.path.abspath(cfg.data), "fingerprint": meta.fingerprint,
                    "spec": meta.spec.to_dict(),
                    "windows": {s: meta.num_windows(s) for s in meta.splits}},
        "final_metrics": {"split": val_split or cfg.train_split, **result.final_metrics},
        "monitor": result.monitor,
        "epochs_run": result.epochs_run,
        "resumed_at_epoch": result.resumed_at,
        "seconds_per_epoch": result.seconds_per_epoch,
        "training_seconds": result.train_seconds,
        "windows_per_second": result.windows_per_second,
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "dtype_policy": policy,
        "clipforge_version": schemas.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _swap_in(new: str, target: str) -> None:
    """Replaces directory `target` by `new` (schemas/dirs.py `swap_in`), the old one set aside under a
    hidden name beside it: at every moment `target` is the complete old export or the new one."""
    old = tempfile.mkdtemp(prefix=".export-old-", dir=os.path.dirname(os.path.abspath(target)))
    os.rmdir(old)
    swap_in(new, target, old)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
