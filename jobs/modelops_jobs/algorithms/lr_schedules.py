"""Learning-rate schedules of continual pre-training, as pure functions of the step.

Continual pre-training (arXiv:2403.08763) replaces "keep the tiny final LR" with a
schedule per dataset: re-warm linearly to eta_max, then re-decay with a cosine to
eta_min; or an "infinite" schedule (warmup, cooldown to a constant eta_const, constant
for as long as data arrives, and a short final anneal to eta_min) whose un-annealed
*pre-anneal* checkpoint lets the next run go on without re-warming.

Every function returns a multiplier of eta_max for optimizer update number `step`
(1-based: `step` = 1 is the first update, `step` = `total` the last), so the LR of an
update is `eta_max * multiplier(step)`. The functions are pure: a resumed run
recomputes the same LR from the step alone.

Choices where the paper is silent (see docs/algorithms/cpt.md):
- the re-warm goes from eta_max / W to eta_max over W = round(warmup_ratio * total)
  updates (no update runs at LR 0); the cosine then reaches eta_min at the last update;
- `constant` continues at eta_min (`min_lr_ratio`), the paper's "no re-warming"
  baseline; set `min_lr_ratio` to 1 for a constant eta_max;
- the infinite schedule's cooldown is a cosine (the paper also allows inverse square
  root); the final anneal is linear from eta_const to eta_min (its shape is not
  confirmed in the paper).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ScheduleKind = Literal["rewarm_cosine", "constant", "infinite"]


def cosine_between(progress: float, start: float, end: float) -> float:
    """Half a cosine from `start` (progress 0) to `end` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(total: int, warmup_ratio: float) -> int:
    """Updates spent re-warming: round(warmup_ratio * total), at most total - 1."""
    return min(max(round(warmup_ratio * total), 0), max(total - 1, 0))


def rewarm_cosine(step: int, total: int, warmup_ratio: float, min_lr_ratio: float) -> float:
    """Linear re-warm to 1 over W updates, then cosine re-decay to `min_lr_ratio`.

    eta_t = eta_min + (eta_max - eta_min) / 2 * (1 + cos(pi * (t - W) / (total - W))).
    """
    warm = warmup_steps(total, warmup_ratio)
    if step <= warm:
        return step / warm
    return cosine_between((step - warm) / (total - warm), 1.0, min_lr_ratio)


def constant(step: int, ratio: float) -> float:
    """The same multiplier at every step (no re-warming)."""
    return ratio


@dataclass(frozen=True)
class InfinitePhases:
    """Update counts of the four phases of an infinite schedule (they sum to total)."""

    warmup: int
    cooldown: int
    constant: int
    anneal: int

    @property
    def pre_anneal_step(self) -> int:
        """The last update before the anneal: its checkpoint is the pre-anneal one."""
        return self.warmup + self.cooldown + self.constant


def infinite_phases(
    total: int,
    warmup_ratio: float,
    cooldown_ratio: float,
    anneal_ratio: float,
    continued: bool = False,
) -> InfinitePhases:
    """Split `total` updates into warmup, cooldown, constant and anneal.

    A `continued` run starts from a pre-anneal checkpoint that is already at eta_const:
    it has no warmup and no cooldown. ValueError when the shares exceed the run.
    """
    anneal = round(anneal_ratio * total)
    warm = 0 if continued else round(warmup_ratio * total)
    cool = 0 if continued else round(cooldown_ratio * total)
    rest = total - warm - cool - anneal
    if rest < 0:
        raise ValueError(
            f"warmupRatio + cooldownRatio + annealRatio exceed the run ({warm} + {cool} + "
            f"{anneal} updates > {total} steps)"
        )
    return InfinitePhases(warmup=warm, cooldown=cool, constant=rest, anneal=anneal)


def infinite(
    step: int,
    phases: InfinitePhases,
    constant_lr_ratio: float,
    min_lr_ratio: float,
) -> float:
    """Warmup to 1, cosine cooldown to eta_const, constant, then a linear anneal to eta_min."""
    if step <= phases.warmup:
        return step / phases.warmup
    step -= phases.warmup
    if step <= phases.cooldown:
        return cosine_between(step / phases.cooldown, 1.0, constant_lr_ratio)
    step -= phases.cooldown
    if step <= phases.constant:
        return constant_lr_ratio
    step -= phases.constant
    progress = step / phases.anneal
    return constant_lr_ratio + (min_lr_ratio - constant_lr_ratio) * progress


@dataclass(frozen=True)
class ScheduleSettings:
    """The fields of the spec's LRSchedule this module needs (plain values, no pydantic)."""

    kind: ScheduleKind = "rewarm_cosine"
    warmup_ratio: float = 0.01
    min_lr_ratio: float = 0.1
    cooldown_ratio: float = 0.6
    constant_lr_ratio: float = 0.55
    anneal_ratio: float = 0.1


def multiplier_function(
    settings: ScheduleSettings, total: int, continued: bool = False
) -> Callable[[int], float]:
    """step -> multiplier for one run of `total` updates (ValueError on impossible shares)."""
    if total < 1:
        raise ValueError("a run needs at least one step")
    if settings.kind == "rewarm_cosine":
        return lambda step: rewarm_cosine(step, total, settings.warmup_ratio, settings.min_lr_ratio)
    if settings.kind == "constant":
        return lambda step: constant(step, settings.min_lr_ratio)
    phases = infinite_phases(
        total, settings.warmup_ratio, settings.cooldown_ratio, settings.anneal_ratio, continued
    )
    return lambda step: infinite(step, phases, settings.constant_lr_ratio, settings.min_lr_ratio)


def pre_anneal_point(settings: ScheduleSettings, total: int, continued: bool = False) -> int | None:
    """The pre-anneal update of an infinite schedule; None for the other kinds."""
    if settings.kind != "infinite":
        return None
    return infinite_phases(
        total, settings.warmup_ratio, settings.cooldown_ratio, settings.anneal_ratio, continued
    ).pre_anneal_step
