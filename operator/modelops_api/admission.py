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

from typing import Any

from modelops_api.crdgen import schema_for
from modelops_api.kinds import KINDS
from modelops_api.meta import API_VERSION, GROUP
from modelops_api.policy import (
    FORBIDDEN_URL_PARTS,
    LABEL_POLICY_SCOPE,
    POLICY_KIND,
    POLICY_SCOPE_NAMESPACE,
    RULE_FILE_URIS,
    RULE_IMAGES,
    RULE_PRIORITY,
    RULE_PROMETHEUS,
    RULE_TOLERATIONS,
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


def _uris_by_kind() -> str:
    expr = "[]"
    for info in reversed(KINDS):
        expr = f"request.kind.kind == '{info.kind}' ? ({_uri_list(schema_for(info.spec))}) : {expr}"
    return expr


_PROM_URL = (
    "request.kind.kind == 'ModelAdaptation' && has(variables.spec.trigger) && "
    "has(variables.spec.trigger.drift) ? string(variables.spec.trigger.drift.prometheusUrl) : ''"
)
_IMAGE_OK = (
    "!has(object.spec.image) || params.spec.allowedImages.exists(e, e.endsWith('/') ? "
    "object.spec.image.startsWith(e) : (object.spec.image == e || "
    "object.spec.image.startsWith(e + ':') || object.spec.image.startsWith(e + '@')))"
)
_PRIORITY_OK = (
    "!has(object.spec.scheduling) || !has(object.spec.scheduling.priorityClassName) || "
    "object.spec.scheduling.priorityClassName in params.spec.allowedPriorityClasses"
)
_TOLERATIONS_OK = (
    "!has(object.spec.scheduling) || !has(object.spec.scheduling.tolerations) || "
    "object.spec.scheduling.tolerations.all(t, has(t.key) && "
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
                        "resources": [info.plural for info in KINDS],
                    }
                ]
            },
            "variables": [
                # dyn: each kind has its own fields; the branches for the other kinds
                # must not fail the type check against this kind's schema.
                {"name": "spec", "expression": "dyn(object.spec)"},
                {"name": "uris", "expression": _uris_by_kind()},
                {"name": "promUrl", "expression": _PROM_URL},
            ],
            "validations": [
                file_rule,
                _rule(_IMAGE_OK, "spec.image: this image is not allowed", RULE_IMAGES),
                _rule(
                    _PRIORITY_OK,
                    "spec.scheduling.priorityClassName: this PriorityClass is not allowed",
                    RULE_PRIORITY,
                ),
                _rule(
                    _TOLERATIONS_OK,
                    "spec.scheduling.tolerations: this toleration is not allowed "
                    "(a key from the allowed list is required)",
                    RULE_TOLERATIONS,
                ),
                _rule(
                    _PROMETHEUS_OK,
                    "spec.trigger.drift.prometheusUrl: this endpoint is not allowed",
                    RULE_PROMETHEUS,
                ),
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
