"""Fixtures of the integration tier beyond the cluster ones (tests/cluster_fixtures.py)."""

import time

import pytest

from modelops_operator.k8s.api import ApiSession


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, float]]:
    """Every request the operator makes: (method, path, when); set before it starts."""
    seen: list[tuple[str, str, float]] = []
    real = ApiSession.request

    async def counted(self, method, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((method, path, time.monotonic()))
        return await real(self, method, path, *args, **kwargs)

    monkeypatch.setattr(ApiSession, "request", counted)
    return seen


@pytest.fixture
def kserve(kube_api, kserve_crd, namespace):  # type: ignore[no-untyped-def]
    """The KServe stand-in (it plays KServe's controller, which does not run here) for
    the test's namespace, with KServe's InferenceService CRD installed."""
    from modelops_devcluster.kserve_standin import KServeStandIn

    with KServeStandIn(kube_api, namespace) as standin:
        yield standin
