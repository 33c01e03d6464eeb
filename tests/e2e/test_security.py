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

import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.conftest import poll_until
from tests.e2e.tenancy import (
    USER_RULES,
    StubPrometheus,
    create_as,
    debug_logs,
    drift_spec,
    everything_written,
    grant_role,
    impersonating,
    leaks,
    operator_in_thread,
    resource,
)
from tests.integration.kube_helpers import condition, get

from modelops_api.meta import LABEL_MANAGED_BY, MANAGED_BY_VALUE
from modelops_operator.build.names import job_name

pytestmark = pytest.mark.timeout(240)
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


def secret(name: str, value: str) -> dict[str, Any]:
    """A Secret that opted in to being referenced (modelops.dev/usable: "true")."""
    return {
        "metadata": {"name": name, "labels": {"modelops.dev/usable": "true"}},
        "stringData": {"token": value},
    }


def drift_adaptation(name: str, url: str, secret_name: str) -> dict[str, Any]:
    return resource("ModelAdaptation", name, drift_spec(url, secret_name))


def operator_for(control_plane, *namespaces: str) -> AbstractContextManager[None]:
    return operator_in_thread(
        control_plane, namespaces, resync_seconds=2.0, jobs_image="modelops-jobs:test"
    )


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
    grant_role(kube_api, ns_a, "alice", "modelops-user", USER_RULES)
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
    grant_role(kube_api, ns_a, "bob", "modelops-user", USER_RULES)
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
