"""Drift: PSI by hand, the exact per-video signals, two ingests and predict against a shifted corpus, the gate."""
import json
import math
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipforge import retrain
from clipforge.gate import PromoteConfig, gate
from pipelines import drift, ingest, predict, signals
from schemas.configs import ConfigError, from_mapping
from tests.videos import write_frames
from trainer import main as train_main

# ---------------- PSI ----------------


def test_psi_of_identical_histograms_is_zero_and_a_known_shift_matches_the_formula():
    values = [float(v) for v in range(100)]
    edges = drift.quantile_edges(values)
    assert len(edges) == 9 and drift.bin_counts(values, edges) == [10] * 10
    assert drift.psi(drift.bin_counts(values, edges), drift.bin_counts(values[::-1], edges)) == 0.0
    # two bins, 50/50 against 80/20: 0.3 ln(0.8/0.5) + (-0.3) ln(0.2/0.5)
    assert drift.psi([50, 50], [80, 20]) == pytest.approx(0.3 * math.log(1.6) - 0.3 * math.log(0.4), rel=1e-12)
    # an empty reference bin counts as epsilon
    eps = drift.EPSILON
    assert drift.psi([10, 0], [5, 5]) == pytest.approx((0.5 - 1) * math.log(0.5) + (0.5 - eps) * math.log(0.5 / eps))
    assert drift.psi([3, 4], [0, 0]) is None
    # a shift of the whole distribution by 30: the top 3 deciles take every new value
    shifted = drift.bin_counts([v + 30 for v in values], edges)
    assert shifted == [0, 0, 0, 10, 10, 10, 10, 10, 10, 40]
    p, q = np.full(10, 0.1), np.maximum(np.array(shifted) / 100, eps)
    assert drift.psi([10] * 10, shifted) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    assert [drift.verdict(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0, None)] == [
        "stable", "stable", "moderate", "moderate", "shifted", "shifted", "unknown"]


def test_ties_and_a_constant_reference_keep_their_own_bins():
    tied = [1.0] * 50 + [2.0] * 50
    edges = drift.quantile_edges(tied)
    assert edges == [1.0, 1.5, 2.0]  # deciles 0.1..0.4 are all 1, 0.6..0.9 all 2: merged
    assert drift.bin_counts(tied, edges) == [50, 0, 50, 0]
    fps = drift.quantile_edges([25.0] * 6)
    assert drift.bin_counts([25.0, 24.0, 30.0, 25.0], fps) == [1, 2, 1]  # below, equal, above
    assert drift.psi(drift.bin_counts([25.0] * 6, fps), drift.bin_counts([25.0] * 3, fps)) == 0.0
    assert drift.psi(drift.bin_counts([25.0] * 6, fps), drift.bin_counts([30.0] * 3, fps)) > 0.25


def test_categorical_psi_is_over_the_union_of_categories():
    ref = [{"width": 32, "height": 32, "codec": "h264", "rotation": 0.0, "split": "train"}] * 4
    ref += [{"width": 64, "height": 48, "codec": "h264", "rotation": 90.0, "split": "train"}] * 4
    ref += [{"width": 16, "height": 16, "codec": "vp9", "split": "test"}]  # not in the reference split
    new = [{"width": 32, "height": 32, "codec": "h264", "rotation": 0.0}] * 2
    new += [{"width": 20, "height": 10, "codec": "h264", "rotation": 0.0}] * 2
    out = drift.compare_rows(ref, new)
    res = out["signals"]["resolution"]
    assert res["categories"] == ["20x10", "32x32", "64x48"]
    assert res["reference"] == [0, 4, 4] and res["new"] == [2, 2, 0]
    eps = drift.EPSILON
    by_hand = (0.5 - eps) * math.log(0.5 / eps) + 0 + (eps - 0.5) * math.log(eps / 0.5)
    assert res["psi"] == pytest.approx(by_hand) and res["verdict"] == "shifted"
    assert out["signals"]["codec"]["psi"] == 0.0 and out["signals"]["codec"]["categories"] == ["h264"]
    assert out["signals"]["rotation"]["categories"] == ["0", "90"]
    assert out["reference"] == {"split": "train", "videos": 8} and out["new"] == {"videos": 4}
    # numeric signals missing on both sides: nothing to compare
    assert out["signals"]["pixel_mean"]["psi"] is None and out["signals"]["pixel_mean"]["verdict"] == "unknown"
    assert out["shifted"] == ["resolution", "rotation"]
    assert "resolution 8.52 (shifted), rotation 4.60 (shifted) (under 60 videos" in drift.summary_line(out)


# ---------------- the per-video signals ----------------


def test_frame_signals_are_exact_and_segments_add_up_to_the_whole():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(20)]
    whole = signals.FrameSignals()
    list(whole.watch(frames))
    x = np.stack(frames).astype(np.float64)
    cols = signals.signal_columns(whole.sums)
    assert cols["pixel_mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert cols["pixel_std"] == pytest.approx(x.std(), rel=1e-9)
    assert cols["motion_energy"] == pytest.approx(np.abs(np.diff(x, axis=0)).mean(), rel=1e-12)
    # segments owning frames [0, 8), [8, 14), [14, 20); each decodes span - 1 = 3 frames of the next
    parts = []
    for start, end in ((0, 8), (8, 14), (14, None)):
        seg = signals.FrameSignals(None if end is None else end - start)
        list(seg.watch(frames[start:None if end is None else end + 3]))
        parts.append(seg.sums)
    assert tuple(sum(v) for v in zip(*parts)) == whole.sums


def _square_clip(level: int, speed: int, factor: int, frames: int = 12) -> np.ndarray:
    """A bright 4x4 square moving over a flat 16x16 background, each pixel a factor x factor block."""
    out = np.full((frames, 16, 16, 1), level, np.uint8)
    for t in range(frames):
        x = (speed * t) % 12
        out[t, 6:10, x:x + 4] = level + 100
    return np.repeat(np.repeat(out, factor, axis=1), factor, axis=2)


def _corpus(path, brightness: int = 0, big: tuple = ()) -> str:
    """Eight lossless gray clips at 10 fps; `brightness` added; the ones in `big` at 48x48, else 32x32."""
    os.makedirs(path)
    for i in range(8):
        write_frames(os.path.join(path, f"clip{i}.mkv"),
                     _square_clip(30 + 8 * i + brightness, 1 + i % 3, 3 if i in big else 2), fps=10)
    return str(path)


INGEST = ["--frames", "4", "--stride", "4", "--fps", "10", "--size", "16x16", "--color", "gray",
          "--task", "next_frame", "--horizon", "1", "--splits", "1"]


def _rows(dataset: str) -> list[dict]:
    return pq.read_table(os.path.join(dataset, "videos.parquet")).to_pylist()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    ref = _corpus(root / "ref")
    new = _corpus(root / "new", brightness=50, big=(1, 3, 5, 7))
    out = {"root": root, "ref_videos": ref, "new_videos": new}
    for name in ("ref", "new"):
        out[name] = str(root / f"ds_{name}")
        assert ingest.run(["--input", out[f"{name}_videos"], "--output", out[name], *INGEST]) == 0
    return out


def test_a_brighter_corpus_at_a_new_resolution_drifts_in_exactly_those_signals(datasets, capsys):
    ref_rows, new_rows = _rows(datasets["ref"]), _rows(datasets["new"])
    # the manifest's signals: exact over the decoded 16x16 frames (lossless clips, area scaling of blocks)
    clip = _square_clip(30, 1, 1)[:, :, :, 0].astype(np.float64)
    first = next(r for r in ref_rows if r["video_id"] == "clip0.mkv")
    assert first["pixel_mean"] == pytest.approx(clip.mean(), rel=1e-12)
    assert first["pixel_std"] == pytest.approx(clip.std(), rel=1e-9)
    assert first["motion_energy"] == pytest.approx(np.abs(np.diff(clip, axis=0)).mean(), rel=1e-12)
    out = drift.compare_rows(ref_rows, new_rows)
    psi = {s: v["psi"] for s, v in out["signals"].items()}
    assert psi["pixel_mean"] > 0.25 and psi["resolution"] > 0.25, psi
    assert all(psi[s] < 0.1 for s in drift.SIGNALS if s not in ("pixel_mean", "resolution")), psi
    assert out["shifted"] == ["pixel_mean", "resolution"] and out["moderate"] == []
    assert out["signals"]["resolution"]["categories"] == ["32x32", "48x48"]
    assert out["signals"]["resolution"]["new"] == [4, 4]
    # the reference ingest wrote the same histograms into the dataset
    with open(os.path.join(datasets["ref"], drift.DRIFT_REFERENCE_FILE)) as f:
        assert json.load(f) == drift.reference(ref_rows)
    # comparing with the dataset's stored reference gives the same as comparing with its rows
    assert drift.compare(drift.load_reference(datasets["ref"]), new_rows) == out
    assert drift.load_reference(str(datasets["root"] / "ref")) is None  # a folder with no reference


def test_predict_compares_new_videos_with_the_models_training_split(datasets, tmp_path, capsys):
    work = str(tmp_path / "train")
    assert train_main.run(["--data", datasets["ref"], "--workdir", work, "--arch", "conv3d", "--epochs", "1",
                           "--batch-size", "8"]) == 0
    model = os.path.join(work, "export")
    assert os.path.exists(os.path.join(model, drift.DRIFT_REFERENCE_FILE))
    out = str(tmp_path / "pred")
    assert predict.run(["--model", model, "--input", datasets["new_videos"], "--output", out,
                        "--report-videos", "0"]) == 0
    with open(os.path.join(out, drift.DRIFT_FILE)) as f:
        found = json.load(f)
    # predict decodes as ingest does: the same signals, so the same PSI as the two manifests give
    direct = drift.compare_rows(_rows(datasets["ref"]), _rows(datasets["new"]))
    assert {s: v["psi"] for s, v in found["signals"].items()} == pytest.approx(
        {s: v["psi"] for s, v in direct["signals"].items()}, rel=1e-9)
    assert found["shifted"] == ["pixel_mean", "resolution"] and found["new"]["videos"] == 8
    assert "drift vs the train split (8 videos): 8 new video(s); PSI >= 0.1: " in capsys.readouterr().out
    page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert '<section id="drift">' in page and "<td>pixel_mean</td><td>numeric</td>" in page
    assert [s for s in ("pixel_mean", "resolution", "pixel_std") if f'data-signal="{s}"' in page] == [
        "pixel_mean", "resolution"]
    # an export from before drift checks: one line, no failure
    old = str(tmp_path / "old_export")
    shutil.copytree(model, old)
    os.remove(os.path.join(old, drift.DRIFT_REFERENCE_FILE))
    out2 = str(tmp_path / "pred_old")
    assert predict.run(["--model", old, "--input", datasets["new_videos"], "--output", out2,
                        "--report-videos", "0"]) == 0
    assert not os.path.exists(os.path.join(out2, drift.DRIFT_FILE))
    assert "drift: not checked: the model has no drift_reference.json" in capsys.readouterr().out
    assert "Not checked: the model has no drift_reference.json" in open(os.path.join(out2, "report.html")).read()


# ---------------- the retrain gate ----------------


def _regression(mse, base_mse=1.0):
    return {"task": "regression", "status": "ok", "model": {"mse": mse, "r2": 1 - mse},
            "baseline": {"mse": base_mse, "r2": 0.0}, "skill": 1 - mse / base_mse}


def _drift(**psi):
    return {"reference": {"split": "train", "videos": 40}, "new": {"videos": 3},
            "signals": {s: {"psi": v, "verdict": drift.verdict(v)} for s, v in psi.items()}}


def test_max_drift_psi_blocks_promotion_naming_the_signal():
    cfg = PromoteConfig(max_drift_psi=0.25)
    good = _regression(0.2)
    calm = _drift(pixel_mean=0.05, resolution=0.0, duration=None)
    assert gate("regression", cfg, good, None, calm)[0] is True
    promoted, reason = gate("regression", cfg, good, None, _drift(pixel_mean=0.4, motion_energy=0.3, codec=0.25))
    assert promoted is False
    assert reason.startswith("drift: pixel_mean PSI 0.400, motion_energy PSI 0.300 above promote.max_drift_psi 0.25 "
                             "(3 new video(s) against the 40 of the train split)")
    assert gate("regression", cfg, good, _regression(0.5), _drift(codec=0.9))[1].startswith("drift: codec PSI 0.900")
    assert gate("regression", PromoteConfig(), good, None, _drift(codec=9.0))[0] is True  # no rule set
    assert gate("regression", cfg, good, None, None)[0] is True                           # no drift.json
    assert gate("regression", cfg, _regression(0.2, base_mse=0.1), None, calm)[1].startswith("candidate loses")


def test_max_drift_psi_is_checked_up_front_and_drift_json_is_read_from_the_dataset(tmp_path):
    assert from_mapping(PromoteConfig, {"max_drift_psi": "0.3"}, "promote").check().max_drift_psi == 0.3
    for bad in (0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"promote.max_drift_psi=.*expected a finite number > 0"):
            from_mapping(PromoteConfig, {"max_drift_psi": bad}, "promote").check()
    with pytest.raises(ConfigError, match=r"promote.max_drift_psi='high': expected a number"):
        from_mapping(PromoteConfig, {"max_drift_psi": "high"}, "promote")
    assert retrain._drift(str(tmp_path)) is None
    (tmp_path / "drift.json").write_text(json.dumps(_drift(pixel_mean=0.5)))
    assert retrain._drift(str(tmp_path))["signals"]["pixel_mean"]["psi"] == 0.5
    (tmp_path / "drift.json").write_text("{not json")
    with pytest.raises(retrain.RetrainError, match="cannot read .*drift.json"):
        retrain._drift(str(tmp_path))


def test_the_reference_percentiles_cut_into_exactly_the_bins_a_direct_count_gives():
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(50, 10, 900), 0).tolist()  # rounded: ties at many quantiles
    ref = drift.reference([{"pixel_mean": v, "split": "train"} for v in values])
    assert [drift.bins_for(900, n) for n in (300, 299, 150, 120, 119, 5)] == [10, 5, 5, 4, 2, 2]
    for bins in drift.BINS:
        edges, counts = drift._cut(ref["signals"]["pixel_mean"], bins)
        assert edges == drift.quantile_edges(values, bins)
        assert counts == drift.bin_counts(values, edges) and sum(counts) == 900
    # 100 new videos drawn alike: 2 bins; 300: deciles; a shift of one sd reads as shifted in both
    for n, bins in ((100, 2), (300, 10)):
        same = drift.compare(ref, [{"pixel_mean": v} for v in rng.normal(50, 10, n)])["signals"]["pixel_mean"]
        moved = drift.compare(ref, [{"pixel_mean": v} for v in rng.normal(60, 10, n)])["signals"]["pixel_mean"]
        assert same["bins"] == moved["bins"] == bins and sum(same["new"]) == n
        assert same["verdict"] == "stable" and moved["verdict"] == "shifted", (same["psi"], moved["psi"])


def test_retrain_appends_brighter_videos_and_holds_back_the_drifted_run(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    cfg = {"root": str(tmp_path / "root"),
           "ingest": {"input": corpus, "task": "next_frame", "horizon": 1, "frames": 4, "stride": 4, "fps": 10,
                      "size": "16x16", "color": "gray", "splits": [0.5, 0.25, 0.25]},
           "train": {"arch": "conv3d", "epochs": 1, "batch_size": 2, "set": {"arch_options.filters": [4, 8]}},
           "promote": {"require_beats_baseline": False, "max_drift_psi": 0.25}}
    first = retrain.retrain(retrain.RetrainConfig(**cfg))
    assert first["promoted"] is True and first["drift"] is None and first["max_drift_psi"] == 0.25
    # this week's videos: brighter, half of them at a new resolution; retrain appends them
    bright = _corpus(tmp_path / "bright", brightness=50, big=(1, 3, 5, 7))
    for name in os.listdir(bright):
        shutil.copy(os.path.join(bright, name), os.path.join(corpus, "new_" + name))
    second = retrain.retrain(retrain.RetrainConfig(**cfg))
    assert second["videos_decoded"] == 8 and second["dataset"] == first["dataset"]
    assert second["promoted"] is False and second["reason"].startswith("drift: ")
    assert "pixel_mean PSI " in second["reason"] and "resolution PSI " in second["reason"]
    written = drift.load_drift(first["dataset"])
    assert written["new"]["videos"] == 8  # every decoded video, whatever its split, against the training split
    assert (f"above promote.max_drift_psi 0.25 ({written['new']['videos']} new video(s) against the "
            f"{written['reference']['videos']} of the train split)") in second["reason"]
    assert second["drift"] == {s: v["psi"] for s, v in written["signals"].items()}
    with open(os.path.join(cfg["root"], "runs", second["run_id"], "decision.json")) as f:
        assert json.load(f)["reason"] == second["reason"]
