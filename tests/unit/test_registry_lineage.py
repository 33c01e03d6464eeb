"""The registry tags of a ModelVersion (registry/lineage.py): lineage, digests, metrics."""

from __future__ import annotations

import json

from modelops_api.model_version import Evaluation, ModelVersionSpec
from modelops_operator.registry.lineage import version_tags

SPEC = {
    "uri": "s3://models/forget/v2",
    "manifestDigest": "sha256:" + "ab" * 32,
    "source": {"kind": "UnlearnRequest", "name": "forget-42", "uid": "u-9", "method": "ssd"},
    "parents": [
        {"role": "base", "uri": "s3://models/chat/v1", "digest": "sha256:01", "version": "chat-1"},
        {"role": "adapter", "uri": "pvc://claim/adapter"},
    ],
    "datasets": [{"role": "forget", "uri": "s3://data/forget.jsonl", "digest": "d1"}],
    "metrics": {"forgetAccuracy": 0.1, "retainAccuracy": 0.95},
    "deletion": {
        "request": "forget-42",
        "deletedSamples": 7,
        "requestedTime": "2026-12-01T00:00:00Z",
    },
    "createdTime": "2026-12-02T04:00:00Z",
}


def test_every_part_of_the_record_is_a_tag() -> None:
    tags = version_tags("team-a", ModelVersionSpec.model_validate(SPEC))
    assert tags == {
        "modelops.namespace": "team-a",
        "modelops.manifestDigest": "sha256:" + "ab" * 32,
        "modelops.source.kind": "UnlearnRequest",
        "modelops.source.name": "forget-42",
        "modelops.source.uid": "u-9",
        "modelops.source.method": "ssd",
        "modelops.createdTime": "2026-12-02T04:00:00+00:00",
        "modelops.parent.0.role": "base",
        "modelops.parent.0.uri": "s3://models/chat/v1",
        "modelops.parent.0.digest": "sha256:01",
        "modelops.parent.0.version": "chat-1",
        "modelops.parent.1.role": "adapter",
        "modelops.parent.1.uri": "pvc://claim/adapter",
        "modelops.dataset.0.role": "forget",
        "modelops.dataset.0.uri": "s3://data/forget.jsonl",
        "modelops.dataset.0.digest": "d1",
        "modelops.parents": json.dumps(
            [
                {
                    "role": "base",
                    "uri": "s3://models/chat/v1",
                    "digest": "sha256:01",
                    "version": "chat-1",
                },
                {"role": "adapter", "uri": "pvc://claim/adapter"},
            ]
        ),
        "modelops.datasets": json.dumps(
            [{"role": "forget", "uri": "s3://data/forget.jsonl", "digest": "d1"}]
        ),
        "modelops.metric.forgetAccuracy": "0.1",
        "modelops.metric.retainAccuracy": "0.95",
        "modelops.deletion.request": "forget-42",
        "modelops.deletion.deletedSamples": "7",
    }
    assert all(isinstance(v, str) for v in tags.values())


def test_the_gate_verdict_is_tagged_when_given() -> None:
    evaluation = Evaluation.model_validate(
        {
            "passed": False,
            "baselineVersion": "chat-1",
            "dataUri": "s3://data/heldout.jsonl",
            "time": "2026-12-02T04:05:00Z",
            "checks": [
                {
                    "metric": "perplexity",
                    "comparison": "LessOrEqual",
                    "candidate": 13.0,
                    "baseline": 12.0,
                    "limit": 12.24,
                    "passed": False,
                },
                {"metric": "taskScore", "comparison": "GreaterOrEqual", "passed": False},
            ],
        }
    )
    spec = ModelVersionSpec.model_validate(
        {**SPEC, "parents": [], "datasets": [], "deletion": None}
    )
    tags = version_tags("ns", spec, evaluation)
    assert {k: v for k, v in tags.items() if k.startswith("modelops.gate.")} == {
        "modelops.gate.passed": "false",
        "modelops.gate.baselineVersion": "chat-1",
        "modelops.gate.dataUri": "s3://data/heldout.jsonl",
        "modelops.gate.perplexity": "13.0",
        "modelops.gate.perplexity.baseline": "12.0",
    }
    assert "modelops.parents" not in tags and "modelops.deletion.request" not in tags
