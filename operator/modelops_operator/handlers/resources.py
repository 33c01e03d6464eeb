"""Watch events of the four custom resources.

`on.event` handlers only: kopf stores no progress or diff-base annotations and adds no
finalizer (deletion needs no handler: the Job and ConfigMap are garbage-collected
through their owner references). Every event updates the informer cache
(`k8s/informer.py`) and triggers a full level-based reconcile, except the operator's
own status writes.
"""

from typing import Any, cast

import kopf

from modelops_api.kinds import KINDS
from modelops_api.meta import ANNOTATION_RUN_NOW, GROUP, VERSION
from modelops_operator.service import Reconciler


def _status_only(body: Any) -> bool:
    """A change the operator made itself: the spec generation is observed already and
    no run-now request is pending."""
    meta, status = body.get("metadata", {}), body.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return False
    run_now = (meta.get("annotations") or {}).get(ANNOTATION_RUN_NOW)
    return not run_now or run_now == status.get("lastRunNow")


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    for info in KINDS:

        async def on_event(
            event: dict[str, Any], body: kopf.Body, kind: str = info.kind, **_: Any
        ) -> None:
            meta = body.get("metadata", {})
            namespace, name = meta.get("namespace", "default"), meta["name"]
            if event.get("type") == "DELETED":
                reconciler.forget(kind, namespace, name)
                return
            # The cache keeps the newest copy by resourceVersion: a queued older event
            # never replaces a status this operator has since written.
            fresh = reconciler.track({**body, "kind": kind})
            if event.get("type") == "MODIFIED" and _status_only(fresh):
                return  # our own status write: nothing new to act on (resync still runs)
            await reconciler.reconcile(kind, namespace, name, body=fresh)

        kopf.on.event(
            GROUP, VERSION, info.plural, id=f"reconcile-{info.plural}", registry=registry
        )(cast(Any, on_event))
