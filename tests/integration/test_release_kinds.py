"""The release kinds' CRDs on the real API server: every CEL rule of ModelRollout and
ModelVersion refuses with a message naming the field (the same verdict as the pydantic
twin: tests/unit/test_release_api.py), specs that must stay are immutable, names are
DNS labels, and the printer columns evaluate (`kubectl get mro,mv`)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from tests.integration.kube_helpers import create, get
from tests.unit.test_release_api import STEP_LISTS, steps_valid

from modelops_api.meta import GROUP, VERSION
from modelops_api.model_rollout import ModelRolloutSpec

EVAL = {"data": {"uri": "pvc://data/heldout.jsonl"}}
RULE = {"metric": "perplexity", "comparison": "LessOrEqual", "tolerance": 0.02}
ANALYSIS = {"prometheusUrl": "http://p:9090", "query": "max(x)", "max": 0.01}
ROLLOUT: dict[str, Any] = {
    "inferenceService": {"name": "bot"},
    "candidates": [{"kind": "ModelAdaptation", "name": "bot-adapt"}],
    "gate": {"rules": [RULE], "evaluation": EVAL},
    "canary": {"steps": [10, 50, 100], "interval": "1s", "analysis": ANALYSIS},
}
VERSION_SPEC: dict[str, Any] = {
    "uri": "pvc://models/bot/run-0001",
    "manifestDigest": "sha256:" + "a" * 64,
    "source": {"kind": "ModelAdaptation", "name": "bot-adapt", "uid": "u-1", "run": 1},
    "metrics": {"perplexity": 12.5},
    "createdTime": "2026-12-02T04:00:00Z",
}


def rollout_with(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(ROLLOUT), **changes}


def canary(**changes: Any) -> dict[str, Any]:
    return rollout_with(canary={**ROLLOUT["canary"], **changes})


def analysis(**changes: Any) -> dict[str, Any]:
    return canary(analysis={**ANALYSIS, **changes})


BOTH_AUTHS = {
    "bearerTokenSecretRef": {"name": "t", "key": "k"},
    "basicAuth": {"username": {"name": "u", "key": "k"}, "password": {"name": "u", "key": "p"}},
}
# (id, spec, what the refusal must name) — each refused by a CEL rule alone (every
# field is valid on its own), except where the id says a schema bound.
CEL_CASES = [
    ("steps-10-10-100", canary(steps=[10, 10, 100]), "strictly increasing"),
    ("steps-50-10-100", canary(steps=[50, 10, 100]), "strictly increasing"),
    ("steps-10-50-no-100", canary(steps=[10, 50]), "the last step must be 100"),
    ("steps-eleven", canary(steps=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100]), "spec.canary.steps"),
    ("interval-over-168h", canary(interval="169h"), "interval must be between 0s and 168h"),
    (
        "serving-rule-without-evaluation",
        rollout_with(gate={"rules": [RULE]}),
        "spec.gate.evaluation: Invalid value",
    ),
    (
        "absolute-without-threshold",
        rollout_with(gate={"rules": [{**RULE, "baseline": "Absolute"}]}),
        "threshold is required with baseline Absolute",
    ),
    (
        "serving-with-threshold",
        rollout_with(gate={"rules": [{**RULE, "threshold": 2.0}], "evaluation": EVAL}),
        "threshold is required with baseline Absolute and not allowed with Serving",
    ),
    ("analysis-no-bounds", canary(analysis={"prometheusUrl": "http://p", "query": "x"}), "min"),
    ("analysis-min-over-max", analysis(min=0.5), "min must not exceed max"),
    ("analysis-two-auths", analysis(**BOTH_AUTHS), "at most one of bearerTokenSecretRef"),
    ("analysis-interval-0s", analysis(interval="0s"), "interval must be between 1s and 1h"),
    ("analysis-timeout-10m", analysis(timeout="10m"), "timeout must be between 100ms and 5m"),
    (
        "duplicate-candidates",
        rollout_with(candidates=ROLLOUT["candidates"] * 2),
        "candidates must not name the same resource twice",
    ),
    (
        "eval-job-processes-ne-gpus",
        rollout_with(
            evaluationJob={
                "resources": {"gpu": {"count": 2}},
                "distribution": {"processesPerNode": 3},
            }
        ),
        "spec.evaluationJob.distribution.processesPerNode",
    ),
    ("max-delay-over-720h", rollout_with(unlearning={"maxDelay": "721h"}), "maxDelay must be"),
    (
        "rules-seventeen (schema bound)",
        rollout_with(gate={"rules": [RULE] * 17, "evaluation": EVAL}),
        "spec.gate.rules",
    ),
]


@pytest.mark.parametrize(
    ("spec", "needle"), [c[1:] for c in CEL_CASES], ids=[c[0] for c in CEL_CASES]
)
def test_rollout_rules_refuse_naming_the_field(kube_api, crds_installed, namespace, spec, needle):
    with pytest.raises(ValidationError):  # the pydantic twin agrees
        ModelRolloutSpec.model_validate(spec)
    body = {"kind": "ModelRollout", "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(ApiException) as err:
        create(kube_api, namespace, body)
    assert err.value.status == 422, err.value.body
    assert needle in err.value.body, err.value.body


@pytest.mark.parametrize(
    "steps", [[100], [10, 50, 100], [1, 2, 3, 4, 5, 6, 7, 8, 9, 100]], ids=["1", "3", "10"]
)
def test_valid_steps_are_admitted(kube_api, crds_installed, namespace, steps):
    """isSorted() is Kubernetes' CEL list library: it must exist on this API server."""
    created = create(
        kube_api,
        namespace,
        {
            "kind": "ModelRollout",
            "metadata": {"name": f"ok-{len(steps)}"},
            "spec": canary(steps=steps),
        },
    )
    assert created["spec"]["canary"]["steps"] == steps
    assert created["spec"]["gate"]["rules"][0]["baseline"] == "Serving"  # defaulted


@pytest.mark.parametrize(
    ("kind", "spec", "name", "admitted"),
    [
        ("ModelRollout", ROLLOUT, "a" * 63, True),
        ("ModelRollout", ROLLOUT, "a" * 64, False),
        ("ModelRollout", ROLLOUT, "a" * 253, False),
        ("ModelRollout", ROLLOUT, "a.b", False),  # a label: ServingRecord.rollout
        ("ModelVersion", VERSION_SPEC, "a" * 63, True),
        ("ModelVersion", VERSION_SPEC, "a" * 64, False),
        ("ModelVersion", VERSION_SPEC, "a" * 253, False),
        # version_name keeps a dotted source name (`llama.v2` -> `llama.v2-<hex>`).
        ("ModelVersion", VERSION_SPEC, "llama.v2-0123456789", True),
    ],
    ids=[
        "rollout-63",
        "rollout-64",
        "rollout-253",
        "rollout-dotted",
        "version-63",
        "version-64",
        "version-253",
        "version-dotted",
    ],
)
def test_names_are_short(kube_api, crds_installed, namespace, kind, spec, name, admitted):
    body = {"kind": kind, "metadata": {"name": name}, "spec": spec}
    if admitted:
        assert create(kube_api, namespace, body)["metadata"]["name"] == name
        return
    with pytest.raises(ApiException) as err:
        create(kube_api, namespace, body)
    assert err.value.status == 422 and "metadata.name" in err.value.body, err.value.body


def patch_spec(api: Any, namespace: str, plural: str, name: str, spec: dict[str, Any]) -> Any:
    return client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, {"spec": spec}
    )


def test_version_spec_is_immutable(kube_api, crds_installed, namespace):
    create(
        kube_api,
        namespace,
        {"kind": "ModelVersion", "metadata": {"name": "v1"}, "spec": VERSION_SPEC},
    )
    with pytest.raises(ApiException) as err:
        patch_spec(kube_api, namespace, "modelversions", "v1", {"uri": "pvc://elsewhere"})
    assert err.value.status == 422 and "spec is immutable" in err.value.body
    assert get(kube_api, namespace, "ModelVersion", "v1")["spec"]["uri"] == VERSION_SPEC["uri"]


def test_rollout_target_is_immutable_the_rest_is_not(kube_api, crds_installed, namespace):
    create(
        kube_api, namespace, {"kind": "ModelRollout", "metadata": {"name": "r"}, "spec": ROLLOUT}
    )
    with pytest.raises(ApiException) as err:
        patch_spec(kube_api, namespace, "modelrollouts", "r", {"inferenceService": {"name": "x"}})
    assert err.value.status == 422
    assert "spec.inferenceService.name is immutable" in err.value.body
    patched = patch_spec(kube_api, namespace, "modelrollouts", "r", {"requireApproval": True})
    assert patched["spec"]["requireApproval"] is True


def test_printer_columns(control_plane, kube_api, crds_installed, namespace):
    create(
        kube_api,
        namespace,
        {"kind": "ModelVersion", "metadata": {"name": "v2"}, "spec": VERSION_SPEC},
    )
    create(
        kube_api, namespace, {"kind": "ModelRollout", "metadata": {"name": "bot"}, "spec": ROLLOUT}
    )
    custom = client.CustomObjectsApi(kube_api)
    # As the rollout would write them (no operator here): a serving record and the state.
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "modelversions",
        "v2",
        {
            "status": {
                "phase": "Canary",
                "serving": [
                    {
                        "inferenceService": "old",
                        "rollout": "r0",
                        "since": "2026-12-01T00:00:00Z",
                        "until": "2026-12-01T01:00:00Z",
                        "role": "default",
                    },
                    {
                        "inferenceService": "bot",
                        "rollout": "bot",
                        "since": "2026-12-02T00:00:00Z",
                        "role": "canary",
                    },
                ],
            }
        },
    )
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "modelrollouts",
        "bot",
        {
            "status": {
                "phase": "Canary",
                "servingVersion": "v1",
                "current": {
                    "version": "v2",
                    "uri": VERSION_SPEC["uri"],
                    "step": 0,
                    "startTime": "2026-12-02T00:00:00Z",
                },
                "applied": {"storageUri": VERSION_SPEC["uri"], "canaryTrafficPercent": 10},
            }
        },
    )
    versions = control_plane.kubectl("get", "mv", "-n", namespace, "-o", "wide").stdout
    header, row = versions.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "SOURCE-KIND",
        "SOURCE",
        "PHASE",
        "INFERENCESERVICE",
        "AGE",
        "URI",
        "RUN",
    ]
    cells = row.split()
    assert cells[:5] == ["v2", "ModelAdaptation", "bot-adapt", "Canary", "bot"], versions
    assert cells[6:] == [VERSION_SPEC["uri"], "1"], versions
    rollouts = control_plane.kubectl("get", "mro", "-n", namespace).stdout
    header, row = rollouts.splitlines()[:2]
    assert header.split()[:6] == [
        "NAME",
        "INFERENCESERVICE",
        "PHASE",
        "SERVING",
        "CANDIDATE",
        "CANARY",
    ]
    assert row.split()[:6] == ["bot", "bot", "Canary", "v1", "v2", "10"], rollouts
    # The category: `kubectl get modelops` lists the release kinds too.
    listed = control_plane.kubectl("get", "modelops", "-n", namespace, "-o", "name").stdout
    assert "modelversion.modelops.dev/v2" in listed and "modelrollout.modelops.dev/bot" in listed


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=STEP_LISTS)
def test_api_server_steps_match_the_reference(kube_api, crds_installed, namespace, steps):
    """The schema bounds and CEL rules on the real API server (isSorted() included)
    accept exactly the step lists the reference does; dry runs, nothing stored."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": "steps"},
        "spec": canary(steps=steps),
    }
    try:
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelrollouts", body, dry_run="All"
        )
        accepted = True
    except ApiException as exc:
        assert exc.status == 422 and "spec.canary.steps" in exc.body, exc.body
        accepted = False
    assert accepted == steps_valid(steps), steps
