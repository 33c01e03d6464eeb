"""Watch events of the release kinds (ModelRollout, ModelVersion) and of KServe's
InferenceServices: each one updates the informer cache and reconciles the rollouts
it concerns.

- ModelRollout: like the job kinds (`handlers/resources.py`), every event but the
  operator's own status writes reconciles it; an approve/reject annotation changes no
  generation, so a change of annotations always reconciles.
- ModelVersion: a kopf index handler fills the cache (kopf holds every handler until
  the initial listing is in: a restarted operator sees every version before its first
  rollout reconcile); a change wakes the rollouts whose plan sees that version.
- InferenceService: kopf watches it only while the API server serves KServe's CRD
  (without it the operator runs on; `k8s/inferenceservices.py` reports
  KServeNotInstalled); a change (KServe's status, a hand edit) wakes the rollouts that
  name it.
Rollouts are woken through the resync loop (`Reconciler.resync_soon`), so a burst of
events costs one reconcile each.
"""

from typing import Any, cast

import kopf

from modelops_api.meta import GROUP, VERSION
from modelops_operator.k8s.kinds import ROLLOUT_KIND, ROLLOUT_PLURAL, VERSION_PLURAL
from modelops_operator.k8s.release_apply import ISVC_PLURAL, KSERVE_API_VERSION
from modelops_operator.service import Reconciler

KSERVE_GROUP, KSERVE_VERSION = KSERVE_API_VERSION.split("/")


def _own_status_write(held: dict[str, Any] | None, fresh: dict[str, Any]) -> bool:
    """The operator's own status write: generation observed, annotations unchanged."""
    meta, status = fresh.get("metadata", {}), fresh.get("status") or {}
    if held is None or status.get("observedGeneration") != meta.get("generation"):
        return False
    before = (held.get("metadata") or {}).get("annotations") or {}
    return before == (meta.get("annotations") or {})


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    cache, releases = reconciler.cache, reconciler.releases

    async def on_rollout(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata", {})
        namespace, name = meta.get("namespace", "default"), meta["name"]
        if event.get("type") == "DELETED":
            reconciler.forget(ROLLOUT_KIND, namespace, name)
            # A rollout that waited on this one (Conflict) may act now.
            reconciler.resync_soon(ROLLOUT_KIND, namespace)
            return
        held = cache.resource((ROLLOUT_KIND, namespace, name))
        fresh = reconciler.track({**body, "kind": ROLLOUT_KIND})
        if event.get("type") == "MODIFIED" and _own_status_write(held, fresh):
            return
        await reconciler.reconcile(ROLLOUT_KIND, namespace, name, body=fresh)

    async def index_version(body: kopf.Body, **_: Any) -> None:
        cache.put_version(cast(dict[str, Any], body))

    async def on_version(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
        obj = cast(dict[str, Any], body)
        namespace = obj["metadata"].get("namespace", "default")
        if event.get("type") == "DELETED":
            cache.drop_version(obj)
        names = releases.rollouts_considering(namespace, obj)
        if names:
            reconciler.resync_soon(ROLLOUT_KIND, namespace, names)

    async def on_isvc(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
        obj = cast(dict[str, Any], body)
        namespace, name = obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]
        if event.get("type") == "DELETED":
            cache.drop_isvc(obj)
        else:
            cache.put_isvc(obj, watched=True)
        names = releases.rollouts_of_isvc(namespace, name)
        if names:
            reconciler.resync_soon(ROLLOUT_KIND, namespace, names)

    kopf.on.event(GROUP, VERSION, ROLLOUT_PLURAL, id="reconcile-modelrollouts", registry=registry)(
        cast(Any, on_rollout)
    )
    kopf.index(GROUP, VERSION, VERSION_PLURAL, id="modelversion-cache", registry=registry)(
        cast(Any, index_version)
    )
    kopf.on.event(GROUP, VERSION, VERSION_PLURAL, id="modelversion-events", registry=registry)(
        cast(Any, on_version)
    )
    kopf.on.event(
        KSERVE_GROUP, KSERVE_VERSION, ISVC_PLURAL, id="inferenceservice-events", registry=registry
    )(cast(Any, on_isvc))
