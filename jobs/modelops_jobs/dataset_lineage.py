"""The datasets a run read, with the digests of their files, for the published lineage.

Why a module of its own: every kind names its data with the same `DatasetRef`, so the
runner finds them in the validated spec once, for all kinds, instead of each algorithm
listing its own (plus the plain URI fields that name data: an UnlearnRequest's
`samplesUri`). The role is the field's path in the spec (`data`, `retrain.data`,
`pruning.calibrationData`, `evaluation.retainData`, ...). The digests go into manifest.json and into the JobResult's
`artifact.datasets`, so the operator can put them into the ModelVersion without reading
storage. A dataset's digest is the sha256 of its file, or for a directory the sha256 of
the sorted `name digest` lines of the .jsonl files in it (the files `data.iter_jsonl`
reads). A dataset that cannot be read here (an optional one the run did not need, an
unreachable store) is listed without a digest: lineage never fails a finished run.
"""

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from modelops_api.common import DatasetRef
from modelops_api.status import MAX_DATASETS, DatasetLineage
from modelops_jobs.context import RunContext
from modelops_jobs.errors import JobError
from modelops_jobs.storage import file_digest

ROLE_LIMIT = 32
URI_FIELDS = {"samples_uri": "samplesUri"}
"""Datasets named by a plain URI field rather than a DatasetRef: the forget set's IDs."""


def dataset_refs(model: Any, path: str = "") -> list[tuple[str, str]]:
    """(camelCase field path, URI) of every dataset a spec names, in field order: each
    DatasetRef, and the plain URI fields of URI_FIELDS."""
    if isinstance(model, DatasetRef):
        return [(path, str(model.uri))]
    if isinstance(model, list | tuple):
        return [ref for i, item in enumerate(model) for ref in dataset_refs(item, f"{path}[{i}]")]
    if not isinstance(model, BaseModel):
        return []
    found = []
    for name in type(model).model_fields:
        where = f"{path}.{to_camel(name)}" if path else to_camel(name)
        value = getattr(model, name)
        if name in URI_FIELDS and isinstance(value, str):
            found.append((where, value))
        else:
            found += dataset_refs(value, where)
    return found


def digest(path: Path) -> str | None:
    """sha256 of a .jsonl file or of a directory's .jsonl files; None when there is none."""
    if path.is_file():
        return file_digest(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else []
    if not files:
        return None
    lines = "".join(f"{f.name} {file_digest(f)}\n" for f in files)
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def datasets(spec: Any, ctx: RunContext) -> list[DatasetLineage]:
    """The spec's datasets (each URI once, the first role it has), at most MAX_DATASETS."""
    out: list[DatasetLineage] = []
    seen: set[str] = set()
    for role, uri in dataset_refs(spec):
        if uri in seen or len(out) >= MAX_DATASETS:
            continue
        seen.add(uri)
        out.append(DatasetLineage(role=role[-ROLE_LIMIT:], uri=uri, digest=_digest_of(uri, ctx)))
    return out


def _digest_of(uri: str, ctx: RunContext) -> str | None:
    try:
        return digest(ctx.resolve(uri, must_exist=False))
    except (JobError, OSError):
        return None
