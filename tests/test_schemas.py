"""Round trips of the schemas/ codec for every encoding and task, with TensorFlow and without."""
import numpy as np
import pytest

from schemas import features as fk
from schemas.codec import RecordCodec, RecordError
from schemas.spec import SpecError, TargetSpec, WindowSpec

TARGETS = {
    "regression": TargetSpec("regression", outputs=("speed", "angle")),
    "classification": TargetSpec("classification", classes=("left", "right", "up")),
    "next_frame": TargetSpec("next_frame", horizon=2),
}


def _window(encoding, channels):
    return WindowSpec(frames=3, stride=2, fps=5.0, height=12, width=10, channels=channels, encoding=encoding)


def _record(codec, rng):
    frames = rng.integers(0, 256, (3, 12, 10, codec.window.channels), dtype=np.uint8)
    nxt = rng.integers(0, 256, (2, 12, 10, codec.window.channels), dtype=np.uint8)
    kw = {"regression": dict(target=[1.5, -2.25]), "classification": dict(label=2),
          "next_frame": dict(next_frames=nxt)}[codec.target.task]
    return frames, nxt, codec.encode_window("clip-é.mp4", 7, frames, **kw)


@pytest.mark.parametrize("encoding,channels", [("png", 1), ("png", 3), ("raw", 1), ("raw", 3), ("jpeg", 3), ("jpeg", 1)])
@pytest.mark.parametrize("task", sorted(TARGETS))
def test_round_trip_tensorflow_and_numpy(encoding, channels, task):
    import tensorflow as tf
    codec = RecordCodec(_window(encoding, channels), TARGETS[task])
    frames, nxt, rec = _record(codec, np.random.default_rng(0))
    tf_out = codec.parse_fn()(tf.constant(rec))
    np_out = codec.decode_numpy(rec)
    assert tf_out[fk.VIDEO_ID].numpy().decode() == np_out[fk.VIDEO_ID] == "clip-é.mp4"
    assert int(tf_out[fk.START_FRAME]) == np_out[fk.START_FRAME] == 7
    assert float(tf_out[fk.START_TIME]) == pytest.approx(7 / 5.0)
    assert tf_out[fk.FRAMES].shape == (3, 12, 10, channels) and tf_out[fk.FRAMES].dtype == tf.uint8
    np.testing.assert_array_equal(tf_out[fk.FRAMES].numpy(), np_out[fk.FRAMES])
    if encoding == "jpeg":  # lossy: close to the source, not equal
        assert np.abs(np_out[fk.FRAMES].astype(int) - frames).mean() < 60
    else:
        np.testing.assert_array_equal(np_out[fk.FRAMES], frames)
    if task == "regression":
        np.testing.assert_allclose(tf_out[fk.TARGET].numpy(), [1.5, -2.25])
        np.testing.assert_allclose(np_out[fk.TARGET], [1.5, -2.25])
    elif task == "classification":
        assert int(tf_out[fk.LABEL]) == np_out[fk.LABEL] == 2
    else:
        np.testing.assert_array_equal(tf_out[fk.NEXT_FRAMES].numpy(), np_out[fk.NEXT_FRAMES])
        if encoding != "jpeg":
            np.testing.assert_array_equal(np_out[fk.NEXT_FRAMES], nxt)


def test_negative_and_large_ints_round_trip():
    from schemas import example_proto as ex
    rec = ex.serialize_example({"a": ex.int64_feature([-5, 2**40, 0]), "b": ex.float_feature([]),
                                "c": ex.bytes_feature([b"", b"x"])})
    out = ex.parse_example(rec)
    assert out == {"a": [-5, 2**40, 0], "b": [], "c": [b"", b"x"]}


def test_encoder_refuses_bad_values():
    codec = RecordCodec(_window("png", 1), TARGETS["regression"])
    frames = np.zeros((3, 12, 10, 1), np.uint8)
    with pytest.raises(RecordError, match="not finite"):
        codec.encode_window("v", 0, frames, target=[float("nan"), 1.0])
    with pytest.raises(RecordError, match="3 values, spec wants 2"):
        codec.encode_window("v", 0, frames, target=[1.0, 2.0, 3.0])
    with pytest.raises(RecordError, match="shape"):
        codec.encode_window("v", 0, np.zeros((3, 12, 11, 1), np.uint8), target=[1.0, 2.0])
    cls = RecordCodec(_window("png", 1), TARGETS["classification"])
    with pytest.raises(RecordError, match="index in"):
        cls.encode_window("v", 0, frames, label=3)


def test_spec_errors_name_the_field():
    with pytest.raises(SpecError, match="channels=2"):
        WindowSpec(frames=3, stride=1, fps=5, height=8, width=8, channels=2)
    with pytest.raises(SpecError, match="encoding='gif'"):
        WindowSpec(frames=3, stride=1, fps=5, height=8, width=8, channels=1, encoding="gif")
    with pytest.raises(SpecError, match="classes"):
        TargetSpec("classification", classes=("only",))
    spec = WindowSpec(frames=3, stride=1, fps=5, height=8, width=8, channels=1)
    assert WindowSpec.from_dict(spec.to_dict()) == spec
    t = TARGETS["classification"]
    assert TargetSpec.from_dict(t.to_dict()) == t


def test_decode_numpy_rejects_corrupt_record():
    codec = RecordCodec(_window("png", 1), TARGETS["classification"])
    _, _, rec = _record(codec, np.random.default_rng(1))
    with pytest.raises(RecordError):
        codec.decode_numpy(rec[: len(rec) // 2])
