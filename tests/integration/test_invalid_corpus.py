"""Bad input at volume: 1,000 generated invalid manifests across the four job kinds and
ModelRollout are each rejected by the API server with a message naming the field, and
nothing is created; valid manifests from the same generator are all accepted."""

import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.integration.kube_helpers import create
from tests.integration.manifest_corpus import CORPUS_KINDS, cross_field_cases, generate

from modelops_api.meta import GROUP, VERSION

INVALID, VALID = generate(seed=7, invalid=1000, valid=200)


def test_corpus_is_large_and_covers_every_kind_and_mutation():
    assert len(INVALID) == 1000 and len(VALID) >= 100
    assert {c.kind for c in INVALID} == {k.kind for k in CORPUS_KINDS}
    labels = {c.id.rsplit(":", 1)[-1] for c in INVALID if "+" not in c.id}
    assert {
        "wrong-type",
        "bad-enum",
        "pattern-mismatch",
        "over-max-length",
        "over-max-items",
        "unknown-field",
        "below-minimum",
        "above-maximum",
        "missing-required",
    } <= labels
    assert any(c.id.endswith("cross-field-processes-ne-gpus") for c in INVALID)


@pytest.mark.timeout(600)
def test_every_invalid_manifest_is_rejected_naming_the_field(kube_api, crds_installed, namespace):
    failures = []
    started = time.monotonic()
    for i, case in enumerate(INVALID):
        body = {"kind": case.kind, "metadata": {"name": f"bad-{i}"}, "spec": case.spec}
        try:
            create(kube_api, namespace, body)
            failures.append(f"{case.id}: accepted")
        except ApiException as exc:
            fields = case.field.split("|")
            if exc.status not in (400, 422) or not any(f in exc.body for f in fields):
                failures.append(
                    f"{case.id}: HTTP {exc.status}, expected {case.field!r} in {exc.body[:300]}"
                )
    elapsed = time.monotonic() - started
    assert not failures, (
        f"{len(failures)} of {len(INVALID)} wrong (in {elapsed:.0f}s):\n" + "\n".join(failures[:25])
    )
    custom = client.CustomObjectsApi(kube_api)
    for info in CORPUS_KINDS:
        assert (
            custom.list_namespaced_custom_object(GROUP, VERSION, namespace, info.plural)["items"]
            == []
        )


@pytest.mark.timeout(300)
def test_every_valid_manifest_is_accepted(kube_api, crds_installed, namespace):
    failures = []
    for i, case in enumerate(VALID):
        body = {"kind": case.kind, "metadata": {"name": f"ok-{i}"}, "spec": case.spec}
        try:
            create(kube_api, namespace, body)
        except ApiException as exc:
            failures.append(f"{case.id}: {exc.body[:300]}")
    assert not failures, f"{len(failures)} valid manifests rejected:\n" + "\n".join(failures[:25])


@pytest.mark.parametrize("case", cross_field_cases(), ids=lambda c: c.id)
def test_processes_per_node_rule_is_enforced_by_the_api_server(
    kube_api, crds_installed, namespace, case
):
    """The root CEL rule alone refuses these (every field is valid on its own)."""
    body = {"kind": case.kind, "metadata": {"name": "cross"}, "spec": case.spec}
    with pytest.raises(ApiException) as err:
        create(kube_api, namespace, body)
    assert err.value.status == 422
    assert "spec.distribution.processesPerNode" in err.value.body
    assert "one process per GPU" in err.value.body
