"""The registry client against a real `mlflow server --app-name basic-auth` (MLflow's
own authentication, HTTP basic auth), as the chart's registry.mlflow.basicAuthSecret
configures it: the username and password come from files (a mounted Secret), read on
every call.

What the operator relies on: with the right credentials a version is registered and an
alias set; without them, or with a wrong password, the call is RegistryRefused (HTTP
401) and the message shows neither the password nor the base64 header value; a
rotated password (changed in MLflow, then in the file) is used on the next call. The
operator logs in as a user of its own, not as MLflow's admin. One server for the module
(its start is most of the time). The bearer-token cases are test_mlflow_transport.py.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelops_devcluster.mlflow import MlflowServer
from modelops_operator.registry.mlflow import MlflowRegistry, RegistryError

ADMIN = ("mlflow-admin", "admin-" + uuid.uuid4().hex)
USER = "modelops"


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def as_admin(server: MlflowServer, method: str, endpoint: str, **params: Any) -> dict[str, Any]:
    """Call MLflow's REST API as its admin (independent of the client under test)."""
    url = f"{server.url}/api/2.0/mlflow/{endpoint}"
    data = None
    if method == "GET":
        url += "?" + urllib.parse.urlencode(params)
    else:
        data = json.dumps(params).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", _basic(*ADMIN))
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as resp:
        body = resp.read()
    doc: dict[str, Any] = json.loads(body) if body.strip() else {}
    return doc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), basic_auth=ADMIN) as started:
        yield started


@pytest.fixture
def login(server: MlflowServer, tmp_path: Path) -> tuple[Path, Path, str]:
    """A fresh MLflow user for the operator; its username and password files (as the
    chart mounts them) and its password."""
    username, password = f"{USER}-{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex
    as_admin(server, "POST", "users/create", username=username, password=password)
    (tmp_path / "username").write_text(username + "\n")
    (tmp_path / "password").write_text(password + "\n")
    return tmp_path / "username", tmp_path / "password", password


def registry(server: MlflowServer, login: tuple[Path, Path, str]) -> MlflowRegistry:
    return MlflowRegistry(server.url, username_file=str(login[0]), password_file=str(login[1]))


def test_with_the_right_login_a_version_is_registered_and_an_alias_set(
    server: MlflowServer, login: tuple[Path, Path, str]
) -> None:
    model = f"m-{uuid.uuid4().hex[:8]}"
    client = registry(server, login)
    created = client.register(model, "chat-v1", "s3://models/chat/v1", {"team": "a"})
    client.set_aliases(model, {"champion": "chat-v1"})
    doc = as_admin(server, "GET", "registered-models/get", name=model)["registered_model"]
    assert doc["aliases"] == [{"alias": "champion", "version": created.version}]
    version = as_admin(server, "GET", "model-versions/get", name=model, version=created.version)
    tags = {t["key"]: t["value"] for t in version["model_version"]["tags"]}
    assert tags["modelops.version"] == "chat-v1" and tags["team"] == "a"


@pytest.mark.parametrize("login_kind", ["wrong-password", "none"])
def test_without_the_right_login_the_call_is_refused_without_the_secret(
    server: MlflowServer, login: tuple[Path, Path, str], login_kind: str
) -> None:
    username = login[0].read_text().strip()
    wrong = "not-" + login[2]
    login[1].write_text(wrong)
    client = registry(server, login) if login_kind != "none" else MlflowRegistry(server.url)
    with pytest.raises(RegistryError) as caught:
        client.find_version("m", "v1")
    text = str(caught.value) + (caught.value.error_code or "")
    assert caught.value.reason == "RegistryRefused" and "HTTP 401" in text
    assert "credentials missing or refused" in text
    encoded = _basic(username, wrong).removeprefix("Basic ")
    assert wrong not in text and encoded not in text and encoded[:12] not in text


def test_a_rotated_password_is_used_on_the_next_call(
    server: MlflowServer, login: tuple[Path, Path, str]
) -> None:
    client = registry(server, login)
    assert client.find_version("m", "v1") is None
    username, rotated = login[0].read_text().strip(), "rotated-" + uuid.uuid4().hex
    as_admin(server, "PATCH", "users/update-password", username=username, password=rotated)
    with pytest.raises(RegistryError) as caught:  # the Secret is not updated yet
        client.find_version("m", "v1")
    assert caught.value.reason == "RegistryRefused" and rotated not in str(caught.value)
    login[1].write_text(rotated + "\n")  # the kubelet updates the mounted Secret
    assert client.find_version("m", "v1") is None
