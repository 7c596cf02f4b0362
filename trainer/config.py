"""TrainConfig: every knob of `clipforge train`, from flags, YAML and --set, validated up front."""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Optional

from schemas.configs import ConfigError, from_mapping, load_yaml, parse_overrides
from schemas.logs import get_logger
from schemas.tasks import NAMES, TASKS, task_of
from trainer.archs import ARCHS, arch_defaults, check_arch_name, check_arch_options

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
LOSSES = {name: row.losses for name, row in TASKS.items()}
AUGMENTATIONS = ("crop", "flip", "jitter", "brightness")
# The knobs that were TrainConfig fields before each architecture declared its own: `--set rnn=gru`
# and YAML `rnn: gru` still work, with a line saying to write arch_options.rnn.
LEGACY_ARCH_KEYS = ("filters", "units", "rnn", "attention_heads", "pooling", "backbone", "backbone_weights",
                    "freeze_backbone", "temporal")
log = get_logger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """One training run. The same names work as flags (dashes), YAML keys and `--set` keys.

    Attributes:
      data: dataset directory written by `clipforge ingest` (holds metadata.json).
      workdir: where backups, checkpoints, logs and export/ go.
      arch: architecture name from the registry (`clipforge train --list-archs`).
      epochs: passes over the training split.
      batch_size: global batch (split across replicas).
      learning_rate: peak learning rate of the cosine schedule.
      weight_decay: decoupled weight decay of Adam (0 turns it off).
      strategy: auto | default | mirrored | multiworker (multiworker reads TF_CONFIG).
      mixed_precision: mixed_float16 on GPU, mixed_bfloat16 on CPU; outputs stay float32.
      jit: compile the train step with XLA.
      deterministic: TensorFlow op determinism (slower; same seed gives the same weights).
      seed: seed of Python, NumPy, TensorFlow and the input shuffles.
      early_stopping_patience: epochs without val_loss improvement before stopping; 0 turns it off.
      shuffle_buffer: windows held by the training shuffle buffer; 0 (auto) is the whole split
        when it is cached and 1024 records when it is streamed from the shards.
      cache_mb: a split whose decoded windows fit in this many MiB is decoded once and kept in
        memory and reshuffled each epoch; 0 always streams from the shards.
      train_split, val_split: split names in metadata.json; val_split "auto" picks
        validation/val/valid/eval if present, "none" trains without validation.
      loss: auto | a name of the task's row in schemas/tasks.py (regression mse | huber | mae,
        classification crossentropy, next_frame mse | mae, multilabel bce); auto: the first.
      ssim_weight: next_frame: weight of a (1 - SSIM) term added to the loss.
      class_weights: none | balanced: classification from the metadata class_histogram; multilabel
        per-class positive weights in the BCE from class_counts.
      augment: auto | none | comma list of crop, flip, jitter, brightness. auto is crop,jitter
        for regression/classification and none for next_frame (flip can change what a label
        means, e.g. left/right, so it is never on by default).
      arch_options: the architecture's hyperparameters, {knob: value}: the keyword arguments of its
        build_backbone (trainer/archs/<arch>.py), e.g. {rnn: gru, filters: [8, 16]}; `clipforge
        train --list-archs` shows each one's knobs and defaults. Checked against the builder.
      dropout: dropout before the task head.
      collective_timeout: multiworker: seconds a collective op waits for the other workers before
        the run fails (a dead or preempted peer); 0 leaves TensorFlow's default (no limit).
      warm_start: a .keras or .weights.h5 file of the same architecture and window spec to start
        from (e.g. the blessed model's model.keras); empty for a fresh start.
      clip_frames: K, the frames the backbone sees per window (1..T; 0 is the dataset's T, i.e. no
        crop). Training takes a K-frame span at a random offset, drawn afresh each epoch; the
        model itself crops the centre span (the last one for next_frame), so the SavedModel still
        takes T frames.
      clip_strides: temporal strides a training span draws from (frame-rate jitter); K * s must
        fit in T. Evaluation and serving use stride 1.
    """

    data: str = ""
    workdir: str = ""
    arch: str = ""
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    strategy: str = "auto"
    mixed_precision: bool = False
    jit: bool = False
    deterministic: bool = False
    seed: int = 0
    early_stopping_patience: int = 5
    shuffle_buffer: int = 0
    cache_mb: int = 1024
    train_split: str = "train"
    val_split: str = "auto"
    loss: str = "auto"
    ssim_weight: float = 0.0
    class_weights: str = "none"
    augment: str = "auto"
    arch_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    dropout: float = 0.2
    collective_timeout: float = 0.0
    warm_start: str = ""
    clip_frames: int = 0
    clip_strides: tuple[int, ...] = (1,)

    def validate(self) -> "TrainConfig":
        """Checks every field that does not need the dataset; raises ConfigError naming it."""
        _need(bool(self.data), "data", self.data, "a dataset directory (--data)")
        _need(bool(self.workdir), "workdir", self.workdir, "an output directory (--workdir)")
        check_arch_name(self.arch)
        _need(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _need(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _need(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
              self.learning_rate, "a finite number > 0")
        _need(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
              self.weight_decay, "a number >= 0")
        _need(self.strategy in STRATEGIES, "strategy", self.strategy, " | ".join(STRATEGIES))
        _need(self.early_stopping_patience >= 0, "early_stopping_patience",
              self.early_stopping_patience, "an integer >= 0")
        _need(self.shuffle_buffer >= 0, "shuffle_buffer", self.shuffle_buffer, "an integer >= 0 (0: auto)")
        _need(self.cache_mb >= 0, "cache_mb", self.cache_mb, "an integer >= 0 (0: never cache)")
        _need(self.ssim_weight >= 0, "ssim_weight", self.ssim_weight, "a number >= 0")
        _need(self.class_weights in ("none", "balanced"), "class_weights", self.class_weights,
              "none | balanced")
        self.augmentations(NAMES[0])  # checks the names
        _need(isinstance(self.arch_options, dict), "arch_options", self.arch_options,
              "a mapping of the architecture's knobs, e.g. {rnn: gru}")
        self.arch_options = check_arch_options(self.arch, self.arch_options)
        _need(0 <= self.dropout < 1, "dropout", self.dropout, "a number in [0, 1)")
        _need(self.collective_timeout >= 0, "collective_timeout", self.collective_timeout,
              "a number of seconds >= 0 (0: no limit)")
        _need(not self.warm_start or (os.path.isfile(self.warm_start) and self.warm_start.endswith(
            (".keras", ".weights.h5"))), "warm_start", self.warm_start,
            "empty or an existing .keras / .weights.h5 file")
        _need(self.clip_frames >= 0, "clip_frames", self.clip_frames,
              "an integer >= 1 (or 0: the dataset's frames per window)")
        _need(len(self.clip_strides) >= 1 and all(s >= 1 for s in self.clip_strides), "clip_strides",
              self.clip_strides, "a non-empty list of integers >= 1, e.g. 1,2")
        return self

    def clip_length(self, frames: int) -> int:
        """K for a dataset of `frames` frames per window; raises ConfigError if it does not fit."""
        k = self.clip_frames or frames
        _need(k <= frames, "clip_frames", self.clip_frames,
              f"at most the dataset's {frames} frames per window")
        span = k * max(self.clip_strides)
        _need(span <= frames, "clip_strides", self.clip_strides,
              f"strides s with clip_frames * s <= {frames} (the dataset's frames per window); "
              f"{k} * {max(self.clip_strides)} = {span}")
        return k

    def check_task(self, task: str) -> None:
        """Checks the fields whose valid values depend on the dataset's task."""
        if self.loss != "auto":
            _need(self.loss in LOSSES[task], "loss", self.loss,
                  f"auto | {' | '.join(LOSSES[task])} for a {task} dataset")
        row = task_of(task)
        if not row.class_weights:
            _need(self.class_weights == "none", "class_weights", self.class_weights,
                  f"none: class weights apply to class datasets only, not {task}")
        if not row.target_frames:
            _need(self.ssim_weight == 0, "ssim_weight", self.ssim_weight,
                  f"0: the SSIM term applies to frame targets (next_frame) only, not {task}")
        self.augmentations(task)

    def task_loss(self, task: str) -> str:
        """The loss name for `task` ("auto" resolves to mse / crossentropy)."""
        return self.loss if self.loss != "auto" else LOSSES[task][0]

    def augmentations(self, task: str) -> tuple[str, ...]:
        """The augmentation names in effect for `task`."""
        if self.augment == "auto":
            return () if task_of(task).target_frames else ("crop", "jitter")
        if self.augment == "none":
            return ()
        names = tuple(a.strip() for a in self.augment.split(",") if a.strip())
        bad = [a for a in names if a not in AUGMENTATIONS]
        _need(not bad and names, "augment", self.augment,
              f"auto | none | a comma list of {', '.join(AUGMENTATIONS)}")
        # Shifting the input window in time would desynchronise it from the frames that follow.
        _need(not (task_of(task).target_frames and "jitter" in names), "augment", self.augment,
              "no jitter for next_frame datasets (the target frames must follow the window)")
        return names

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}


# The smoke configuration: tiny widths and one epoch, for tests and benchmarks that need a real but
# quick training (flax's `_ResNet1`, big_vision's `runlocal`). Knobs an architecture does not take
# are left out for it.
SMOKE_ARCH_OPTIONS = {"filters": (4, 8), "units": 8, "attention_heads": 1, "backbone_weights": "none"}
SMOKE = {"epochs": 1, "batch_size": 4, "early_stopping_patience": 0}


def smoke(arch: str, **arch_options) -> dict[str, Any]:
    """TrainConfig fields of the smoke configuration for ARCH (ARCH_OPTIONS override its knobs)."""
    takes = arch_defaults(arch)
    return {**SMOKE, "arch": arch,
            "arch_options": {k: v for k, v in {**SMOKE_ARCH_OPTIONS, **arch_options}.items() if k in takes}}


def smoke_flags(arch: str) -> list[str]:
    """The smoke configuration's widths as `clipforge train` --set flags (epochs and batch size are the caller's)."""
    sets = [f"arch_options.{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for k, v in smoke(arch)["arch_options"].items()] + ["early_stopping_patience=0"]
    return [a for s in sets for a in ("--set", s)]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def _need(ok: bool, field: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"train config: {field}={value!r} is invalid: expected {expected}")


def _knobs_of(arch: Any) -> Optional[set[str]]:
    """The arch_options ARCH takes, or None when ARCH is not (yet) a known name."""
    return set(arch_defaults(arch)) if isinstance(arch, str) and arch in ARCHS else None


def load_config(flags: Mapping[str, Any], config_file: Optional[str] = None,
                overrides: Optional[list[str]] = None) -> TrainConfig:
    """Merges defaults < YAML file < flags given on the command line < --set, then validates.

    Args:
      flags: the flags the user actually passed (None values are skipped).
      config_file: a YAML mapping of TrainConfig keys, or None.
      overrides: ["key=value", ...] from --set.

    Returns:
      The validated TrainConfig.

    Raises:
      ConfigError: an unknown key or a bad value; the message names it.
    """
    values: dict[str, Any] = {}
    if config_file:
        values.update(load_yaml(config_file))
    values.update({k: v for k, v in flags.items() if v is not None})
    values.update(parse_overrides(overrides or []))
    arch = values.get("arch_options") or {}
    if not isinstance(arch, dict):  # validate() refuses it, naming the field
        return from_mapping(TrainConfig, values, where="train config").validate()
    arch, takes = dict(arch), _knobs_of(values.get("arch"))
    for key in [k for k in values if k in LEGACY_ARCH_KEYS or k.startswith("arch_options.")]:
        knob = key.split(".", 1)[1] if key.startswith("arch_options.") else key
        value = values.pop(key)
        if key in LEGACY_ARCH_KEYS:
            if takes is not None and key not in takes:  # as before: a knob of another architecture is ignored
                log.warning(f"train config: `{key}` is not an option of {values['arch']}; ignored")
                continue
            log.warning(f"train config: `{key}` is now `arch_options.{key}` (YAML arch_options: {{{key}: ...}}, "
                        f"--set arch_options.{key}=...); the old spelling still works for now")
        arch[knob] = value
    if arch or "arch_options" in values:
        values["arch_options"] = arch
    return from_mapping(TrainConfig, values, where="train config").validate()
