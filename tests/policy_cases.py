"""One table of ModelOpsPolicy cases, run through the operator's pure check
(tests/unit/test_policy.py) and through the API server's ValidatingAdmissionPolicy
(tests/integration/test_policy_admission.py): both must refuse the same cases with the
same rule. Each case breaks at most one rule."""

from typing import Any

POLICY: dict[str, Any] = {
    "allowedImages": ["registry.example/modelops-jobs", "registry.example/team/"],
    "allowedPrometheusEndpoints": [
        "http://prom.monitoring:9090",
        "https://metrics.example/tenant-a/",
    ],
    "allowedPriorityClasses": ["batch-low"],
    "allowedTolerationKeys": ["nvidia.com/gpu"],
    "allowFileURIs": False,
}

BASE: dict[str, dict[str, Any]] = {
    "PruneRetrain": {"model": {"uri": "pvc://models/base"}, "output": {"uri": "pvc://out/p"}},
    "UnlearnRequest": {"model": {"uri": "pvc://store/s3t"}, "sampleIds": ["a"]},
    "LoRATransfer": {
        "sourceModel": {"uri": "pvc://models/a"},
        "sourceAdapter": {"uri": "pvc://adapters/a"},
        "targetModel": {"uri": "pvc://models/b"},
        "output": {"uri": "pvc://out/t"},
    },
    "ModelAdaptation": {
        "model": {"uri": "pvc://models/base"},
        "data": {"uri": "pvc://data/new"},
        "output": {"uri": "pvc://models/versions"},
    },
    # A release kind (issue 15): its evaluation Job and canary analysis are policed too.
    "ModelRollout": {
        "inferenceService": {"name": "bot"},
        "candidates": [{"kind": "ModelAdaptation", "name": "bot-adapt"}],
        "gate": {
            "rules": [{"metric": "perplexity", "comparison": "LessOrEqual"}],
            "evaluation": {"data": {"uri": "pvc://data/heldout.jsonl"}},
        },
    },
}


def drift(url: str) -> dict[str, Any]:
    return {
        "trigger": {
            "type": "drift",
            "drift": {
                "prometheusUrl": url,
                "query": "max(drift_score)",
                "fireThreshold": 0.5,
                "clearThreshold": 0.2,
            },
        }
    }


def sched(**kw: Any) -> dict[str, Any]:
    return {"scheduling": kw}


def analysis(url: str) -> dict[str, Any]:
    """A ModelRollout canary whose analysis queries `url`."""
    return {"canary": {"analysis": {"prometheusUrl": url, "query": "max(err)", "max": 0.01}}}


def eval_job(**kw: Any) -> dict[str, Any]:
    """A ModelRollout whose evaluation Job has these settings."""
    return {"evaluationJob": kw}


def eval_data(uri: str) -> dict[str, Any]:
    gate = BASE["ModelRollout"]["gate"]
    return {"gate": {**gate, "evaluation": {"data": {"uri": uri}}}}


# (id, kind, spec fields merged over BASE[kind], policy overrides, refused rule or None)
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], str | None]] = [
    ("plain", "PruneRetrain", {}, {}, None),
    ("image-tag", "PruneRetrain", {"image": "registry.example/modelops-jobs:1.2"}, {}, None),
    (
        "image-digest",
        "PruneRetrain",
        {"image": "registry.example/modelops-jobs@sha256:ab"},
        {},
        None,
    ),
    ("image-org-prefix", "PruneRetrain", {"image": "registry.example/team/x:1"}, {}, None),
    ("image-own", "PruneRetrain", {"image": "evil.example/steal:1"}, {}, "allowedImages"),
    (
        "image-lookalike",
        "PruneRetrain",
        {"image": "registry.example/modelops-jobs-x:1"},
        {},
        "allowedImages",
    ),
    (
        "image-org-lookalike",
        "PruneRetrain",
        {"image": "registry.example/teamx/y:1"},
        {},
        "allowedImages",
    ),
    (
        "image-none-allowed",
        "PruneRetrain",
        {"image": "registry.example/modelops-jobs:1"},
        {"allowedImages": []},
        "allowedImages",
    ),
    ("priority-allowed", "PruneRetrain", sched(priorityClassName="batch-low"), {}, None),
    (
        "priority-system",
        "PruneRetrain",
        sched(priorityClassName="system-cluster-critical"),
        {},
        "allowedPriorityClasses",
    ),
    (
        "toleration-gpu",
        "PruneRetrain",
        sched(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]),
        {},
        None,
    ),
    (
        "toleration-blanket",
        "PruneRetrain",
        sched(tolerations=[{"operator": "Exists"}]),
        {},
        "allowedTolerationKeys",
    ),
    (
        "toleration-other-key",
        "UnlearnRequest",
        sched(tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]),
        {},
        "allowedTolerationKeys",
    ),
    (
        "file-model",
        "PruneRetrain",
        {"model": {"uri": "file:///var/run/secrets/kubernetes.io/serviceaccount"}},
        {},
        "allowFileURIs",
    ),
    (
        "file-nested",
        "PruneRetrain",
        {"retrain": {"data": {"uri": "file:///etc/passwd"}}},
        {},
        "allowFileURIs",
    ),
    (
        "file-samples",
        "UnlearnRequest",
        {"sampleIds": None, "samplesUri": "file:///etc/shadow"},
        {},
        "allowFileURIs",
    ),
    (
        "file-generator",
        "LoRATransfer",
        {"synthesis": {"generator": {"uri": "file:///root/m"}}},
        {},
        "allowFileURIs",
    ),
    (
        "file-replay",
        "ModelAdaptation",
        {"cpt": {"replayData": {"uri": "file:///data/old"}}},
        {},
        "allowFileURIs",
    ),
    (
        "file-allowed",
        "PruneRetrain",
        {"model": {"uri": "file:///models/base"}},
        {"allowFileURIs": True},
        None,
    ),
    ("prom-exact", "ModelAdaptation", drift("http://prom.monitoring:9090"), {}, None),
    (
        "prom-below",
        "ModelAdaptation",
        drift("https://metrics.example/tenant-a/prometheus"),
        {},
        None,
    ),
    (
        "prom-own",
        "ModelAdaptation",
        drift("http://127.0.0.1:8080"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "prom-userinfo",
        "ModelAdaptation",
        drift("http://prom.monitoring:9090@evil.example"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "prom-port-lookalike",
        "ModelAdaptation",
        drift("http://prom.monitoring:90901"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "prom-host-lookalike",
        "ModelAdaptation",
        drift("http://prom.monitoring:9090.evil.example"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "prom-fragment",
        "ModelAdaptation",
        drift("http://prom.monitoring:9090/#/x"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "prom-query",
        "ModelAdaptation",
        drift("http://prom.monitoring:9090/?x=1"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "prom-climb",
        "ModelAdaptation",
        drift("https://metrics.example/tenant-a/../tenant-b"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "prom-escape",
        "ModelAdaptation",
        drift("https://metrics.example/tenant-a/%2e%2e/b"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "prom-sibling",
        "ModelAdaptation",
        drift("https://metrics.example/tenant-b"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "prom-none-allowed",
        "ModelAdaptation",
        drift("http://prom.monitoring:9090"),
        {"allowedPrometheusEndpoints": []},
        "allowedPrometheusEndpoints",
    ),
    # ModelRollout (issue 15): the same rules where it keeps the policed fields.
    ("rollout-plain", "ModelRollout", {}, {}, None),
    ("rollout-prom-exact", "ModelRollout", analysis("http://prom.monitoring:9090"), {}, None),
    (
        "rollout-prom-below",
        "ModelRollout",
        analysis("https://metrics.example/tenant-a/prometheus"),
        {},
        None,
    ),
    (
        "rollout-prom-own",
        "ModelRollout",
        analysis("http://127.0.0.1:8080"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "rollout-prom-userinfo",
        "ModelRollout",
        analysis("http://prom.monitoring:9090@evil.example"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "rollout-prom-climb",
        "ModelRollout",
        analysis("https://metrics.example/tenant-a/../tenant-b"),
        {},
        "allowedPrometheusEndpoints",
    ),
    (
        "rollout-prom-none-allowed",
        "ModelRollout",
        analysis("http://prom.monitoring:9090"),
        {"allowedPrometheusEndpoints": []},
        "allowedPrometheusEndpoints",
    ),
    (
        "rollout-eval-image-allowed",
        "ModelRollout",
        eval_job(image="registry.example/modelops-jobs:1.2"),
        {},
        None,
    ),
    (
        "rollout-eval-image-own",
        "ModelRollout",
        eval_job(image="evil.example/steal:1"),
        {},
        "allowedImages",
    ),
    (
        "rollout-eval-priority-system",
        "ModelRollout",
        eval_job(scheduling={"priorityClassName": "system-node-critical"}),
        {},
        "allowedPriorityClasses",
    ),
    (
        "rollout-eval-toleration-blanket",
        "ModelRollout",
        eval_job(scheduling={"tolerations": [{"operator": "Exists"}]}),
        {},
        "allowedTolerationKeys",
    ),
    (
        "rollout-eval-toleration-gpu",
        "ModelRollout",
        eval_job(scheduling={"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}),
        {},
        None,
    ),
    (
        "rollout-file-eval-data",
        "ModelRollout",
        eval_data("file:///etc/passwd"),
        {},
        "allowFileURIs",
    ),
    (
        "rollout-file-eval-data-allowed",
        "ModelRollout",
        eval_data("file:///data/heldout.jsonl"),
        {"allowFileURIs": True},
        None,
    ),
]


def spec_of(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    spec = {**BASE[kind], **fields}
    return {k: v for k, v in spec.items() if v is not None}


def policy_of(overrides: dict[str, Any]) -> dict[str, Any]:
    return {**POLICY, **overrides}
