"""Progress reporting: algorithms never print, they report here.

A `Reporter` turns steps, losses and phases into one of several sinks: a log line
stream (in a pod), a progress bar (`modelops run`), Prometheus gauges for a
PodMonitor (see `metrics_server`), or nothing (tests). ETA is computed from the step
rate of the current phase, counted from the first step reported in this process: a
phase resumed from a checkpoint at step 500 has not done 500 steps since it started
here, and counting them made the ETA start near zero and then grow.
"""

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class ProgressEvent:
    """One report: a phase change, a step, a metric or a message."""

    phase: str
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str | None = None


Sink = Callable[[ProgressEvent], None]


class Reporter:
    """Collects progress from an algorithm and fans it out to sinks."""

    def __init__(self, *sinks: Sink, min_interval: float = 0.0) -> None:
        self.sinks = list(sinks)
        self.phase_name = "start"
        self._phase_started = time.monotonic()
        self._base: tuple[int, float] | None = None
        """(step, time) the step rate counts from: set by the phase's first report."""
        self._last_emit = 0.0
        self._min_interval = min_interval
        self.metrics: dict[str, float] = {}

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def _emit(self, event: ProgressEvent, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_emit < self._min_interval:
            return
        self._last_emit = now
        for sink in self.sinks:
            sink(event)

    def phase(self, name: str) -> None:
        """Start a named phase (prune, retrain, evaluate, ...)."""
        self.phase_name = name
        self._phase_started = time.monotonic()
        self._base = None
        self._emit(ProgressEvent(phase=name, message=f"phase {name}"), force=True)

    def step(
        self,
        step: int,
        total: int,
        *,
        loss: float | None = None,
        tokens: int | None = None,
        **metrics: float,
    ) -> None:
        """Report progress within the phase: step of total (1-based), loss, tokens so far."""
        now = time.monotonic()
        elapsed = now - self._phase_started
        eta = self._eta(step, total, now)
        tps = tokens / elapsed if tokens and elapsed > 0 else None
        event = ProgressEvent(
            phase=self.phase_name,
            step=step,
            total=total,
            loss=loss,
            tokens_per_second=tps,
            eta_seconds=eta,
            metrics=dict(metrics),
        )
        self._emit(event, force=step >= total)

    def _eta(self, step: int, total: int, now: float) -> float | None:
        """Seconds left at the rate of the steps done since the phase's first report.

        A first report at step 1 counts from the phase start (a fresh phase); a later
        first step may be a resume, so the rate waits for a second report."""
        if self._base is None:
            fresh = step <= 1
            self._base = (0, self._phase_started) if fresh else (step, now)
        base_step, base_time = self._base
        done, spent = step - base_step, now - base_time
        if done <= 0 or spent <= 0:
            return None
        return max(0, total - step) * spent / done

    def metric(self, name: str, value: float) -> None:
        """Record a result metric (also kept on the reporter for the final result)."""
        self.metrics[name] = float(value)
        self._emit(ProgressEvent(phase=self.phase_name, metrics={name: float(value)}), force=True)

    def log(self, message: str) -> None:
        self._emit(ProgressEvent(phase=self.phase_name, message=message), force=True)


class NullReporter(Reporter):
    """Reports to nowhere (tests, benchmarks)."""

    def __init__(self) -> None:
        super().__init__()


def json_lines_sink(stream: TextIO = sys.stderr) -> Sink:
    """One JSON object per event, for pod logs."""

    def sink(event: ProgressEvent) -> None:
        record: dict[str, Any] = {k: v for k, v in event.__dict__.items() if v not in (None, {})}
        stream.write(json.dumps(record, sort_keys=True) + "\n")
        stream.flush()

    return sink


def progress_bar_sink(stream: TextIO = sys.stderr) -> Sink:
    """A one-line progress bar for `modelops run` in a terminal."""

    def sink(event: ProgressEvent) -> None:
        if event.step is not None and event.total:
            width = 30
            done = int(width * event.step / event.total)
            bar = "#" * done + "-" * (width - done)
            loss = f" loss {event.loss:.4f}" if event.loss is not None else ""
            eta = f" eta {event.eta_seconds:.0f}s" if event.eta_seconds is not None else ""
            stream.write(f"\r{event.phase:>10} [{bar}] {event.step}/{event.total}{loss}{eta}   ")
            if event.step >= event.total:
                stream.write("\n")
        elif event.message:
            stream.write(f"{event.message}\n")
        stream.flush()

    return sink
