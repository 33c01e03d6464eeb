"""What the e2e tenancy tests share (test_security.py, test_tenant_isolation.py): users
with a namespaced Role, impersonated; resources created as them; a stand-in
Prometheus that records what it is sent; the operator in a thread; and the search
for a Secret's value in everything the operator wrote and logged."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client

from modelops_api.kinds import KINDS, kind_info
from modelops_api.meta import GROUP, VERSION

CPU_ONLY = {"gpu": {"count": 0}, "cpu": "1", "memory": "1Gi"}
TENANT_RULES = [
    {
        "apiGroups": [GROUP],
        "resources": [k.plural for k in KINDS],
        "verbs": ["create", "get", "list"],
    }
]
"""A low-privilege tenant: create/get/list on the four kinds; no Secrets, pods or policies."""
USER_RULES = [
    {"apiGroups": [GROUP], "resources": ["*"], "verbs": ["*"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get"]},
    {
        "apiGroups": ["", "batch"],
        "resources": ["configmaps", "jobs", "pods", "events"],
        "verbs": ["get", "list"],
    },
]
"""What a team member typically gets in their own namespace: full use of the four
kinds, Secrets and read access to what the operator creates. Nothing elsewhere."""


def grant_role(kube_api: Any, namespace: str, user: str, role: str, rules: list[Any]) -> None:
    """A Role with `rules` in `namespace`, bound to `user` (and nothing elsewhere)."""
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": role}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )


def impersonating(kube_api, control_plane, user: str) -> client.ApiClient:
    """A client acting as `user` (admin impersonation: authorization is the user's)."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    api.set_default_header("Impersonate-User", user)
    return api


def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name}, "spec": spec}


def create_as(api: client.ApiClient, namespace: str, body: dict[str, Any], **kw: Any) -> Any:
    body = {**body, "apiVersion": f"{GROUP}/{VERSION}"}
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, kind_info(body["kind"]).plural, body, **kw
    )


def drift_spec(url: str, secret_name: str) -> dict[str, Any]:
    """A ModelAdaptation spec whose drift trigger queries `url` with a bearer token."""
    return {
        "model": {"uri": "pvc://models/base"},
        "data": {"uri": "pvc://data/new"},
        "output": {"uri": "pvc://models/versions"},
        "trigger": {
            "type": "drift",
            "drift": {
                "prometheusUrl": url,
                "query": "max(drift_score)",
                "fireThreshold": 0.5,
                "clearThreshold": 0.2,
                "for": "0s",
                "interval": "1s",
                "timeout": "2s",
                "bearerTokenSecretRef": {"name": secret_name, "key": "token"},
            },
        },
    }


@contextmanager
def operator_in_thread(
    control_plane: Any, namespaces: tuple[str, ...], **config: Any
) -> Iterator[None]:
    """The real operator in this process, watching `namespaces`, with `config` set."""
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    cfg = OperatorConfig(namespaces=tuple(namespaces), **config)
    with run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.2):
        yield


class StubPrometheus:
    """Answers /api/v1/query with one series of value 0.9 (`mode="ok"`), or with an
    HTTP 401 whose body quotes the request's Authorization header (`mode="echo"`: a
    proxy that reflects credentials in its error, the worst case for error messages)."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.authorizations: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.authorizations.append(self.headers.get("Authorization", ""))
                if stub.mode == "echo":
                    body = json.dumps(
                        {
                            "status": "error",
                            "errorType": "unauthorized",
                            "error": f"rejected credentials {self.headers.get('Authorization')}",
                        }
                    ).encode()
                    self.send_response(401)
                else:
                    body = json.dumps(
                        {
                            "status": "success",
                            "data": {
                                "resultType": "vector",
                                "result": [{"metric": {}, "value": [0, "0.9"]}],
                            },
                        }
                    ).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubPrometheus:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is still searched by its template
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1])
        self.lines.append(f"{record.levelname} {record.name}: {text}")


@contextmanager
def debug_logs() -> Iterator[LogCapture]:
    """Every record of the operator, kopf and the HTTP libraries, at DEBUG."""
    handler = LogCapture()
    root = logging.getLogger()
    names = ("kopf", "modelops", "urllib3", "aiohttp", "kubernetes")
    old = {n: logging.getLogger(n).level for n in names}
    root.addHandler(handler)
    for n in names:
        logging.getLogger(n).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for n, level in old.items():
            logging.getLogger(n).setLevel(level)


def everything_written(kube_api, namespaces: tuple[str, ...]) -> dict[str, str]:
    """Every place a value could leak to, as text: ConfigMaps, the four kinds (status
    included), Events, Jobs and Pods of each namespace."""
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    serialize = client.ApiClient().sanitize_for_serialization
    out: dict[str, str] = {}
    for ns in namespaces:
        for cm in core.list_namespaced_config_map(ns).items:
            out[f"configmap {ns}/{cm.metadata.name}"] = json.dumps(serialize(cm))
        for ev in core.list_namespaced_event(ns).items:
            out[f"event {ns}/{ev.metadata.name}"] = json.dumps(serialize(ev))
        for job in batch.list_namespaced_job(ns).items:
            out[f"job {ns}/{job.metadata.name}"] = json.dumps(serialize(job))
        for pod in core.list_namespaced_pod(ns).items:
            out[f"pod {ns}/{pod.metadata.name}"] = json.dumps(serialize(pod))
        for plural in ("pruneretrains", "unlearnrequests", "loratransfers", "modeladaptations"):
            for obj in custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]:
                out[f"{plural} {ns}/{obj['metadata']['name']}"] = json.dumps(obj)
    return out


def leaks(texts: dict[str, str], values: list[str]) -> list[str]:
    forms = set(values) | {base64.b64encode(v.encode()).decode() for v in values}
    return sorted(where for where, text in texts.items() if any(f in text for f in forms))
