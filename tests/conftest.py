"""Fixtures every tier may use, and none of which needs a cluster: polling with a
deadline, and a real S3-compatible server (SeaweedFS).

The cluster fixtures (`control_plane`, `kube_api`, `namespace`, `crds_installed`,
`operator`) live in `tests/cluster_fixtures.py`, which imports the kubernetes client:
it is loaded as a plugin only when the run includes a tier that needs a cluster
(tests/integration, tests/e2e), so the unit, jobs and chart tiers never import it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

DEADLINE_S = 60.0
T = TypeVar("T")
TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
CLUSTER_TIERS = (TESTS / "integration", TESTS / "e2e")
CLUSTER_PLUGIN = "tests.cluster_fixtures"


def needs_cluster(args: list[str], invocation_dir: Path) -> bool:
    """Whether the paths pytest was given include a cluster tier (or a folder above one);
    no paths means the testpaths, which do."""
    if not args:
        return True
    for arg in args:
        if arg.startswith("-"):
            continue
        path = (invocation_dir / arg.split("::")[0]).resolve()
        for tier in CLUSTER_TIERS:
            if path == tier or tier in path.parents or path in tier.parents:
                return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    if needs_cluster(list(config.args), Path(config.invocation_params.dir)):
        config.pluginmanager.import_plugin(CLUSTER_PLUGIN)


def poll_until(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_S) -> T:
    """Poll `probe` until it returns something other than None; fail the test
    after `timeout` seconds. The integration tests never sleep a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """`wait_for(what, probe, timeout=60)`: see `poll_until`."""
    return poll_until


# -- a real S3-compatible server (SeaweedFS) ------------------------------------------

S3_BUCKET = "modelops-test"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`weed server -s3` on free loopback ports with an access key pair and the bucket
    `modelops-test`; a missing `weed` binary (`make seaweedfs`) fails the test."""
    from modelops_devcluster.seaweedfs import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        server.create_bucket(S3_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The server's credentials and endpoint in this process's environment, and a
    fresh download cache; returns the variables set."""
    env = {**s3_server.env(), "MODELOPS_CACHE_DIR": str(tmp_path / "cache")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_prefix(request: pytest.FixtureRequest) -> str:
    """A fresh s3:// prefix in the test bucket, unique to this test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"s3://{S3_BUCKET}/{name}-{uuid.uuid4().hex[:8]}"
