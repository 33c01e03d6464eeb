"""The operator's security posture, against the real API server (not claimed: shown).

- Pod Security "restricted" is enforced in the test namespaces, and the Jobs the
  operator creates get their pods admitted (kube-controller-manager's Job controller
  creates them: a Pod exists and no FailedCreate event is recorded). Job pods mount no
  service-account token.
- Secret values never leave their Secret: a drift trigger's bearer token (read by the
  operator, sent to a stand-in Prometheus) and a model's Hugging Face token (passed to
  the Job by reference) appear in no ConfigMap, resource status, Event, Job, Pod or
  operator log line (DEBUG level), plain or base64.
- No confused deputy: a user with rights in namespace A only cannot make the operator
  act in B. Spec fields never name a namespace (a `namespace` key is refused or
  dropped by the API server), and a reference to a Secret that exists only in B is
  looked up in A: the operator reports it missing (PolicyViolation SecretNotFound),
  creates nothing for it and never reads B's value; nothing
  appears in B.

A missing control plane fails these tests; nothing is skipped.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.conftest import poll_until
from tests.integration.kube_helpers import condition, get

from modelops_api.meta import GROUP, LABEL_MANAGED_BY, MANAGED_BY_VALUE, VERSION
from modelops_operator.build.names import job_name

pytestmark = pytest.mark.timeout(240)
PLURALS = {"PruneRetrain": "pruneretrains", "ModelAdaptation": "modeladaptations"}


# -- a stand-in Prometheus that records what it is sent -----------------------------------


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


# -- cluster helpers -----------------------------------------------------------------------


@pytest.fixture
def namespaces(kube_api) -> Iterator[Callable[[str], str]]:
    """make(prefix) -> a new namespace enforcing Pod Security "restricted"."""
    core = client.CoreV1Api(kube_api)
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        labels = {
            "modelops.dev/test": "e2e-security",
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )
        made.append(name)
        poll_until(
            f"ServiceAccount {name}/default",
            lambda: _exists(lambda: core.read_namespaced_service_account("default", name)),
        )
        return name

    yield make
    for name in made:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _exists(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def impersonating(kube_api, control_plane, user: str) -> client.ApiClient:
    """A client acting as `user` (admin impersonation: authorization is the user's)."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    api.set_default_header("Impersonate-User", user)
    return api


def grant_namespace_user(kube_api, namespace: str, user: str) -> None:
    """What a team member typically gets in their own namespace: full use of the four
    kinds, Secrets and read access to what the operator creates. Nothing elsewhere."""
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "modelops-user"},
            "rules": [
                {"apiGroups": [GROUP], "resources": ["*"], "verbs": ["*"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get"]},
                {
                    "apiGroups": ["", "batch"],
                    "resources": ["configmaps", "jobs", "pods", "events"],
                    "verbs": ["get", "list"],
                },
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "modelops-user"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "modelops-user",
            },
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )


def create_as(api: client.ApiClient, namespace: str, body: dict[str, Any], **kw: Any) -> Any:
    body = {**body, "apiVersion": f"{GROUP}/{VERSION}"}
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[body["kind"]], body, **kw
    )


def secret(name: str, value: str) -> dict[str, Any]:
    """A Secret that opted in to being referenced (modelops.dev/usable: "true")."""
    return {
        "metadata": {"name": name, "labels": {"modelops.dev/usable": "true"}},
        "stringData": {"token": value},
    }


def drift_adaptation(name: str, url: str, secret_name: str) -> dict[str, Any]:
    return {
        "kind": "ModelAdaptation",
        "metadata": {"name": name},
        "spec": {
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
        },
    }


def gated_prune(name: str, secret_name: str) -> dict[str, Any]:
    return {
        "kind": "PruneRetrain",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": "hf://org/gated-model",
                "tokenSecretRef": {"name": secret_name, "key": "token"},
            },
            "output": {"uri": f"pvc://models/out-{name}"},
            "resources": {"gpu": {"count": 0}, "cpu": "1", "memory": "1Gi"},
        },
    }


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


@contextmanager
def operator_for(control_plane, *namespaces: str) -> Iterator[None]:
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    cfg = OperatorConfig(namespaces=namespaces, resync_seconds=2.0, jobs_image="modelops-jobs:test")
    with run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.2):
        yield


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


def pod_of(core: client.CoreV1Api, ns: str, job: str) -> Any:
    pods = core.list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={job}")
    return pods.items[0] if pods.items else None


def failed_creates(core: client.CoreV1Api, ns: str, job: str) -> list[str]:
    events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={job}").items
    return [e.message for e in events if e.reason == "FailedCreate"]


def assert_admitted_without_token(core: client.CoreV1Api, ns: str, job: str) -> None:
    pod = poll_until(
        f"pod of Job {ns}/{job} (or a FailedCreate event)",
        lambda: pod_of(core, ns, job) or (failed_creates(core, ns, job) and "failed") or None,
    )
    assert pod != "failed", (
        f"Pod Security refused the pod of {job}: {failed_creates(core, ns, job)}"
    )
    assert failed_creates(core, ns, job) == []
    spec = pod.spec
    assert spec.automount_service_account_token is False
    for vol in spec.volumes or []:
        sources = (vol.projected.sources or []) if vol.projected else []
        assert not any(s.service_account_token for s in sources), f"{job}: token volume {vol.name}"
        assert not vol.name.startswith("kube-api-access"), f"{job}: {vol.name}"
    for c in spec.containers:
        for m in c.volume_mounts or []:
            assert not m.mount_path.startswith("/var/run/secrets/kubernetes.io"), (
                job,
                m.mount_path,
            )


# -- the tests -------------------------------------------------------------------------------


def test_jobs_are_admitted_under_restricted_and_secrets_never_leak(
    kube_api, control_plane, crds_installed, namespaces
):
    ns_a, ns_b = namespaces("sec-a"), namespaces("sec-b")
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)
    grant_namespace_user(kube_api, ns_a, "alice")
    alice = impersonating(kube_api, control_plane, "alice")
    alice_core = client.CoreV1Api(alice)
    prom_token, hf_token, b_token = (f"s3cr3t-{secrets.token_hex(16)}" for _ in range(3))
    # The enforcement is real: a pod without the restricted security context is refused.
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(
            ns_a,
            {"metadata": {"name": "lax"}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
        )
    assert refused.value.status == 403 and "violates PodSecurity" in refused.value.body
    try:
        alice_core.create_namespaced_secret(ns_a, secret("prom-token", prom_token))
        alice_core.create_namespaced_secret(ns_a, secret("hf-token", hf_token))
        core.create_namespaced_secret(ns_b, secret("b-only", b_token))  # alice cannot see it

        with (
            StubPrometheus() as prom,
            debug_logs() as logs,
            operator_for(control_plane, ns_a, ns_b),
        ):
            create_as(alice, ns_a, drift_adaptation("drift", prom.url, "prom-token"))
            create_as(alice, ns_a, gated_prune("gated", "hf-token"))
            # Confused-deputy attempts: references to a Secret that exists only in B.
            create_as(alice, ns_a, drift_adaptation("deputy", prom.url, "b-only"))
            create_as(alice, ns_a, gated_prune("deputy-prune", "b-only"))

            drift_job = job_name("ModelAdaptation", "drift", 1)
            gated_job = job_name("PruneRetrain", "gated")
            for job in (drift_job, gated_job):
                poll_until(
                    f"Job {job}", lambda j=job: _exists(lambda: batch.read_namespaced_job(j, ns_a))
                )
                assert_admitted_without_token(core, ns_a, job)

            # The HF token reaches the Job only by reference.
            gated = batch.read_namespaced_job(gated_job, ns_a).spec.template.spec.containers[0]
            (hf_env,) = [e for e in gated.env if e.name == "HF_TOKEN"]
            assert hf_env.value is None
            assert (
                hf_env.value_from.secret_key_ref.name,
                hf_env.value_from.secret_key_ref.key,
            ) == (
                "hf-token",
                "token",
            )
            # The drift token was really read and used (so the search below means something)...
            assert f"Bearer {prom_token}" in prom.authorizations
            # ...and B's Secret was looked up in A, found missing, and never sent anywhere:
            # the operator refuses both deputies and creates nothing for them.
            for kind, name in (("ModelAdaptation", "deputy"), ("PruneRetrain", "deputy-prune")):
                deputy = poll_until(
                    f"{name} reports the missing Secret",
                    lambda k=kind, n=name: (
                        lambda c: c if c and c.get("reason") == "SecretNotFound" else None
                    )(condition(get(kube_api, ns_a, k, n), "PolicyViolation")),
                )
                assert "Secret b-only not found" in deputy["message"]
            assert (
                _exists(
                    lambda: batch.read_namespaced_job(
                        job_name("PruneRetrain", "deputy-prune"), ns_a
                    )
                )
                is None
            )
            assert not any(b_token in a for a in prom.authorizations)
            poll_until(
                "drift run recorded in status",
                lambda: (
                    get(kube_api, ns_a, "ModelAdaptation", "drift")
                    .get("status", {})
                    .get("runCount")
                    or None
                ),
            )

        written = everything_written(kube_api, (ns_a, ns_b))
        assert leaks(written, [prom_token, hf_token, b_token]) == []
        logged = {f"log line {i}": line for i, line in enumerate(logs.lines)}
        assert len(logged) > 50, "the operator logged at DEBUG during the run"
        assert leaks(logged, [prom_token, hf_token, b_token]) == []

        # Nothing the operator made is outside A: not in B, nor anywhere else.
        for listing in (
            batch.list_job_for_all_namespaces(
                label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"
            ),
            core.list_config_map_for_all_namespaces(
                label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"
            ),
        ):
            ours = [o for o in listing.items if o.metadata.namespace in (ns_a, ns_b)]
            assert ours and {o.metadata.namespace for o in ours} == {ns_a}
        assert [
            e.reason
            for e in core.list_namespaced_event(ns_b).items
            if e.source and e.source.component == "modelops-operator"
        ] == []
    finally:
        alice.close()


def test_a_user_of_one_namespace_cannot_reach_another(
    kube_api, control_plane, crds_installed, namespaces
):
    ns_a, ns_b = namespaces("dep-a"), namespaces("dep-b")
    grant_namespace_user(kube_api, ns_a, "bob")
    bob = impersonating(kube_api, control_plane, "bob")
    try:
        # Not directly...
        with pytest.raises(ApiException) as denied:
            create_as(bob, ns_b, gated_prune("x", "hf-token"))
        assert denied.value.status == 403
        # ...and not through a spec field: no reference can carry a namespace. With strict
        # field validation the API server refuses the field; without, it drops it.
        sneaky = gated_prune("sneaky", "hf-token")
        sneaky["spec"]["model"]["tokenSecretRef"]["namespace"] = ns_b
        sneaky["spec"]["output"]["namespace"] = ns_b
        with pytest.raises(ApiException) as strict:
            create_as(bob, ns_a, sneaky, field_validation="Strict")
        assert strict.value.status in (400, 422) and "namespace" in strict.value.body
        create_as(bob, ns_a, sneaky, field_validation="Ignore")
        stored = get(kube_api, ns_a, "PruneRetrain", "sneaky")
        assert "namespace" not in stored["spec"]["model"]["tokenSecretRef"]
        assert "namespace" not in stored["spec"]["output"]
        assert "namespace" not in json.dumps(stored["spec"])
    finally:
        bob.close()


def test_a_prometheus_that_echoes_credentials_does_not_leak_them(
    kube_api, control_plane, crds_installed, namespaces
):
    ns = namespaces("sec-echo")
    token = f"s3cr3t-{secrets.token_hex(16)}"
    client.CoreV1Api(kube_api).create_namespaced_secret(ns, secret("prom-token", token))
    with StubPrometheus(mode="echo") as prom, debug_logs() as logs, operator_for(control_plane, ns):
        from tests.integration.kube_helpers import create

        create(kube_api, ns, drift_adaptation("echo", prom.url, "prom-token"))
        poll_until(
            "the 401 reported",
            lambda: (lambda c: c if c and c["status"] == "False" else None)(
                condition(get(kube_api, ns, "ModelAdaptation", "echo"), "PrometheusReachable")
            ),
        )
        assert f"Bearer {token}" in prom.authorizations
    written = everything_written(kube_api, (ns,))
    logged = {f"log line {i}": line for i, line in enumerate(logs.lines)}
    assert leaks({**written, **logged}, [token]) == []
