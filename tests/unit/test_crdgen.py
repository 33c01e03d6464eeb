"""CRD generation: structural schemas with descriptions, defaults, enums, bounds, CEL,
printer columns, names and the status subresource; committed files match the models."""

from pathlib import Path

import pytest
import yaml

from modelops_api.crdgen import crd_for, generate_all
from modelops_api.kinds import CRD_KINDS, KINDS

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "$defs",
    "title",
    "const",
    "uniqueItems",
    "patternProperties",  # the API server refuses it in a structural schema
}


def walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            yield from walk(value, f"{path}.{key}")
        if "items" in node:
            yield from walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("info", CRD_KINDS, ids=[k.kind for k in CRD_KINDS])
def test_schema_is_structural(info):
    schema = crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert not FORBIDDEN & set(node), f"{path} has {FORBIDDEN & set(node)}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), (
            f"{path} has no type"
        )
        if path.count(".") >= 2 and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description (kubectl explain)"


@pytest.mark.parametrize("info", CRD_KINDS, ids=[k.kind for k in CRD_KINDS])
def test_crd_metadata(info):
    crd = crd_for(info)
    names = crd["spec"]["names"]
    assert names["kind"] == info.kind and names["plural"] == info.plural
    assert "modelops" in names["categories"] and names["shortNames"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Age"} <= columns


def spec_schema(kind):
    info = next(k for k in CRD_KINDS if k.kind == kind)
    return crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


@pytest.mark.parametrize(
    ("kind", "path", "key", "expected"),
    [
        ("PruneRetrain", ["pruning", "criterion"], "enum", ["magnitude", "wanda", "sparsegpt"]),
        ("PruneRetrain", ["pruning", "sparsity"], "default", 0.5),
        ("PruneRetrain", ["pruning", "sparsity"], "exclusiveMaximum", True),
        ("PruneRetrain", ["resources", "gpu", "count"], "maximum", 16),
        ("PruneRetrain", ["retrain", "subset"], "x-kubernetes-list-type", "set"),
        ("LoRATransfer", ["targetAdapter", "rank"], "default", 16),
        ("UnlearnRequest", ["sampleIds"], "maxItems", 100_000),  # the CEL rule says 1000
        ("ModelAdaptation", ["trigger", "type"], "default", "manual"),
    ],
    ids=lambda v: str(v),
)
def test_schema_facts(kind, path, key, expected):
    node = spec_schema(kind)
    for part in path:
        node = node["properties"][part]
    assert node[key] == expected


def test_factory_defaults_match_the_model():
    """A default made by a factory (LoRATransfer.targetAdapter rank 8) must reach the CRD,
    or the API server would fill the generic defaults and the Job would see others."""
    target = spec_schema("LoRATransfer")["properties"]["targetAdapter"]
    assert target["default"]["rank"] == 8 and target["default"]["alpha"] == 16.0


@pytest.mark.parametrize(
    ("kind", "where", "needle"),
    [
        ("PruneRetrain", ["pruning"], "1 - N/M"),
        ("UnlearnRequest", [], "exactly one of sampleIds and samplesUri"),
        ("ModelAdaptation", ["trigger", "drift"], "clearThreshold"),
        ("ModelAdaptation", ["trigger"], "schedule is required"),
        ("ModelRollout", ["canary"], "the last step must be 100"),
        ("ModelRollout", ["canary"], "strictly increasing"),
        ("ModelRollout", ["gate"], "evaluation is required when a rule has baseline Serving"),
        ("ModelRollout", ["canary", "analysis"], "min must not exceed max"),
        ("ModelRollout", ["canary", "analysis"], "at most one of bearerTokenSecretRef"),
        ("ModelRollout", [], "candidates must not name the same resource twice"),
    ],
    ids=lambda v: str(v),
)
def test_cel_rules(kind, where, needle):
    node = spec_schema(kind)
    for part in where:
        node = node["properties"][part]
    messages = [r["message"] for r in node.get("x-kubernetes-validations", [])]
    assert any(needle in m for m in messages), messages


def test_committed_crds_match_models():
    for name, text in generate_all().items():
        committed = ROOT / "crds" / name
        assert committed.exists(), f"{committed} missing: run make crds"
        assert committed.read_text() == text, f"{committed} is stale: run make crds"
        yaml.safe_load(text)


def test_release_kinds_are_not_job_kinds():
    """The four job kinds are iterated by handler registration, the jobs registry and the
    demo: the release kinds must not appear there, but every CRD covers both."""
    assert {k.kind for k in KINDS} == {
        "PruneRetrain",
        "UnlearnRequest",
        "LoRATransfer",
        "ModelAdaptation",
    }
    assert [k.kind for k in CRD_KINDS[len(KINDS) :]] == ["ModelVersion", "ModelRollout"]
    files = generate_all()
    assert {"modelops.dev_modelversions.yaml", "modelops.dev_modelrollouts.yaml"} <= set(files)


def test_short_names_and_plurals_are_unique():
    names = [n for k in CRD_KINDS for n in (k.plural, k.singular, *k.short_names)]
    assert len(names) == len(set(names)), names
    # Argo Rollouts owns `rollout`/`ro`: never claimed here.
    assert not {"rollout", "rollouts", "ro", "version"} & set(names)


@pytest.mark.parametrize(
    ("kind", "column", "path"),
    [
        ("ModelVersion", "Source-Kind", ".spec.source.kind"),
        ("ModelVersion", "Source", ".spec.source.name"),
        ("ModelVersion", "Phase", ".status.phase"),
        ("ModelVersion", "InferenceService", ".status.serving[-1].inferenceService"),
        ("ModelVersion", "URI", ".spec.uri"),
        ("ModelRollout", "InferenceService", ".spec.inferenceService.name"),
        ("ModelRollout", "Phase", ".status.phase"),
        ("ModelRollout", "Serving", ".status.servingVersion"),
        ("ModelRollout", "Candidate", ".status.current.version"),
        ("ModelRollout", "Canary", ".status.applied.canaryTrafficPercent"),
    ],
    ids=lambda v: str(v),
)
def test_release_printer_columns(kind, column, path):
    info = next(k for k in CRD_KINDS if k.kind == kind)
    columns = crd_for(info)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert {c["name"]: c["jsonPath"] for c in columns}[column] == path
