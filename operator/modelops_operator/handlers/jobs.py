"""Watch events of the Jobs the operator created: each one updates the informer cache,
and a Job that changes reconciles its owner.

The cache is fed by a kopf index handler: kopf runs index handlers before any other
handler and holds every handler until the initial listing of each indexed resource is
indexed, so no reconcile after a restart reads a cache that lacks existing Jobs (it
would report them deleted). The index itself stays empty (the handler returns None):
the cache is `k8s/informer.py`'s, which the operator's own creates write through.
"""

from typing import Any, cast

import kopf

from modelops_api.meta import LABEL_MANAGED_BY, MANAGED_BY_VALUE
from modelops_operator.k8s.informer import job_owner
from modelops_operator.service import Reconciler

JOBS = ("batch", "v1", "jobs")


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    labels = {LABEL_MANAGED_BY: MANAGED_BY_VALUE}

    async def cache_job(body: kopf.Body, **_: Any) -> None:
        reconciler.cache.put_job(cast(dict[str, Any], body))

    async def on_job_event(event: Any, body: kopf.Body, **_: Any) -> None:
        job = cast(dict[str, Any], body)
        if event.get("type") == "DELETED":
            reconciler.cache.drop_job(job)
        elif event.get("type") == "ADDED":
            return  # the reconcile that created it already recorded it
        owner = job_owner(job)
        if owner is None:
            return
        await reconciler.reconcile(*owner)

    kopf.index(*JOBS, labels=labels, id="job-cache", registry=registry)(cast(Any, cache_job))
    kopf.on.event(*JOBS, labels=labels, id="owned-jobs", registry=registry)(cast(Any, on_job_event))
