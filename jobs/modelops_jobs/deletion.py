"""What every UnlearnRequest method shares: the request's sample IDs and their digest.

Why a module of its own: S3T deactivation (algorithms/unlearn_s3t.py) and SSD
(algorithms/unlearn_ssd.py) read, check and deduplicate the IDs the same way, and a
receipt names them the same way (the sha256 digest of their sorted hashed forms), so
the two methods stay independent of each other.
"""

import hashlib
import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from modelops_api.unlearn_request import SampleID, UnlearnRequestSpec
from modelops_jobs.context import RunContext
from modelops_jobs.errors import PermanentError

SAMPLE_ID = TypeAdapter(SampleID)


def requested_ids(spec: UnlearnRequestSpec, ctx: RunContext) -> list[str]:
    """The request's IDs (inline or one per line / JSONL 'id'), checked, deduplicated."""
    if spec.sample_ids is not None:
        raw: list[tuple[str, Any]] = [(f"sampleIds[{i}]", x) for i, x in enumerate(spec.sample_ids)]
    else:
        text = ctx.resolve(str(spec.samples_uri)).read_text(encoding="utf-8")
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        raw = [(f"{spec.samples_uri}:{n}", _line_id(line, n)) for n, line in lines]
    ids: dict[str, None] = {}
    for where, value in raw:
        ids[_check_id(where, value)] = None
        if len(ids) > spec.max_samples:
            raise PermanentError(f"more than maxSamples={spec.max_samples} IDs", "TooManySamples")
    if not ids:
        raise PermanentError("the request names no sample IDs", "NoSampleIDs")
    return list(ids)


def _line_id(line: str, lineno: int) -> Any:
    if not line.startswith("{"):
        return line
    try:
        return json.loads(line).get("id")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise PermanentError(
            f"line {lineno}: not a JSON object with 'id'", "InvalidSampleID"
        ) from exc


def _check_id(where: str, value: Any) -> str:
    try:
        return str(SAMPLE_ID.validate_python(value))
    except ValidationError as exc:
        raise PermanentError(
            f"{where}: {value!r} is not a sample ID (letters, digits and ._:/-, at most 128)",
            "InvalidSampleID",
        ) from exc


def ids_digest(hashed: list[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(sorted(hashed)).encode()).hexdigest()
