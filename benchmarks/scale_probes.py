"""What `operator_scale.py` reads off a run besides the clock: the API requests by verb
and resource (from the API server's own apiserver_request_total), and a py-spy profile
of the operator process summarised by where the CPU went.

Kept apart from the benchmark driver so the driver stays a readable sequence of runs.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def requests_by_verb(metrics_text: str) -> Counter[tuple[str, str]]:
    """(verb, resource[/subresource]) -> requests so far, from the /metrics text."""
    out: Counter[tuple[str, str]] = Counter()
    for line in metrics_text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(_LABEL.findall(line.split("}", 1)[0]))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource = f"{resource}/{labels['subresource']}"
        out[(labels.get("verb", ""), resource)] += int(float(line.rsplit(" ", 1)[1]))
    return out


OTHER_WRITERS = ("pods", "jobs/status", "leases", "events")
"""Written by kube-controller-manager (the Job controller's pods, Job status and
Events; leader-election leases), not by the operator: the operator's Events are counted
from the namespace's Events by their reporting component instead."""


def request_summary(
    before: Counter[tuple[str, str]],
    after: Counter[tuple[str, str]],
    count: int,
    client_requests: dict[tuple[str, str], int],
    operator_events: int,
) -> dict[str, Any]:
    """The operator's requests between two readings: the API server's counts less the
    benchmark client's own requests and other writers' writes; writes per resource by
    verb+resource, and the list and get calls made."""
    delta = after.copy()
    delta.subtract(before)
    for key, n in client_requests.items():
        delta[key] -= n
    writes = {
        f"{verb} {res}": n
        for (verb, res), n in sorted(delta.items())
        if verb in WRITE_VERBS and n > 0 and res not in OTHER_WRITERS
    }
    objects = sum(writes.values())
    if operator_events:
        writes["POST events (the operator's)"] = operator_events
    lists = {f"LIST {res}": n for (verb, res), n in sorted(delta.items()) if verb == "LIST" and n}
    return {
        "writes": writes,
        "writes_per_resource": round((objects + operator_events) / count, 2),
        "writes_per_resource_without_events": round(objects / count, 2),
        "lists": lists,
        "gets": sum(n for (verb, _), n in delta.items() if verb == "GET"),
    }


class Profiler:
    """py-spy attached to a running process (sampling, no instrumentation overhead
    in the process itself), sampling only the thread that holds the GIL: that is the
    CPU the operator's Python spends (threads blocked on a socket are not counted).
    `stop()` returns the summary, or None without py-spy."""

    def __init__(self, pid: int, out: Path, py_spy: str | None = None) -> None:
        self.out = out
        exe = py_spy or shutil.which("py-spy")
        self.proc = (
            subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "100",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if exe
            else None
        )

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        return summarise(self.out.read_text()) if self.out.exists() else None


_BUCKETS = (
    ("kopf", "(kopf/"),
    ("aiohttp (kopf's watches)", "(aiohttp/"),
    ("aiohttp (kopf's watches)", "(yarl/"),
    ("kubernetes client", "(kubernetes/"),
    ("urllib3 / http.client", "(urllib3/"),
    ("urllib3 / http.client", "(http/"),
    ("ssl (TLS)", "(ssl.py"),
    ("pydantic", "(pydantic"),
    ("json", "(json/"),
    ("asyncio", "(asyncio/"),
    ("threads (executor)", "(concurrent/"),
    ("threads (executor)", "(threading.py"),
    ("threads (executor)", "(queue.py"),
    ("modelops_operator (reconcile, build)", "modelops_operator/reconcile/"),
    ("modelops_operator (reconcile, build)", "modelops_operator/build/"),
    ("modelops_operator (runtime)", "modelops_operator/"),
    ("modelops_api", "modelops_api/"),
    ("prometheus_client", "(prometheus_client/"),
    ("logging", "(logging/"),
    ("copy (deepcopy)", "(copy.py"),
)


_INCLUSIVE = (
    ("kubernetes client calls (threads)", "(kubernetes/client/"),
    ("kopf watch streams", "(kopf/_cogs/clients/watching.py"),
    ("kopf event processing (our handlers included)", "(kopf/_core/reactor/processing.py"),
    ("Reconciler.reconcile", "(modelops_operator/service.py"),
    ("plan()", "(modelops_operator/reconcile/"),
    ("metrics recording", "(modelops_operator/run_metrics.py"),
)


def _bucket(frame: str) -> str:
    for name, needle in _BUCKETS:
        if needle in frame:
            return name
    return "other (stdlib)"


def summarise(raw: str, top: int = 12) -> dict[str, Any]:
    """Collapsed stacks -> share of samples by package (innermost known frame, so time
    in a C call is charged to the Python package that made it) and the top functions
    by own samples."""
    by_bucket: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        frames = stack.split(";")
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        by_function[frames[-1]] += n
        by_bucket[_bucket(frames[-1])] += n
        for name, needle in _INCLUSIVE:
            if any(needle in f for f in frames):
                inclusive[name] += n
    share = {k: round(100 * v / total, 1) for k, v in by_bucket.most_common()} if total else {}
    functions = (
        [(f, round(100 * v / total, 1)) for f, v in by_function.most_common(top)] if total else []
    )
    within = (
        {name: round(100 * inclusive[name] / total, 1) for name, _ in _INCLUSIVE} if total else {}
    )
    return {
        "samples": total,
        "by_package_percent": share,
        "inclusive_percent": within,
        "top_functions_percent": functions,
    }
