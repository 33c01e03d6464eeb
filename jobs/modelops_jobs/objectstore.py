"""Object stores (s3://, gs://): connections, listing, and the error contract.

Why a module of its own: every byte that goes to or comes from an object store passes
through one client (obstore, the Rust `object_store` crate: it paginates listings,
streams bodies, uploads large files in parts and retries transient errors), and every
failure of that client becomes the Job contract's PermanentError or RetryableError
here, once. Downloads and uploads built on it live in `transfer.py`.

Credentials come from the environment the Job builder fills from the resource's
storage Secret (`valueFrom.secretKeyRef`): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION for S3 (and S3-compatible stores);
GOOGLE_SERVICE_ACCOUNT_KEY (the JSON) for GCS. With none of them set the client uses
workload identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, instance metadata, GKE
metadata). Secret values never appear in an error message: they are redacted.
"""

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from modelops_api.storage import OBJECT_STORE_SCHEMES, parse_uri
from modelops_jobs.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    from obstore.store import ClientConfig, GCSConfig, S3Config

SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
)
PART_SIZE_ENV = "MODELOPS_UPLOAD_PART_SIZE"
DEFAULT_PART_SIZE = 16 * 1024 * 1024
"""With 4 files and 4 parts in flight, an upload holds at most 256 MiB in memory."""


@dataclass(frozen=True)
class Location:
    """An object-store URI split into scheme, bucket and key prefix (no slashes around)."""

    scheme: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}".rstrip("/")

    def child(self, name: str) -> str:
        """The key of an object under this prefix."""
        return f"{self.key}/{name}" if self.key else name


def is_remote(uri: str) -> bool:
    return uri.split("://", 1)[0] in OBJECT_STORE_SCHEMES


def location(uri: str) -> Location:
    try:
        parsed = parse_uri(uri)
    except ValueError as exc:
        raise PermanentError(str(exc), "InvalidURI") from exc
    if parsed.scheme not in OBJECT_STORE_SCHEMES:
        raise PermanentError(f"{uri} is not an object-store URI", "InvalidURI")
    return Location(parsed.scheme, parsed.authority, parsed.path.strip("/"))


def part_size() -> int:
    """Bytes per part of a multipart upload (S3's minimum part is 5 MiB)."""
    value = int(os.environ.get(PART_SIZE_ENV, DEFAULT_PART_SIZE))
    return max(value, 5 * 1024 * 1024)


def open_store(loc: Location) -> Any:
    """An obstore store for the bucket, configured from the environment."""
    with errors(loc):
        if loc.scheme == "s3":
            return _s3_store(loc.bucket)
        return _gcs_store(loc.bucket)


def _s3_store(bucket: str) -> Any:
    from obstore.store import S3Store

    env = os.environ
    config: dict[str, Any] = {}
    for key, name in (
        ("access_key_id", "AWS_ACCESS_KEY_ID"),
        ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        ("session_token", "AWS_SESSION_TOKEN"),
        ("endpoint", "AWS_ENDPOINT_URL"),
    ):
        if env.get(name):
            config[key] = env[name]
    config["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    client: dict[str, Any] = {"timeout": "300s", "connect_timeout": "10s"}
    if config.get("endpoint", "").startswith("http://"):
        client["allow_http"] = True
    if "endpoint" in config:  # S3-compatible stores: path-style requests
        config["virtual_hosted_style_request"] = False
    return S3Store(
        bucket, config=cast("S3Config", config), client_options=cast("ClientConfig", client)
    )


def _gcs_store(bucket: str) -> Any:
    from obstore.store import GCSStore

    config: dict[str, Any] = {}
    if os.environ.get("GOOGLE_SERVICE_ACCOUNT_KEY"):
        config["service_account_key"] = os.environ["GOOGLE_SERVICE_ACCOUNT_KEY"]
    return GCSStore(bucket, config=cast("GCSConfig", config))


def redact(text: str) -> str:
    """The text with every credential value from the environment replaced by ***."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


LISTING = "listing"
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403")


@contextlib.contextmanager
def errors(loc: Location, what: str = "") -> Iterator[None]:
    """Turn the client's exceptions into the Job contract's errors, naming the bucket.

    Denied or unauthenticated: PermanentError(AccessDenied); a missing bucket:
    PermanentError(BucketNotFound); anything else (network, 5xx, throttling after the
    client's own retries): RetryableError, so the pod is retried.
    """
    import obstore.exceptions as oe

    where = f"{loc.scheme}://{loc.bucket}"
    doing = f" ({what})" if what else ""
    try:
        yield
    except (PermanentError, RetryableError):
        raise
    except (oe.PermissionDeniedError, oe.UnauthenticatedError) as exc:
        raise PermanentError(
            f"access denied to bucket {loc.bucket} ({where}){doing}: check the storage "
            f"Secret's keys: {redact(_first_line(exc))}",
            "AccessDenied",
        ) from None
    except oe.BaseError as exc:
        text = str(exc)
        if "NoSuchBucket" in text or (isinstance(exc, oe.NotFoundError) and what == LISTING):
            raise PermanentError(
                f"bucket {loc.bucket} does not exist ({where}){doing}", "BucketNotFound"
            ) from None
        if any(marker in text for marker in _DENIED):
            raise PermanentError(
                f"access denied to bucket {loc.bucket} ({where}){doing}: check the storage "
                f"Secret's keys: {redact(_first_line(exc))}",
                "AccessDenied",
            ) from None
        raise RetryableError(
            f"{where}{doing}: {redact(_first_line(exc))}", "StorageUnavailable"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if "Code>" in line or "Message>" in line:
            return line.strip()[:300]
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def list_objects(store: Any, loc: Location, prefix: str) -> list[dict[str, Any]]:
    """Every object under a key prefix (all pages), as obstore ObjectMeta dicts."""
    import obstore

    out: list[dict[str, Any]] = []
    with errors(loc, LISTING):
        for chunk in obstore.list(store, prefix=prefix or None):
            out.extend(cast("Sequence[dict[str, Any]]", chunk))
    return out


def head(store: Any, loc: Location, key: str) -> dict[str, Any] | None:
    """The object's metadata, or None when there is no such object."""
    import obstore
    import obstore.exceptions as oe

    with errors(loc, f"reading {key}"):
        try:
            return dict(obstore.head(store, key))
        except (oe.NotFoundError, FileNotFoundError):
            return None


def read_bytes(store: Any, loc: Location, key: str) -> bytes:
    import obstore

    with errors(loc, f"reading {key}"):
        return bytes(obstore.get(store, key).bytes())
