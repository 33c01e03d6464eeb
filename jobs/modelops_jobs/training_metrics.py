"""Training metrics of a Job pod, served over HTTP for a PodMonitor.

`python -m modelops_jobs --metrics-port 9102` adds the sink made here to the run's
reporter: every step report sets gauges for the step, the total steps, the loss, the
tokens per second, the progress ratio and the ETA, labelled with the resource's
namespace, name and kind only (the project's metric-label rule). A fresh
`CollectorRegistry` keeps the endpoint to these series (no process or platform
collectors), so two servers in one process (tests) do not collide.
"""

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from modelops_jobs.reporting import ProgressEvent

LABELS = ("namespace", "name", "kind")


def document_labels(document: dict[str, Any]) -> dict[str, str]:
    """namespace, name and kind of the spec document ('' when absent)."""
    metadata = document.get("metadata") or {}
    return {
        "namespace": str(metadata.get("namespace") or ""),
        "name": str(metadata.get("name") or ""),
        "kind": str(document.get("kind") or ""),
    }


class TrainingMetrics:
    """The gauges of one run, and the reporter sink that updates them."""

    def __init__(self, document: dict[str, Any], registry: CollectorRegistry) -> None:
        self.registry = registry
        labels = document_labels(document)

        def gauge(name: str, help_text: str) -> Gauge:
            return Gauge(name, help_text, LABELS, registry=registry).labels(**labels)

        self.step = gauge("modelops_job_step", "Optimizer steps done in the current phase.")
        self.total_steps = gauge("modelops_job_total_steps", "Steps in the current phase.")
        self.loss = gauge("modelops_job_loss", "Training loss at the last reported step.")
        self.tokens_per_second = gauge(
            "modelops_job_tokens_per_second", "Training throughput in the current phase."
        )
        self.progress_ratio = gauge(
            "modelops_job_progress_ratio", "Share of the current phase's steps done (0 to 1)."
        )
        self.eta_seconds = gauge(
            "modelops_job_eta_seconds", "Estimated seconds left in the current phase."
        )
        self.server: Any = None
        self.thread: Any = None

    def __call__(self, event: ProgressEvent) -> None:
        """Reporter sink: update the gauges from a step report; ignore other events."""
        if event.step is None:
            return
        self.step.set(event.step)
        if event.total:
            self.total_steps.set(event.total)
            self.progress_ratio.set(min(1.0, event.step / event.total))
        if event.loss is not None:
            self.loss.set(event.loss)
        if event.tokens_per_second is not None:
            self.tokens_per_second.set(event.tokens_per_second)
        if event.eta_seconds is not None:
            self.eta_seconds.set(event.eta_seconds)
        elif event.total and event.step >= event.total:
            self.eta_seconds.set(0)

    @property
    def port(self) -> int:
        """The port the server listens on (useful when started on port 0)."""
        return int(self.server.server_port) if self.server is not None else 0

    def close(self) -> None:
        """Stop the HTTP server (tests; a pod just exits)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def serve_training_metrics(
    port: int, document: dict[str, Any], addr: str = "0.0.0.0"
) -> TrainingMetrics:
    """Serve the run's gauges on `addr:port` and return the sink that updates them."""
    registry = CollectorRegistry()
    metrics = TrainingMetrics(document, registry)
    metrics.server, metrics.thread = start_http_server(port, addr=addr, registry=registry)
    return metrics
