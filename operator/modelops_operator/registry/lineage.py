"""The registry tags of a ModelVersion: its lineage, digests and metrics as strings.

MLflow tags are flat string pairs, so the version's record is spelled out here once,
for whoever builds a RegisterVersion action: the namespace and the resource (and run)
that published it, the manifest digest, every parent and dataset with its digest
(one tag each, and the full lists as JSON), the run's metrics and the gate's scores.
The client adds `modelops.version` and `modelops.uri` itself (`mlflow.py`). Pure: data
in, data out; values longer than MLflow's limit are cut by the client, not here.
"""

from __future__ import annotations

import json

from modelops_api.model_version import Evaluation, ModelVersionSpec

PREFIX = "modelops."


def _number(value: float) -> str:
    """A metric as MLflow shows it: repr keeps every digit, no exponent surprises."""
    return repr(float(value))


def version_tags(
    namespace: str, spec: ModelVersionSpec, evaluation: Evaluation | None = None
) -> dict[str, str]:
    """Every tag of the registry version recording `spec` (in `namespace`)."""
    source = spec.source
    tags = {
        "modelops.namespace": namespace,
        "modelops.manifestDigest": spec.manifest_digest,
        "modelops.source.kind": source.kind,
        "modelops.source.name": source.name,
        "modelops.source.uid": source.uid,
        "modelops.createdTime": spec.created_time.isoformat(),
    }
    if source.run is not None:
        tags["modelops.source.run"] = str(source.run)
    if source.method:
        tags["modelops.source.method"] = source.method
    for i, parent in enumerate(spec.parents):
        key = f"modelops.parent.{i}"
        tags[f"{key}.role"], tags[f"{key}.uri"] = parent.role, parent.uri
        if parent.digest:
            tags[f"{key}.digest"] = parent.digest
        if parent.version:
            tags[f"{key}.version"] = parent.version
    for i, dataset in enumerate(spec.datasets):
        key = f"modelops.dataset.{i}"
        tags[f"{key}.role"], tags[f"{key}.uri"] = dataset.role, dataset.uri
        if dataset.digest:
            tags[f"{key}.digest"] = dataset.digest
    if spec.parents:
        tags["modelops.parents"] = json.dumps(
            [p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in spec.parents]
        )
    if spec.datasets:
        tags["modelops.datasets"] = json.dumps(
            [d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in spec.datasets]
        )
    for name, value in sorted(spec.metrics.items()):
        tags[f"modelops.metric.{name}"] = _number(value)
    if spec.deletion is not None:
        tags["modelops.deletion.request"] = spec.deletion.request
        tags["modelops.deletion.deletedSamples"] = str(spec.deletion.deleted_samples)
    if evaluation is not None:
        tags.update(evaluation_tags(evaluation))
    return tags


def evaluation_tags(evaluation: Evaluation) -> dict[str, str]:
    """The gate's verdict: passed, the baseline version, each checked metric's value."""
    tags = {"modelops.gate.passed": str(evaluation.passed).lower()}
    if evaluation.baseline_version:
        tags["modelops.gate.baselineVersion"] = evaluation.baseline_version
    if evaluation.data_uri:
        tags["modelops.gate.dataUri"] = evaluation.data_uri
    for check in evaluation.checks:
        if check.candidate is not None:
            tags[f"modelops.gate.{check.metric}"] = _number(check.candidate)
        if check.baseline is not None:
            tags[f"modelops.gate.{check.metric}.baseline"] = _number(check.baseline)
    return tags
