"""TensorFlow's CPU kernel settings, chosen from the CPU before TensorFlow is imported.

TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512-class features; on the
common AVX2 laptops and CI boxes it runs its older Eigen kernels, 1.4-2.9x slower for the
convolutions the video models are made of (BENCHMARKS.md, "Trainer throughput"). `choose()` sets
what was measured fastest, leaves every variable the user set alone, and returns a line for the
training log. It must run before the first `import tensorflow`, since TensorFlow reads these
variables once at start-up: `trainer.main` calls it with the architecture (for `clipforge train`),
`clipforge.stages.train` likewise (for demo and retrain), `clipforge.cli` with the export's
architecture for evaluate and predict.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
INTRA_OP = "TF_NUM_INTRAOP_THREADS"
INTER_OP = "TF_NUM_INTEROP_THREADS"
CHOICE = "CLIPFORGE_CPU_SETTINGS"  # what choose() decided, for the training log
SET_BY_CLIPFORGE = "CLIPFORGE_CPU_SET"  # the variables choose() set (a child process may re-choose)
FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
# Architectures whose training step was measured slower with oneDNN than with TensorFlow's Eigen
# kernels (oneDNN limited to AVX2): MobileNetV3's depthwise convolutions, hard-swish and
# squeeze-excite blocks run as many small oneDNN primitives with a layout reorder around each
# (pretrained_2p5d: 41 windows/s with Eigen, 21 with oneDNN; BENCHMARKS.md, section 6).
EIGEN_FASTER = frozenset({"pretrained_2p5d"})


def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags (from /proc/cpuinfo; empty flags elsewhere)."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:  # no /proc/cpuinfo (macOS, Windows): the platform's name and no flags
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and value.strip():
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = frozenset(value.split())
            if model and flags and key == "":
                break  # the first processor's block is enough
    return model, flags


def cpu_summary() -> str:
    """`Intel(R) Xeon(R) ..., 2 cores, avx2 fma -avx512f ...`: the CPU facts every figure needs."""
    model, flags = cpu_model_and_flags()
    marks = " ".join(f if f in flags else f"-{f}" for f in FLAGS_THAT_MATTER)
    return f"{model}, {os.cpu_count()} cores, {marks}"


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below which oneDNN has no bfloat16 convolution kernels.
NO_BF16_ISAS = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"})


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bfloat16 natively (AVX512_BF16 or AMX), where mixed precision pays.

    A oneDNN limited below those instructions (ONEDNN_MAX_CPU_ISA=AVX2, say) counts as without:
    it then cannot even create a bfloat16 convolution.
    """
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in NO_BF16_ISAS:
        return False
    flags = cpu_model_and_flags()[1] if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def choose(arch: str | None = None) -> str:
    """Sets TensorFlow's CPU settings the user did not set; returns what is in force, for the log.

    - oneDNN kernels on (TensorFlow's default on AVX-512 CPUs, measured faster on AVX2 ones too),
      except for the architectures in EIGEN_FASTER;
    - one inter-op thread per two cores: a training step is one long chain of ops, and a second
      pool competing for 2 cores with the intra-op pool slows every convolution.

    Args:
      arch: the architecture about to be trained, when known (train knows it, evaluate and
        predict load a SavedModel and do not).
    """
    if "tensorflow" in sys.modules:  # too late to change anything: say what is in force
        return chosen_line()
    chosen, ours = [], set(filter(None, os.environ.get(SET_BY_CLIPFORGE, "").split(",")))
    cores = os.cpu_count() or 1
    onednn = "0" if arch in EIGEN_FASTER else "1"
    for name, value in ((ONEDNN, onednn), (INTER_OP, str(max(1, cores // 2)))):
        if name in os.environ and name not in ours:
            chosen.append(f"{name}={os.environ[name]} (set by you)")
        else:
            os.environ[name] = value
            ours.add(name)
            chosen.append(f"{name}={value}")
    line = "CPU settings: " + ", ".join(chosen) + f" on {cpu_summary()}"
    os.environ[CHOICE], os.environ[SET_BY_CLIPFORGE] = line, ",".join(sorted(ours))
    return line


def chosen_line() -> str:
    """The line choose() left for the training log, or what TensorFlow runs with when it never ran."""
    return os.environ.get(CHOICE) or (
        "CPU settings: TensorFlow's defaults (clipforge.cli did not start this process) on "
        f"{cpu_summary()}")
