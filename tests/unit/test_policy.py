"""The ModelOpsPolicy check and the Secret opt-in, pure (issue 11, tenant isolation).

The policy table (tests/policy_cases.py) is shared with the admission test, which runs
the same cases through the API server's ValidatingAdmissionPolicy.
"""

from datetime import UTC, datetime

import pytest
from tests.policy_cases import CASES, policy_of, spec_of

from modelops_api.kinds import crd_kind
from modelops_api.policy import ModelOpsPolicySpec, secret_refs
from modelops_operator.config import OperatorConfig
from modelops_operator.reconcile import plan
from modelops_operator.reconcile.actions import CreateJob, EnsureConfigMap, PatchStatus
from modelops_operator.reconcile.observed import Observed, ResourceView
from modelops_operator.reconcile.policy import Gate, PolicyView, SecretState, refusal

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("case", "kind", "fields", "overrides", "rule"), CASES, ids=[c[0] for c in CASES]
)
def test_policy_table(case, kind, fields, overrides, rule):
    spec = crd_kind(kind).spec.model_validate(spec_of(kind, fields))
    view = PolicyView((ModelOpsPolicySpec.model_validate(policy_of(overrides)),), "test")
    refused = refusal(kind, spec, Gate(view))
    if rule is None:
        assert refused is None
    else:
        assert refused is not None, f"{case}: allowed, expected rule {rule}"
        assert f"ModelOpsPolicy rule {rule}" in refused.message
        assert refused.reason == rule[0].upper() + rule[1:]
        assert refused.message.startswith("spec."), "the message names the field"


def _view(kind, spec, status=None, gate=Gate()):
    res = ResourceView(kind, "r", "team", "uid-1", 1, spec, status or {})
    return Observed(resource=res, gate=gate)


GATED = {
    "model": {"uri": "hf://org/gated", "tokenSecretRef": {"name": "hf", "key": "token"}},
    "output": {"uri": "pvc://out/x"},
}


def test_secret_references_are_found_wherever_they_are():
    from modelops_api.model_adaptation import ModelAdaptationSpec

    spec = ModelAdaptationSpec.model_validate(
        {
            "model": {"uri": "pvc://m/a", "tokenSecretRef": {"name": "hf", "key": "t"}},
            "data": {"uri": "pvc://d/a"},
            "output": {"uri": "pvc://o/a"},
            "trigger": {
                "type": "drift",
                "drift": {
                    "prometheusUrl": "http://p:9090",
                    "query": "q",
                    "fireThreshold": 1,
                    "clearThreshold": 0,
                    "basicAuth": {
                        "username": {"name": "u", "key": "k"},
                        "password": {"name": "pw", "key": "k"},
                    },
                    "caSecretRef": {"name": "ca", "key": "k"},
                },
            },
        }
    )
    assert [(w, r.name) for w, r in secret_refs(spec)] == [
        ("spec.model.tokenSecretRef", "hf"),
        ("spec.trigger.drift.basicAuth.username", "u"),
        ("spec.trigger.drift.basicAuth.password", "pw"),
        ("spec.trigger.drift.caSecretRef", "ca"),
    ]


@pytest.mark.parametrize(
    ("state", "reason"),
    [(SecretState.NOT_LABELLED, "SecretNotUsable"), (SecretState.MISSING, "SecretNotFound")],
    ids=["not-labelled", "missing"],
)
def test_a_secret_that_did_not_opt_in_blocks_the_job(state, reason):
    actions = plan(
        _view("PruneRetrain", GATED, gate=Gate(secrets={"hf": state})), OperatorConfig(), NOW
    )
    assert not [a for a in actions if isinstance(a, (CreateJob, EnsureConfigMap))]
    (patch,) = [a.patch for a in actions if isinstance(a, PatchStatus)]
    cond = next(c for c in patch["conditions"] if c["type"] == "PolicyViolation")
    assert cond["status"] == "True" and cond["reason"] == reason
    assert "spec.model.tokenSecretRef" in cond["message"] and "hf" in cond["message"]
    # Level-based: the same state gives nothing new.
    again = _view("PruneRetrain", GATED, {**patch}, Gate(secrets={"hf": state}))
    assert plan(again, OperatorConfig(), NOW) == []


def test_a_labelled_secret_lets_the_job_be_created_and_clears_the_refusal():
    refused = plan(
        _view("PruneRetrain", GATED, gate=Gate(secrets={"hf": SecretState.NOT_LABELLED})),
        OperatorConfig(),
        NOW,
    )
    status = next(a.patch for a in refused if isinstance(a, PatchStatus))
    actions = plan(
        _view("PruneRetrain", GATED, status, Gate(secrets={"hf": SecretState.USABLE})),
        OperatorConfig(),
        NOW,
    )
    assert any(isinstance(a, CreateJob) for a in actions)
    patch = next(a.patch for a in actions if isinstance(a, PatchStatus))
    cond = next(c for c in patch["conditions"] if c["type"] == "PolicyViolation")
    assert cond["status"] == "False"


def test_a_missing_installation_policy_refuses_everything():
    gate = Gate(PolicyView(missing="the installation's ModelOpsPolicy x/y is missing"))
    actions = plan(
        _view(
            "PruneRetrain",
            {"model": {"uri": "pvc://m/a"}, "output": {"uri": "pvc://o/a"}},
            gate=gate,
        ),
        OperatorConfig(),
        NOW,
    )
    assert not any(isinstance(a, CreateJob) for a in actions)
    patch = next(a.patch for a in actions if isinstance(a, PatchStatus))
    assert (
        next(c for c in patch["conditions"] if c["type"] == "PolicyViolation")["reason"]
        == "PolicyMissing"
    )


def test_model_adaptation_refused_starts_no_run():
    spec = spec_of("ModelAdaptation", {"image": "evil.example/x:1"})
    view = PolicyView((ModelOpsPolicySpec(),), "test")
    actions = plan(_view("ModelAdaptation", spec, gate=Gate(view)), OperatorConfig(), NOW)
    assert not any(isinstance(a, (CreateJob, EnsureConfigMap)) for a in actions)
    patch = next(a.patch for a in actions if isinstance(a, PatchStatus))
    assert patch["phase"] == "Failed" and patch["runCount"] == 0
    cond = next(c for c in patch["conditions"] if c["type"] == "PolicyViolation")
    assert cond["reason"] == "AllowedImages" and "spec.image" in cond["message"]


@pytest.mark.parametrize(
    ("state", "reason"),
    [(SecretState.NOT_LABELLED, "SecretNotUsable"), (SecretState.MISSING, "SecretNotFound")],
    ids=["not-labelled", "missing"],
)
def test_a_storage_credentials_secret_must_opt_in_too(state, reason):
    """spec.storage names a whole Secret (not a SecretKeyRef): the opt-in rule applies
    to it as to every other reference, before its keys reach a Job's environment."""
    spec = {
        "model": {"uri": "s3://models/base"},
        "output": {"uri": "s3://models/pruned"},
        "storage": {
            "secretName": "s3-creds",
            "accessKeyId": "access",
            "secretAccessKey": "secret",
        },
    }
    actions = plan(
        _view("PruneRetrain", spec, gate=Gate(secrets={"s3-creds": state})), OperatorConfig(), NOW
    )
    assert not [a for a in actions if isinstance(a, (CreateJob, EnsureConfigMap))]
    (patch,) = [a.patch for a in actions if isinstance(a, PatchStatus)]
    cond = next(c for c in patch["conditions"] if c["type"] == "PolicyViolation")
    assert cond["status"] == "True" and cond["reason"] == reason
    assert "spec.storage" in cond["message"] and "s3-creds" in cond["message"]


ROLLOUT_AUTH = {
    **spec_of("ModelRollout", {}),
    "canary": {
        "analysis": {
            "prometheusUrl": "http://prom.monitoring:9090",
            "query": "max(err)",
            "max": 0.01,
            "bearerTokenSecretRef": {"name": "prom-token", "key": "token"},
            "caSecretRef": {"name": "prom-ca", "key": "ca.crt"},
        }
    },
    "evaluationJob": {
        "storage": {"secretName": "s3-creds", "accessKeyId": "id", "secretAccessKey": "key"}
    },
}


@pytest.mark.parametrize(
    ("secrets", "reason", "field"),
    [
        ({}, "SecretNotFound", "spec.canary.analysis.bearerTokenSecretRef"),
        (
            {"prom-token": SecretState.NOT_LABELLED},
            "SecretNotUsable",
            "spec.canary.analysis.bearerTokenSecretRef",
        ),
        (
            {"prom-token": SecretState.USABLE, "prom-ca": SecretState.USABLE},
            "SecretNotFound",
            "spec.evaluationJob.storage.secretName",
        ),
        (
            {n: SecretState.USABLE for n in ("prom-token", "prom-ca", "s3-creds")},
            None,
            None,
        ),
    ],
    ids=["missing", "not-labelled", "storage-missing", "all-opted-in"],
)
def test_rollout_secrets_need_the_opt_in(secrets, reason, field):
    """The canary analysis' credentials and the evaluation Job's storage Secret carry the
    same opt-in label as a drift trigger's: the operator sends none that is not opted in."""
    spec = crd_kind("ModelRollout").spec.model_validate(ROLLOUT_AUTH)
    refused = refusal("ModelRollout", spec, Gate(secrets=secrets))
    if reason is None:
        assert refused is None
        return
    assert refused is not None and refused.reason == reason
    assert refused.message.startswith(field), refused.message


def test_rollout_storage_uris_are_found():
    from modelops_api.crdgen import schema_for
    from modelops_api.policy import uri_fields

    assert uri_fields(schema_for(crd_kind("ModelRollout").spec)) == [
        ("gate", "evaluation", "data", "uri")
    ]
