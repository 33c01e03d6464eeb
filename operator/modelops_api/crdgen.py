"""Generate the CustomResourceDefinitions from the pydantic models.

Pydantic emits JSON Schema (2020-12); the API server wants a *structural* OpenAPI v3
schema. This module inlines `$ref`s, turns `X | None` into an optional X, `const` into
an enum, numeric `exclusiveMinimum` into the boolean OpenAPI 3.0 form, keeps
descriptions (for `kubectl explain`), defaults (including those made by default
factories, so the API server and the Job agree), bounds, enums and CEL rules, and
adds printer columns, short names, the category and the status subresource.
"""

from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from modelops_api.kinds import CRD_KINDS, CrdKind
from modelops_api.meta import CATEGORY, GROUP, VERSION

_DROP = {"title", "examples", "additionalProperties", "$defs", "propertyNames"}


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also emit defaults made by default factories, so the CRD default equals the model's."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                return value.model_dump(mode="json", by_alias=True, exclude_none=True)
            return value
        return schema.get("default", NoDefault)


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _pattern_map(node: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A map whose keys have a pattern (dict[Pattern, V]): structural schemas have no
    patternProperties, so the value schema becomes additionalProperties and the key
    pattern (and length) a CEL rule."""
    ((pattern, value),) = node["patternProperties"].items()
    max_len = (node.get("propertyNames") or {}).get("maxLength")
    size = f"size(k) <= {max_len} && " if max_len is not None else ""
    quoted = pattern.replace("\\", "\\\\").replace("'", "\\'")
    rule = {
        "rule": f"self.all(k, {size}k.matches('{quoted}'))",
        "message": f"keys must match {pattern}"
        + (f" and have at most {max_len} characters" if max_len is not None else ""),
    }
    return value, rule


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    """Turn one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        merged = {**target, **node}
        return _convert(merged, defs)
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node.pop(key) if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"unsupported union in schema: {options}")
            inner = _convert(options[0], defs)
            outer = {k: v for k, v in node.items() if k != "default" or v is not None}
            return _convert({**inner, **outer}, defs)
    out: dict[str, Any] = {}
    extra_map = node.get("additionalProperties")
    if "patternProperties" in node:
        extra_map, key_rule = _pattern_map(node)
        out["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), key_rule]
    for key, value in node.items():
        if key in _DROP or key == "patternProperties":
            continue
        if key == "x-kubernetes-validations" and "x-kubernetes-validations" in out:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "default":
            if value is not None:
                out["default"] = _strip_none(value)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out["properties"] = {k: _convert(v, defs) for k, v in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs)
        elif key == "required":
            out["required"] = sorted(value)
        else:
            out[key] = value
    if node.get("format") == "date-time":
        out["type"] = "string"
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "integer":
        out.setdefault("format", "int64")
    if out.get("type") == "object" and "properties" not in out:
        if isinstance(extra_map, dict) and extra_map:
            out["additionalProperties"] = _convert(extra_map, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    defs = raw.get("$defs", {})
    return _convert(raw, defs)


def crd_for(info: CrdKind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec_schema = schema_for(info.spec)
    status_schema = schema_for(info.status)
    root: dict[str, Any] = {
        "type": "object",
        "description": (info.spec.__doc__ or info.kind).strip().splitlines()[0],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: modelops.dev/v1alpha1."},
            "kind": {"type": "string", "description": f"Kind: {info.kind}."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if info.root_rules:
        root["x-kubernetes-validations"] = [dict(r) for r in info.root_rules]
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"description": c.description} if c.description else {}),
            **({"priority": c.priority} if c.priority else {}),
        }
        for c in info.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "modelops"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def policy_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of ModelOpsPolicy (namespaced, spec only)."""
    from modelops_api.policy import POLICY_KIND, POLICY_PLURAL, ModelOpsPolicySpec

    root = {
        "type": "object",
        "description": (ModelOpsPolicySpec.__doc__ or POLICY_KIND).strip().splitlines()[0],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: modelops.dev/v1alpha1."},
            "kind": {"type": "string", "description": f"Kind: {POLICY_KIND}."},
            "metadata": {"type": "object"},
            "spec": schema_for(ModelOpsPolicySpec),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{POLICY_PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "modelops"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": POLICY_KIND,
                "listKind": f"{POLICY_KIND}List",
                "plural": POLICY_PLURAL,
                "singular": POLICY_KIND.lower(),
                "shortNames": ["mopolicy"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "additionalPrinterColumns": [
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                    ],
                }
            ],
        },
    }


def render(crd: dict[str, Any]) -> str:
    """YAML text of a CRD, with a header saying it is generated."""
    header = "# Generated by `make crds` from operator/modelops_api. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)


def generate_all() -> dict[str, str]:
    """File name -> YAML text for every kind (job and release kinds), the ModelOpsPolicy CRD and the
    ValidatingAdmissionPolicy that enforces it."""
    out = {f"{GROUP}_{info.plural}.yaml": render(crd_for(info)) for info in CRD_KINDS}
    policy = policy_crd()
    out[f"{GROUP}_{policy['spec']['names']['plural']}.yaml"] = render(policy)
    from modelops_api.admission import FILE_NAME, validating_admission_policy

    out[FILE_NAME] = render(validating_admission_policy())
    return out


def write_all(directory: str, on_write: Callable[[str], None] | None = None) -> list[str]:
    """Write every CRD into a directory; returns the paths written."""
    import os

    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, text in generate_all().items():
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        paths.append(path)
        if on_write:
            on_write(path)
    return paths
