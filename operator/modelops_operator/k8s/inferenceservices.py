"""Read a KServe InferenceService (serving.kserve.io/v1beta1) for a ModelRollout.

KServe may not be installed: the operator must run without its CRD (the same problem
as JobSets, `k8s/jobsets.py`). kopf watches InferenceServices only while the API
server serves the CRD, and their events fill the informer cache; until one arrived
(no watch: nothing would keep a cached copy current) or for an InferenceService the
cache does not hold, the observer GETs it. A 404
there means either "no such InferenceService" or "no such API": the API group's
discovery document tells them apart (asked at most every `recheck_seconds`), so the
rollout pauses with reason InferenceServiceNotFound or KServeNotInstalled.
"""

import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelops_operator.k8s.api import ApiSession, group_path
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.k8s.release_apply import ISVC_PLURAL, KSERVE_API_VERSION
from modelops_operator.reconcile.observed import InferenceServiceView

INFERENCE_SERVICE_NOT_FOUND = "InferenceServiceNotFound"
KSERVE_NOT_INSTALLED = "KServeNotInstalled"
INFERENCE_SERVICE_FORBIDDEN = "InferenceServiceForbidden"


def isvc_view(body: dict[str, Any]) -> InferenceServiceView:
    """The part of an InferenceService a rollout reads (KServe's wire form)."""
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    predictor = spec.get("predictor") or {}
    canary = predictor.get("canaryTrafficPercent")
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    component = (status.get("components") or {}).get("predictor") or {}
    observed = status.get("observedGeneration")
    return InferenceServiceView(
        name=meta["name"],
        generation=int(meta.get("generation") or 1),
        storage_uri=(predictor.get("model") or {}).get("storageUri"),
        canary_traffic_percent=int(canary) if isinstance(canary, int) else None,
        ready=conds.get("Ready") == "True",
        observed_generation=int(observed) if isinstance(observed, int) else None,
        traffic=tuple(
            (
                str(t.get("revisionName") or ""),
                int(t.get("percent") or 0),
                bool(t.get("latestRevision")),
            )
            for t in component.get("traffic") or []
        ),
        latest_ready_revision=component.get("latestReadyRevision"),
        previous_rolledout_revision=component.get("previousRolledoutRevision"),
    )


def missing_reason(api_served: bool) -> str:
    """Why a GET of an InferenceService found nothing."""
    return INFERENCE_SERVICE_NOT_FOUND if api_served else KSERVE_NOT_INSTALLED


class InferenceServiceObserver:
    """InferenceServices from the cache (or a GET), and whether KServe's API is served."""

    def __init__(
        self,
        api: ApiSession,
        cache: InformerCache,
        group_version: str = KSERVE_API_VERSION,
        recheck_seconds: float = 10.0,
    ) -> None:
        self.api = api
        self.cache = cache
        self.group_version = group_version
        self.recheck_seconds = recheck_seconds
        self._served: tuple[float, bool] | None = None

    async def api_served(self) -> bool:
        """Whether the API server serves the group version (its discovery document)."""
        now = time.monotonic()
        if self._served is not None and now - self._served[0] < self.recheck_seconds:
            return self._served[1]
        served = await self.api.get(f"/apis/{self.group_version}") is not None
        self._served = (now, served)
        return served

    async def observe(
        self, namespace: str, name: str
    ) -> tuple[InferenceServiceView | None, str | None]:
        """(the view, None) or (None, why there is none)."""
        body = self.cache.isvc(namespace, name) if self.cache.isvcs_watched else None
        if body is None:
            try:
                body = await self.api.get(
                    group_path(self.group_version, namespace, ISVC_PLURAL, name)
                )
            except ApiException as exc:
                if exc.status == 403:
                    return None, INFERENCE_SERVICE_FORBIDDEN
                raise
            if body is None:
                return None, missing_reason(await self.api_served())
        return isvc_view(body), None
