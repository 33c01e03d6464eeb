"""The canary analysis query (release_service.Releases.query_analysis): a URL the
ModelOpsPolicy does not allow is never contacted (no query, no credential), and a
Prometheus that is down is an outcome with a reason (the step holds), never an error.
A loopback listener counts the connections that reach it."""

import asyncio
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from kubernetes import client

from modelops_api.policy import ModelOpsPolicySpec
from modelops_operator.config import OperatorConfig
from modelops_operator.k8s.api import ApiSession
from modelops_operator.k8s.apply import Applier
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.k8s.observe import Observer
from modelops_operator.k8s.policy import PolicyReader
from modelops_operator.k8s.secrets import SecretReader
from modelops_operator.reconcile.observed import ResourceView
from modelops_operator.reconcile.policy import Gate, PolicyView
from modelops_operator.release_service import Releases

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


class Listener:
    """A TCP listener on 127.0.0.1 that counts accepted connections (and closes them)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def releases() -> Releases:
    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"  # the API server is never asked on these paths
    api = ApiSession(cfg)
    cache = InformerCache()
    return Releases(
        OperatorConfig(),
        cache,
        Observer(api, cache),
        Applier(api, cache),
        SecretReader(api),
        PolicyReader(api, None, None),
    )


def rollout(url: str) -> ResourceView:
    spec = {
        "inferenceService": {"name": "web"},
        "candidates": [{"kind": "PruneRetrain", "name": "src"}],
        "canary": {
            "steps": [10, 100],
            "interval": "1s",
            "analysis": {
                "prometheusUrl": url,
                "query": "vector(0.01)",
                "max": 0.05,
                "timeout": "1s",
            },
        },
    }
    return ResourceView("ModelRollout", "ro", "ns", "uid", 1, spec, {})


def test_a_refused_url_is_never_contacted(listener: Listener) -> None:
    url = f"http://127.0.0.1:{listener.port}"
    allowed = ModelOpsPolicySpec.model_validate(
        {"allowedPrometheusEndpoints": ["http://prometheus.monitoring:9090"]}
    )
    gate = Gate(PolicyView((allowed,), source="ModelOpsPolicy ns/p"))
    outcome = asyncio.run(releases().query_analysis(rollout(url), gate, NOW))
    assert outcome is not None and outcome.error_reason == "PolicyViolation"
    assert "allowedPrometheusEndpoints" in (outcome.error or "")
    assert listener.accepted == 0


def test_prometheus_down_is_an_outcome_not_an_error(listener: Listener) -> None:
    """Allowed (no policy), but nothing answers as Prometheus: the step holds."""
    url = f"http://127.0.0.1:{listener.port}"
    outcome = asyncio.run(releases().query_analysis(rollout(url), Gate(), NOW))
    assert outcome is not None and outcome.value is None
    assert outcome.error_reason == "PrometheusUnreachable", outcome
    assert listener.accepted >= 1
