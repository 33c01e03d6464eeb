"""Watch events of the Jobs the operator created: a Job that changes reconciles its owner."""

from typing import Any, cast

import kopf

from modelops_api.meta import LABEL_KIND, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY_VALUE
from modelops_operator.service import Reconciler


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    async def on_job_event(event: Any, body: kopf.Body, **_: Any) -> None:
        if event.get("type") == "ADDED":
            return  # the reconcile that created it already recorded it
        labels = body.get("metadata", {}).get("labels", {})
        kind, name = labels.get(LABEL_KIND), labels.get(LABEL_NAME)
        if not kind or not name:
            return
        await reconciler.reconcile(kind, body["metadata"]["namespace"], name)

    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={LABEL_MANAGED_BY: MANAGED_BY_VALUE},
        id="owned-jobs",
        registry=registry,
    )(cast(Any, on_job_event))
