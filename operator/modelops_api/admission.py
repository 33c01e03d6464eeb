"""The ValidatingAdmissionPolicy that enforces ModelOpsPolicy at the API server.

Written from the same definitions as the operator's check (`modelops_api/policy.py`):
the rule names, the matching semantics, and the storage-URI fields, which are found in
the kinds' generated schemas (every string carrying the URI pattern), so a URI field
added to a kind is covered without editing this file. `make crds` writes the policy
into crds/ and the chart's files/crds/ (the chart renders it with `policy.enabled`);
the chart writes the two bindings (`bindings()` is their reference form, used by tests):

- `<name>-default` binds every namespace NOT labelled `modelops.dev/policy=namespace` to
  the installation's default ModelOpsPolicy (in the release namespace); a missing
  default refuses every request (parameterNotFoundAction: Deny);
- `<name>-namespace` binds namespaces labelled `modelops.dev/policy=namespace` to the
  ModelOpsPolicy objects in that namespace (all must pass; none refuses everything).
"""

from collections.abc import Callable
from typing import Any

from modelops_api.crdgen import schema_for
from modelops_api.kinds import KINDS, crd_kind
from modelops_api.meta import API_VERSION, GROUP
from modelops_api.policy import (
    FORBIDDEN_URL_PARTS,
    LABEL_POLICY_SCOPE,
    POLICED_FIELDS,
    POLICED_KINDS,
    POLICY_KIND,
    POLICY_SCOPE_NAMESPACE,
    RULE_FILE_URIS,
    RULE_IMAGES,
    RULE_PRIORITY,
    RULE_PROMETHEUS,
    RULE_TOLERATIONS,
    PolicedFields,
    uri_fields,
)

POLICY_NAME = "modelops.dev-policy"
FILE_NAME = f"{GROUP}_validatingadmissionpolicy.yaml"


def _suffix(rule: str) -> str:
    return f" (ModelOpsPolicy rule {rule})"


def _uri_list(kind_spec_schema: dict[str, Any]) -> str:
    """A CEL list of {'field', 'uri'} for every URI set in the object's spec."""
    parts = []
    for path in uri_fields(kind_spec_schema):
        if "*" in path:
            raise ValueError(f"URI inside a list is not supported by the policy: {path}")
        guards = " && ".join(
            "has(variables.spec." + ".".join(path[: i + 1]) + ")" for i in range(len(path))
        )
        field = "spec." + ".".join(path)
        parts.append(
            f"({guards} ? [{{'field': '{field}', "
            f"'uri': string(variables.spec.{'.'.join(path)})}}] : [])"
        )
    return " + ".join(parts) if parts else "[]"


POLICED: tuple[str, ...] = (*(info.kind for info in KINDS), *POLICED_KINDS)
"""The kinds the admission policy matches: every job kind and ModelRollout."""


def _uris_by_kind() -> str:
    expr = "[]"
    for kind in reversed(POLICED):
        uris = _uri_list(schema_for(crd_kind(kind).spec))
        expr = f"request.kind.kind == '{kind}' ? ({uris}) : {expr}"
    return expr


def _guarded(path: tuple[str, ...], then: str, otherwise: str) -> str:
    guards = " && ".join(
        "has(variables.spec." + ".".join(path[: i + 1]) + ")" for i in range(len(path))
    )
    return f"({guards} ? {then} : {otherwise})" if guards else then


def _by_kind(value: Callable[[PolicedFields], str], default: str) -> str:
    """A CEL value chosen by the request's kind (the kinds in POLICED_FIELDS, else default)."""
    expr = default
    for kind, fields in POLICED_FIELDS.items():
        expr = f"request.kind.kind == '{kind}' ? {value(fields)} : {expr}"
    return expr


def _prom_url(fields: PolicedFields) -> str:
    path = fields.prometheus_url
    return _guarded(path, f"string(variables.spec.{'.'.join(path)})", "''")


def _job(fields: PolicedFields) -> str:
    if not fields.job:
        return "variables.spec"
    return _guarded(fields.job, f"variables.spec.{'.'.join(fields.job)}", "dyn({})")


def _field_prefix(path: tuple[str, ...]) -> str:
    """'spec.a.b.' as a CEL string: where the fields below `path` are named."""
    return "'spec." + "".join(f"{p}." for p in path) + "'"


_PROM_URL = _by_kind(
    _prom_url,
    "request.kind.kind == 'ModelAdaptation' ? " + _prom_url(PolicedFields()) + " : ''",
)
_PROM_FIELD = _by_kind(
    lambda f: "'spec." + ".".join(f.prometheus_url) + "'", "'spec.trigger.drift.prometheusUrl'"
)
_JOB = _by_kind(_job, "variables.spec")
_JOB_FIELD = _by_kind(lambda f: _field_prefix(f.job), "'spec.'")
_IMAGE_OK = (
    "!has(variables.job.image) || params.spec.allowedImages.exists(e, e.endsWith('/') ? "
    "string(variables.job.image).startsWith(e) : (variables.job.image == e || "
    "string(variables.job.image).startsWith(e + ':') || "
    "string(variables.job.image).startsWith(e + '@')))"
)
_PRIORITY_OK = (
    "!has(variables.job.scheduling) || !has(variables.job.scheduling.priorityClassName) || "
    "variables.job.scheduling.priorityClassName in params.spec.allowedPriorityClasses"
)
_TOLERATIONS_OK = (
    "!has(variables.job.scheduling) || !has(variables.job.scheduling.tolerations) || "
    "variables.job.scheduling.tolerations.all(t, has(t.key) && "
    "t.key in params.spec.allowedTolerationKeys)"
)
_FORBIDDEN = "[" + ", ".join(f"'{p}'" for p in FORBIDDEN_URL_PARTS) + "]"
_PROMETHEUS_OK = (
    f"variables.promUrl == '' || (!{_FORBIDDEN}.exists(p, variables.promUrl.contains(p)) && "
    "params.spec.allowedPrometheusEndpoints.exists(e, variables.promUrl == e || "
    "variables.promUrl.startsWith(e.endsWith('/') ? e : e + '/')))"
)


def _rule(expression: str, message: str, rule: str) -> dict[str, Any]:
    return {"expression": expression, "message": message + _suffix(rule), "reason": "Forbidden"}


def _named(expression: str, field_var: str, field: str, what: str, rule: str) -> dict[str, Any]:
    """A rule whose field lies where the kind keeps it: the static message names the job
    kinds' field, the messageExpression the request's (`variables.<field_var>`)."""
    out = _rule(expression, f"spec.{field}: {what}", rule)
    out["messageExpression"] = f"variables.{field_var} + '{field}: {what}{_suffix(rule)}'"
    return out


def validating_admission_policy(name: str = POLICY_NAME) -> dict[str, Any]:
    """The ValidatingAdmissionPolicy (without bindings)."""
    file_rule = _rule(
        "params.spec.allowFileURIs == true || variables.uris.all(u, !u.uri.startsWith('file://'))",
        "a storage URI is file://: file:// URIs are refused in a cluster",
        RULE_FILE_URIS,
    )
    file_rule["messageExpression"] = (
        "variables.uris.filter(u, u.uri.startsWith('file://'))[0].field + "
        f"': file:// URIs are refused in a cluster{_suffix(RULE_FILE_URIS)}'"
    )
    prometheus_rule = _rule(
        _PROMETHEUS_OK,
        "spec.trigger.drift.prometheusUrl: this endpoint is not allowed",
        RULE_PROMETHEUS,
    )
    prometheus_rule["messageExpression"] = (
        f"variables.promField + ': this endpoint is not allowed{_suffix(RULE_PROMETHEUS)}'"
    )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "modelops"}},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": API_VERSION, "kind": POLICY_KIND},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [crd_kind(kind).plural for kind in POLICED],
                    }
                ]
            },
            "variables": [
                # dyn: each kind has its own fields; the branches for the other kinds
                # must not fail the type check against this kind's schema.
                {"name": "spec", "expression": "dyn(object.spec)"},
                {"name": "uris", "expression": _uris_by_kind()},
                {"name": "promUrl", "expression": _PROM_URL},
                {"name": "promField", "expression": _PROM_FIELD},
                # Where the kind keeps its Job settings: the spec itself, or a ModelRollout's
                # evaluationJob (an empty map when it has none).
                {"name": "job", "expression": _JOB},
                {"name": "jobField", "expression": _JOB_FIELD},
            ],
            "validations": [
                file_rule,
                _named(_IMAGE_OK, "jobField", "image", "this image is not allowed", RULE_IMAGES),
                _named(
                    _PRIORITY_OK,
                    "jobField",
                    "scheduling.priorityClassName",
                    "this PriorityClass is not allowed",
                    RULE_PRIORITY,
                ),
                _named(
                    _TOLERATIONS_OK,
                    "jobField",
                    "scheduling.tolerations",
                    "this toleration is not allowed (a key from the allowed list is required)",
                    RULE_TOLERATIONS,
                ),
                prometheus_rule,
            ],
        },
    }


def bindings(
    param_name: str, param_namespace: str, policy_name: str = POLICY_NAME
) -> list[dict[str, Any]]:
    """The two bindings the chart installs (see the module docstring)."""

    def binding(suffix: str, param_ref: dict[str, Any], ns_selector: dict[str, Any]) -> Any:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": f"{policy_name}-{suffix}"},
            "spec": {
                "policyName": policy_name,
                "validationActions": ["Deny"],
                "paramRef": {**param_ref, "parameterNotFoundAction": "Deny"},
                "matchResources": {"namespaceSelector": ns_selector},
            },
        }

    scope = {"key": LABEL_POLICY_SCOPE, "values": [POLICY_SCOPE_NAMESPACE]}
    return [
        binding(
            "default",
            {"name": param_name, "namespace": param_namespace},
            {"matchExpressions": [{**scope, "operator": "NotIn"}]},
        ),
        binding("namespace", {"selector": {}}, {"matchExpressions": [{**scope, "operator": "In"}]}),
    ]
