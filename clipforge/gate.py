"""The promotion gate: the rules that decide from metrics.json (and drift.json) whether a candidate is blessed."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

from schemas.configs import ConfigError
from schemas.tasks import TASKS

# The metric each task is judged on by default (schemas/tasks.py promotion_metric); all are
# "higher is better".
PRIMARY_METRIC = {name: row.promotion_metric for name, row in TASKS.items()}
LOWER_IS_BETTER = {"mae", "rmse", "mse"}


@dataclasses.dataclass
class PromoteConfig:
    """The promotion gate.

    Attributes:
      metric: a metrics.json `model.<metric>` key; default: the task's primary metric.
      min_improvement: how much the candidate must beat the blessed model by (in the metric's units).
      thresholds: absolute bars {metric: value} the candidate must pass (>= for higher-is-better
        metrics, <= for mae/rmse/mse), also for the first promotion.
      require_beats_baseline: the candidate must beat the baseline evaluate computed on the same
        windows (see BASELINES), also for the first promotion.
      max_drift_psi: no promotion while a signal of the run's drift.json (its new videos against
        the dataset's training split, pipelines/drift.py) has a PSI above this; None: no drift rule.
    """

    metric: str = ""
    min_improvement: float = 0.0
    thresholds: dict = dataclasses.field(default_factory=dict)
    require_beats_baseline: bool = True
    max_drift_psi: Optional[float] = None

    def check(self) -> "PromoteConfig":
        """Raises ConfigError for a bar that is not a finite number (NaN would pass every comparison)."""
        if not finite(self.min_improvement):
            raise ConfigError(f"promote.min_improvement={self.min_improvement!r}: expected a finite number")
        for name, bar in (self.thresholds or {}).items():
            if not finite(bar):
                raise ConfigError(f"promote.thresholds.{name}={bar!r}: expected a finite number")
        if self.max_drift_psi is not None and not (finite(self.max_drift_psi) and self.max_drift_psi > 0):
            raise ConfigError(f"promote.max_drift_psi={self.max_drift_psi!r}: expected a finite number > 0 "
                              "(0.25 is the usual 'shifted' threshold)")
        return self


@dataclasses.dataclass(frozen=True)
class BaselineRule:
    """Which metrics.json figures say "beats the baseline": model.<metric> against <section>.<metric>."""

    name: str
    metric: str
    section: str
    label: str
    lower_is_better: bool = False


# The honest baseline evaluate scores beside the model, per task (schemas/tasks.py `baseline`).
# Regression compares MSE, which is the same as skill > 0 (skill = 1 - MSE_model / MSE_baseline);
# multilabel compares mAP against the class-frequency baseline. A task without a row is never
# promoted while require_beats_baseline is on.
BASELINES = {name: BaselineRule(row.baseline.name, row.baseline.metric, row.baseline.section, row.baseline.label,
                                row.baseline.lower_is_better) for name, row in TASKS.items()}


def finite(value) -> bool:
    """A real number that is not NaN or infinite (metrics.json writes those as null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value) -> str:
    """A metric as the reasons show it (6 significant digits; null for NaN, inf or missing)."""
    return f"{value:.6g}" if finite(value) else "null"


def baseline_comparison(task: str, metrics: dict) -> Optional[dict]:
    """How a candidate's metrics.json stands against its task's baseline.

    Returns:
      {name, metric, label, model, baseline, beats} (+ skill for regression); None for a task
      without a rule in BASELINES.
    """
    rule = BASELINES.get(task)
    if rule is None:
        return None
    model = metrics.get("model", {}).get(rule.metric)
    base = (metrics.get(rule.section) or {}).get(rule.metric)
    beats = finite(model) and finite(base) and (model < base if rule.lower_is_better else model > base)
    out = {"name": rule.name, "metric": rule.metric, "label": rule.label, "model": model, "baseline": base,
           "beats": bool(beats)}
    if "skill" in metrics:  # regression: 1 - MSE_model / MSE_baseline
        out["skill"] = metrics.get("skill")
    return out


def baseline_text(cmp: dict) -> str:
    """A baseline_comparison() as one phrase, e.g. `MSE 0.5 < 1 of the training-mean baseline (skill 0.5)`."""
    op = ("<" if cmp["metric"] in LOWER_IS_BETTER else ">") if cmp["beats"] else "vs"
    text = f"{cmp['label']} {fmt(cmp['model'])} {op} {fmt(cmp['baseline'])} of the {cmp['name']}"
    return text + (f" (skill {fmt(cmp['skill'])})" if "skill" in cmp else "")


def nonfinite_reason(who: str, metrics: dict, names: list[str]) -> Optional[str]:
    """Why WHO's metrics.json can never be promoted (non-finite predictions or metric NAMES), or None."""
    if metrics.get("status", "ok") != "ok":
        return (f"{who} returned NaN or infinite predictions for {metrics.get('nonfinite_windows')} of "
                f"{metrics.get('windows')} windows (status {metrics.get('status')}); never promoted")
    for name in names:
        value = metrics.get("model", {}).get(name)
        if not finite(value):
            state = "missing from" if name not in metrics.get("model", {}) else "NaN or infinite (null) in"
            return f"{who} model.{name} is {state} metrics.json; a non-finite metric is never promoted"
    return None


def drift_reason(drift: Optional[dict], max_psi: Optional[float]) -> Optional[str]:
    """Why a drift.json blocks promotion (the signals with a PSI above max_psi, named), or None."""
    if not drift or max_psi is None:
        return None
    hits = sorted(((name, s["psi"]) for name, s in drift.get("signals", {}).items()
                   if finite(s.get("psi")) and s["psi"] > max_psi), key=lambda h: -h[1])
    if not hits:
        return None
    ref, new = drift.get("reference", {}), drift.get("new", {})
    return (f"drift: {', '.join(f'{name} PSI {value:.3f}' for name, value in hits)} above promote.max_drift_psi "
            f"{max_psi:g} ({new.get('videos')} new video(s) against the {ref.get('videos')} of the "
            f"{ref.get('split')} split); check the new data before promoting")


def gate(task: str, promote_cfg: PromoteConfig, candidate: dict, blessed: Optional[dict],
         drift: Optional[dict] = None) -> tuple[bool, str]:
    """Decides promotion from metrics.json dicts (and the run's drift.json); returns (promoted, reason).

    The rules, in order: every metric the gate reads is finite in both models; no drift signal is
    above promote.max_drift_psi (when set and a drift.json is given); the candidate beats its
    baseline (unless require_beats_baseline is off); it passes every threshold; it beats the
    blessed model by min_improvement (the first promotion has no blessed model to beat).
    """
    metric = promote_cfg.metric or PRIMARY_METRIC[task]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    why = nonfinite_reason("candidate", candidate, [metric, *(promote_cfg.thresholds or {})])
    if why is None and blessed is not None:
        why = nonfinite_reason("blessed model", blessed, [metric])
    why = why or drift_reason(drift, promote_cfg.max_drift_psi)
    if why:
        return False, why
    cmp = baseline_comparison(task, candidate)
    if promote_cfg.require_beats_baseline:
        if cmp is None:
            return False, f"no baseline rule for task {task!r}; set promote.require_beats_baseline: false"
        if not (finite(cmp["model"]) and finite(cmp["baseline"])):
            return False, (f"candidate model.{cmp['metric']} or its {cmp['name']} is missing or non-finite "
                           f"({fmt(cmp['model'])} vs {fmt(cmp['baseline'])}); never promoted")
        if not cmp["beats"]:
            return False, f"candidate loses to its baseline: {baseline_text(cmp)}"
        base_note = f"beats the baseline: {baseline_text(cmp)}"
    else:
        base_note = "baseline rule off (promote.require_beats_baseline: false)"
        base_note += f": {baseline_text(cmp)}" if cmp else ""
    cand = candidate["model"][metric]
    for name, bar in (promote_cfg.thresholds or {}).items():
        value = candidate["model"][name]
        low = name in LOWER_IS_BETTER
        if value > bar if low else value < bar:
            return False, f"candidate {name}={value} fails the threshold {'<=' if low else '>='} {bar}; {base_note}"
    if blessed is None:
        return True, f"first promotion: {metric}={cand:.4f} passes the thresholds; {base_note}"
    old = blessed["model"][metric]
    gain = sign * (cand - old)
    if gain >= promote_cfg.min_improvement and gain > 0:
        return True, (f"{metric} {old:.4f} -> {cand:.4f} (improvement {gain:.4f} >= "
                      f"{promote_cfg.min_improvement}); {base_note}")
    return False, (f"{metric} {old:.4f} -> {cand:.4f}: improvement {gain:.4f} below min_improvement "
                   f"{promote_cfg.min_improvement}; {base_note}")
