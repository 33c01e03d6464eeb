"""A seeded generator of manifests from the generated CRD schemas.

For every field reachable from a valid base spec it makes mutations of each kind the
schema forbids — wrong type, below minimum / above maximum, value outside the enum,
pattern mismatch, string over maxLength, list over maxItems, unknown field, missing
required field — each labelled with the field path the API server must name. It also
makes valid variants (defaults, enum members, bounds). Every case is cross-checked
with the pydantic model first: invalid cases must be rejected by pydantic too, valid
ones accepted, so the CRDs and the models are shown to agree in both directions.
"""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelops_api.crdgen import crd_for
from modelops_api.kinds import KINDS, crd_kind

MODEL = {"uri": "pvc://models/tiny"}
OUT = {"uri": "pvc://models/out"}
BASES: dict[str, dict[str, Any]] = {
    "PruneRetrain": {"model": MODEL, "output": OUT, "retrain": {"data": {"uri": "pvc://d/train"}}},
    "UnlearnRequest": {"model": MODEL, "sampleIds": ["a1"], "output": OUT},
    "LoRATransfer": {
        "sourceModel": MODEL,
        "sourceAdapter": {"uri": "pvc://a/b"},
        "targetModel": MODEL,
        "output": OUT,
    },
    "ModelAdaptation": {
        "model": MODEL,
        "data": {"uri": "pvc://d/new"},
        "output": OUT,
        "trigger": {
            "type": "drift",
            "drift": {
                "prometheusUrl": "http://p:9090",
                "query": "max(x)",
                "fireThreshold": 0.5,
                "clearThreshold": 0.2,
            },
        },
    },
}
# A release kind (issue 15): its schema is mutated the same way.
BASES["ModelRollout"] = {
    "inferenceService": {"name": "bot"},
    "candidates": [{"kind": "ModelAdaptation", "name": "bot-adapt"}],
    "gate": {
        "rules": [{"metric": "perplexity", "comparison": "LessOrEqual", "tolerance": 0.02}],
        "evaluation": {"data": {"uri": "pvc://d/heldout"}},
    },
    "canary": {
        "steps": [10, 50, 100],
        "analysis": {"prometheusUrl": "http://p:9090", "query": "max(x)", "max": 0.01},
    },
    "registry": {"modelName": "bot"},
}
CORPUS_KINDS = (*KINDS, crd_kind("ModelRollout"))
"""The kinds the corpus mutates: the job kinds and ModelRollout (ModelVersions are
written by the operator, never by hand)."""
MISSING = object()


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    spec: dict[str, Any]
    field: str
    """The path the rejection must name (API-server style: spec.a.b, spec.l[0].c)."""


def _fields(
    schema: dict[str, Any], base: Any, path: list[str | int]
) -> list[tuple[list[str | int], dict[str, Any]]]:
    """(path, schema) of every field reachable from the base spec."""
    out: list[tuple[list[str | int], dict[str, Any]]] = []
    for name, prop in schema.get("properties", {}).items():
        here = [*path, name]
        out.append((here, prop))
        value = base.get(name, MISSING) if isinstance(base, dict) else MISSING
        if prop.get("type") == "object" and "properties" in prop:
            if value is MISSING and prop.get("required"):
                continue
            out += _fields(prop, value if isinstance(value, dict) else {}, here)
        if prop.get("type") == "array" and prop.get("items", {}).get("type") == "object":
            items = prop["items"]
            if not items.get("required") and "properties" in items:
                out += _fields(items, {}, [*here, 0])
    return out


def _render(path: list[str | int]) -> str:
    text = "spec"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _set(spec: dict[str, Any], path: list[str | int], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    node: Any = spec
    for part, nxt in itertools.pairwise(path):
        if isinstance(part, int):
            while len(node) <= part:
                node.append({})
            node = node[part]
        else:
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
    last = path[-1]
    if value is MISSING:
        node.pop(last, None)
    elif isinstance(last, int):
        while len(node) <= last:
            node.append({})
        node[last] = value
    else:
        node[last] = value
    return spec


def _invalid_values(prop: dict[str, Any]) -> list[tuple[str, Any]]:
    t = prop.get("type")
    out: list[tuple[str, Any]] = []
    if t in ("integer", "number"):
        out.append(("wrong-type", "not-a-number"))
        if "minimum" in prop:
            lo = prop["minimum"]
            out.append(
                (
                    "below-minimum",
                    lo
                    if prop.get("exclusiveMinimum")
                    else (lo - 1 if t == "integer" else lo - 0.5),
                )
            )
        if "maximum" in prop:
            hi = prop["maximum"]
            out.append(
                (
                    "above-maximum",
                    hi
                    if prop.get("exclusiveMaximum")
                    else (hi + 1 if t == "integer" else hi + 0.5),
                )
            )
    elif t == "string":
        out.append(("wrong-type", 12345))
        if "enum" in prop:
            out.append(("bad-enum", "not-in-enum"))
        if "pattern" in prop:
            out.append(("pattern-mismatch", " not valid "))
        if "maxLength" in prop:
            out.append(("over-max-length", "a" * (prop["maxLength"] + 1)))
    elif t == "boolean":
        out.append(("wrong-type", "yes"))
    elif t == "array":
        out.append(("wrong-type", "not-a-list"))
        if "maxItems" in prop:
            item = prop.get("items", {})
            filler: Any = (
                "a1"
                if item.get("type") == "string"
                else (1 if item.get("type") in ("integer", "number") else {})
            )
            out.append(("over-max-items", [filler] * (prop["maxItems"] + 1)))
    elif t == "object":
        out.append(("wrong-type", "not-an-object"))
        if "properties" in prop:
            out.append(("unknown-field", {"noSuchField": 1}))
    return out


def _valid_values(prop: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if "default" in prop:
        out.append(("default", prop["default"]))
    for value in prop.get("enum", [])[:3]:
        out.append((f"enum-{value}", value))
    if prop.get("type") == "integer":
        if "minimum" in prop:
            out.append(("minimum", prop["minimum"] + (1 if prop.get("exclusiveMinimum") else 0)))
        if "maximum" in prop:
            out.append(("maximum", prop["maximum"] - (1 if prop.get("exclusiveMaximum") else 0)))
    return out


def _accepted_by_model(kind: str, spec: dict[str, Any]) -> bool:
    try:
        crd_kind(kind).spec.model_validate(spec)
        return True
    except ValidationError:
        return False


def generate(seed: int = 0, invalid: int = 1000, valid: int = 200) -> tuple[list[Case], list[Case]]:
    """(invalid cases, valid cases), sampled with a fixed seed."""
    rng = random.Random(seed)
    bad: list[Case] = []
    good: list[Case] = []
    for info in CORPUS_KINDS:
        base = BASES[info.kind]
        schema = crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "spec"
        ]
        for name in schema.get("required", []):
            spec = _set(base, [name], MISSING)
            bad.append(
                Case(f"{info.kind}:{name}:missing-required", info.kind, spec, f"spec.{name}")
            )
        for path, prop in _fields(schema, base, []):
            rendered = _render(path)
            for label, value in _invalid_values(prop):
                spec = _set(base, path, value)
                rendered_field = f"{rendered}.noSuchField" if label == "unknown-field" else rendered
                bad.append(Case(f"{info.kind}:{rendered}:{label}", info.kind, spec, rendered_field))
            for label, value in _valid_values(prop):
                good.append(
                    Case(
                        f"{info.kind}:{rendered}:{label}",
                        info.kind,
                        _set(base, path, value),
                        rendered,
                    )
                )
    bad = [c for c in bad if not _accepted_by_model(c.kind, c.spec)]
    good = [c for c in good if _accepted_by_model(c.kind, c.spec)]
    while len(bad) < invalid:  # combine two mutations of one kind to reach the count
        a, b = rng.sample(bad[: len(bad)], 2)
        if a.kind != b.kind or a.field == b.field:
            continue
        merged = _merge(a.spec, b.spec, BASES[a.kind])
        if not _accepted_by_model(a.kind, merged):
            bad.append(Case(f"{a.id}+{b.id}", a.kind, merged, a.field + "|" + b.field))
    rng.shuffle(bad)
    rng.shuffle(good)
    cross = cross_field_cases()
    bad = cross + bad[: invalid - len(cross)] if invalid else cross + bad
    return bad, good[:valid] if valid else good


# (label, resources, distribution): specs every field of which is valid alone, refused
# by the root CEL rule PROCESSES_MATCH_GPUS (with GPUs, one process per GPU).
CROSS_FIELD = [
    ("processes-ne-gpus", {"gpu": {"count": 4}}, {"processesPerNode": 2}),
    ("processes-ne-default-gpu", {}, {"processesPerNode": 3}),
    ("processes-ne-gpus-multinode", {"nodes": 4, "gpu": {"count": 8}}, {"processesPerNode": 16}),
]


def cross_field_cases() -> list[Case]:
    """Always in the corpus (never sampled away): one per kind and CROSS_FIELD entry."""
    out = []
    for info in KINDS:
        for label, resources, distribution in CROSS_FIELD:
            spec = {**copy.deepcopy(BASES[info.kind]), "resources": resources}
            spec["distribution"] = distribution
            assert not _accepted_by_model(info.kind, spec), label
            field = "spec.distribution.processesPerNode"
            out.append(Case(f"{info.kind}:{field}:cross-field-{label}", info.kind, spec, field))
    return out


def _merge(a: dict[str, Any], b: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Apply both specs' differences from the base (b wins on conflicts)."""
    out = copy.deepcopy(a)

    def walk(dst: dict[str, Any], src: dict[str, Any], ref: Any) -> None:
        for k, v in src.items():
            r = ref.get(k, MISSING) if isinstance(ref, dict) else MISSING
            if isinstance(v, dict) and isinstance(dst.get(k), dict) and isinstance(r, dict):
                walk(dst[k], v, r)
            elif v != r:
                dst[k] = copy.deepcopy(v)

    walk(out, b, base)
    return out
