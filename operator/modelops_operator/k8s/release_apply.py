"""Carry out the release actions: record ModelVersions, write their status, patch the
KServe InferenceService, and keep the MLflow registry in step.

- EnsureModelVersion: POST; AlreadyExists is success and the existing object is never
  updated (versions are only added; the deterministic name makes a restarted operator
  record nothing twice).
- PatchModelVersionStatus: a merge patch of the version's status subresource.
- PatchInferenceService: a merge patch of the InferenceService (only the predictor's
  storageUri and canaryTrafficPercent); gone (404) is left to the next reconcile, which
  observes no InferenceService and pauses the rollout; forbidden (403) raises, so the
  reconcile failure shows the API server's RBAC message on the ModelRollout.
- RegisterVersion / SetRegistryAliases: the MLflow client (blocking: in a thread), then
  the version's `status.registry` / the rollout's `status.registryAliases`. A
  RegistryError never fails the reconcile: condition RegistrySynced False with its
  reason on the ModelRollout, and the next reconcile tries again (any other exception
  of the client too: a registry never fails a rollout).
What the API server answers is written through to the informer cache.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelops_api.meta import GROUP, VERSION
from modelops_api.rollout_status import ModelRolloutStatus
from modelops_operator import metrics
from modelops_operator.config import OperatorConfig
from modelops_operator.k8s.api import MERGE_PATCH, ApiSession, group_path
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.k8s.kinds import ROLLOUT_KIND, ROLLOUT_PLURAL, VERSION_PLURAL
from modelops_operator.reconcile.actions import (
    EnsureModelVersion,
    PatchInferenceService,
    PatchModelVersionStatus,
    RegisterVersion,
    SetRegistryAliases,
)
from modelops_operator.reconcile.conditions import set_condition
from modelops_operator.reconcile.observed import ResourceView
from modelops_operator.reconcile.status_patch import desired_status
from modelops_operator.registry.mlflow import MlflowRegistry, RegistryError

log = logging.getLogger("modelops.apply")

KSERVE_API_VERSION = "serving.kserve.io/v1beta1"
ISVC_PLURAL = "inferenceservices"
REGISTRY_SYNCED = "RegistrySynced"
ReleaseAction = (
    EnsureModelVersion
    | PatchModelVersionStatus
    | PatchInferenceService
    | RegisterVersion
    | SetRegistryAliases
)
RegistryFactory = Callable[[], MlflowRegistry | None]


class ReleaseApplier:
    """The release actions of one plan (the resource `res` planned them)."""

    def __init__(self, api: ApiSession, cache: InformerCache, registry: RegistryFactory) -> None:
        self.api = api
        self.cache = cache
        self.registry = registry
        """A client for the installation's MLflow, or None when none is configured."""

    async def apply(self, res: ResourceView, action: ReleaseAction) -> None:
        if isinstance(action, EnsureModelVersion):
            await self._ensure_version(res, action.manifest)
        elif isinstance(action, PatchModelVersionStatus):
            await self._patch_version_status(res.namespace, action.name, action.patch)
        elif isinstance(action, PatchInferenceService):
            await self._patch_isvc(res.namespace, action.name, action.patch)
        elif isinstance(action, RegisterVersion):
            await self._register(res, action)
        else:
            await self._aliases(res, action)

    async def _ensure_version(self, res: ResourceView, manifest: dict[str, Any]) -> None:
        namespace = manifest.get("metadata", {}).get("namespace") or res.namespace
        created = await self.api.create(
            group_path(f"{GROUP}/{VERSION}", namespace, VERSION_PLURAL), manifest
        )
        if created is not None:  # None: it exists (never updated)
            self.cache.put_version(created)
            metrics.VERSIONS_RECORDED.labels(res.namespace, res.name, res.kind).inc()

    async def _patch_version_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        path = group_path(f"{GROUP}/{VERSION}", namespace, VERSION_PLURAL, name, "status")
        body = await self.api.merge_patch(path, {"status": patch})
        if body is not None:
            self.cache.put_version(body)

    async def _patch_isvc(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        path = group_path(KSERVE_API_VERSION, namespace, ISVC_PLURAL, name)
        try:
            body = await self.api.request("PATCH", path, patch, content_type=MERGE_PATCH)
        except ApiException as exc:
            if exc.status != 404:  # 404: the next reconcile observes it gone and pauses
                raise
            return
        self.cache.put_isvc(body)

    async def _register(self, res: ResourceView, action: RegisterVersion) -> None:
        registry = self.registry()
        if registry is None:
            return
        try:
            entry = await asyncio.to_thread(
                registry.register,
                action.model_name,
                action.version,
                action.source_uri,
                action.tags,
                action.description,
            )
        except Exception as exc:  # the registry never blocks the rollout
            await self._synced(
                res, "False", _reason(exc), f"registering {action.version}: {_text(exc)}"
            )
            return
        patch = {"registry": {"modelName": entry.model_name, "version": entry.version}}
        await self._patch_version_status(res.namespace, action.version, patch)

    async def _aliases(self, res: ResourceView, action: SetRegistryAliases) -> None:
        registry = self.registry()
        if registry is None:
            return
        wanted = {"champion": action.champion, "challenger": action.challenger}
        try:
            await asyncio.to_thread(registry.set_aliases, action.model_name, wanted)
        except Exception as exc:  # the registry never blocks the rollout
            await self._synced(res, "False", _reason(exc), f"setting aliases: {_text(exc)}")
            return
        message = f"champion={action.champion or '-'} challenger={action.challenger or '-'}"
        await self._synced(res, "True", "AliasesSet", message, aliases=wanted)

    async def _synced(
        self,
        res: ResourceView,
        status: str,
        reason: str,
        message: str,
        aliases: dict[str, str | None] | None = None,
    ) -> None:
        """Condition RegistrySynced (and the aliases as set) on the ModelRollout, over
        its latest status (the plan's own status write is in the cache by now)."""
        if res.kind != ROLLOUT_KIND:
            return
        held = self.cache.resource((res.kind, res.namespace, res.name)) or {}
        current = dict(held.get("status") or res.status)
        conds = set_condition(
            list(current.get("conditions") or []),
            REGISTRY_SYNCED,
            status,
            reason,
            message[:1024],
            datetime.now(UTC),
            res.generation,
        )
        patch = desired_status(ModelRolloutStatus, conditions=conds)
        if aliases is not None:  # validated, then sent with nulls (an alias removed)
            desired_status(ModelRolloutStatus, registry_aliases=aliases)
            patch["registryAliases"] = dict(aliases)
        path = group_path(f"{GROUP}/{VERSION}", res.namespace, ROLLOUT_PLURAL, res.name, "status")
        body = await self.api.merge_patch(path, {"status": patch})
        if body is None:
            return
        body.setdefault("kind", res.kind)
        self.cache.put_resource((res.kind, res.namespace, res.name), body)
        if status == "False":
            log.warning("registry sync of %s/%s failed: %s", res.namespace, res.name, reason)


def _reason(exc: Exception) -> str:
    """A RegistryError's own reason; anything else (a bug in the client) is logged and
    reported as RegistryError, without its text's details beyond the type."""
    if isinstance(exc, RegistryError):
        return exc.reason
    log.warning("registry client failed: %s", type(exc).__name__)
    return "RegistryError"


def _text(exc: Exception) -> str:
    """A RegistryError's message (it carries no credential); else only the type."""
    return str(exc) if isinstance(exc, RegistryError) else type(exc).__name__


def registry_factory(config: OperatorConfig) -> RegistryFactory:
    """The installation's MLflow client (MODELOPS_MLFLOW_URL, its token file and CA
    file, read by the client on every call: a rotated Secret is used), or None."""
    client = MlflowRegistry.from_config(config)
    return lambda: client
