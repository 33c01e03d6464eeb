"""The operator's one HTTP path to the API server: aiohttp, the library kopf's watches
already use, with the kubeconfig's (or the ServiceAccount's) TLS and credentials.

Why not the kubernetes package's client: it is synchronous, so every call ran in a
thread (a pool of 32 beside kopf's event loop), validated its arguments with pydantic
and parsed every answer into models; at 500 resources half the operator's CPU went
there, and its urllib3 pool discarded connections under load (a TLS handshake each).
Here a call is a coroutine on kopf's loop, connections are kept alive, and bodies are
plain JSON. The kubernetes package is still used to read the kubeconfig (its loader
resolves exec plugins and in-cluster token refresh) and for `ApiException`, which
`failures.py` classifies: an HTTP error answer raises it with the status, reason and
body, as the old client did.
"""

import asyncio
import json
import ssl
from typing import Any

import aiohttp
from kubernetes import client
from kubernetes.client.exceptions import ApiException

CONCURRENCY = 32
"""Requests in flight at once (connections kept alive): enough for a burst, few enough
not to flood an API server that is starting up."""
TIMEOUT_S = 60.0

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"


def _ssl_context(cfg: client.Configuration) -> ssl.SSLContext | bool:
    if not cfg.verify_ssl:
        return False
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return ctx


class ApiSession:
    """Requests to the API server from the operator's event loop. The aiohttp session
    is opened on first use in the running loop (and again in a new loop: tests)."""

    def __init__(self, cfg: client.Configuration) -> None:
        self.cfg = cfg
        self.host = cfg.host.rstrip("/")
        self._ssl = _ssl_context(cfg) if self.host.startswith("https") else False
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.requests = 0

    def _headers(self) -> dict[str, str]:
        # auth_settings() runs the configuration's refresh hook (in-cluster tokens rotate).
        headers = {"User-Agent": "modelops-operator"}
        settings: dict[str, Any] = dict(self.cfg.auth_settings())
        for auth in settings.values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"])] = str(auth["value"])
        return headers

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=CONCURRENCY, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
            )
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> dict[str, Any]:
        """One request; the answer's JSON. An HTTP error raises `ApiException`."""
        headers = {**self._headers(), "Accept": accept}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        self.requests += 1
        async with self._open().request(
            method, self.host + path, data=data, params=params, headers=headers
        ) as response:
            text = await response.read()
            if response.status >= 400:
                exc = ApiException(status=response.status, reason=response.reason)
                exc.body = text.decode("utf-8", "replace")
                raise exc
            answer: dict[str, Any] = json.loads(text) if text else {}
            return answer

    # -- the calls the operator makes ---------------------------------------------
    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST; None when the object exists already (deterministic names)."""
        try:
            return await self.request("POST", path, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return None

    async def get(self, path: str, accept: str = JSON) -> dict[str, Any] | None:
        """GET; None when it does not exist (404)."""
        try:
            return await self.request("GET", path, accept=accept)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """PATCH as a JSON merge patch; None when the object is gone (404): a deleted
        object needs no status, and the next reconcile sees it gone."""
        try:
            return await self.request("PATCH", path, body, content_type=MERGE_PATCH)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None

    async def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        items: list[dict[str, Any]] = (await self.request("GET", path, params=params))["items"]
        return items


def core_path(namespace: str, plural: str, name: str | None = None) -> str:
    tail = f"/{name}" if name else ""
    return f"/api/v1/namespaces/{namespace}/{plural}{tail}"


def group_path(
    group_version: str, namespace: str, plural: str, name: str | None = None, sub: str = ""
) -> str:
    tail = (f"/{name}" if name else "") + (f"/{sub}" if sub else "")
    return f"/apis/{group_version}/namespaces/{namespace}/{plural}{tail}"
