"""Watch events of the Jobs (and, when enabled, JobSets) the operator created: each one
updates the informer cache, and one that changes reconciles its owner.

The cache is fed by kopf index handlers: kopf runs index handlers before any other
handler and holds every handler until the initial listing of each indexed resource is
indexed, so no reconcile after a restart reads a cache that lacks existing Jobs (it
would report them deleted). The indexes themselves stay empty (the handlers return
None): the cache is `k8s/informer.py`'s, which the operator's own creates write through.
JobSets are watched only with MODELOPS_JOBSETS (the chart's jobset.enabled, which also
grants the RBAC); kopf watches them only while the API server serves the JobSet CRD.
"""

from collections.abc import Callable
from typing import Any, cast

import kopf

from modelops_api.meta import LABEL_MANAGED_BY, MANAGED_BY_VALUE
from modelops_operator.build.jobsets import JOBSET_GROUP, JOBSET_PLURAL, JOBSET_VERSION
from modelops_operator.k8s.informer import job_owner
from modelops_operator.service import Reconciler

JOBS = ("batch", "v1", "jobs")
JOBSETS = (JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL)

Store = Callable[[dict[str, Any]], None]


def _watch(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    resource: tuple[str, str, str],
    name: str,
    put: Store,
    drop: Store,
) -> None:
    """An index handler that keeps `resource` in the cache, and an event handler that
    drops deleted ones and reconciles the owner of one that changed."""
    labels = {LABEL_MANAGED_BY: MANAGED_BY_VALUE}

    async def cache(body: kopf.Body, **_: Any) -> None:
        put(cast(dict[str, Any], body))

    async def on_event(event: Any, body: kopf.Body, **_: Any) -> None:
        obj = cast(dict[str, Any], body)
        if event.get("type") == "DELETED":
            drop(obj)
        elif event.get("type") == "ADDED":
            return  # the reconcile that created it already recorded it
        owner = job_owner(obj)
        if owner is None:
            return
        await reconciler.reconcile(*owner)

    kopf.index(*resource, labels=labels, id=f"{name}-cache", registry=registry)(cast(Any, cache))
    kopf.on.event(*resource, labels=labels, id=f"owned-{name}s", registry=registry)(
        cast(Any, on_event)
    )


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    cache = reconciler.cache
    _watch(registry, reconciler, JOBS, "job", cache.put_job, cache.drop_job)
    if reconciler.config.jobsets:  # the chart's jobset.enabled: RBAC for JobSets is there
        _watch(registry, reconciler, JOBSETS, "jobset", cache.watched_jobset, cache.drop_jobset)
