"""Whether the operator may act on a resource: the ModelOpsPolicy and the Secret opt-in.

Pure: (validated spec, the policy in force, what is known of the referenced Secrets)
-> refusals. `plan()` creates nothing for a refused resource (a `PolicyViolation`
condition whose reason names the rule) and `service.py` sends no Prometheus query
(so no credential) for one. The API server enforces the same policy at admission
(`modelops_api/admission.py`); this check is what stops a resource admitted before the
policy was tightened, and the Secret opt-in, which admission cannot see.
"""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from modelops_api.crdgen import schema_for
from modelops_api.kinds import crd_kind, kind_info
from modelops_api.policy import (
    LABEL_SECRET_USABLE,
    ModelOpsPolicySpec,
    Violation,
    policed_fields,
    secret_refs,
    uri_fields,
    violations,
)
from modelops_operator.reconcile.actions import Action, PatchStatus, RecordEvent
from modelops_operator.reconcile.conditions import get_condition, set_condition
from modelops_operator.reconcile.status_patch import desired_status

if TYPE_CHECKING:
    from modelops_operator.reconcile.observed import ResourceView

CONDITION = "PolicyViolation"
RULE_SECRET = "SecretNotUsable"
RULE_SECRET_MISSING = "SecretNotFound"
RULE_POLICY_MISSING = "PolicyMissing"


class SecretState(StrEnum):
    """What the operator knows of a referenced Secret (from its metadata only)."""

    USABLE = "usable"
    NOT_LABELLED = "not-labelled"
    MISSING = "missing"


@dataclass(frozen=True)
class PolicyView:
    """The policy in force for a namespace: every object listed must pass. `missing`
    says why none could be read where one is required (then everything is refused)."""

    policies: tuple[ModelOpsPolicySpec, ...] = ()
    source: str = ""
    missing: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why the operator does not act: the rule (a CamelCase reason) and the message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Gate:
    """The inputs of the check, observed by k8s/: None policy means none is configured."""

    policy: PolicyView | None = None
    secrets: dict[str, SecretState] = field(default_factory=dict)


_URI_PATHS: dict[str, list[tuple[str, ...]]] = {}


def _uri_paths(kind: str) -> list[tuple[str, ...]]:
    if kind not in _URI_PATHS:
        _URI_PATHS[kind] = uri_fields(schema_for(crd_kind(kind).spec))
    return _URI_PATHS[kind]


def _reason(rule: str) -> str:
    return rule[:1].upper() + rule[1:]


def policy_violations(kind: str, spec: BaseModel, view: PolicyView) -> list[Violation]:
    wire: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    found: list[Violation] = []
    for policy in view.policies:
        for v in violations(wire, policy, _uri_paths(kind), policed_fields(kind)):
            if v not in found:
                found.append(v)
    return found


def secret_violations(spec: BaseModel, secrets: dict[str, SecretState]) -> list[Violation]:
    """Every referenced Secret must exist and carry modelops.dev/usable=true."""
    out: list[Violation] = []
    for where, ref in secret_refs(spec):
        state = secrets.get(ref.name, SecretState.MISSING)
        if state == SecretState.MISSING:
            out.append(
                Violation(where, RULE_SECRET_MISSING, f"Secret {ref.name} not found", "rule")
            )
        elif state == SecretState.NOT_LABELLED:
            out.append(
                Violation(
                    where,
                    RULE_SECRET,
                    f'Secret {ref.name} is not labelled {LABEL_SECRET_USABLE}: "true"',
                    "rule",
                )
            )
    return out


def refusal(kind: str, spec: BaseModel, gate: Gate) -> Refusal | None:
    """Why the operator must not act on this spec, or None when it may."""
    if gate.policy is not None and gate.policy.missing is not None:
        return Refusal(RULE_POLICY_MISSING, gate.policy.missing)
    found = secret_violations(spec, gate.secrets)
    if gate.policy is not None:
        found = policy_violations(kind, spec, gate.policy) + found
    if not found:
        return None
    source = f" [{gate.policy.source}]" if gate.policy is not None and gate.policy.source else ""
    return Refusal(_reason(found[0].rule), "; ".join(str(v) for v in found)[:1900] + source)


def refused_conditions(
    conditions: list[dict[str, Any]], refused: Refusal, now: datetime, generation: int
) -> list[dict[str, Any]]:
    """PolicyViolation=True with the rule as reason (and Ready=False)."""
    conds = set_condition(
        conditions, CONDITION, "True", refused.reason, refused.message, now, generation
    )
    return set_condition(conds, "Ready", "False", refused.reason, refused.message, now, generation)


def cleared_conditions(
    conditions: list[dict[str, Any]], now: datetime, generation: int
) -> list[dict[str, Any]]:
    """PolicyViolation=False, once a refused resource is allowed (only if it was set)."""
    if get_condition(conditions, CONDITION) is None:
        return conditions
    return set_condition(
        conditions, CONDITION, "False", "Allowed", "allowed by policy", now, generation
    )


def refused_plan(res: "ResourceView", refused: Refusal, now: datetime) -> list[Action]:
    """One-shot kinds: Failed with the refusal, nothing created; a later allowed
    reconcile (policy relaxed, Secret labelled) creates the Job as usual."""
    status = res.status
    if status.get("phase") == "Failed" and status.get("message") == refused.message:
        return []
    conds = refused_conditions(status.get("conditions", []), refused, now, res.generation)
    conds = set_condition(
        conds, "Failed", "True", refused.reason, refused.message, now, res.generation
    )
    patch = desired_status(
        kind_info(res.kind).status,
        phase="Failed",
        message=refused.message,
        conditions=conds,
        observed_generation=res.generation,
    )
    return [PatchStatus(patch), RecordEvent("Warning", refused.reason, refused.message)]
