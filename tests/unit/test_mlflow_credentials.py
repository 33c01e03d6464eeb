"""The MLflow registry client's credentials, from the installation's mounted Secret
files: the Authorization header (bearer token or basic auth) built from them on every
call, a token and basic auth together refused at start, an unreadable file a reason
naming it, and the password and its base64 value redacted from every message before it
is cut. No server: a real `mlflow server --app-name basic-auth` is
tests/integration/test_mlflow_basic_auth.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from modelops_operator.config import OperatorConfig
from modelops_operator.credentials import Credentials
from modelops_operator.registry.mlflow import MlflowRegistry, RegistryError
from modelops_operator.registry.mlflow_http import MAX_ERROR, Transport

PASSWORD = "pw-" + "Q" * 30
BASIC = base64.b64encode(f"modelops:{PASSWORD}".encode()).decode()

HEADER_CASES = [
    ("no-credentials", {}, {}, None),
    ("token", {"token": "tok"}, {}, "Bearer tok"),
    ("token-file", {"token_file": "token"}, {"token": "tok\n"}, "Bearer tok"),
    ("empty-token-file", {"token_file": "token"}, {"token": "\n"}, None),
    (
        "basic-auth-files",
        {"username_file": "username", "password_file": "password"},
        {"username": "modelops\n", "password": PASSWORD + "\n"},
        f"Basic {BASIC}",
    ),
    (
        "basic-auth-keeps-inner-spaces",
        {"username_file": "username", "password_file": "password"},
        {"username": "a b", "password": " p w "},
        "Basic " + base64.b64encode(b"a b: p w ").decode(),
    ),
]


@pytest.mark.parametrize(
    ("settings", "files", "header"),
    [c[1:] for c in HEADER_CASES],
    ids=[c[0] for c in HEADER_CASES],
)
def test_the_authorization_header_is_built_from_the_files(
    tmp_path: Path, settings: dict[str, str], files: dict[str, str], header: str | None
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    paths = {k: str(tmp_path / v) if k.endswith("_file") else v for k, v in settings.items()}
    transport = Transport("http://mlflow:5000", **paths)  # type: ignore[arg-type]
    assert transport.credentials().authorization() == header


def test_a_rotated_password_file_is_read_on_the_next_call(tmp_path: Path) -> None:
    (tmp_path / "u").write_text("modelops")
    (tmp_path / "p").write_text("old-password")
    transport = Transport(
        "http://mlflow:5000", username_file=str(tmp_path / "u"), password_file=str(tmp_path / "p")
    )
    first = transport.credentials().authorization()
    (tmp_path / "p").write_text(PASSWORD)
    assert first != transport.credentials().authorization() == f"Basic {BASIC}"


CONFLICT_CASES = [
    (
        "token-and-basic-auth",
        {
            "MODELOPS_MLFLOW_TOKEN_FILE": "/t",
            "MODELOPS_MLFLOW_USERNAME_FILE": "/u",
            "MODELOPS_MLFLOW_PASSWORD_FILE": "/p",
        },
        ["MODELOPS_MLFLOW_TOKEN_FILE", "MODELOPS_MLFLOW_USERNAME_FILE", "exclusive"],
    ),
    (
        "token-and-a-username-only",
        {"MODELOPS_MLFLOW_TOKEN_FILE": "/t", "MODELOPS_MLFLOW_USERNAME_FILE": "/u"},
        ["MODELOPS_MLFLOW_TOKEN_FILE", "MODELOPS_MLFLOW_USERNAME_FILE", "exclusive"],
    ),
    (
        "username-without-password",
        {"MODELOPS_MLFLOW_USERNAME_FILE": "/u"},
        ["MODELOPS_MLFLOW_USERNAME_FILE", "MODELOPS_MLFLOW_PASSWORD_FILE"],
    ),
    (
        "password-without-username",
        {"MODELOPS_MLFLOW_PASSWORD_FILE": "/p"},
        ["MODELOPS_MLFLOW_USERNAME_FILE", "MODELOPS_MLFLOW_PASSWORD_FILE"],
    ),
]


@pytest.mark.parametrize(
    ("env", "named"), [c[1:] for c in CONFLICT_CASES], ids=[c[0] for c in CONFLICT_CASES]
)
def test_conflicting_credentials_stop_the_operator_at_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: list[str]
) -> None:
    monkeypatch.setenv("MODELOPS_MLFLOW_URL", "http://mlflow:5000")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = OperatorConfig.from_env()
    with pytest.raises(ValueError) as caught:
        MlflowRegistry.from_config(config)
    assert all(name in str(caught.value) for name in named), str(caught.value)


def test_basic_auth_files_reach_the_registry_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "username").write_text("modelops")
    (tmp_path / "password").write_text(PASSWORD)
    monkeypatch.setenv("MODELOPS_MLFLOW_URL", "http://mlflow:5000")
    monkeypatch.setenv("MODELOPS_MLFLOW_USERNAME_FILE", str(tmp_path / "username"))
    monkeypatch.setenv("MODELOPS_MLFLOW_PASSWORD_FILE", str(tmp_path / "password"))
    config = OperatorConfig.from_env()
    assert config.mlflow_username_file == str(tmp_path / "username")
    assert config.mlflow_password_file == str(tmp_path / "password")
    registry = MlflowRegistry.from_config(config)
    assert registry is not None
    assert registry._http.credentials().authorization() == f"Basic {BASIC}"


UNREADABLE_CASES = [
    ("no-username-file", {"password": PASSWORD}, "cannot read the MLflow username file", "u"),
    ("no-password-file", {"username": "modelops"}, "cannot read the MLflow password file", "p"),
    ("empty-password", {"username": "m", "password": "\n"}, "password file", "p"),
    ("empty-username", {"username": "", "password": PASSWORD}, "username file", "u"),
    ("colon-in-username", {"username": "a:b", "password": PASSWORD}, "has a ':'", "u"),
    ("not-utf8", {"username": "m", "password": b"\xff" + PASSWORD.encode()}, "password", "p"),
]


@pytest.mark.parametrize(
    ("files", "says", "names"),
    [c[1:] for c in UNREADABLE_CASES],
    ids=[c[0] for c in UNREADABLE_CASES],
)
def test_unreadable_basic_auth_is_a_reason_naming_the_file_not_its_content(
    tmp_path: Path, files: dict[str, str | bytes], says: str, names: str
) -> None:
    paths = {"username": tmp_path / "u", "password": tmp_path / "p"}
    for name, content in files.items():
        if isinstance(content, bytes):
            paths[name].write_bytes(content)
        else:
            paths[name].write_text(content)
    registry = MlflowRegistry(
        "http://127.0.0.1:9",
        username_file=str(paths["username"]),
        password_file=str(paths["password"]),
    )
    with pytest.raises(RegistryError) as caught:
        registry.find_version("m", "v1")
    assert caught.value.reason == "RegistryCredentialsUnreadable"
    assert says in str(caught.value) and str(tmp_path / names) in str(caught.value)
    assert PASSWORD not in str(caught.value) and "a:b" not in str(caught.value)


def _password_inside_its_own_base64() -> str:
    """A (short) password that occurs in base64("u:" + password): redacting it before
    the base64 value would leave most of that value behind."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return next(
        a + b
        for a in alphabet
        for b in alphabet
        if a + b in base64.b64encode(f"u:{a}{b}".encode()).decode()
    )


REDACT_CASES = [
    ("password", "start", lambda text: text),
    ("base64", "start", lambda text: text),
    ("header", "start", lambda text: text),
    ("password", "at-the-cut", lambda text: "." * (MAX_ERROR - 60) + text),
    ("base64", "at-the-cut", lambda text: "." * (MAX_ERROR - 60) + text),
    ("header", "at-the-cut", lambda text: "." * (MAX_ERROR - 60) + text),
]


@pytest.mark.parametrize(
    ("echoed", "pad"),
    [(c[0], c[2]) for c in REDACT_CASES],
    ids=[f"{c[0]}-{c[1]}" for c in REDACT_CASES],
)
def test_a_refusal_never_shows_the_password_or_its_base64(
    tmp_path: Path, echoed: str, pad: Any
) -> None:
    (tmp_path / "u").write_text("modelops")
    (tmp_path / "p").write_text(PASSWORD)
    transport = Transport(
        "http://mlflow:5000", username_file=str(tmp_path / "u"), password_file=str(tmp_path / "p")
    )
    secret = {"password": PASSWORD, "base64": BASIC, "header": f"Basic {BASIC}"}[echoed]
    body = json.dumps({"error_code": f"DENIED {secret}", "message": pad(f"bad login {secret}")})
    with pytest.raises(RegistryError) as caught:
        transport._decode(401, body.encode(), "model-versions/search", transport.credentials())
    text = str(caught.value) + (caught.value.error_code or "")
    assert caught.value.reason == "RegistryRefused" and "HTTP 401" in str(caught.value)
    for cut in range(6, 13):
        assert PASSWORD[-cut:] not in text and BASIC[:cut] not in text and BASIC[-cut:] not in text


def test_the_longest_secret_is_redacted_first() -> None:
    password = _password_inside_its_own_base64()
    creds = Credentials(username="u", password=password)
    encoded = base64.b64encode(f"u:{password}".encode()).decode()
    assert password in encoded and creds.redact(encoded) == "***"


def test_a_username_found_in_the_url_is_not_starred_out() -> None:
    """Redacting the username (an account name, not a secret) turned "MLflow unreachable
    at http://mlflow.mlflow.svc" into "http://***.***.svc" for the user "mlflow"."""
    creds = Credentials(username="mlflow", password=PASSWORD)
    basic = base64.b64encode(f"mlflow:{PASSWORD}".encode()).decode()
    text = f"MLflow unreachable at http://mlflow.mlflow.svc:5000 ({PASSWORD}, {basic})"
    assert creds.redact(text) == "MLflow unreachable at http://mlflow.mlflow.svc:5000 (***, ***)"
