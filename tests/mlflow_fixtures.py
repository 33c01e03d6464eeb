"""A real MLflow tracking server for the integration and e2e tiers (the registry).

`mlflow_server` is one `mlflow server` (SQLite backend, artifacts in tmp) on a free
127.0.0.1 port under /mlflow for the whole session; `mlflow_factory` starts more (each
costs 8 s of start on a quiet machine, 25 s on a busy one), all stopped at the end. Both are
loaded with the cluster fixtures (tests/cluster_fixtures.py names this module in its
`pytest_plugins`). A missing install (`make mlflow`) fails the test, never skips; a
server that does not come up fails with the tail of its log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from modelops_devcluster.mlflow import MlflowServer


@pytest.fixture(scope="session")
def mlflow_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., MlflowServer]]:
    """`mlflow_factory(static_prefix="")`: a started server, stopped at session end."""
    started: list[MlflowServer] = []

    def start(static_prefix: str = "") -> MlflowServer:
        server = MlflowServer(tmp_path_factory.mktemp("mlflow"), static_prefix=static_prefix)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_factory: Callable[..., MlflowServer]) -> MlflowServer:
    """The session's MLflow server, under the path prefix /mlflow (as behind a reverse
    proxy: every test that uses it also covers base-path handling); its `.url` is what
    MODELOPS_MLFLOW_URL would be. A test may `.stop()` and `.start()` it again (same
    port and data), and must leave it running."""
    return mlflow_factory(static_prefix="/mlflow")
