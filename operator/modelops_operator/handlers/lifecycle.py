"""Operator start-up: kopf settings that avoid its known failure modes, the metrics
server, and the resync loop."""

import asyncio
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client

from modelops_operator.config import OperatorConfig
from modelops_operator.k8s.client import EXECUTOR_WORKERS
from modelops_operator.service import Reconciler


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a "diff base" of every event's body (two deep copies of it) to detect
    changes for on.create/on.update/on.field handlers. This operator registers event
    and index handlers only, so the diff base is never compared: at 500 resources the
    copies were an eighth of the operator's CPU. An empty essence, nothing stored.
    (Adding a change handler later needs kopf's default storage back.)"""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    config: OperatorConfig,
    tick: float,
    api_config: client.Configuration,
) -> None:
    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        """kopf talks to the same server with the same credentials as our client."""
        auth = api_config.api_key.get("authorization") or api_config.api_key.get("BearerToken")
        token = auth.split(" ", 1)[1] if auth and " " in auth else auth
        return kopf.ConnectionInfo(
            server=api_config.host,
            ca_path=api_config.ssl_ca_cert,
            insecure=not api_config.verify_ssl,
            certificate_path=api_config.cert_file,
            private_key_path=api_config.key_file,
            scheme="Bearer" if token else None,
            token=token,
        )

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Watches that hang silently are kopf's best-known failure mode: bound them.
        settings.watching.server_timeout = 270
        settings.watching.client_timeout = 300
        settings.watching.connect_timeout = 30
        settings.watching.reconnect_backoff = 1.0
        settings.networking.request_timeout = 60
        settings.networking.connect_timeout = 30
        # kopf's own events only for warnings; ours are written by k8s/apply.
        settings.posting.level = logging.WARNING
        settings.execution.max_workers = EXECUTOR_WORKERS
        settings.persistence.diffbase_storage = NoDiffBase()
        # Namespaced installs may not list namespaces or CRDs cluster-wide; without
        # this kopf retries those scans with backoff for about a minute first.
        settings.scanning.disabled = bool(config.namespaces)
        if config.peering:
            # kopf pauses *every* replica whose priority ties with another's, so each
            # replica draws its own: the highest acts, the others stand by and take
            # over once its peering record expires (`lifetime` seconds).
            settings.peering.name = config.peering
            settings.peering.standalone = False
            settings.peering.clusterwide = not config.namespaces
            settings.peering.priority = config.peering_priority or random.randint(1, 1_000_000)
            settings.peering.lifetime = config.peering_lifetime
        else:
            settings.peering.standalone = True

    @kopf.on.startup(registry=registry)
    async def widen_executor(**_: Any) -> None:
        # Drift queries run in threads (asyncio.to_thread); the default pool has only
        # cpu_count + 4 workers, which caps the queries in flight at once.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=EXECUTOR_WORKERS)
        )

    @kopf.on.startup(registry=registry)
    async def start_resync(memo: kopf.Memo, **_: Any) -> None:
        memo["resync"] = asyncio.create_task(reconciler.resync_forever(tick))

    @kopf.on.cleanup(registry=registry)
    async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
        task = memo.get("resync")
        if task is not None:
            task.cancel()
        await reconciler.api.close()
