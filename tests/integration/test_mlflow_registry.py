"""The MLflow registry client against a real `mlflow server` (SQLite backend).

What the operator relies on: registering a ModelVersion is idempotent (found again by
its modelops.version tag) and records its lineage as tags; champion/challenger aliases
are set, moved and deleted; an unknown version, an odd name or an outage is a
RegistryError with a reason and a clear message; a server under a path prefix works.
Each check reads MLflow back over its REST API directly, not through the client.
A registry that misbehaves as MLflow never does (redirect, 5xx, junk, oversize,
echoed token) is tests/integration/test_mlflow_transport.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest

from modelops_api.model_version import ModelVersionSpec
from modelops_devcluster.mlflow import MlflowServer
from modelops_operator.registry.lineage import version_tags
from modelops_operator.registry.mlflow import (
    MAX_TAG_VALUE,
    MlflowRegistry,
    RegisteredVersion,
    RegistryError,
)

SPEC = ModelVersionSpec.model_validate(
    {
        "uri": "s3://models/chat/v3",
        "manifestDigest": "sha256:" + "ab" * 32,
        "source": {"kind": "ModelAdaptation", "name": "chat-cpt", "uid": "u-1", "run": 3},
        "parents": [{"role": "base", "uri": "hf://org/base", "digest": "sha256:" + "ef" * 32}],
        "datasets": [{"role": "train", "uri": "s3://data/train.jsonl", "digest": "cd" * 32}],
        "metrics": {"perplexity": 12.5, "taskScore": 0.8125},
        "createdTime": "2026-12-02T04:00:00Z",
    }
)
LINEAGE = version_tags("team-a", SPEC)


def fresh(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rest(server_url: str, endpoint: str, **params: Any) -> dict[str, Any]:
    """GET an MLflow REST endpoint directly (independent of the client under test)."""
    url = f"{server_url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def version_doc(server_url: str, model: str, number: str) -> dict[str, Any]:
    mv: dict[str, Any] = rest(server_url, "model-versions/get", name=model, version=number)[
        "model_version"
    ]
    return mv


def aliases_of(server_url: str, model: str) -> dict[str, str]:
    """alias -> the ModelVersion name its registry version records."""
    doc = rest(server_url, "registered-models/get", name=model)["registered_model"]
    out = {}
    for entry in doc.get("aliases", []):
        tags = {
            t["key"]: t["value"] for t in version_doc(server_url, model, entry["version"])["tags"]
        }
        out[entry["alias"]] = tags["modelops.version"]
    return out


@pytest.fixture
def registry(mlflow_server: MlflowServer) -> MlflowRegistry:
    return MlflowRegistry(mlflow_server.url, timeout=10.0)


# -- registration -------------------------------------------------------------------


def test_register_creates_the_model_and_a_version_with_its_lineage_tags(
    registry: MlflowRegistry, mlflow_server: MlflowServer
) -> None:
    model = fresh()
    entry = registry.register(model, "chat-cpt-0123456789", "s3://models/chat/v3", LINEAGE, "run 3")
    assert entry == RegisteredVersion(model, "1")
    assert entry.modelops_version == "chat-cpt-0123456789"
    rest(mlflow_server.url, "registered-models/get", name=model)  # exists, or HTTPError
    mv = version_doc(mlflow_server.url, model, "1")
    tags = {t["key"]: t["value"] for t in mv["tags"]}
    assert tags == {
        **LINEAGE,
        "modelops.version": "chat-cpt-0123456789",
        "modelops.uri": "s3://models/chat/v3",
    }
    assert (mv["source"], mv["description"]) == ("s3://models/chat/v3", "run 3")


def test_registering_again_returns_the_same_version_and_adds_none(
    registry: MlflowRegistry, mlflow_server: MlflowServer
) -> None:
    model = fresh()
    first = registry.register(model, "v-a", "s3://models/a", LINEAGE)
    other = registry.register(model, "v-b", "s3://models/b", {})
    again = [registry.register(model, "v-a", "s3://models/a", LINEAGE) for _ in range(3)]
    assert [e.version for e in again] == [first.version] * 3
    assert other.version != first.version
    found = rest(mlflow_server.url, "model-versions/search", filter=f"name='{model}'")
    assert len(found["model_versions"]) == 2


def test_tags_are_added_later_but_the_identity_tags_never_change(
    registry: MlflowRegistry, mlflow_server: MlflowServer
) -> None:
    model = fresh()
    entry = registry.register(model, "v1", "s3://models/v1", {"modelops.gate.passed": "pending"})
    again = registry.set_tags(
        model,
        "v1",
        {
            "modelops.gate.passed": "true",
            "modelops.gate.perplexity": "11.5",
            "modelops.version": "hijacked",
            "modelops.uri": "s3://elsewhere",
        },
    )
    assert again == entry
    tags = {t["key"]: t["value"] for t in version_doc(mlflow_server.url, model, "1")["tags"]}
    assert tags == {
        "modelops.gate.passed": "true",
        "modelops.gate.perplexity": "11.5",
        "modelops.version": "v1",
        "modelops.uri": "s3://models/v1",
    }
    with pytest.raises(RegistryError) as caught:
        registry.set_tags(model, "never-registered", {"a": "b"})
    assert caught.value.reason == "VersionNotRegistered"


def test_racing_writers_agree_on_one_version_and_leave_no_duplicate(
    registry: MlflowRegistry, mlflow_server: MlflowServer
) -> None:
    """Two operator replicas (or a retry racing the first try) register one ModelVersion
    at once: each may create, and each then settles on the first one created."""
    model = fresh()
    registry.register(model, "other", "s3://models/other", {})  # the model exists
    barrier = threading.Barrier(6)
    results: list[RegisteredVersion | BaseException] = []

    def writer() -> None:
        barrier.wait()
        try:
            results.append(registry.register(model, "v-race", "s3://models/race", {}))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    agreed = {r.version if isinstance(r, RegisteredVersion) else repr(r) for r in results}
    assert len(results) == 6 and len(agreed) == 1, results
    tagged = rest(
        mlflow_server.url,
        "model-versions/search",
        filter=f"name='{model}' and tags.`modelops.version`='v-race'",
    )
    assert [mv["version"] for mv in tagged["model_versions"]] == list(agreed)


def test_a_duplicate_left_by_a_racing_writer_is_never_chosen(
    registry: MlflowRegistry, mlflow_server: MlflowServer
) -> None:
    """A writer that crashed between its create and its settle leaves a second entry:
    every later call takes the first one (lowest number)."""
    model = fresh()
    first = registry.register(model, "v-dup", "s3://models/dup", {})
    body = {
        "name": model,
        "source": "s3://models/dup",
        "tags": [{"key": "modelops.version", "value": "v-dup"}],
    }
    request = urllib.request.Request(
        f"{mlflow_server.url}/api/2.0/mlflow/model-versions/create",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    for _ in range(11):  # more strays than one search page (MLflow lists newest first)
        with urllib.request.urlopen(request, timeout=10) as resp:
            stray = json.loads(resp.read())["model_version"]["version"]
        assert int(stray) > int(first.version)
    assert registry.register(model, "v-dup", "s3://models/dup", {}) == first
    registry.set_aliases(model, {"champion": "v-dup"})
    assert registry.aliases(model) == {"champion": first.version}


def test_a_huge_tag_value_is_cut_to_mlflows_limit_not_refused(
    registry: MlflowRegistry, mlflow_server: MlflowServer
) -> None:
    model = fresh()
    huge = "x" * (3 * MAX_TAG_VALUE)
    entry = registry.register(model, "v-huge", "s3://models/h", {"modelops.note": huge})
    tags = {
        t["key"]: t["value"] for t in version_doc(mlflow_server.url, model, entry.version)["tags"]
    }
    assert len(tags["modelops.note"]) == MAX_TAG_VALUE
    assert tags["modelops.note"].endswith("...[cut]")


@pytest.mark.parametrize(
    ("uri", "source"),
    [
        ("s3://models/x", "s3://models/x"),
        ("pvc://claim/models/x", "pvc://claim/models/x"),
        ("hf://org/model", "hf://org/model"),
        ("file:///mnt/models/x", "modelops-file:///mnt/models/x"),
    ],
    ids=["s3", "pvc", "hf", "file-refused-by-mlflow-as-is"],
)
def test_every_output_scheme_registers_with_its_exact_uri_in_a_tag(
    registry: MlflowRegistry, mlflow_server: MlflowServer, uri: str, source: str
) -> None:
    model = fresh()
    entry = registry.register(model, "v-uri", uri, {})
    mv = version_doc(mlflow_server.url, model, entry.version)
    assert mv["source"] == source
    assert {t["key"]: t["value"] for t in mv["tags"]}["modelops.uri"] == uri


# -- aliases ------------------------------------------------------------------------

ALIAS_CASES = [
    ("set-both", [{"champion": "v1", "challenger": "v2"}], {"champion": "v1", "challenger": "v2"}),
    (
        "promote-moves-champion-drops-challenger",
        [{"champion": "v1", "challenger": "v2"}, {"champion": "v2", "challenger": None}],
        {"champion": "v2"},
    ),
    (
        "rollback-restores-champion",
        [{"champion": "v1", "challenger": "v2"}, {"champion": "v1", "challenger": None}],
        {"champion": "v1"},
    ),
    ("delete-absent-is-fine", [{"champion": "v1"}, {"challenger": None}], {"champion": "v1"}),
    ("delete-everything", [{"champion": "v1"}, {"champion": None, "challenger": None}], {}),
    ("same-twice", [{"champion": "v1"}, {"champion": "v1"}], {"champion": "v1"}),
]


@pytest.mark.parametrize(
    ("calls", "expected"), [c[1:] for c in ALIAS_CASES], ids=[c[0] for c in ALIAS_CASES]
)
def test_aliases_are_set_moved_and_deleted(
    registry: MlflowRegistry,
    mlflow_server: MlflowServer,
    calls: list[dict[str, str | None]],
    expected: dict[str, str],
) -> None:
    model = fresh()
    for name in ("v1", "v2"):
        registry.register(model, name, f"s3://models/{name}", {})
    for aliases in calls:
        registry.set_aliases(model, aliases)
    assert aliases_of(mlflow_server.url, model) == expected
    assert {
        alias: entry.modelops_version
        for alias in ("champion", "challenger")
        if (entry := registry.get_alias(model, alias)) is not None
    } == expected


def test_deleting_an_alias_of_a_model_never_registered_is_fine(registry: MlflowRegistry) -> None:
    registry.set_aliases(fresh(), {"champion": None, "challenger": None})
    assert registry.aliases(fresh()) == {}


def test_an_alias_for_a_version_never_registered_is_refused_and_changes_nothing(
    registry: MlflowRegistry, mlflow_server: MlflowServer
) -> None:
    model = fresh()
    registry.register(model, "v1", "s3://models/v1", {})
    registry.set_aliases(model, {"champion": "v1"})
    with pytest.raises(RegistryError) as caught:
        registry.set_aliases(model, {"champion": None, "challenger": "never-registered"})
    assert caught.value.reason == "VersionNotRegistered"
    assert "never-registered" in str(caught.value) and model in str(caught.value)
    assert aliases_of(mlflow_server.url, model) == {"champion": "v1"}


# -- odd and hostile names ----------------------------------------------------------

NAME_CASES = [
    ("slash", "team/model", "RegistryRefused", "cannot contain '/'"),
    ("colon", "team:model", "RegistryRefused", "cannot contain '/' or ':'"),
    ("dot-dot", "..", "RegistryRefused", "resolve"),
    ("space", "my model", "InvalidModelName", "whitespace"),
    ("empty", "", "InvalidModelName", "empty"),
    ("257-chars", "m" * 257, "InvalidModelName", "257 characters"),
    ("both-quotes", 'it\'s-"x"', "InvalidModelName", "quoted"),
    ("256-chars", "m" * 250 + uuid.uuid4().hex[:6], None, None),
    ("one-quote", f"it's-{uuid.uuid4().hex[:6]}", None, None),
    ("url-metacharacters", f"a?b&name=c#d%2F-{uuid.uuid4().hex[:6]}", None, None),
    ("unicode", f"modèle-{uuid.uuid4().hex[:6]}", None, None),
    ("backslash-backtick", f"a\\b`c-{uuid.uuid4().hex[:6]}", None, None),
]


@pytest.mark.parametrize(
    ("name", "reason", "says"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES]
)
def test_odd_model_names_register_exactly_or_fail_clearly(
    registry: MlflowRegistry,
    mlflow_server: MlflowServer,
    name: str,
    reason: str | None,
    says: str | None,
) -> None:
    if reason is None:
        entry = registry.register(name, "v1", "s3://models/v1", {})
        assert registry.register(name, "v1", "s3://models/v1", {}) == entry
        assert (
            rest(mlflow_server.url, "registered-models/get", name=name)["registered_model"]["name"]
            == name
        )
        registry.set_aliases(name, {"champion": "v1"})
        assert aliases_of(mlflow_server.url, name) == {"champion": "v1"}
        return
    with pytest.raises(RegistryError) as caught:
        registry.register(name, "v1", "s3://models/v1", {})
    assert caught.value.reason == reason
    assert says is not None and says in str(caught.value)


# -- where the server is: path prefix, outage ---------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"], ids=["no-trailing-slash", "trailing-slash"])
def test_a_server_under_a_path_prefix_works(mlflow_server: MlflowServer, suffix: str) -> None:
    assert mlflow_server.url.endswith("/mlflow")  # every test here goes through the prefix
    registry = MlflowRegistry(mlflow_server.url + suffix)
    model = fresh()
    entry = registry.register(model, "v1", "s3://models/v1", {})
    registry.set_aliases(model, {"champion": "v1"})
    assert registry.get_alias(model, "champion") == entry


def test_the_prefix_left_out_is_a_clear_refusal(mlflow_server: MlflowServer) -> None:
    bare = mlflow_server.url.removesuffix("/mlflow")
    with pytest.raises(RegistryError) as caught:
        MlflowRegistry(bare).register(fresh(), "v1", "s3://models/v1", {})
    assert caught.value.reason == "RegistryRefused"
    assert "HTTP 404" in str(caught.value) and "path prefix" in str(caught.value)


def test_outage_is_unreachable_at_once_and_recovers_when_the_server_is_back(
    mlflow_server: MlflowServer,
) -> None:
    registry = MlflowRegistry(mlflow_server.url, timeout=2.0)
    model = fresh()
    registry.register(model, "v1", "s3://models/v1", {})
    mlflow_server.stop()
    try:
        for call in (
            lambda: registry.register(model, "v2", "s3://models/v2", {}),
            lambda: registry.set_aliases(model, {"champion": "v1"}),
        ):
            began = time.monotonic()
            with pytest.raises(RegistryError) as caught:
                call()
            assert caught.value.reason == "RegistryUnreachable"
            assert time.monotonic() - began < 2.0
    finally:
        mlflow_server.start()  # same port and data: the session's server again
    v2 = registry.register(model, "v2", "s3://models/v2", {})
    registry.set_aliases(model, {"champion": "v1", "challenger": "v2"})
    assert v2.version == "2"  # v1 survived the restart: no duplicate
    assert aliases_of(mlflow_server.url, model) == {"champion": "v1", "challenger": "v2"}


def test_a_server_that_never_answers_is_unreachable_after_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        registry = MlflowRegistry(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        began = time.monotonic()
        with pytest.raises(RegistryError) as caught:
            registry.register("m", "v1", "s3://models/v1", {})
        assert caught.value.reason == "RegistryUnreachable"
        assert time.monotonic() - began < 3.0
