"""trainer.archs.norm.BatchNorm against Keras's BatchNormalization: same numbers, fused kernel.

The multi-replica case (Keras's synchronized path) is compared end to end in
tests/test_trainer.py (default strategy against MirroredStrategy x2, same losses).
"""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402
from keras import layers  # noqa: E402

from trainer.archs.norm import BatchNorm  # noqa: E402


def _pair(shape, **kwargs):
    rng = np.random.default_rng(0)
    ref, fused = layers.BatchNormalization(**kwargs), BatchNorm(**kwargs)
    ref.build(shape)
    fused.build(shape)
    for layer in (ref, fused):
        if layer.scale:
            layer.gamma.assign(np.linspace(0.5, 1.5, shape[-1]).astype("float32"))
        if layer.center:
            layer.beta.assign(np.arange(shape[-1], dtype="float32") - 1.0)
    x = tf.constant(rng.normal(3.0, 2.0, size=shape).astype("float32"))
    return ref, fused, x


@pytest.mark.parametrize("shape", [(3, 4, 6, 5, 7), (5, 6, 4, 3)], ids=["5d", "4d"])
@pytest.mark.parametrize("kwargs", [{"synchronized": True}, {"center": False, "scale": False, "momentum": 0.5}],
                         ids=["synchronized", "no_affine"])
def test_training_step_matches_keras(shape, kwargs):
    ref, fused, x = _pair(shape, **kwargs)
    weights = tf.constant(np.random.default_rng(1).normal(size=shape).astype("float32"))
    out, grads = {}, {}
    for name, layer in (("ref", ref), ("fused", fused)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * weights)
        out[name] = y.numpy()
        grads[name] = [g.numpy() for g in tape.gradient(loss, [x, *layer.trainable_variables])]
    np.testing.assert_allclose(out["fused"], out["ref"], atol=2e-5)
    assert len(grads["fused"]) == len(grads["ref"])
    for g_fused, g_ref in zip(grads["fused"], grads["ref"]):
        np.testing.assert_allclose(g_fused, g_ref, rtol=1e-4, atol=1e-4)
    # The moving averages moved, and by the same amount as Keras's (biased variance).
    assert not np.allclose(fused.moving_mean.numpy(), 0.0)
    np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-5)
    np.testing.assert_allclose(fused(x, training=False).numpy(), ref(x, training=False).numpy(), atol=2e-5)


def test_inside_a_traced_function_and_a_saved_model(tmp_path):
    inputs = keras.Input((4, 6, 6, 2))
    model = keras.Model(inputs, BatchNorm(synchronized=True, name="bn")(inputs))
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 4, 6, 6, 2)).astype("float32"))
    step = tf.function(lambda t: model(t, training=True))
    eager = model(x, training=True).numpy()
    np.testing.assert_allclose(step(x).numpy(), eager, atol=1e-5)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("bn")) is BatchNorm and loaded.get_layer("bn").synchronized
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)


def test_what_it_cannot_fuse_runs_through_keras():
    ref, fused, x = _pair((4, 6, 3))  # rank 3: FusedBatchNormV3 takes 4-D or 5-D
    assert not fused._fusable(x, None)
    np.testing.assert_allclose(fused(x, training=True).numpy(), ref(x, training=True).numpy(), atol=1e-5)
    _, fused5, x5 = _pair((2, 3, 4, 4, 3))
    assert fused5._fusable(x5, None) and not fused5._fusable(x5, tf.ones(x5.shape[:-1], bool))
    ref_eps, tiny_eps, x_eps = _pair((2, 3, 4, 4, 3), epsilon=1e-6)  # below what the fused kernel takes
    assert not tiny_eps._fusable(x_eps, None)
    np.testing.assert_allclose(tiny_eps(x_eps, training=True).numpy(), ref_eps(x_eps, training=True).numpy(), atol=1e-5)
