"""A low-privilege tenant against the real API server and the real operator (issue 11).

The tenant ("mallory", impersonated) may create/get/list the four modelops kinds in
their namespace and nothing else: no Secrets, no pods. The platform team's policy is
installed as the chart installs it: the generated ValidatingAdmissionPolicy, the
installation-default binding, and a ModelOpsPolicy in the platform namespace that
allows one Prometheus (a recording stub on 127.0.0.1) and the chart's jobs image. An
unrelated Secret of the namespace (not labelled modelops.dev/usable) holds a known
value. Every route of the issue is tried:

- refused at admission, naming the rule: Prometheus URL of the tenant's own server,
  the tenant's own image, priorityClassName system-cluster-critical, a blanket
  toleration, file:///var/run/secrets/..., and (by the CRD itself) hf://org/name@../../..;
- refused by the operator (admission cannot see a Secret's labels), with a
  PolicyViolation condition naming the field, the Secret and the rule, nothing created
  and no query sent: the allowed Prometheus with the unrelated Secret as bearer token,
  the allowed image with the unrelated Secret as model token;
- a resource admitted while the policy allowed it is refused by the operator once the
  policy is tightened: no Job, no query.
- a namespace labelled modelops.dev/policy=namespace is governed by its own
  ModelOpsPolicy instead of the default, at admission and in the operator.

The stub Prometheus records every request: it must receive no credential. The Secret's
value (plain and base64) must be absent from every ConfigMap, resource status, Event,
Job and Pod of the namespace and from the operator's DEBUG log.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.conftest import poll_until
from tests.e2e.tenancy import (
    CPU_ONLY,
    TENANT_RULES,
    StubPrometheus,
    debug_logs,
    drift_spec,
    everything_written,
    grant_role,
    impersonating,
    leaks,
    operator_in_thread,
    resource,
)
from tests.e2e.tenancy import create_as as create_body
from tests.integration.kube_helpers import condition, get

from modelops_api.admission import bindings, validating_admission_policy
from modelops_api.meta import GROUP, VERSION
from modelops_api.policy import LABEL_SECRET_USABLE, POLICY_PLURAL
from modelops_operator import metrics
from modelops_operator.build.names import job_name

pytestmark = pytest.mark.timeout(300)
JOBS_IMAGE = "registry.example/modelops-jobs"


def policy_body(prom_url: str, images: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelOpsPolicy",
        "metadata": {"name": "default"},
        "spec": {
            "allowedImages": images,
            "allowedPrometheusEndpoints": [prom_url],
            "allowedTolerationKeys": ["nvidia.com/gpu"],
        },
    }


@contextmanager
def platform_policy(kube_api, tenant_ns: str, prom_url: str) -> Iterator[str]:
    """The chart's admission setup, bound to `tenant_ns` only (other tests share the
    control plane); yields the platform namespace holding the default ModelOpsPolicy."""
    run = uuid.uuid4().hex[:6]
    core = client.CoreV1Api(kube_api)
    adm = client.AdmissionregistrationV1Api(kube_api)
    platform = f"platform-{run}"
    core.create_namespace({"metadata": {"name": platform}})
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, platform, POLICY_PLURAL, policy_body(prom_url, [JOBS_IMAGE])
    )
    vap = validating_admission_policy(f"modelops-tenant-{run}")
    both = bindings("default", platform, vap["metadata"]["name"])
    adm.create_validating_admission_policy(vap)
    for binding in both:
        binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"].append(
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [tenant_ns]}
        )
        adm.create_validating_admission_policy_binding(binding)
    try:
        yield platform
    finally:
        for binding in both:
            adm.delete_validating_admission_policy_binding(binding["metadata"]["name"])
        adm.delete_validating_admission_policy(vap["metadata"]["name"])
        core.delete_namespace(platform)


def create_as(api: client.ApiClient, ns: str, kind: str, name: str, spec: dict[str, Any]) -> Any:
    return create_body(api, ns, resource(kind, name, spec))


def refusal_of(api: client.ApiClient, ns: str, kind: str, name: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as refused:
        create_as(api, ns, kind, name, spec)
    assert refused.value.status in (403, 422), refused.value.body
    return str(json.loads(refused.value.body)["message"])


def prune(**extra: Any) -> dict[str, Any]:
    return {
        "model": {"uri": "pvc://models/base"},
        "output": {"uri": "pvc://out/x"},
        "resources": CPU_ONLY,
        **extra,
    }


def drift(url: str, secret_name: str) -> dict[str, Any]:
    return {**drift_spec(url, secret_name), "resources": CPU_ONLY}


def wait_refused(kube_api, ns: str, kind: str, name: str, reason: str) -> dict[str, Any]:
    return poll_until(
        f"{kind} {name}: PolicyViolation {reason}",
        lambda: (lambda c: c if c and c["status"] == "True" and c["reason"] == reason else None)(
            condition(get(kube_api, ns, kind, name), "PolicyViolation")
        ),
    )


def no_jobs(kube_api, ns: str) -> list[str]:
    return [j.metadata.name for j in client.BatchV1Api(kube_api).list_namespaced_job(ns).items]


def operator_with_policy(control_plane, ns: str, platform: str) -> AbstractContextManager[None]:
    return operator_in_thread(
        control_plane,
        (ns,),
        resync_seconds=1.0,
        jobs_image=f"{JOBS_IMAGE}:test",
        policy_name="default",
        policy_namespace=platform,
    )


def test_a_tenant_cannot_make_the_operator_hand_over_a_secret(
    kube_api, control_plane, crds_installed, namespace
):
    ns = namespace
    core = client.CoreV1Api(kube_api)
    grant_role(kube_api, ns, "mallory", "modelops-tenant", TENANT_RULES)
    mallory = impersonating(kube_api, control_plane, "mallory")
    value = f"s3cr3t-{secrets.token_hex(16)}"
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "db-password"}, "stringData": {"token": value}}
    )
    # The tenant really has no Secret access (so the operator is the only way to it).
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(mallory).read_namespaced_secret("db-password", ns)
    assert denied.value.status == 403
    with (
        StubPrometheus() as platform_prom,
        StubPrometheus() as own_prom,
        platform_policy(kube_api, ns, platform_prom.url) as platform,
        debug_logs() as logs,
    ):
        poll_until(
            "the admission policy is in force",
            lambda: (
                None if _admitted_dry_run(mallory, ns, prune(image="evil.example/x:1")) else True
            ),
        )
        # -- refused at admission, naming the rule --------------------------------
        at_admission = {
            "own-prometheus": (
                "ModelAdaptation",
                drift(own_prom.url, "db-password"),
                "spec.trigger.drift.prometheusUrl",
                "allowedPrometheusEndpoints",
            ),
            "own-image": (
                "PruneRetrain",
                prune(
                    image="evil.example/steal:1",
                    model={
                        "uri": "hf://org/gated",
                        "tokenSecretRef": {"name": "db-password", "key": "token"},
                    },
                ),
                "spec.image",
                "allowedImages",
            ),
            "system-priority": (
                "PruneRetrain",
                prune(scheduling={"priorityClassName": "system-cluster-critical"}),
                "spec.scheduling.priorityClassName",
                "allowedPriorityClasses",
            ),
            "blanket-toleration": (
                "PruneRetrain",
                prune(scheduling={"tolerations": [{"operator": "Exists"}]}),
                "spec.scheduling.tolerations",
                "allowedTolerationKeys",
            ),
            "service-account-files": (
                "PruneRetrain",
                prune(model={"uri": "file:///var/run/secrets/kubernetes.io/serviceaccount"}),
                "spec.model.uri",
                "allowFileURIs",
            ),
        }
        for name, (kind, spec, field, rule) in at_admission.items():
            message = refusal_of(mallory, ns, kind, name, spec)
            assert field in message and f"ModelOpsPolicy rule {rule}" in message, (name, message)
        climb = refusal_of(
            mallory, ns, "PruneRetrain", "hf-climb", prune(model={"uri": "hf://org/name@../../.."})
        )
        assert "spec.model.uri" in climb and "expected pvc://claim/path" in climb

        # -- admitted (admission cannot see labels), refused by the operator ----------
        create_as(mallory, ns, "ModelAdaptation", "drift", drift(platform_prom.url, "db-password"))
        create_as(
            mallory,
            ns,
            "PruneRetrain",
            "gated",
            prune(
                image=f"{JOBS_IMAGE}:test",
                model={
                    "uri": "hf://org/gated",
                    "tokenSecretRef": {"name": "db-password", "key": "token"},
                },
            ),
        )
        with operator_with_policy(control_plane, ns, platform):
            drift_cond = wait_refused(kube_api, ns, "ModelAdaptation", "drift", "SecretNotUsable")
            gated_cond = wait_refused(kube_api, ns, "PruneRetrain", "gated", "SecretNotUsable")
            # Several drift intervals (1 s) pass: still no query, no Job.
            counter = metrics.RECONCILES.labels("ModelAdaptation")
            before = counter._value.get()
            poll_until("five more reconciles", lambda: counter._value.get() >= before + 5 or None)
            status = get(kube_api, ns, "ModelAdaptation", "drift")["status"]
        assert "spec.trigger.drift.bearerTokenSecretRef" in drift_cond["message"]
        assert "db-password" in drift_cond["message"]
        assert "spec.model.tokenSecretRef" in gated_cond["message"]
        assert status.get("runCount", 0) == 0 and status["phase"] == "Failed"
        assert no_jobs(kube_api, ns) == []
        assert platform_prom.authorizations == [], "no query was sent to the Prometheus"
        assert own_prom.authorizations == []
    written = everything_written(kube_api, (ns,))
    logged = {f"log line {i}": line for i, line in enumerate(logs.lines)}
    assert leaks({**written, **logged}, [value]) == []
    mallory.close()


def _admitted_dry_run(api: client.ApiClient, ns: str, spec: dict[str, Any]) -> bool:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PruneRetrain",
        "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}"},
        "spec": spec,
    }
    try:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, ns, "pruneretrains", body, dry_run="All"
        )
        return True
    except ApiException:
        return False


def test_a_resource_admitted_before_the_policy_was_tightened_is_refused(
    kube_api, control_plane, crds_installed, namespace
):
    ns = namespace
    core = client.CoreV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    token = f"s3cr3t-{secrets.token_hex(16)}"
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "prom-token", "labels": {LABEL_SECRET_USABLE: "true"}},
            "stringData": {"token": token},
        },
    )
    with StubPrometheus() as prom, platform_policy(kube_api, ns, prom.url) as platform:
        poll_until(
            "the admission policy is in force",
            lambda: None if _admitted_dry_run(kube_api, ns, prune(image="evil/x:1")) else True,
        )
        # Allowed when created...
        create_as(kube_api, ns, "ModelAdaptation", "drift", drift(prom.url, "prom-token"))
        create_as(kube_api, ns, "PruneRetrain", "img", prune(image=f"{JOBS_IMAGE}:v1"))
        # ...then the platform team tightens the policy (before the operator acted).
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            platform,
            POLICY_PLURAL,
            "default",
            {
                "spec": {
                    "allowedPrometheusEndpoints": ["http://prom.monitoring:9090"],
                    "allowedImages": [],
                }
            },
        )
        with operator_with_policy(control_plane, ns, platform):
            drift_cond = wait_refused(
                kube_api, ns, "ModelAdaptation", "drift", "AllowedPrometheusEndpoints"
            )
            img_cond = wait_refused(kube_api, ns, "PruneRetrain", "img", "AllowedImages")
        assert "spec.trigger.drift.prometheusUrl" in drift_cond["message"]
        assert "spec.image" in img_cond["message"]
        assert prom.authorizations == [], "no query (and no credential) after the tightening"
        assert no_jobs(kube_api, ns) == []
        # Relaxed again, the same resources go ahead (level-based, nothing sticky).
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            platform,
            POLICY_PLURAL,
            "default",
            {"spec": {"allowedPrometheusEndpoints": [prom.url], "allowedImages": [JOBS_IMAGE]}},
        )
        with operator_with_policy(control_plane, ns, platform):
            poll_until(
                "Job of the re-allowed PruneRetrain",
                lambda: job_name("PruneRetrain", "img") in no_jobs(kube_api, ns) or None,
            )
            poll_until("the drift query with its credential", lambda: prom.authorizations or None)
        assert f"Bearer {token}" in prom.authorizations


def test_a_namespace_policy_replaces_the_installation_default(
    kube_api, control_plane, crds_installed, namespace
):
    """The platform team gives one namespace its own ModelOpsPolicy and labels the
    namespace: admission and the operator both switch to it (it replaces the default,
    it is not merged with it)."""
    ns = namespace
    core = client.CoreV1Api(kube_api)
    team_image = "registry.team.example/jobs"
    with platform_policy(kube_api, ns, "http://prom.monitoring:9090") as platform:
        poll_until(
            "the default policy is in force",
            lambda: (
                None if _admitted_dry_run(kube_api, ns, prune(image=f"{team_image}:1")) else True
            ),
        )
        local = policy_body("http://prom.team:9090", ["registry.team.example/"])
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            GROUP, VERSION, ns, POLICY_PLURAL, local
        )
        core.patch_namespace(ns, {"metadata": {"labels": {"modelops.dev/policy": "namespace"}}})
        poll_until(
            "the namespace's policy is in force",
            lambda: (
                True if _admitted_dry_run(kube_api, ns, prune(image=f"{team_image}:1")) else None
            ),
        )
        message = refusal_of(
            kube_api, ns, "PruneRetrain", "default-image", prune(image=f"{JOBS_IMAGE}:test")
        )
        assert "ModelOpsPolicy rule allowedImages" in message, "replaced, not merged"
        create_as(kube_api, ns, "PruneRetrain", "team", prune(image=f"{team_image}:1"))
        with operator_with_policy(control_plane, ns, platform):
            poll_until(
                "the Job of the resource the namespace's policy allows",
                lambda: job_name("PruneRetrain", "team") in no_jobs(kube_api, ns) or None,
            )
