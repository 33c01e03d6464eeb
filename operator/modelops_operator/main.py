"""Run the operator: build the kopf registry, start metrics, hand over to kopf.

`run()` is what `modelops operator` and `python -m modelops_operator` call; tests call
`run_in_thread()` to run the same operator in-process against the local control plane.
"""

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import kopf
from prometheus_client import start_http_server

from modelops_operator import failures, metrics
from modelops_operator.config import OperatorConfig
from modelops_operator.handlers import jobs, lifecycle, releases, resources
from modelops_operator.k8s.client import load_api_client
from modelops_operator.service import Reconciler


def build(
    config: OperatorConfig, kubeconfig: str | None = None, tick: float = 1.0
) -> tuple[kopf.OperatorRegistry, Reconciler]:
    api = load_api_client(kubeconfig)
    reconciler = Reconciler(api, config)
    registry = kopf.OperatorRegistry()
    resources.register(registry, reconciler)
    jobs.register(registry, reconciler)
    releases.register(registry, reconciler)
    lifecycle.register(registry, reconciler, config, tick, api.configuration)
    return registry, reconciler


async def operate(
    config: OperatorConfig,
    kubeconfig: str | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    liveness: bool = True,
    tick: float = 1.0,
) -> None:
    failures.install_log_filters()
    registry, _ = build(config, kubeconfig, tick)
    liveness_endpoint = (
        f"http://0.0.0.0:{config.health_port}/healthz" if liveness and config.health_port else None
    )
    await kopf.operator(
        registry=registry,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=config.peering is None,
        peering_name=config.peering,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=liveness_endpoint,
    )


def run(config: OperatorConfig | None = None, kubeconfig: str | None = None) -> None:
    """Run until interrupted (the Deployment's command)."""
    config = config or OperatorConfig.from_env()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kopf logs "Handler ... succeeded." at INFO for every watch event of every
    # resource: thousands of lines a minute at scale, and no news.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    start_http_server(config.metrics_port, registry=metrics.REGISTRY)
    asyncio.run(operate(config, kubeconfig))


@dataclass
class RunningOperator:
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    stop_flag: asyncio.Event

    def stop(self, timeout: float = 30) -> None:
        self.loop.call_soon_threadsafe(self.stop_flag.set)
        self.thread.join(timeout)


@contextmanager
def run_in_thread(
    config: OperatorConfig, kubeconfig: str, tick: float = 0.5, ready_timeout: float = 60
) -> Iterator[RunningOperator]:
    """The real operator in a background thread with its own event loop (tests)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, asyncio.Event] = {}

    def target() -> None:
        asyncio.set_event_loop(loop)
        stop, ready = asyncio.Event(), asyncio.Event()
        holder["stop"], holder["ready"] = stop, ready

        async def main() -> None:
            task = asyncio.create_task(
                operate(config, kubeconfig, stop, ready, liveness=False, tick=tick)
            )
            await ready.wait()
            started.set()
            await task

        loop.run_until_complete(main())

    thread = threading.Thread(target=target, name="modelops-operator", daemon=True)
    thread.start()
    if not started.wait(ready_timeout):
        raise RuntimeError("operator did not become ready")
    running = RunningOperator(thread, loop, holder["stop"])
    try:
        yield running
    finally:
        running.stop()
