"""Carry out a plan against the API server.

Creating what already exists is success (deterministic names make creation
idempotent); deleting what is gone is success; a status patch for a resource that
was deleted meanwhile is dropped. What the API server answers to a Job (or JobSet)
create and a status patch is written through to the informer cache (`k8s/informer.py`),
so the next reconcile sees the operator's own writes before their watch events arrive.
A JobSet (resources.nodes > 1) is created and deleted on the same HTTP path as a Job.
The release actions (ModelVersions, the InferenceService, the registry) are carried out
by `k8s/release_apply.py`.
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelops_api.meta import API_VERSION, GROUP, VERSION
from modelops_operator.build.jobsets import JOBSET_API_VERSION, JOBSET_PLURAL, is_jobset
from modelops_operator.k8s.api import ApiSession, core_path, group_path
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.k8s.kinds import plural
from modelops_operator.k8s.release_apply import RegistryFactory, ReleaseAction, ReleaseApplier
from modelops_operator.reconcile.actions import (
    Action,
    CreateJob,
    DeleteJob,
    EnsureConfigMap,
    PatchInferenceService,
    PatchStatus,
    RecordEvent,
    RegisterVersion,
    SetRegistryAliases,
)
from modelops_operator.reconcile.observed import ResourceView

log = logging.getLogger("modelops.apply")
COMPONENT = "modelops-operator"


class Applier:
    """Applies actions for one resource."""

    def __init__(
        self, api: ApiSession, cache: InformerCache, registry: RegistryFactory | None = None
    ) -> None:
        self.api = api
        self.cache = cache
        self.api_calls = 0
        self.release = ReleaseApplier(api, cache, registry or (lambda: None))

    async def apply(self, res: ResourceView, actions: list[Action]) -> None:
        """In order — the ConfigMap before the Job, the Job before the status that names
        it — then the status patch and the events together. A plan that patches an
        InferenceService writes its status in place instead: the status records the
        patch before it is made (write-ahead, `rollout_status.py`). Registry calls go
        last: a slow or failing registry never holds back the rollout's own writes."""
        ahead = any(isinstance(a, PatchInferenceService) for a in actions)
        deferred = (RecordEvent,) if ahead else (PatchStatus, RecordEvent)
        registry = (RegisterVersion, SetRegistryAliases)
        for action in actions:
            if not isinstance(action, deferred + registry):
                await self._one(res, action)
        await asyncio.gather(*(self._one(res, a) for a in actions if isinstance(a, deferred)))
        for action in actions:
            if isinstance(action, registry):
                await self._one(res, action)

    async def _one(self, res: ResourceView, action: Action) -> None:
        self.api_calls += 1
        if isinstance(action, EnsureConfigMap):
            await self.api.create(core_path(res.namespace, "configmaps"), action.manifest)
        elif isinstance(action, CreateJob) and is_jobset(action.manifest):
            path = group_path(JOBSET_API_VERSION, res.namespace, JOBSET_PLURAL)
            created = await self.api.create(path, action.manifest)
            if created is not None:
                self.cache.put_jobset(created)
        elif isinstance(action, CreateJob):
            path = group_path("batch/v1", res.namespace, "jobs")
            created = await self.api.create(path, action.manifest)
            if created is not None:
                self.cache.put_job(created)
        elif isinstance(action, DeleteJob) and action.jobset:
            await self._delete(
                group_path(JOBSET_API_VERSION, action.namespace, JOBSET_PLURAL, action.name)
            )
        elif isinstance(action, DeleteJob):
            await self._delete(group_path("batch/v1", action.namespace, "jobs", action.name))
        elif isinstance(action, PatchStatus):
            await self._patch_status(res, action.patch)
        elif isinstance(action, RecordEvent):
            await self._event(res, action)
        elif isinstance(action, ReleaseAction):
            await self.release.apply(res, action)

    async def _delete(self, path: str) -> None:
        """A Job or JobSet (its pods go in the background); gone (or no CRD): done."""
        try:
            await self.api.request("DELETE", path, {"propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _patch_status(self, res: ResourceView, patch: dict[str, Any]) -> None:
        path = group_path(f"{GROUP}/{VERSION}", res.namespace, plural(res.kind), res.name, "status")
        body = await self.api.merge_patch(path, {"status": patch})
        if body is None:
            return
        body.setdefault("kind", res.kind)
        self.cache.put_resource((res.kind, res.namespace, res.name), body)

    async def _event(self, res: ResourceView, action: RecordEvent) -> None:
        now = datetime.now(UTC)
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{res.name}.", "namespace": res.namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": res.kind,
                "name": res.name,
                "namespace": res.namespace,
                "uid": res.uid,
            },
            "type": action.type,
            "reason": action.reason[:128],
            "message": action.message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            await self.api.request("POST", core_path(res.namespace, "events"), body)
        except ApiException as exc:  # events are best effort
            log.warning(
                "could not record event %s on %s/%s: %s",
                action.reason,
                res.namespace,
                res.name,
                exc.reason,
            )
