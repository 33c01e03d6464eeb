"""Fixtures for the e2e tier: a real Prometheus (Debian's binary) on loopback, started
by the test with its own config and data directory, and stopped afterwards."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A Prometheus process scraping the given loopback targets every second."""

    def __init__(self, targets: dict[str, list[str]], rule_files: list[Path] | None = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(
                "prometheus is not installed (make system-deps installs Debian's package)"
            )
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="modelops-prom-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        scrape = [
            {"job_name": job, "scrape_interval": "1s", "static_configs": [{"targets": t}]}
            for job, t in targets.items()
        ]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape,
        }
        if rule_files:
            config["rule_files"] = [str(p) for p in rule_files]
        (self.dir / "prometheus.yml").write_text(json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        self.log = open(self.dir / "prometheus.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(
            "Prometheus did not start:\n" + (self.dir / "prometheus.log").read_text()[-2000:]
        )

    def query(self, expr: str) -> dict:
        from urllib.parse import urlencode

        with urllib.request.urlopen(
            f"{self.url}/api/v1/query?{urlencode({'query': expr})}", timeout=5
        ) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop_process(self) -> None:
        """Stop the server but keep its data and port, so `start()` brings it back (an outage)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()


@pytest.fixture
def prometheus_factory() -> Iterator[Callable[..., Prometheus]]:
    started: list[Prometheus] = []

    def make(targets: dict[str, list[str]], rule_files: list[Path] | None = None) -> Prometheus:
        prom = Prometheus(targets, rule_files).start()
        started.append(prom)
        return prom

    yield make
    for prom in started:
        prom.stop()
