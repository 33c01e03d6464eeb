"""Watch events of the Jobs (and, when enabled, JobSets) the operator created: one that
changes reconciles its owner."""

from typing import Any, cast

import kopf

from modelops_api.meta import API_VERSION, LABEL_KIND, LABEL_MANAGED_BY, MANAGED_BY_VALUE
from modelops_operator.build.jobsets import JOBSET_GROUP, JOBSET_PLURAL, JOBSET_VERSION
from modelops_operator.service import Reconciler


def owner_of(body: Any) -> tuple[str, str] | None:
    """(kind, name) of the resource that owns a Job, from its controller reference: the
    name label may be a hash (names longer than 63 characters do not fit a label)."""
    meta = body.get("metadata", {})
    kind = (meta.get("labels") or {}).get(LABEL_KIND)
    for ref in meta.get("ownerReferences") or []:
        ours = ref.get("controller") and ref.get("apiVersion") == API_VERSION
        if ours and (kind is None or ref.get("kind") == kind):
            return ref["kind"], ref["name"]
    return None


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    async def on_job_event(event: Any, body: kopf.Body, **_: Any) -> None:
        if event.get("type") == "ADDED":
            return  # the reconcile that created it already recorded it
        owner = owner_of(body)
        if owner is None:
            return
        await reconciler.reconcile(owner[0], body["metadata"]["namespace"], owner[1])

    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={LABEL_MANAGED_BY: MANAGED_BY_VALUE},
        id="owned-jobs",
        registry=registry,
    )(cast(Any, on_job_event))
    if reconciler.config.jobsets:  # the chart's jobset.enabled: RBAC for JobSets is there
        kopf.on.event(
            JOBSET_GROUP,
            JOBSET_VERSION,
            JOBSET_PLURAL,
            labels={LABEL_MANAGED_BY: MANAGED_BY_VALUE},
            id="owned-jobsets",
            registry=registry,
        )(cast(Any, on_job_event))
