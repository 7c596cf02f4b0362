"""The numpy + ISA-L PNG encoder: lossless, read back exactly by Pillow and TensorFlow."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from schemas import png


def _frames():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = ((xx * 3 + yy * 2) % 256).astype(np.uint8)
    yield "noise gray", rng.integers(0, 256, (37, 53, 1), dtype=np.uint8)
    yield "noise rgb", rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    yield "gradient rgb", np.stack([smooth, 255 - smooth, smooth // 2], axis=-1)
    yield "flat", np.full((16, 16, 1), 200, np.uint8)
    yield "one pixel", np.array([[[7]]], np.uint8)
    yield "one row", rng.integers(0, 256, (1, 9, 3), dtype=np.uint8)


@pytest.mark.parametrize("deflate", ["isal", "zlib"])
def test_png_round_trips_through_pillow_and_tensorflow(deflate, monkeypatch):
    import tensorflow as tf
    if deflate == "zlib":
        monkeypatch.setattr(png, "_isal", None)  # the fallback where isal has no wheel
    else:
        assert png._isal is not None, "isal is a dependency: `make setup` installs it"
    for name, frame in _frames():
        data = png.encode_png(frame)
        back = np.asarray(Image.open(io.BytesIO(data)))
        assert np.array_equal(back.reshape(frame.shape), frame), name
        assert np.array_equal(tf.io.decode_png(data, channels=frame.shape[2]).numpy(), frame), name


def test_png_rejects_what_it_cannot_encode():
    with pytest.raises(ValueError, match="uint8"):
        png.encode_png(np.zeros((4, 4, 1), np.uint16))
    with pytest.raises(ValueError, match="H, W, 1|3"):
        png.encode_png(np.zeros((4, 4, 2), np.uint8))
