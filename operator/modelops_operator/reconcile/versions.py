"""ModelVersion manifests: every published output becomes one recorded version.

A succeeded one-shot resource (PruneRetrain, UnlearnRequest, LoRATransfer) and each
succeeded ModelAdaptation run with a published artifact (a manifest digest) give one
ModelVersion, named deterministically (`build.names.version_name`), so the plan can
re-emit `EnsureModelVersion` until the resource's status records the name: creation
tolerates AlreadyExists, and the spec is never updated.

The lineage is read from the resource's spec (its models and datasets) and status
(the artifact, its dataset digests when the Job reported them, the run's numeric
results). Parent `version`s come from a mapping URI -> version name the caller knows
(the service passes the versions of the namespace); unknown URIs get none.
"""

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from modelops_api.meta import API_VERSION, GROUP, LABEL_MANAGED_BY, MANAGED_BY_VALUE
from modelops_api.model_adaptation import RunRecord
from modelops_api.model_version import MetricName, ModelVersionSpec
from modelops_api.times import iso, parse_time
from modelops_api.validation import spec_error_message
from modelops_operator.build.names import label_value, version_name
from modelops_operator.reconcile.observed import ResourceView

KIND = "ModelVersion"


class UnrecordableVersion(ValueError):
    """The output cannot be recorded as a ModelVersion (a value the model refuses, such
    as a source name longer than VersionSource.name allows): the plan reports it in a
    Warning Event instead of failing the whole reconcile."""


LABEL_SOURCE_KIND = f"{GROUP}/source-kind"
LABEL_SOURCE_NAME = f"{GROUP}/source-name"
MAX_METRICS = 64
MAX_DATASETS = 16
_METRIC_NAME: TypeAdapter[str] = TypeAdapter(MetricName)
_METHOD = {"PruneRetrain": "perp", "LoRATransfer": "translora"}


def _get(doc: Mapping[str, Any] | None, *path: str) -> Any:
    """doc[path[0]][path[1]]..., None where any step is missing or not a mapping."""
    value: Any = doc
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _parent(role: str, uri: Any, known: Mapping[str, str]) -> dict[str, Any] | None:
    if not isinstance(uri, str) or not uri:
        return None
    return {"role": role, "uri": uri, "version": known.get(uri)}


def parents(
    res: ResourceView, known: Mapping[str, str], base_uri: str | None = None
) -> list[dict[str, Any]]:
    """The models and adapters the output came from, by kind (`base_uri` overrides the
    spec's model for a ModelAdaptation run that continued an earlier run's output)."""
    spec = res.spec
    if res.kind == "LoRATransfer":
        found = [
            _parent("source", _get(spec, "sourceModel", "uri"), known),
            _parent("target", _get(spec, "targetModel", "uri"), known),
            _parent("adapter", _get(spec, "sourceAdapter", "uri"), known),
        ]
    else:
        found = [_parent("base", base_uri or _get(spec, "model", "uri"), known)]
    return [p for p in found if p is not None]


_DATASETS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "PruneRetrain": (
        ("calibration", ("pruning", "calibrationData", "uri")),
        ("train", ("retrain", "data", "uri")),
        ("eval", ("evaluation", "data", "uri")),
    ),
    "UnlearnRequest": (
        ("forget", ("samplesUri",)),
        ("forget", ("ssd", "forgetData", "uri")),
        ("retain", ("evaluation", "retainData", "uri")),
        ("eval", ("evaluation", "testData", "uri")),
    ),
    "LoRATransfer": (("eval", ("evaluationData", "uri")),),
    "ModelAdaptation": (
        ("train", ("data", "uri")),
        ("replay", ("cpt", "replayData", "uri")),
        ("eval", ("cpt", "validationOld", "uri")),
        ("eval", ("cpt", "validationNew", "uri")),
    ),
}


def datasets(res: ResourceView, artifact: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The spec's dataset URIs, with the digests the Job reported (artifact.datasets,
    read defensively: a malformed entry is skipped) where the URI matches."""
    digests: dict[str, str] = {}
    for entry in artifact.get("datasets") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("digest"), str):
            digests[str(entry.get("uri"))] = entry["digest"]
    out: list[dict[str, Any]] = []
    for role, path in _DATASETS.get(res.kind, ()):
        uri = _get(res.spec, *path)
        if isinstance(uri, str) and uri and not any(d["uri"] == uri for d in out):
            out.append({"role": role, "uri": uri, "digest": digests.get(uri)})
    return out[:MAX_DATASETS]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def metrics(results: Mapping[str, Any] | None) -> dict[str, float]:
    """The run's numeric, finite results, one level of nesting flattened ("a.b");
    booleans, text, NaN/±Inf and names a MetricName refuses are skipped."""
    flat: dict[str, float] = {}
    for key, value in (results or {}).items():
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = _number(inner)  # type: ignore[assignment]
        else:
            flat[str(key)] = _number(value)  # type: ignore[assignment]
    out: dict[str, float] = {}
    for name, number in flat.items():
        if number is not None and len(out) < MAX_METRICS and _metric_name_ok(name):
            out[name] = number
    return out


def _metric_name_ok(name: str) -> bool:
    try:
        _METRIC_NAME.validate_python(name)
    except ValidationError:
        return False
    return True


def deletion(res: ResourceView, results: Mapping[str, Any], created: datetime) -> dict[str, Any]:
    """UnlearnRequest: the request, samples forgotten (results, else the receipt) and
    when it was requested (its creationTimestamp; the completion time if unknown)."""
    samples = results.get("deletedSamples")
    if not isinstance(samples, int):
        samples = _get(res.status, "receipt", "samples")
    return {
        "request": res.name,
        "deletedSamples": samples if isinstance(samples, int) and samples >= 0 else 0,
        "requestedTime": iso(res.creation_time or created),
    }


def method_of(res: ResourceView) -> str | None:
    """The method the resource ran: perp, translora, s3t/ssd, cpt/s3t/lora."""
    if res.kind in _METHOD:
        return _METHOD[res.kind]
    key = "method" if res.kind == "UnlearnRequest" else "strategy"
    default = "s3t" if res.kind == "UnlearnRequest" else "cpt"
    value = res.spec.get(key, default)
    return value if isinstance(value, str) else None


def manifest(
    res: ResourceView,
    artifact: Mapping[str, Any],
    results: Mapping[str, Any] | None,
    created: datetime,
    known: Mapping[str, str],
    run: int | None = None,
    base_uri: str | None = None,
) -> dict[str, Any] | None:
    """The ModelVersion for an output, validated through `ModelVersionSpec`; None when
    the artifact has no URI or manifest digest (nothing was published to record)."""
    uri, digest = artifact.get("uri"), artifact.get("manifestDigest")
    if not (isinstance(uri, str) and uri and isinstance(digest, str) and digest):
        return None
    spec: dict[str, Any] = {
        "uri": uri,
        "manifestDigest": digest,
        "source": {
            "kind": res.kind,
            "name": res.name,
            "uid": res.uid,
            "run": run,
            "method": method_of(res),
        },
        "parents": parents(res, known, base_uri),
        "datasets": datasets(res, artifact),
        "metrics": metrics(results),
        "createdTime": iso(created),
    }
    if res.kind == "UnlearnRequest":
        spec["deletion"] = deletion(res, results or {}, created)
    try:
        wire = ModelVersionSpec.model_validate(spec).to_wire()
    except ValidationError as exc:
        raise UnrecordableVersion(
            f"no ModelVersion recorded for {res.kind} {res.name}: {spec_error_message(exc)}"
        ) from exc
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": version_name(res.name, digest),
            "namespace": res.namespace,
            "labels": {
                LABEL_MANAGED_BY: MANAGED_BY_VALUE,
                LABEL_SOURCE_KIND: res.kind,
                LABEL_SOURCE_NAME: label_value(res.name),
            },
        },
        "spec": wire,
    }


def oneshot_version(
    res: ResourceView, known: Mapping[str, str], now: datetime
) -> dict[str, Any] | None:
    """A succeeded one-shot resource's version (None when it published nothing)."""
    status = res.status
    if status.get("phase") != "Succeeded" or not isinstance(status.get("artifact"), Mapping):
        return None
    created = parse_time(status.get("completionTime")) or now
    return manifest(res, status["artifact"], status.get("results"), created, known)


def run_version(
    res: ResourceView, record: RunRecord, records: tuple[RunRecord, ...], known: Mapping[str, str]
) -> dict[str, Any] | None:
    """A succeeded ModelAdaptation run's version. Its base: strategy lora trains an
    adapter on spec.model; otherwise the run continued the newest earlier successful
    run's output (as `runs.start_run` chose it), else spec.model."""
    results = dict(record.results or {})
    artifact = results.pop("artifact", None)
    if record.phase != "Succeeded" or not isinstance(artifact, Mapping):
        return None
    base = None if res.spec.get("strategy") == "lora" else earlier_output(records, record.run)
    created = record.completion_time or record.start_time
    if created is None:
        return None
    return manifest(res, artifact, results, created, known, record.run, base)


def earlier_output(records: tuple[RunRecord, ...], run: int) -> str | None:
    """The output URI of the newest successful run before `run`, if still recorded."""
    for r in sorted(records, key=lambda r: -r.run):
        uri = _get(r.results, "artifact", "uri")
        if r.run < run and r.phase == "Succeeded" and isinstance(uri, str):
            return uri
    return None
