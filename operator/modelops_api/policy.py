"""ModelOpsPolicy: what the platform team allows the resources of a namespace to ask for.

A resource's author chooses its spec; the platform team chooses the policy. One
definition of the rules serves both places they are enforced:

- at admission, by the API server: `modelops_api/admission.py` writes the
  ValidatingAdmissionPolicy's CEL from the rule names and the field paths below;
- before the operator acts (creates a Job, sends a Prometheus query): `violations()`
  here, so a resource admitted before the policy was tightened cannot bypass it.

A table of cases runs through both and asserts they agree
(tests/integration/test_policy_admission.py).

Matching, the same in both places:
- an image entry ending in `/` allows every image under it (a registry or an
  organisation); any other entry is one repository: the image equals it or continues
  with `:tag` or `@digest`;
- a Prometheus endpoint entry allows the URL itself and every URL below it
  (`entry/...`; an entry ending in `/` is used as is), and the URL may not carry
  `?`, `#`, `@`, `%` or `..` (no query, fragment, user info, escapes or path
  climbing that could make a prefix match mean another place);
- a toleration needs a `key` in `allowedTolerationKeys`: a toleration without a key
  (a blanket `operator: Exists`) is never allowed;
- `file://` URIs are for `modelops run` on one machine; in a cluster they name the
  node's or the operator image's files, so they are refused unless `allowFileURIs`.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import BaseModel, Field

from modelops_api.base import ApiModel
from modelops_api.common import DNSName, SecretKeyRef, StorageCredentials
from modelops_api.storage import URI_RULE

POLICY_KIND: Final = "ModelOpsPolicy"
POLICY_PLURAL: Final = "modelopspolicies"
LABEL_POLICY_SCOPE: Final = "modelops.dev/policy"
"""On a Namespace, value `namespace`: the ModelOpsPolicy objects in that namespace replace
the installation default (set by the platform team; tenants cannot label namespaces)."""
POLICY_SCOPE_NAMESPACE: Final = "namespace"
LABEL_SECRET_USABLE: Final = "modelops.dev/usable"
"""On a Secret, value `"true"`: resources may reference it (opt in)."""

ImagePrefix = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s@]+$")]
Endpoint = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^https?://[^\s?#@%]+$")]
TolerationKey = Annotated[str, Field(min_length=1, max_length=253)]

FORBIDDEN_URL_PARTS: Final = ("?", "#", "@", "%", "..")

# Rule names: the policy's field names, used in every refusal message.
RULE_FILE_URIS: Final = "allowFileURIs"
RULE_IMAGES: Final = "allowedImages"
RULE_PRIORITY: Final = "allowedPriorityClasses"
RULE_TOLERATIONS: Final = "allowedTolerationKeys"
RULE_PROMETHEUS: Final = "allowedPrometheusEndpoints"


class ModelOpsPolicySpec(ApiModel):
    """What resources may ask for: job images, Prometheus endpoints, scheduling, URIs."""

    allowed_images: list[ImagePrefix] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Images spec.image (a ModelRollout's spec.evaluationJob.image) may name: a "
            "repository (then any :tag or @digest of it) "
            "or a prefix ending in '/'. Empty: only the operator's default jobs image."
        ),
    )
    allowed_prometheus_endpoints: list[Endpoint] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Prometheus base URLs a drift trigger or a ModelRollout's canary analysis may "
            "query (and send credentials to): the URL itself or a path below it. Empty: no "
            "drift triggers and no canary analysis."
        ),
    )
    allowed_priority_classes: list[DNSName] = Field(
        default_factory=list,
        max_length=64,
        description="PriorityClasses spec.scheduling.priorityClassName may name.",
    )
    allowed_toleration_keys: list[TolerationKey] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Taint keys spec.scheduling.tolerations may tolerate; a toleration without a "
            "key (tolerate everything) is always refused."
        ),
    )
    allow_file_uris: bool = Field(
        False, alias="allowFileURIs", description="Allow file:// URIs (for single-machine use)."
    )


@dataclass(frozen=True)
class Violation:
    """One refusal: the field (spec.a.b), the rule (a policy field) and why."""

    field: str
    rule: str
    message: str
    source: str = "ModelOpsPolicy rule"

    def __str__(self) -> str:
        return f"{self.field}: {self.message} ({self.source} {self.rule})"


# -- where the rules look: derived from the kinds' schemas --------------------------------


@dataclass(frozen=True)
class PolicedFields:
    """Where a kind keeps what the policy checks besides URIs: its Job settings (image,
    scheduling) and a Prometheus URL the operator queries (camelCase paths under spec)."""

    job: tuple[str, ...] = ()
    prometheus_url: tuple[str, ...] = ("trigger", "drift", "prometheusUrl")


POLICED_FIELDS: Final[dict[str, PolicedFields]] = {
    # The gate's evaluation Job and the canary analysis (issue 15).
    "ModelRollout": PolicedFields(("evaluationJob",), ("canary", "analysis", "prometheusUrl")),
}
POLICED_KINDS: Final = ("ModelRollout",)
"""Release kinds the policy covers (besides every job kind): ModelVersions are written
by the operator only, from specs the policy already allowed."""


def policed_fields(kind: str) -> PolicedFields:
    return POLICED_FIELDS.get(kind, PolicedFields())


def uri_fields(schema: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every path (camelCase keys) to a storage URI in a structural schema."""
    if schema.get("type") == "string" and URI_RULE in schema.get("x-kubernetes-validations", []):
        return [path]
    found: list[tuple[str, ...]] = []
    for key, child in (schema.get("properties") or {}).items():
        found += uri_fields(child, (*path, key))
    if "items" in schema:
        found += [(*path, "*", *rest) for rest in uri_fields(schema["items"], ())]
    return found


def _at(spec: dict[str, Any], path: tuple[str, ...]) -> list[tuple[str, Any]]:
    """(dotted field, value) for every value at `path` ('*' walks a list)."""
    nodes: list[tuple[str, Any]] = [("spec", spec)]
    for key in path:
        nxt: list[tuple[str, Any]] = []
        for where, node in nodes:
            if key == "*" and isinstance(node, list):
                nxt += [(f"{where}[{i}]", v) for i, v in enumerate(node)]
            elif isinstance(node, dict) and node.get(key) is not None:
                nxt.append((f"{where}.{key}", node[key]))
        nodes = nxt
    return nodes


def image_allowed(image: str, allowed: list[str]) -> bool:
    return any(
        image.startswith(entry)
        if entry.endswith("/")
        else image == entry or image.startswith(entry + ":") or image.startswith(entry + "@")
        for entry in allowed
    )


def endpoint_allowed(url: str, allowed: list[str]) -> bool:
    """Whether credentials may be sent to `url` (see the module docstring)."""
    if any(part in url for part in FORBIDDEN_URL_PARTS):
        return False
    return any(
        url == entry or url.startswith(entry if entry.endswith("/") else entry + "/")
        for entry in allowed
    )


def _value_at(spec: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = spec
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def violations(
    spec: dict[str, Any],
    policy: ModelOpsPolicySpec,
    uri_paths: list[tuple[str, ...]],
    fields: PolicedFields = PolicedFields(),
) -> list[Violation]:
    """Everything in a spec (wire form, camelCase) that the policy refuses."""
    out: list[Violation] = []
    if not policy.allow_file_uris:
        for path in uri_paths:
            for where, value in _at(spec, path):
                if isinstance(value, str) and value.startswith("file://"):
                    out.append(
                        Violation(where, RULE_FILE_URIS, "file:// URIs are refused in a cluster")
                    )
    out += _job_violations(_value_at(spec, fields.job) or {}, policy, _dotted(fields.job))
    url = _value_at(spec, fields.prometheus_url)
    if url is not None and not endpoint_allowed(str(url), policy.allowed_prometheus_endpoints):
        where = _dotted(fields.prometheus_url).rstrip(".")
        out.append(Violation(where, RULE_PROMETHEUS, "this endpoint is not allowed"))
    return out


def _dotted(path: tuple[str, ...]) -> str:
    """'spec.a.b.' for a path (a, b): the prefix of the fields below it."""
    return "spec." + "".join(f"{p}." for p in path)


def _job_violations(job: dict[str, Any], policy: ModelOpsPolicySpec, at: str) -> list[Violation]:
    """The Job settings (image, scheduling) found at `at` ('spec.' for a job kind)."""
    out: list[Violation] = []
    image = job.get("image")
    if image is not None and not image_allowed(str(image), policy.allowed_images):
        out.append(Violation(f"{at}image", RULE_IMAGES, "this image is not allowed"))
    sched = job.get("scheduling") or {}
    pc = sched.get("priorityClassName")
    if pc is not None and pc not in policy.allowed_priority_classes:
        out.append(
            Violation(
                f"{at}scheduling.priorityClassName",
                RULE_PRIORITY,
                "this PriorityClass is not allowed",
            )
        )
    for i, tol in enumerate(sched.get("tolerations") or []):
        if tol.get("key") not in policy.allowed_toleration_keys:
            out.append(
                Violation(
                    f"{at}scheduling.tolerations[{i}]",
                    RULE_TOLERATIONS,
                    "this toleration is not allowed (a key from the allowed list is required)",
                )
            )
    return out


def secret_refs(spec: BaseModel, where: str = "spec") -> list[tuple[str, SecretKeyRef]]:
    """(field, reference) for every Secret a validated spec references, wherever it is."""
    if isinstance(spec, SecretKeyRef):
        return [(where, spec)]
    if isinstance(spec, StorageCredentials):
        # A whole Secret whose named keys become the pod's environment: one reference
        # (the opt-in is per Secret, so the key named here does not matter).
        key = spec.access_key_id or spec.service_account_key or "credentials"
        return [(f"{where}.secretName", SecretKeyRef(name=spec.secret_name, key=key))]
    found: list[tuple[str, SecretKeyRef]] = []
    for name, info in type(spec).model_fields.items():
        value = getattr(spec, name)
        key = f"{where}.{info.alias or name}"
        if isinstance(value, BaseModel):
            found += secret_refs(value, key)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    found += secret_refs(item, f"{key}[{i}]")
    return found
