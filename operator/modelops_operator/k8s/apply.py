"""Carry out a plan against the API server.

Creating what already exists is success (deterministic names make creation
idempotent); deleting what is gone is success; a status patch for a resource that
was deleted meanwhile is dropped.
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelops_api.kinds import kind_info
from modelops_api.meta import API_VERSION, GROUP, VERSION
from modelops_operator.build.jobsets import (
    JOBSET_GROUP,
    JOBSET_PLURAL,
    JOBSET_VERSION,
    is_jobset,
)
from modelops_operator.reconcile.actions import (
    Action,
    CreateJob,
    DeleteJob,
    EnsureConfigMap,
    PatchStatus,
    RecordEvent,
)
from modelops_operator.reconcile.observed import ResourceView

log = logging.getLogger("modelops.apply")
COMPONENT = "modelops-operator"


class Applier:
    """Applies actions for one resource."""

    def __init__(self, api: client.ApiClient) -> None:
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.api_calls = 0

    async def apply(self, res: ResourceView, actions: list[Action]) -> None:
        """In order — the ConfigMap before the Job, the Job before the status that names
        it — then the status patch and the events together."""
        last = [a for a in actions if isinstance(a, PatchStatus | RecordEvent)]
        for action in actions:
            if not isinstance(action, PatchStatus | RecordEvent):
                await self._one(res, action)
        await asyncio.gather(*(self._one(res, a) for a in last))

    async def _one(self, res: ResourceView, action: Action) -> None:
        if isinstance(action, EnsureConfigMap):
            await self._create(
                self.core.create_namespaced_config_map, res.namespace, action.manifest
            )
        elif isinstance(action, CreateJob) and is_jobset(action.manifest):
            await self._create(self._create_jobset, res.namespace, action.manifest)
        elif isinstance(action, CreateJob):
            await self._create(self.batch.create_namespaced_job, res.namespace, action.manifest)
        elif isinstance(action, DeleteJob) and action.jobset:
            await self._delete_jobset(action.namespace, action.name)
        elif isinstance(action, DeleteJob):
            await self._delete_job(action.namespace, action.name)
        elif isinstance(action, PatchStatus):
            await self._patch_status(res, action.patch)
        elif isinstance(action, RecordEvent):
            await self._event(res, action)

    async def _create(self, fn: Any, namespace: str, body: dict[str, Any]) -> None:
        self.api_calls += 1
        try:
            # The created object is not needed: skip deserialising the response.
            await asyncio.to_thread(fn, namespace, body, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise

    async def _delete_job(self, namespace: str, name: str) -> None:
        self.api_calls += 1
        try:
            await asyncio.to_thread(
                self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _create_jobset(self, namespace: str, body: dict[str, Any], **kw: Any) -> Any:
        return self.custom.create_namespaced_custom_object(
            JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSET_PLURAL, body, **kw
        )

    async def _delete_jobset(self, namespace: str, name: str) -> None:
        """A run's JobSet (its Jobs and pods go in the background); gone or no CRD: done."""
        self.api_calls += 1
        try:
            await asyncio.to_thread(
                self.custom.delete_namespaced_custom_object,
                JOBSET_GROUP,
                JOBSET_VERSION,
                namespace,
                JOBSET_PLURAL,
                name,
                propagation_policy="Background",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _patch_status(self, res: ResourceView, patch: dict[str, Any]) -> None:
        info = kind_info(res.kind)
        self.api_calls += 1
        try:
            await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                res.namespace,
                info.plural,
                res.name,
                {"status": patch},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

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
        self.api_calls += 1
        try:
            await asyncio.to_thread(
                self.core.create_namespaced_event, res.namespace, body, _preload_content=False
            )
        except ApiException as exc:  # events are best effort
            log.warning(
                "could not record event %s on %s/%s: %s",
                action.reason,
                res.namespace,
                res.name,
                exc.reason,
            )
