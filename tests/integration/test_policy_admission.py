"""ModelOpsPolicy at admission, against the real API server (issue 11).

- The policy table (tests/policy_cases.py) runs through the generated
  ValidatingAdmissionPolicy, bound the way the chart binds it, and through the
  operator's pure check: both refuse the same cases, naming the same rule and field.
- The hostile storage URIs (tests/uri_cases.py) are refused by the CRD itself, with a
  message listing the accepted forms rather than the regular expression; the same
  table agrees with parse_uri in tests/unit/test_uri_rules.py.

Every request is a server-side dry run: the admission chain runs in full, nothing is
stored. A missing control plane fails these tests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.conftest import poll_until
from tests.policy_cases import CASES, policy_of, spec_of
from tests.uri_cases import URI_CASES

from modelops_api.admission import bindings, validating_admission_policy
from modelops_api.kinds import crd_kind
from modelops_api.meta import GROUP, VERSION
from modelops_api.policy import (
    LABEL_POLICY_SCOPE,
    POLICY_PLURAL,
    POLICY_SCOPE_NAMESPACE,
    ModelOpsPolicySpec,
)
from modelops_api.storage import URI_FORMS, URI_PATTERN
from modelops_operator.reconcile.policy import Gate, PolicyView, refusal

pytestmark = pytest.mark.timeout(300)


def dry_create(api: client.ApiClient, ns: str, kind: str, spec: dict[str, Any]) -> str | None:
    """None when admitted; the refusal's text otherwise."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": f"c-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }
    try:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, ns, crd_kind(kind).plural, body, dry_run="All"
        )
        return None
    except ApiException as exc:
        if exc.status not in (400, 403, 422):
            raise
        return str(json.loads(exc.body).get("message", exc.body))


@pytest.fixture(scope="module")
def bound(kube_api, crds_installed) -> Iterator[dict[str, str]]:
    """The generated policy and the chart's namespace-scoped binding (restricted to this
    test's namespaces), one labelled namespace per policy variant of the table."""
    run = uuid.uuid4().hex[:6]
    adm = client.AdmissionregistrationV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    vap = validating_admission_policy(f"modelops-test-{run}")
    adm.create_validating_admission_policy(vap)
    _, local = bindings("unused", "unused", vap["metadata"]["name"])
    local["metadata"]["name"] = f"modelops-test-{run}"
    local["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"].append(
        {"key": "modelops.dev/policy-test", "operator": "In", "values": [run]}
    )
    adm.create_validating_admission_policy_binding(local)
    variants = {json.dumps(o, sort_keys=True) for _, _, _, o, _ in CASES}
    namespaces: dict[str, str] = {}
    for i, key in enumerate(sorted(variants)):
        ns = f"pol-{run}-{i}"
        labels = {LABEL_POLICY_SCOPE: POLICY_SCOPE_NAMESPACE, "modelops.dev/policy-test": run}
        core.create_namespace({"metadata": {"name": ns, "labels": labels}})
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            POLICY_PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelOpsPolicy",
                "metadata": {"name": "policy"},
                "spec": policy_of(json.loads(key)),
            },
        )
        namespaces[key] = ns
    # The policy is compiled and bound asynchronously: wait until a known refusal happens.
    probe_ns = next(iter(namespaces.values()))
    poll_until(
        "the ValidatingAdmissionPolicy is in force",
        lambda: dry_create(
            kube_api, probe_ns, "PruneRetrain", spec_of("PruneRetrain", {"image": "evil/x"})
        ),
    )
    try:
        yield namespaces
    finally:
        adm.delete_validating_admission_policy_binding(local["metadata"]["name"])
        adm.delete_validating_admission_policy(vap["metadata"]["name"])
        for ns in namespaces.values():
            core.delete_namespace(ns)


def test_the_generated_policy_type_checks(kube_api, bound):
    """The API server compiled every expression against the four kinds' schemas."""
    adm = client.AdmissionregistrationV1Api(kube_api)
    name = next(
        p.metadata.name
        for p in adm.list_validating_admission_policy().items
        if p.metadata.name.startswith("modelops-test-")
    )
    status = poll_until(
        "the API server type-checked the policy",
        lambda: (lambda st: st if st and st.type_checking is not None else None)(
            adm.read_validating_admission_policy(name).status
        ),
    )
    warnings = (status.type_checking.expression_warnings or []) if status.type_checking else []
    assert [(w.field_ref, w.warning) for w in warnings] == []


@pytest.mark.parametrize(
    ("case", "kind", "fields", "overrides", "rule"), CASES, ids=[c[0] for c in CASES]
)
def test_admission_and_operator_agree(kube_api, bound, case, kind, fields, overrides, rule):
    spec = spec_of(kind, fields)
    ns = bound[json.dumps(overrides, sort_keys=True)]
    admission = dry_create(kube_api, ns, kind, spec)
    view = PolicyView((ModelOpsPolicySpec.model_validate(policy_of(overrides)),))
    operator = refusal(kind, crd_kind(kind).spec.model_validate(spec), Gate(view))
    if rule is None:
        assert admission is None, f"{case}: refused at admission: {admission}"
        assert operator is None, f"{case}: refused by the operator: {operator}"
        return
    assert admission is not None and f"ModelOpsPolicy rule {rule}" in admission, admission
    assert operator is not None and f"ModelOpsPolicy rule {rule}" in operator.message
    field = operator.message.split(":")[0].split("[")[0]
    assert field in admission, f"admission names {field}: {admission}"


@pytest.mark.parametrize(("case", "uri", "accepted"), URI_CASES, ids=[c[0] for c in URI_CASES])
def test_the_crd_refuses_hostile_uris_with_a_readable_message(
    kube_api, crds_installed, namespace, case, uri, accepted
):
    refused = dry_create(
        kube_api, namespace, "PruneRetrain", spec_of("PruneRetrain", {"model": {"uri": uri}})
    )
    if accepted:
        assert refused is None, refused
        return
    assert refused is not None, f"{uri!r} was admitted"
    assert "spec.model.uri" in refused and f"expected {URI_FORMS}" in refused
    assert URI_PATTERN not in refused and "should match" not in refused
