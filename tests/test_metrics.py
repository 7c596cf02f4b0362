"""trainer/evaluation/metrics.py against values worked out by hand on small arrays, baselines included."""
import math

import numpy as np
import pytest

from schemas.spec import TargetSpec
from trainer.evaluation import metrics as mt

C1 = (0.01 * 255) ** 2


def test_regression_by_hand_streamed_in_two_batches():
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    p = np.array([[1.0], [3.0], [3.0], [5.0]])
    acc = mt.RegressionMetrics(["speed"], train_mean=[2.0])
    acc.add(["a", "a", "b"], np.array([0.0, 1.0, 0.0]), y[:3], p[:3])
    acc.add(["b"], np.array([1.0]), y[3:], p[3:])
    r = acc.result()
    m, b = r["model"], r["baseline"]
    # errors 0,1,0,1; truth deviations from 2.5: -1.5,-.5,.5,1.5 (SST 5); cov 6, var_p*n 8
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["r2"] == pytest.approx(1 - 2 / 5)
    assert m["pearson_r"] == pytest.approx(6 / math.sqrt(5 * 8))
    assert m["per_output"]["speed"]["r2"] == pytest.approx(0.6)
    # baseline predicts 2 everywhere: errors 1,0,1,2
    assert b["mae"] == pytest.approx(1.0)
    assert b["rmse"] == pytest.approx(math.sqrt(1.5))
    assert b["r2"] == pytest.approx(1 - 6 / 5)
    assert math.isnan(b["pearson_r"])  # a constant prediction has no correlation
    assert r["skill"] == pytest.approx(1 - 0.5 / 1.5)
    # per video: truth means a=1.5, b=3.5; predictions a=2, b=4
    assert m["per_video"]["mae"] == pytest.approx(0.5)
    assert m["per_video"]["r2"] == pytest.approx(1 - 0.5 / 2)
    assert b["per_video"]["mae"] == pytest.approx(1.0)
    assert b["per_video"]["r2"] == pytest.approx(1 - 2.5 / 2)
    assert acc.windows == 4 and set(acc.series) == {"a", "b"}


def test_regression_matches_numpy_on_random_data_and_keeps_a_bounded_sample():
    rng = np.random.default_rng(0)
    y = rng.normal(3, 2, (300, 2))
    p = y * 0.8 + rng.normal(0, 0.5, y.shape)
    acc = mt.RegressionMetrics(["a", "b"], [3.1, 2.9], sample_size=50, series_videos=2)
    for i in range(0, 300, 64):
        acc.add([f"v{j % 7}" for j in range(i, min(i + 64, 300))], np.arange(i, min(i + 64, 300)) / 10,
                   y[i:i + 64], p[i:i + 64])
    r = acc.result()
    for k, name in enumerate("ab"):
        r2 = 1 - ((y[:, k] - p[:, k]) ** 2).sum() / ((y[:, k] - y[:, k].mean()) ** 2).sum()
        assert r["model"]["per_output"][name]["r2"] == pytest.approx(r2, rel=1e-9)
        assert r["model"]["per_output"][name]["pearson_r"] == pytest.approx(np.corrcoef(y[:, k], p[:, k])[0, 1])
    assert r["model"]["rmse"] == pytest.approx(np.sqrt(((y - p) ** 2).mean()))
    truth, pred = acc.sample()
    assert truth.shape == (50, 2) and len(acc.series) == 2
    rows = {tuple(row) for row in y}
    assert all(tuple(row) in rows for row in truth)  # the sample holds real windows, not zeros


def test_regression_nan_prediction_voids_model_but_not_baseline():
    acc = mt.RegressionMetrics(["s"], [0.0])
    acc.add(["a", "b"], np.zeros(2), np.array([[1.0], [2.0]]), np.array([[1.0], [np.nan]]))
    r = acc.result()
    assert acc.nonfinite == 1
    assert math.isnan(r["model"]["mae"]) and math.isnan(r["model"]["per_video"]["r2"])
    assert r["baseline"]["mae"] == pytest.approx(1.5)


def _cls_batch():
    labels = np.array([0, 0, 1, 1, 2, 2, 0])
    probs = np.array([[0.40, 0.35, 0.25], [0.20, 0.70, 0.10], [0.10, 0.80, 0.10], [0.20, 0.50, 0.30],
                      [0.10, 0.20, 0.70], [0.50, 0.40, 0.10], [0.70, 0.10, 0.20]])
    videos = ["v1", "v1", "v2", "v2", "v3", "v3", "v4"]
    return videos, labels, probs


def test_classification_by_hand():
    videos, labels, probs = _cls_batch()
    acc = mt.ClassificationMetrics(["a", "b", "c"], train_histogram=[5, 10, 3], top_k=2)
    acc.add(videos[:4], labels[:4], probs[:4])
    acc.add(videos[4:], labels[4:], probs[4:])
    r = acc.result()
    m, b = r["model"], r["baseline"]
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["confusion_matrix_normalized"][0] == pytest.approx([2 / 3, 1 / 3, 0])
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["top_k_accuracy"] == pytest.approx(6 / 7)  # only window 5 (true c) misses its top 2
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)
    # v1: votes a,b tie -> summed probability picks b (wrong); v3: votes c,a tie -> c (right)
    assert m["video_accuracy"] == pytest.approx(3 / 4)
    assert b["majority_class"] == "b"
    assert b["accuracy"] == pytest.approx(2 / 7)
    assert b["top_k_accuracy"] == pytest.approx(5 / 7)  # top-2 of the histogram is {b, a}
    assert b["confusion_matrix"] == [[0, 3, 0], [0, 2, 0], [0, 2, 0]]
    assert b["per_class"]["a"]["precision"] == 0.0
    assert b["macro_f1"] == pytest.approx((4 / 9) / 3)
    assert b["video_accuracy"] == pytest.approx(1 / 4)


def test_classification_nan_probabilities_are_reported():
    videos, labels, probs = _cls_batch()
    probs[2, 1] = np.nan
    acc = mt.ClassificationMetrics(["a", "b", "c"], [5, 10, 3])
    acc.add(videos, labels, probs)
    r = acc.result()
    assert acc.nonfinite == 1 and math.isnan(r["model"]["accuracy"])
    assert r["baseline"]["accuracy"] == pytest.approx(2 / 7)


def test_psnr_and_ssim_known_values():
    assert mt.psnr(100.0) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    x = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3)).astype(np.float64)
    np.testing.assert_allclose(mt.ssim(x, x), 1.0)
    # constant images: variances are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = np.full((1, 12, 12, 1), 30.0), np.full((1, 12, 12, 1), 20.0)
    assert mt.ssim(a, b)[0] == pytest.approx((2 * 30 * 20 + C1) / (30 ** 2 + 20 ** 2 + C1))
    # frames smaller than the 11x11 window: the window shrinks, the formula still holds
    assert mt.ssim(a[:, :4, :5], b[:, :4, :5])[0] == pytest.approx((1200 + C1) / (1300 + C1))
    noisy = np.clip(x + np.random.default_rng(2).normal(0, 25, x.shape), 0, 255)
    tiny = mt.ssim(x[:, :5, :5], noisy[:, :5, :5])
    assert np.all((tiny > 0) & (tiny < 1))


def test_ssim_matches_tensorflow():
    import tensorflow as tf
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (3, 20, 17, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 30, x.shape), 0, 255).astype(np.float32)
    want = tf.image.ssim(tf.constant(x), tf.constant(y), max_val=255.0).numpy()
    np.testing.assert_allclose(mt.ssim(x, y), want, rtol=1e-5)


def test_next_frame_baselines_by_hand():
    frames = np.stack([np.full((4, 4, 1), 10), np.full((4, 4, 1), 20)])[None].astype(np.uint8)
    truth = np.stack([np.full((4, 4, 1), 30), np.full((4, 4, 1), 40)])[None].astype(np.uint8)
    pred = np.stack([np.full((4, 4, 1), 28.0), np.full((4, 4, 1), 44.0)])[None]
    acc = mt.NextFrameMetrics(horizon=2)
    acc.add(frames, truth, pred)
    r = acc.result()
    copy = r["baseline_copy_last"]
    assert [s["mse"] for s in copy["per_step"]] == pytest.approx([100.0, 400.0])
    assert copy["per_step"][0]["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert copy["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / 250))
    assert copy["per_step"][1]["ssim"] == pytest.approx((2 * 20 * 40 + C1) / (400 + 1600 + C1))
    lin = r["baseline_linear"]  # 10, 20 -> 30, 40: exact
    assert lin["mse"] == 0.0 and lin["ssim"] == pytest.approx(1.0)
    m = r["model"]
    assert [s["mae"] for s in m["per_step"]] == pytest.approx([2.0, 4.0])
    assert m["mse"] == pytest.approx(10.0)
    assert r["gain_db_over_copy_last"] == pytest.approx(10 * math.log10(250 / 10))
    assert len(acc.samples) == 1


def test_linear_extrapolation_clips_and_predictions_are_clipped():
    frames = np.stack([np.full((3, 3, 1), 200), np.full((3, 3, 1), 250)])[None].astype(np.uint8)
    np.testing.assert_array_equal(mt.linear_extrapolation(frames, 2)[0, :, 0, 0, 0], [255, 255])
    acc = mt.NextFrameMetrics(horizon=1)
    acc.add(frames, np.full((1, 1, 3, 3, 1), 255, np.uint8), np.full((1, 1, 3, 3, 1), 300.0))
    assert acc.result()["model"]["mse"] == 0.0  # 300 is clipped to 255 before scoring
    one = mt.NextFrameMetrics(horizon=1)
    one.add(frames[:, 1:], np.zeros((1, 1, 3, 3, 1), np.uint8), np.zeros((1, 1, 3, 3, 1)))
    assert one.result()["baseline_linear"] is None  # T=1: no previous frame to extrapolate from


def test_make_accumulator_names_missing_stats():
    with pytest.raises(KeyError, match="target_mean"):
        mt.make_accumulator(TargetSpec("regression", outputs=("s",)), stats={"pixel_mean": [0.5]})
    with pytest.raises(KeyError, match="class_histogram"):
        mt.make_accumulator(TargetSpec("classification", classes=("a", "b")), stats={})
    with pytest.raises(KeyError, match="class_counts"):
        mt.make_accumulator(TargetSpec("multilabel", classes=("a", "b")), stats={"windows": 3})
    assert isinstance(mt.make_accumulator(TargetSpec("next_frame", horizon=3)), mt.NextFrameMetrics)
