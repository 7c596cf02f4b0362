"""The contract of an exported model directory (what `clipforge train` writes, evaluate/predict read).

EXPORT_DIR/
  saved_model.pb, variables/   a SavedModel with three signatures (below)
  metadata.json                the dataset's metadata (spec, target, stats) the model was trained on
  model_card.json              architecture, parameters, training config, fingerprint, metrics, timings
  model.keras                  the Keras model, for fine-tuning and warm starts
  drift_reference.json         the dataset's per-video signal histograms of its training split,
                               when the dataset has one (predict's drift check; pipelines/drift.py)

Signatures (the first two return {PREDICTION: ...}):
  serving_default(frames: uint8 [batch, T, H, W, C])
  serve_examples(examples: string [batch])   serialized tf.train.Example records of the dataset spec
  embed(frames: uint8 [batch, T, H, W, C]) -> {EMBEDDING: float32 [batch, D]}   the backbone's
                                             feature vector, through the same preprocessing
PREDICTION is float32: regression [batch, D] values; classification [batch, K] probabilities;
next_frame [batch, horizon, H, W, C] pixel values on the 0..255 scale. The model card's
embedding_dim is D.
"""
from __future__ import annotations

import json
import os

from schemas.metadata import METADATA_FILE, DatasetMetadata, MissingMetadataError

SERVING_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "serve_examples"
EMBED_SIGNATURE = "embed"
EMBEDDING = "embedding"
FRAMES_INPUT = "frames"
EXAMPLES_INPUT = "examples"
PREDICTION = "prediction"
MODEL_CARD_FILE = "model_card.json"
KERAS_FILE = "model.keras"
DRIFT_REFERENCE_FILE = "drift_reference.json"  # also in the dataset directory, beside metadata.json


def check_export_dir(export_dir: str) -> None:
    """Raises MissingMetadataError naming what is missing when EXPORT_DIR is not a finished export."""
    needed = ["saved_model.pb", METADATA_FILE, MODEL_CARD_FILE]
    if not os.path.isdir(export_dir):
        raise MissingMetadataError(f"model directory {export_dir} does not exist")
    missing = [n for n in needed if not os.path.exists(os.path.join(export_dir, n))]
    if missing:
        raise MissingMetadataError(
            f"{export_dir} is not a finished clipforge export: missing {missing}. "
            "Point --model at WORKDIR/export written by `clipforge train`.")


def load_export_metadata(export_dir: str) -> tuple[DatasetMetadata, dict]:
    """Returns (dataset metadata, model card) stored beside a SavedModel."""
    check_export_dir(export_dir)
    meta = DatasetMetadata.load(export_dir)
    with open(os.path.join(export_dir, MODEL_CARD_FILE), encoding="utf-8") as f:
        card = json.load(f)
    return meta, card
