"""The MLflow registry client's pure parts and its configuration (no server: the
client against a real `mlflow server` is tests/integration/test_mlflow_registry.py;
its credentials are test_mlflow_credentials.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelops_devcluster.mlflow import MlflowServer, MlflowServerError
from modelops_operator.config import OperatorConfig
from modelops_operator.registry.mlflow import (
    MAX_TAG_VALUE,
    MlflowRegistry,
    RegistryError,
    check_model_name,
    cut_tags,
    registry_source,
)
from modelops_operator.registry.mlflow_http import MAX_ERROR, Transport, base_url

ROOT = Path(__file__).resolve().parents[2]

URL_CASES = [
    ("plain", "http://mlflow:5000", "http://mlflow:5000"),
    ("trailing-slash", "https://mlflow.example.com/", "https://mlflow.example.com"),
    ("path-prefix", "http://proxy/team/mlflow/", "http://proxy/team/mlflow"),
    ("ipv6", "http://[::1]:5000", "http://[::1]:5000"),
    ("no-scheme", "mlflow:5000", ValueError),
    ("ftp", "ftp://mlflow", ValueError),
    ("user-info", "http://user:pw@mlflow", ValueError),
    ("query", "http://mlflow/?x=1", ValueError),
    ("fragment", "http://mlflow/#x", ValueError),
    ("no-host", "http:///path", ValueError),
]


@pytest.mark.parametrize(
    ("url", "expected"), [c[1:] for c in URL_CASES], ids=[c[0] for c in URL_CASES]
)
def test_base_url(url: str, expected: str | type[Exception]) -> None:
    if isinstance(expected, str):
        assert base_url(url) == expected
    else:
        with pytest.raises(expected):
            base_url(url)


NAME_CASES = [
    ("plain", "chat-model", None),
    ("256", "m" * 256, None),
    ("one-quote", "it's", None),
    ("257", "m" * 257, "257 characters"),
    ("empty", "", "empty"),
    ("blank", "   ", "empty"),
    ("tab", "a\tb", "whitespace"),
    ("both-quotes", "a'b\"c", "quoted"),
]


@pytest.mark.parametrize(
    ("name", "says"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES]
)
def test_check_model_name(name: str, says: str | None) -> None:
    if says is None:
        check_model_name(name)
        return
    with pytest.raises(RegistryError) as caught:
        check_model_name(name)
    assert caught.value.reason == "InvalidModelName" and says in str(caught.value)


def test_tag_values_are_cut_with_a_mark_and_keys_checked() -> None:
    tags = cut_tags({"short": "v", "long": "y" * (MAX_TAG_VALUE + 1), "exact": "z" * MAX_TAG_VALUE})
    values = {t["key"]: t["value"] for t in tags}
    assert values["short"] == "v" and values["exact"] == "z" * MAX_TAG_VALUE
    assert len(values["long"]) == MAX_TAG_VALUE and values["long"].endswith("...[cut]")
    for key in ("", "k" * 251):
        with pytest.raises(RegistryError) as caught:
            cut_tags({key: "v"})
        assert caught.value.reason == "InvalidTag"


@pytest.mark.parametrize(
    ("uri", "source"),
    [
        ("s3://b/k", "s3://b/k"),
        ("pvc://claim/p", "pvc://claim/p"),
        ("file:///mnt/m", "modelops-file:///mnt/m"),
        ("/mnt/m", "modelops-file:///mnt/m"),
    ],
    ids=["s3", "pvc", "file", "bare-path"],
)
def test_registry_source(uri: str, source: str) -> None:
    assert registry_source(uri) == source


def test_config_reads_the_registry_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELOPS_MLFLOW_URL", "http://mlflow.mlflow:5000/")
    monkeypatch.setenv("MODELOPS_MLFLOW_TOKEN_FILE", "/var/run/secrets/modelops/mlflow/token")
    monkeypatch.setenv("MODELOPS_MLFLOW_CA_FILE", "/var/run/secrets/modelops/mlflow-ca/ca.crt")
    config = OperatorConfig.from_env()
    assert config.mlflow_url == "http://mlflow.mlflow:5000/"
    assert config.mlflow_token_file == "/var/run/secrets/modelops/mlflow/token"
    assert config.mlflow_ca_file == "/var/run/secrets/modelops/mlflow-ca/ca.crt"
    registry = MlflowRegistry.from_config(config)
    assert registry is not None and registry.url == "http://mlflow.mlflow:5000"


def test_no_url_means_no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELOPS_MLFLOW_URL", raising=False)
    assert MlflowRegistry.from_config(OperatorConfig.from_env()) is None
    assert MlflowRegistry.from_config(OperatorConfig()) is None


def test_a_bad_registry_url_stops_the_operator_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELOPS_MLFLOW_URL", "mlflow:5000")
    with pytest.raises(ValueError, match="MODELOPS_MLFLOW_URL"):
        OperatorConfig.from_env()


def test_the_operator_never_imports_mlflow() -> None:
    code = (
        "import sys, modelops_operator.registry.mlflow, modelops_operator.main;"
        " assert not any(m == 'mlflow' or m.startswith('mlflow.') for m in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    declared = [*project["dependencies"], *(r for group in extras for r in group)]
    lock = (ROOT / "requirements" / "lock.txt").read_text().splitlines()
    assert not [r for r in declared + lock if r.lower().startswith("mlflow")]


def test_the_mlflow_server_pins_are_exact() -> None:
    lines = [
        line
        for line in (ROOT / "requirements" / "mlflow.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all("==" in line for line in lines), "requirements/mlflow.txt pins exact versions"
    assert any(line.startswith("mlflow==") for line in lines)


TOKEN = "tok-" + "Z" * 40
KNOWN_REASONS = {"RegistryRefused", "RegistryError", "RegistryBadResponse"}


@settings(max_examples=150, deadline=None)
@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.one_of(
        st.binary(max_size=2048),
        st.builds(
            lambda code, message: json.dumps({"error_code": code, "message": message}).encode(),
            st.one_of(st.text(max_size=50), st.just(TOKEN)),
            st.text(max_size=3000).map(lambda t: t + TOKEN + t),
        ),
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30)),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda doc: json.dumps(doc).encode()),
    ),
)
def test_any_answer_is_a_json_object_or_a_bounded_registry_error_without_the_token(
    status: int, body: bytes
) -> None:
    transport = Transport("http://mlflow:5000", token=TOKEN)
    try:
        doc = transport._decode(status, body, "registered-models/get", transport.credentials())
    except RegistryError as exc:
        assert exc.reason in KNOWN_REASONS
        assert len(str(exc)) <= MAX_ERROR
        assert TOKEN[:8] not in str(exc) and TOKEN not in (exc.error_code or "")
        return
    assert 200 <= status < 300 and isinstance(doc, dict)


def test_a_missing_mlflow_install_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELOPS_MLFLOW", str(tmp_path / "no-mlflow"))
    with pytest.raises(MlflowServerError, match="make mlflow"):
        MlflowServer(tmp_path).start()


def test_a_server_that_dies_at_start_fails_with_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "mlflow"
    fake.write_text("#!/bin/sh\necho 'alembic: database is locked' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MODELOPS_MLFLOW", str(fake))
    with pytest.raises(MlflowServerError, match="database is locked"):
        MlflowServer(tmp_path / "work").start(timeout=30)
