"""Tenants and the release kinds, on the real API server with the chart's own roles.

The chart's tenant ClusterRoles (rendered by the real helm) are applied; the real
kube-controller-manager's clusterrole-aggregation controller folds them into
Kubernetes' default `edit` and `view` roles. A tenant bound to `edit` in a namespace
may create and change ModelRollouts there, and may only read ModelVersions: a version
is the operator's record of a published model, so no tenant creates, edits, deletes or
writes the status of one. A tenant bound to `view` reads both and writes neither.
The chart's operator role, asked of the API server's authorizer, may create versions
and patch their status but never change or delete one, and may patch InferenceServices
but never create or delete one.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.chart.test_chart import of_kind, render
from tests.conftest import poll_until
from tests.e2e.tenancy import impersonating

from modelops_api.meta import GROUP, VERSION

pytestmark = pytest.mark.timeout(300)

ROLLOUT: dict[str, Any] = {
    "inferenceService": {"name": "bot"},
    "candidates": [{"kind": "ModelAdaptation", "name": "bot-adapt"}],
    "gate": {
        "rules": [
            {
                "metric": "perplexity",
                "comparison": "LessOrEqual",
                "baseline": "Absolute",
                "threshold": 20.0,
            }
        ]
    },
    "canary": {"steps": [10, 100], "interval": "1s"},
}
VERSION_SPEC: dict[str, Any] = {
    "uri": "pvc://models/bot/run-0001",
    "manifestDigest": "sha256:" + "a" * 64,
    "source": {"kind": "ModelAdaptation", "name": "bot-adapt", "uid": "u-1", "run": 1},
    "createdTime": "2026-12-02T04:00:00Z",
}


def body(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def refused(call: Any) -> int | None:
    """The HTTP status of a refused call; None when it was allowed."""
    try:
        call()
        return None
    except ApiException as exc:
        return exc.status


@pytest.fixture(scope="module")
def tenant_roles(kube_api, crds_installed, tmp_path_factory) -> list[str]:
    """The chart's tenant ClusterRoles, applied under a name unique to this run, and
    aggregated into `edit` and `view` by the controller-manager."""
    run = uuid.uuid4().hex[:6]
    docs = render(tmp_dir=tmp_path_factory.mktemp("values"))
    roles = [
        r
        for r in of_kind(docs, "ClusterRole")
        if r["metadata"]["labels"].get("app.kubernetes.io/component") == "tenant-role"
    ]
    assert len(roles) == 2
    rbac = client.RbacAuthorizationV1Api(kube_api)
    names = []
    for role in roles:
        role["metadata"]["name"] += f"-{run}"
        rbac.create_cluster_role(role)
        names.append(role["metadata"]["name"])

    def aggregated(default_role: str, resource: str) -> bool | None:
        rules = rbac.read_cluster_role(default_role).rules or []
        return True if any(resource in (r.resources or []) for r in rules) else None

    poll_until("edit aggregates modelrollouts", lambda: aggregated("edit", "modelrollouts"))
    poll_until("view aggregates modelversions", lambda: aggregated("view", "modelversions"))
    yield names
    for name in names:
        rbac.delete_cluster_role(name)


def bind(kube_api: Any, namespace: str, user: str, cluster_role: str) -> None:
    client.RbacAuthorizationV1Api(kube_api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": f"{user}-{cluster_role}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )


def test_an_editor_makes_rollouts_and_only_reads_versions(
    control_plane, kube_api, tenant_roles, namespace
):
    bind(kube_api, namespace, "alice", "edit")
    admin = client.CustomObjectsApi(kube_api)
    # The operator's record (here created as admin, as the operator would).
    admin.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelversions", body("ModelVersion", "v1", VERSION_SPEC)
    )
    alice = client.CustomObjectsApi(impersonating(kube_api, control_plane, "alice"))
    plural = "modelrollouts"
    created = alice.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body("ModelRollout", "bot", ROLLOUT)
    )
    assert created["metadata"]["name"] == "bot"
    patched = alice.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, "bot", {"spec": {"requireApproval": True}}
    )
    assert patched["spec"]["requireApproval"] is True
    # Approval is an annotation on the ModelRollout: an editor may set it.
    alice.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        plural,
        "bot",
        {"metadata": {"annotations": {"modelops.dev/approve": "v1"}}},
    )
    status = {"status": {"phase": "Idle", "servingVersion": "forged"}}
    assert (
        refused(
            lambda: alice.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, "bot", status
            )
        )
        == 403
    ), "the rollout's status is the operator's"

    mv = "modelversions"
    assert alice.get_namespaced_custom_object(GROUP, VERSION, namespace, mv, "v1")["spec"]["uri"]
    assert [
        i["metadata"]["name"]
        for i in alice.list_namespaced_custom_object(GROUP, VERSION, namespace, mv)["items"]
    ] == ["v1"]
    attempts = {
        "create": lambda: alice.create_namespaced_custom_object(
            GROUP, VERSION, namespace, mv, body("ModelVersion", "forged", VERSION_SPEC)
        ),
        "patch": lambda: alice.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, mv, "v1", {"metadata": {"labels": {"x": "y"}}}
        ),
        "update": lambda: alice.replace_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            mv,
            "v1",
            admin.get_namespaced_custom_object(GROUP, VERSION, namespace, mv, "v1"),
        ),
        "delete": lambda: alice.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, mv, "v1"
        ),
        "patch-status": lambda: alice.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, mv, "v1", {"status": {"phase": "Serving"}}
        ),
    }
    outcomes = {verb: refused(call) for verb, call in attempts.items()}
    assert outcomes == dict.fromkeys(attempts, 403), outcomes
    assert (
        admin.get_namespaced_custom_object(GROUP, VERSION, namespace, mv, "v1")["metadata"].get(
            "labels"
        )
        is None
    )


def test_a_viewer_reads_and_writes_nothing(control_plane, kube_api, tenant_roles, namespace):
    bind(kube_api, namespace, "victor", "view")
    admin = client.CustomObjectsApi(kube_api)
    admin.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelrollouts", body("ModelRollout", "bot", ROLLOUT)
    )
    victor = client.CustomObjectsApi(impersonating(kube_api, control_plane, "victor"))
    assert victor.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelrollouts", "bot")
    assert (
        victor.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions")["items"]
        == []
    )
    assert (
        refused(
            lambda: victor.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelrollouts", body("ModelRollout", "mine", ROLLOUT)
            )
        )
        == 403
    )
    assert (
        refused(
            lambda: victor.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelversions", body("ModelVersion", "v9", VERSION_SPEC)
            )
        )
        == 403
    )


# (verb, resource, subresource, allowed): what the chart's operator role lets it do to
# the release kinds and KServe, asked of the real API server's authorizer.
OPERATOR_ACCESS = [
    ("create", "modelops.dev", "modelversions", "", True),
    ("watch", "modelops.dev", "modelversions", "", True),
    ("update", "modelops.dev", "modelversions", "", False),
    ("patch", "modelops.dev", "modelversions", "", False),
    ("delete", "modelops.dev", "modelversions", "", False),
    ("patch", "modelops.dev", "modelversions", "status", True),
    ("watch", "modelops.dev", "modelrollouts", "", True),
    ("patch", "modelops.dev", "modelrollouts", "", False),
    ("create", "modelops.dev", "modelrollouts", "", False),
    ("patch", "modelops.dev", "modelrollouts", "status", True),
    ("watch", "serving.kserve.io", "inferenceservices", "", True),
    ("patch", "serving.kserve.io", "inferenceservices", "", True),
    ("create", "serving.kserve.io", "inferenceservices", "", False),
    ("delete", "serving.kserve.io", "inferenceservices", "", False),
]


def test_the_operator_role_on_release_kinds(kube_api, crds_installed, tmp_path, namespace):
    """The chart's cluster-wide operator ClusterRole, bound to a stand-in user: the API
    server's authorizer allows exactly the release verbs the operator needs."""
    run = uuid.uuid4().hex[:6]
    docs = render(tmp_dir=tmp_path)
    (role,) = [
        r
        for r in of_kind(docs, "ClusterRole")
        if r["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    role["metadata"]["name"] += f"-{run}"
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_cluster_role(role)
    user = f"operator-{run}"
    bind(kube_api, namespace, user, role["metadata"]["name"])
    authz = client.AuthorizationV1Api(kube_api)

    def allowed(verb: str, group: str, resource: str, sub: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": sub,
                },
            },
        }
        return bool(authz.create_subject_access_review(review).status.allowed)

    try:
        got = {(v, r, s): allowed(v, g, r, s) for v, g, r, s, _ in OPERATOR_ACCESS}
        want = {(v, r, s): ok for v, _, r, s, ok in OPERATOR_ACCESS}
        assert got == want
    finally:
        rbac.delete_cluster_role(role["metadata"]["name"])
