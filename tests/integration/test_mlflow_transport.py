"""The registry client against a registry that misbehaves as MLflow itself never does:
a redirect (never followed), a 5xx, a body that is not JSON or too large, MLflow's
host-check refusal, a refusal that echoes the bearer token (redacted before the message
is cut), and the token file read on each call. A stdlib HTTP server on 127.0.0.1 plays
the broken registry; the real `mlflow server` cases are test_mlflow_registry.py."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelops_operator.registry.mlflow import MlflowRegistry, RegistryError

# -- a broken registry (a stdlib server plays one) ----------------------------------

TOKEN = "s3cr3t-token-" + uuid.uuid4().hex


class Broken(BaseHTTPRequestHandler):
    """Answers every request as its first path segment says (redirect, 5xx, junk, host,
    huge, echo, echo-padded)."""

    def do_GET(self) -> None:
        mode = self.path.split("/")[1]
        if mode == "redirect":
            self._send(302, b"", {"Location": "http://198.51.100.1/steal"})
        elif mode == "5xx":
            self._send(503, json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE"}).encode())
        elif mode == "junk":
            self._send(200, b"<html>not json</html>")
        elif mode == "ok":  # an empty search result
            self._send(200, b"{}")
        elif mode == "host":  # what MLflow 3.5+ answers a Host outside --allowed-hosts
            self._send(403, b"Invalid Host header - possible DNS rebinding attack detected")
        elif mode == "trickle":  # one byte at a time, each well within the timeout
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)
        elif mode == "huge":
            self._send(200, b"{" + b" " * (5 << 20) + b"}")
        else:  # echo, echo-padded: a refusal that repeats the Authorization header
            auth = self.headers.get("Authorization", "")
            pad = "." * 1000 if mode == "echo-padded" else ""  # the token where cuts fall
            body = {"error_code": "PERMISSION_DENIED", "message": f"{pad}bad credentials {auth}"}
            self._send(403, json.dumps(body).encode())

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def broken() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("mode", "reason", "says"),
    [
        ("redirect", "RegistryBadResponse", "redirect"),
        ("5xx", "RegistryError", "TEMPORARILY_UNAVAILABLE"),
        ("junk", "RegistryBadResponse", "not a JSON object"),
        ("huge", "RegistryBadResponse", "bytes"),
        ("host", "RegistryRefused", "add it to --allowed-hosts"),
        ("echo", "RegistryRefused", "PERMISSION_DENIED"),
        ("echo-padded", "RegistryRefused", "PERMISSION_DENIED"),
    ],
    ids=[
        "redirect-not-followed",
        "server-error",
        "not-json",
        "oversized-body",
        "host-not-allowed",
        "echoed-token",
        "echoed-token-where-the-message-is-cut",
    ],
)
def test_a_broken_registry_is_a_clear_error_that_never_shows_the_token(
    broken: str, mode: str, reason: str, says: str
) -> None:
    registry = MlflowRegistry(f"{broken}/{mode}", token=TOKEN)
    with pytest.raises(RegistryError) as caught:
        registry.find_version("m", "v1")
    assert caught.value.reason == reason
    assert says in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN[:12] not in str(caught.value)


def test_a_trickled_answer_is_unreachable_within_the_timeout(broken: str) -> None:
    registry = MlflowRegistry(f"{broken}/trickle", timeout=0.5)
    began = time.monotonic()
    with pytest.raises(RegistryError) as caught:
        registry.find_version("m", "v1")
    assert caught.value.reason == "RegistryUnreachable"
    assert time.monotonic() - began < 2.0


def test_the_token_file_is_read_on_each_call(broken: str, tmp_path: Any) -> None:
    token_file = tmp_path / "token"
    registry = MlflowRegistry(f"{broken}/echo", token_file=str(token_file))
    with pytest.raises(RegistryError) as caught:
        registry.find_version("m", "v1")
    assert caught.value.reason == "RegistryTokenUnreadable"
    token_file.write_text("first-" + TOKEN)
    with pytest.raises(RegistryError) as caught:
        registry.find_version("m", "v1")
    assert caught.value.reason == "RegistryRefused" and "***" in str(caught.value)
    assert TOKEN not in str(caught.value)


# -- https: the system CA bundle, or the installation's own ---------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The broken registry over TLS, with a certificate for IP 127.0.0.1 signed by
    itself (a private CA, openssl); (its https URL, the CA file)."""
    where = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=mlflow",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_https_with_the_installations_ca_works(tls: tuple[str, Path]) -> None:
    url, ca = tls
    assert MlflowRegistry(f"{url}/ok", ca_file=str(ca)).find_version("m", "v1") is None


@pytest.mark.parametrize(
    ("host", "ca", "reason", "says"),
    [
        ("127.0.0.1", None, "RegistryUnreachable", "CERTIFICATE_VERIFY_FAILED"),
        ("localhost", "ca", "RegistryUnreachable", "CERTIFICATE_VERIFY_FAILED"),
        ("127.0.0.1", "garbage", "RegistryCAUnreadable", "cannot load the MLflow CA bundle"),
        ("127.0.0.1", "missing", "RegistryCAUnreadable", "cannot load the MLflow CA bundle"),
    ],
    ids=["system-cas-only", "name-not-in-certificate", "ca-not-pem", "ca-file-missing"],
)
def test_https_that_cannot_be_verified_is_refused_with_a_reason(
    tls: tuple[str, Path], tmp_path: Path, host: str, ca: str | None, reason: str, says: str
) -> None:
    url, real_ca = tls
    files = {
        "ca": str(real_ca),
        "garbage": str(tmp_path / "junk.pem"),
        "missing": str(tmp_path / "none"),
    }
    (tmp_path / "junk.pem").write_text("not a certificate")
    registry = MlflowRegistry(
        url.replace("127.0.0.1", host) + "/ok", ca_file=files[ca] if ca else None
    )
    with pytest.raises(RegistryError) as caught:
        registry.find_version("m", "v1")
    assert caught.value.reason == reason
    assert says in str(caught.value)
