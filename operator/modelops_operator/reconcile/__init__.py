"""Pure reconciliation: (observed state, operator config, now) -> a plan of actions.

`plan()` never talks to the API server; `k8s/apply.py` carries the plan out. The same
observed state always yields the same plan.
"""

from dataclasses import replace
from datetime import datetime

from modelops_api.kinds import kind_info
from modelops_operator.config import OperatorConfig
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.reconcile.actions import Action
from modelops_operator.reconcile.adaptation import plan_adaptation
from modelops_operator.reconcile.jobset_outcome import guard_jobsets
from modelops_operator.reconcile.observed import Observed
from modelops_operator.reconcile.oneshot import plan_oneshot


def plan(
    observed: Observed,
    config: OperatorConfig,
    now: datetime,
    drift: QueryOutcome | None = None,
) -> list[Action]:
    """`drift`: a ModelAdaptation's drift query outcome when this reconcile queried
    Prometheus (the service passes it here; `k8s/` never sees it)."""
    if drift is not None:
        observed = replace(observed, drift=drift)
    info = kind_info(observed.resource.kind)
    if info.kind == "ModelAdaptation":
        return guard_jobsets(observed, plan_adaptation(observed, info, config, now), now)
    return guard_jobsets(observed, plan_oneshot(observed, info, config, now), now)


__all__ = ["Action", "Observed", "plan"]
