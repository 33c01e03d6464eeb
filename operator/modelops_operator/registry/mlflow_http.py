"""One call to an MLflow tracking server's REST API, and what its failures mean.

The registry client (`mlflow.py`) speaks MLflow's documented REST API 2.0 over urllib,
so the operator needs no mlflow package. This module is the transport: it builds the
endpoint URL under the configured base URL (which may carry a path prefix, e.g. a
server started with `--static-prefix /mlflow` or behind a reverse proxy), sends JSON
with an optional bearer token, follows no redirect (credentials never go to another
host), reads a bounded body within a timeout, and maps every failure to a
RegistryError with a reason:

- RegistryUnreachable: no answer (refused, reset, DNS, TLS, timeout);
- RegistryRefused: a 4xx, with MLflow's `error_code` (RESOURCE_DOES_NOT_EXIST, ...);
- RegistryError: a 5xx;
- RegistryBadResponse: a redirect, an oversized or non-JSON body.

Messages are bounded and never carry the token (redacted before they are cut).
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
    """Where the server is and how to authenticate; `call` sends one request."""

    url: str
    token: str | None = None
    token_file: str | None = None
    """A mounted Secret file holding the bearer token, read on every call (rotation)."""
    timeout: float = 10.0
    ca_file: str | None = None
    """A PEM CA bundle (a mounted Secret) that https:// servers are verified against,
    instead of the system's."""

    def call(self, method: str, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send `payload` (query string for GET, JSON body otherwise) to `endpoint`
        (e.g. "registered-models/create"); the decoded JSON object, or RegistryError."""
        token = self._token()
        try:
            status, body = self._send(method, endpoint, payload, token)
        except RegistryError:
            raise
        except Exception as exc:  # URLError, OSError, TimeoutError, ssl errors, ...
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise self._error(
                "RegistryUnreachable",
                f"MLflow unreachable at {self.url}: {str(reason)[:MAX_FIELD]}",
                token,
            ) from None
        return self._decode(status, body, endpoint, token)

    def _token(self) -> str | None:
        if self.token_file is None:
            return self.token
        try:
            value = Path(self.token_file).read_text().strip()
        except OSError as exc:
            raise RegistryError(
                "RegistryTokenUnreadable",
                f"cannot read the MLflow token file {self.token_file}: {exc.strerror}",
            ) from None
        return value or None

    def _send(
        self, method: str, endpoint: str, payload: dict[str, Any], token: str | None
    ) -> tuple[int, bytes]:
        full = base_url(self.url) + API_PREFIX + endpoint
        data = None
        headers = {"Accept": "application/json", "User-Agent": "modelops-operator"}
        if method == "GET":
            full += "?" + urllib.parse.urlencode(payload)
        else:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
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

    def _decode(self, status: int, body: bytes, endpoint: str, token: str | None) -> dict[str, Any]:
        what = f"MLflow {endpoint}"
        if 300 <= status < 400:
            raise self._error(
                "RegistryBadResponse", f"{what} answered HTTP {status} (a redirect, refused)", token
            )
        if len(body) > MAX_BODY:
            raise self._error("RegistryBadResponse", f"{what}: body over {MAX_BODY} bytes", token)
        try:
            doc = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (UnicodeDecodeError, ValueError):
            doc = None
        if 200 <= status < 300:
            if not isinstance(doc, dict):
                raise self._error("RegistryBadResponse", f"{what}: not a JSON object", token)
            return doc
        code, detail = _mlflow_error(doc)
        text = f"{what} answered HTTP {status}" + (f": {code}: {detail}" if code else "")
        if status == 404 and code is None:
            text += f" (no MLflow API under {self.url}: check the URL's path prefix)"
        if status == 403 and code is None and body.startswith(b"Invalid Host header"):
            text += " (MLflow's security middleware refused the host: add it to --allowed-hosts)"
        reason = "RegistryRefused" if 400 <= status < 500 else "RegistryError"
        raise self._error(reason, text, token, code)

    def _error(
        self, reason: str, message: str, token: str | None, code: str | None = None
    ) -> RegistryError:
        """The error with the token redacted from the full text first, then cut: a cut
        can never leave a prefix of the token behind."""
        if token:
            message = message.replace(token, "***")
            code = code.replace(token, "***") if code else code
        return RegistryError(reason, message[:MAX_ERROR], code[:MAX_FIELD] if code else code)


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
