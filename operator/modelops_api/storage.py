"""Storage URIs: where models, adapters and data live.

Five schemes, one validator. `pvc://claim/path` (a PersistentVolumeClaim mounted into
the Job pod), `file:///abs/path` (local runs and tests), `hf://org/name[@revision]`
(a Hugging Face repository, resolved offline from a cache volume), and the object
stores `s3://bucket/key` (AWS S3 or any S3-compatible store) and `gs://bucket/key`. Paths are normalised and may not escape their root: no `..`
segments, no empty segments, no backslashes.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

Scheme = Literal["pvc", "file", "hf", "s3", "gs"]
SCHEMES: tuple[Scheme, ...] = ("pvc", "file", "hf", "s3", "gs")
OBJECT_STORE_SCHEMES = ("s3", "gs")
"""Schemes without a filesystem: no rename, no lock (see modelops_jobs.objectstore)."""
S3T_NEEDS_FILESYSTEM = (
    "an S3T model store needs a filesystem (an exclusive lock and an atomic rename of "
    "CURRENT): use pvc:// or file://, not an object store (s3://, gs://)"
)

# The schema-level pattern (checked by the API server) mirrors parse_uri below.
# One path segment that is not "." or ".." (RE2 has no look-ahead, so spelt out).
_SEGMENT = r"([^/\\.][^/\\]*|\.[^/\\.][^/\\]*|\.\.[^/\\]+)"
# One segment of a Hugging Face revision (branch, tag or commit; branches may hold '/').
_REV_SEGMENT = r"([A-Za-z0-9_-][A-Za-z0-9._-]*|\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.[A-Za-z0-9._-]+)"
URI_PATTERN = (
    rf"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/{_SEGMENT})*/?"
    rf"|file:///({_SEGMENT}(/{_SEGMENT})*)?/?"
    r"|hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
    rf"(@{_REV_SEGMENT}(/{_REV_SEGMENT})*)?"
    rf"|s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9](/{_SEGMENT})*/?"
    rf"|gs://[a-z0-9][a-z0-9._-]{{1,61}}[a-z0-9](/{_SEGMENT})*/?)$"
)
URI_MAX_LENGTH = 1024
URI_FORMS = (
    "pvc://claim/path, file:///path, hf://org/name[@rev], s3://bucket/key or gs://bucket/key"
)
# The API server checks the pattern in a CEL rule rather than a schema `pattern`, so a
# refusal names the accepted forms instead of printing the regular expression.
URI_RULE = {"rule": f"self.matches(r'{URI_PATTERN}')", "message": f"expected {URI_FORMS}"}
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_REVISION = re.compile(rf"^{_REV_SEGMENT}(/{_REV_SEGMENT})*$")


@dataclass(frozen=True)
class ParsedURI:
    """A storage URI split into scheme, authority (claim, bucket, org/name) and path."""

    scheme: Scheme
    authority: str
    path: str
    revision: str | None = None

    def join(self, *parts: str) -> str:
        """A child URI: the same location with more path segments."""
        extra = "/".join(p.strip("/") for p in parts if p.strip("/"))
        base = self.path.rstrip("/")
        path = f"{base}/{extra}" if base else extra
        if self.scheme == "file":
            return f"file:///{path.lstrip('/')}"
        return f"{self.scheme}://{self.authority}/{path}".rstrip("/")


def _check_segments(uri: str, path: str) -> None:
    for segment in path.split("/"):
        if segment in ("..", "."):
            raise ValueError(f"storage URI {uri!r} must not contain '.' or '..' segments")
    if "\\" in path:
        raise ValueError(f"storage URI {uri!r} must not contain backslashes")
    if "//" in path.strip("/"):
        raise ValueError(f"storage URI {uri!r} must not contain empty path segments")


def parse_uri(uri: str) -> ParsedURI:
    """Parse and validate a storage URI, or raise ValueError saying what is wrong."""
    if len(uri) > URI_MAX_LENGTH:
        raise ValueError(f"storage URI is longer than {URI_MAX_LENGTH} characters")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(
            f"storage URI {uri!r} must start with one of " + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"file URI {uri!r} must be absolute: file:///path")
        _check_segments(uri, rest)
        return ParsedURI("file", "", rest.rstrip("/") or "/")
    authority, _, path = rest.partition("/")
    _check_segments(uri, path)
    if scheme == "pvc":
        if not _CLAIM.match(authority):
            raise ValueError(f"pvc URI {uri!r}: {authority!r} is not a valid claim name")
        return ParsedURI("pvc", authority, path.strip("/"))
    if scheme == "s3":
        if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", authority):
            raise ValueError(f"s3 URI {uri!r}: {authority!r} is not a valid bucket name")
        return ParsedURI("s3", authority, path.strip("/"))
    if scheme == "gs":
        if not re.match(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", authority):
            raise ValueError(f"gs URI {uri!r}: {authority!r} is not a valid bucket name")
        return ParsedURI("gs", authority, path.strip("/"))
    # hf://org/name[@revision]
    repo, _, revision = rest.partition("@")
    if not _HF.match(repo):
        raise ValueError(f"hf URI {uri!r} must be hf://org/name[@revision]")
    if "@" in rest and not _REVISION.match(revision):
        raise ValueError(
            f"hf URI {uri!r}: the revision must be a branch, tag or commit "
            "(letters, digits, '.', '_', '-', '/'; no '.' or '..' segments)"
        )
    org, _, name = repo.partition("/")
    return ParsedURI("hf", org, name, revision or None)


def _validated(uri: str) -> str:
    parse_uri(uri)
    return uri


StorageURI = Annotated[
    str,
    Field(
        max_length=URI_MAX_LENGTH,
        description=f"A storage URI: {URI_FORMS}.",
        # The API server checks the pattern (in a CEL rule with a readable message);
        # pydantic checks parse_uri (the same rules, tested against each other).
        json_schema_extra={"x-kubernetes-validations": [URI_RULE]},
    ),
    AfterValidator(_validated),
]
