"""One call to an MLflow tracking server's REST API, and what its failures mean.

The registry client (`mlflow.py`) speaks MLflow's documented REST API 2.0 over urllib,
so the operator needs no mlflow package. This module is the transport: it builds the
endpoint URL under the configured base URL (which may carry a path prefix, e.g. a
server started with `--static-prefix /mlflow` or behind a reverse proxy), sends JSON
with optional credentials, follows no redirect (credentials never go to another
host), reads a bounded body within a timeout, and maps every failure to a
RegistryError with a reason:

- RegistryUnreachable: no answer (refused, reset, DNS, TLS, timeout);
- RegistryRefused: a 4xx, with MLflow's `error_code` (RESOURCE_DOES_NOT_EXIST, ...);
- RegistryError: a 5xx;
- RegistryBadResponse: a redirect, an oversized or non-JSON body.

Credentials are either a bearer token (a token, or a mounted Secret file) or HTTP basic
auth from a username and a password file (MLflow's own `--app-name basic-auth`); never
both, since a request has one Authorization header. Files are read on every call, so a
rotated Secret is used without a restart; one that cannot be read is
RegistryTokenUnreadable or RegistryCredentialsUnreadable, naming the file, never its
content. What was read becomes a `Credentials` (`modelops_operator/credentials.py`, as a
drift query's do): the one place that builds the Authorization header and lists the
secrets (token; username, password and base64 value) every message is redacted of
before it is cut, so a cut never leaves a prefix of a secret behind.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelops_operator.credentials import Credentials

API_PREFIX = "/api/2.0/mlflow/"
MAX_BODY = 4 << 20
MAX_ERROR = 1024
MAX_FIELD = 300


class RegistryError(Exception):
    """A registry call failed: `reason` (RegistryUnreachable, RegistryRefused, ...);
    `error_code` is MLflow's own code for a refusal (e.g. RESOURCE_DOES_NOT_EXIST)."""

    def __init__(self, reason: str, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.error_code = error_code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: the 3xx surfaces as an HTTPError naming its status."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _read_secret(path: str, reason: str, what: str, *, required: bool = True) -> str:
    """A mounted Secret file's content without its final line break (`echo` and
    `--from-file` leave one); RegistryError(reason) naming the file, never its content,
    if it cannot be read, or is empty while `required`."""
    try:
        value = Path(path).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise RegistryError(reason, f"cannot read the MLflow {what} file {path}: {why}") from None
    if required and not value:
        raise RegistryError(reason, f"the MLflow {what} file {path} is empty")
    return value


def base_url(url: str) -> str:
    """The server's base URL without a trailing '/'; ValueError unless it is an http(s)
    URL without user info, query or fragment (a path prefix is allowed)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the MLflow URL must be an http(s) URL with a host")
    if parts.query or parts.fragment or "#" in url or "?" in url or "@" in parts.netloc:
        raise ValueError("the MLflow URL must not contain user info, a query or a fragment")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class Transport:
    """Where the server is and how to authenticate (a token, a token file, or a username
    and a password file; ValueError for a token and basic auth together); `call` sends
    one request."""

    url: str
    token: str | None = None
    token_file: str | None = None
    """A mounted Secret file holding the bearer token, read on every call (rotation)."""
    timeout: float = 10.0
    ca_file: str | None = None
    """A PEM CA bundle (a mounted Secret) that https:// servers are verified against,
    instead of the system's."""
    username_file: str | None = None
    password_file: str | None = None
    """Mounted Secret files for HTTP basic auth, both read on every call (rotation)."""

    def __post_init__(self) -> None:
        basic = (self.username_file, self.password_file)
        if (self.token or self.token_file) and any(basic):
            raise ValueError(
                "the MLflow bearer token (MODELOPS_MLFLOW_TOKEN_FILE) and basic auth"
                " (MODELOPS_MLFLOW_USERNAME_FILE, MODELOPS_MLFLOW_PASSWORD_FILE) are"
                " exclusive: configure one"
            )
        if any(basic) and not all(basic):
            raise ValueError(
                "MLflow basic auth needs both MODELOPS_MLFLOW_USERNAME_FILE and"
                " MODELOPS_MLFLOW_PASSWORD_FILE"
            )

    def call(self, method: str, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send `payload` (query string for GET, JSON body otherwise) to `endpoint`
        (e.g. "registered-models/create"); the decoded JSON object, or RegistryError."""
        auth = self.credentials()
        try:
            status, body = self._send(method, endpoint, payload, auth.authorization())
        except RegistryError:
            raise
        except Exception as exc:  # URLError, OSError, TimeoutError, ssl errors, ...
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise self._error(
                "RegistryUnreachable",
                f"MLflow unreachable at {self.url}: {str(reason)[:MAX_FIELD]}",
                auth,
            ) from None
        return self._decode(status, body, endpoint, auth)

    def credentials(self) -> Credentials:
        """This call's credentials, the files read now (a rotated Secret is used)."""
        if self.username_file and self.password_file:
            reason = "RegistryCredentialsUnreadable"
            username = _read_secret(self.username_file, reason, "username")
            if ":" in username:  # RFC 7617: the first ':' ends the username
                raise RegistryError(
                    reason, f"the MLflow username in {self.username_file} has a ':'"
                )
            password = _read_secret(self.password_file, reason, "password")
            return Credentials(username=username, password=password)
        token = self.token
        if self.token_file is not None:
            token = _read_secret(
                self.token_file, "RegistryTokenUnreadable", "token", required=False
            )
        return Credentials(bearer_token=token.strip() if token else None)  # empty: no header

    def _send(
        self, method: str, endpoint: str, payload: dict[str, Any], authorization: str | None
    ) -> tuple[int, bytes]:
        full = base_url(self.url) + API_PREFIX + endpoint
        data = None
        headers = {"Accept": "application/json", "User-Agent": "modelops-operator"}
        if method == "GET":
            full += "?" + urllib.parse.urlencode(payload)
        else:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        if authorization:
            headers["Authorization"] = authorization
        request = urllib.request.Request(full, data=data, method=method, headers=headers)
        handlers: list[Any] = [_NoRedirect()]
        if full.startswith("https://"):
            handlers.append(urllib.request.HTTPSHandler(context=self._tls()))
        opener = urllib.request.build_opener(*handlers)
        deadline = time.monotonic() + self.timeout
        try:
            with opener.open(request, timeout=self.timeout) as resp:
                return int(resp.status), _read(resp, deadline)
        except urllib.error.HTTPError as exc:
            try:
                body = _read(exc, deadline)
            except Exception:
                body = b""
            finally:
                exc.close()
            return int(exc.code), body

    def _tls(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except OSError as exc:  # ssl.SSLError is one: not PEM, no certificate in it
            raise RegistryError(
                "RegistryCAUnreadable",
                f"cannot load the MLflow CA bundle {self.ca_file}: {str(exc)[:MAX_FIELD]}",
            ) from None

    def _decode(self, status: int, body: bytes, endpoint: str, auth: Credentials) -> dict[str, Any]:
        what = f"MLflow {endpoint}"
        if 300 <= status < 400:
            raise self._error(
                "RegistryBadResponse", f"{what} answered HTTP {status} (a redirect, refused)", auth
            )
        if len(body) > MAX_BODY:
            raise self._error("RegistryBadResponse", f"{what}: body over {MAX_BODY} bytes", auth)
        try:
            doc = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (UnicodeDecodeError, ValueError):
            doc = None
        if 200 <= status < 300:
            if not isinstance(doc, dict):
                raise self._error("RegistryBadResponse", f"{what}: not a JSON object", auth)
            return doc
        code, detail = _mlflow_error(doc)
        text = f"{what} answered HTTP {status}" + (f": {code}: {detail}" if code else "")
        if status == 404 and code is None:
            text += f" (no MLflow API under {self.url}: check the URL's path prefix)"
        if status == 401:
            text += " (credentials missing or refused: check the token or basic-auth Secret)"
        if status == 403 and code is None and body.startswith(b"Invalid Host header"):
            text += " (MLflow's security middleware refused the host: add it to --allowed-hosts)"
        reason = "RegistryRefused" if 400 <= status < 500 else "RegistryError"
        raise self._error(reason, text, auth, code)

    def _error(
        self, reason: str, message: str, auth: Credentials, code: str | None = None
    ) -> RegistryError:
        """The error with the secrets redacted from the full text first, then cut: a cut
        can never leave a prefix of a secret behind."""
        message = auth.redact(message)
        code = auth.redact(code)[:MAX_FIELD] if code else code
        return RegistryError(reason, message[:MAX_ERROR], code)


def _read(resp: Any, deadline: float) -> bytes:
    """At most MAX_BODY + 1 bytes of the body, all of it before `deadline` (a server that
    trickles its answer is as good as none: TimeoutError, i.e. RegistryUnreachable)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY:
        chunk = resp.read1(min(64 << 10, MAX_BODY + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError("the answer took longer than the timeout")
    return b"".join(chunks)


def _mlflow_error(doc: Any) -> tuple[str | None, str]:
    """(error_code, message) of an MLflow error body; (None, '') if it is not one.
    Uncut: the caller redacts before it cuts."""
    if isinstance(doc, dict) and isinstance(doc.get("error_code"), str):
        message = doc.get("message")
        return doc["error_code"], message if isinstance(message, str) else ""
    return None, ""
