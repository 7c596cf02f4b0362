"""CPU kernel settings chosen before TensorFlow starts, the bf16 fallback, and the FLOP counter."""
import json
import os
import subprocess
import sys

import pytest

from trainer import cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What TensorFlow runs with, printed by a fresh process after clipforge's choice (the thread
# pools read the variable in C++ and tf.config does not report it, so the probe shows the variable).
PROBE = ("import json, sys\n"
         "from trainer import cpu\n"
         "line = cpu.choose(sys.argv[1] if len(sys.argv) > 1 else None)\n"
         "import os\n"
         "import tensorflow as tf\n"
         "from tensorflow.python.util import _pywrap_util_port as port\n"
         "tf.constant(1.0) + 1.0  # start the runtime, which reads the thread settings\n"
         "json.dump({'line': line, 'onednn': bool(port.IsMklEnabled()),\n"
         "           'inter_op': int(os.environ['TF_NUM_INTEROP_THREADS'])}, sys.stdout)\n")


def _probe(*arch, **env_vars) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (cpu.ONEDNN, cpu.INTER_OP, cpu.CHOICE,
                                                         cpu.SET_BY_CLIPFORGE)}
    env.update(env_vars, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", PROBE, *arch], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tensorflow_starts_with_the_chosen_settings():
    got = _probe()
    assert got["onednn"] is True
    assert got["inter_op"] == max(1, (os.cpu_count() or 1) // 2)
    assert got["line"].startswith(f"CPU settings: {cpu.ONEDNN}=1, {cpu.INTER_OP}=")
    assert "avx2" in got["line"] and "cores" in got["line"]


def test_settings_the_user_made_are_kept_and_said():
    got = _probe(**{cpu.ONEDNN: "0", cpu.INTER_OP: "3"})
    assert got["onednn"] is False and got["inter_op"] == 3
    assert f"{cpu.ONEDNN}=0 (set by you)" in got["line"]
    assert f"{cpu.INTER_OP}=3 (set by you)" in got["line"]


def test_a_child_re_chooses_what_clipforge_set_but_keeps_what_the_user_set():
    parent = {cpu.ONEDNN: "1", cpu.INTER_OP: "4", cpu.SET_BY_CLIPFORGE: cpu.ONEDNN}
    got = _probe(**parent)
    assert f"{cpu.ONEDNN}=1" in got["line"] and f"{cpu.ONEDNN}=1 (set by you)" not in got["line"]
    assert f"{cpu.INTER_OP}=4 (set by you)" in got["line"]


def test_pretrained_backbone_trains_on_eigen_kernels():
    got = _probe("pretrained_2p5d")
    assert got["onednn"] is False and f"{cpu.ONEDNN}=0," in got["line"]
    assert _probe("conv3d")["onednn"] is True


def test_native_bf16_needs_avx512_bf16_or_amx(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu.has_native_bf16(frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}))
    assert cpu.has_native_bf16(frozenset({"avx2", "amx_bf16"}))
    assert not cpu.has_native_bf16(frozenset({"avx2", "fma", "avx512f"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN held below bf16: no bf16 kernels
    assert not cpu.has_native_bf16(frozenset({"avx2", "avx512_bf16", "amx_bf16"}))


def test_summary_marks_missing_flags():
    model, flags = cpu.cpu_model_and_flags()
    summary = cpu.cpu_summary()
    assert summary.startswith(model)
    for flag in cpu.FLAGS_THAT_MATTER:
        assert (f" {flag}" in summary) != (f"-{flag}" in summary)
        assert (f"-{flag}" in summary) == (flag not in flags)


def test_mixed_precision_falls_back_to_float32_without_bf16_units(monkeypatch, capsys):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    from schemas.logs import console
    from trainer.train import precision_policy
    console()
    capsys.readouterr()
    assert precision_policy(False) == "float32" and capsys.readouterr().err == ""
    assert precision_policy(True, flags=frozenset({"avx2", "fma"})) == "float32"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "no native bfloat16" in lines[0] and "float32" in lines[0]
    assert precision_policy(True, flags=frozenset({"avx2", "amx_bf16"})) == "mixed_bfloat16"
    assert capsys.readouterr().err == ""


def test_flops_of_known_layers():
    import keras
    from keras import layers

    from benchmarks.flops import TRAIN_FACTOR, forward_flops, train_flops_per_window
    from trainer.archs.blocks import PerFrame
    frame = keras.Sequential([keras.Input((8, 8, 2)), layers.Conv2D(4, 3, padding="same"),
                              layers.GlobalAveragePooling2D()])
    inputs = keras.Input((5, 8, 8, 2))
    x = PerFrame(frame)(inputs)                                   # 5 frames x (3*3*2*4*64*2)
    x = layers.LSTM(6)(x)                                         # 5 steps x 2*4*6*(4+6)
    out = layers.Dense(3)(x)                                      # 2*6*3
    model = keras.Model(inputs, out)
    conv = 5 * 3 * 3 * 2 * 4 * 64 * 2
    lstm = 5 * 2 * 4 * 6 * (4 + 6)
    dense = 2 * 6 * 3
    assert forward_flops(model) == conv + lstm + dense
    assert train_flops_per_window(model) == TRAIN_FACTOR * (conv + lstm + dense)


@pytest.mark.parametrize("arch", ["conv3d", "frames_as_channels"])
def test_flops_of_registered_archs_match_hand_counts(arch):
    from benchmarks.flops import forward_flops
    from trainer.archs import build_backbone
    model = build_backbone(arch, (4, 16, 16, 1), {"filters": (4, 8), "units": 16})
    if arch == "conv3d":   # stage0 keeps T=4 at 16x16, stage1 runs on 4x8x8; then Dense(16)
        expect = 27 * 1 * 4 * (4 * 16 * 16) * 2 + 27 * 4 * 8 * (4 * 8 * 8) * 2 + 2 * 8 * 16
    else:                  # the 4 frames are the channels of one 2D CNN
        expect = 9 * 4 * 4 * (16 * 16) * 2 + 9 * 4 * 8 * (8 * 8) * 2 + 2 * 8 * 16
    assert forward_flops(model) == expect


def test_evaluate_and_predict_choose_for_the_exported_architecture(tmp_path):
    from clipforge.cli import _exported_arch
    (tmp_path / "model_card.json").write_text(json.dumps({"architecture": "pretrained_2p5d"}))
    assert _exported_arch(["--model", str(tmp_path), "--data", "d"]) == "pretrained_2p5d"
    assert _exported_arch([f"--model={tmp_path}"]) == "pretrained_2p5d"
    assert _exported_arch(["--model", str(tmp_path / "missing")]) is None
    assert _exported_arch(["--data", "d"]) is None


@pytest.mark.parametrize("isa, coretype", [("AVX2", "Haswell"), ("avx512_core", "SkylakeX")])
def test_benchmark_peak_runs_under_the_same_isa_cap_as_the_kernels(isa, coretype):
    probe = ("import os, benchmarks.train_throughput as b\n"
             "print(os.environ.get('OPENBLAS_CORETYPE', '-'), '|', b.peak_isa())\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", ONEDNN_MAX_CPU_ISA=isa)
    proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    blas, said = proc.stdout.strip().splitlines()[-1].split(" | ")
    assert blas == coretype
    assert said.startswith(f"{isa.upper()} (ONEDNN_MAX_CPU_ISA={isa.upper()}, OPENBLAS_CORETYPE={coretype})")

