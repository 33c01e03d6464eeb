"""Soak: 200 resources whose resyncs and drift checks keep running, for an hour.

The operator (a subprocess, as in production) watches 100 ModelAdaptations with drift
triggers evaluated every 5 s against a real Prometheus (Debian's binary, answering
`vector(...)` queries) and 100 one-shot resources; the resync loop re-reconciles every
resource every 30 s. RSS is sampled every minute and reported as a trend; the goal is
flat within 10% after warm-up. kopf has a known memory growth when patching from
timers: this operator patches from its own resync loop, not from kopf timers, and this
run checks that nothing similar bites.

    PYTHONPATH=operator:jobs python benchmarks/operator_soak.py [--minutes 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from modelops_api.crdgen import crd_for
from modelops_api.kinds import KINDS
from modelops_api.meta import GROUP, VERSION
from modelops_devcluster import ControlPlane
from modelops_devcluster.process import free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks"


def start_prometheus(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (workdir / "prometheus.yml").write_text(json.dumps({"global": {"scrape_interval": "15s"}}))
    proc = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prom'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("prometheus did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--resources", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="modelops-soak-"))
    prom, url = start_prometheus(workdir)
    try:
        with ControlPlane() as cp:
            api = config.new_client_from_config(config_file=str(cp.kubeconfig))
            ext: Any = client.ApiextensionsV1Api(api)
            for info in KINDS:
                ext.create_custom_resource_definition(crd_for(info))
            core: Any = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": "soak"}})
            time.sleep(3)
            custom: Any = client.CustomObjectsApi(api)
            half = args.resources // 2
            for i in range(half):
                spec = {
                    "model": {"uri": "pvc://m/base"},
                    "data": {"uri": "pvc://d/new"},
                    "output": {"uri": f"pvc://o/v{i}"},
                    "trigger": {
                        "type": "drift",
                        "drift": {
                            "prometheusUrl": url,
                            "query": f"vector({(i % 10) / 10})",
                            "fireThreshold": 2.0,
                            "clearThreshold": 1.0,
                            "for": "1m",
                            "interval": "5s",
                            "cooldown": "1h",
                        },
                    },
                }
                custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    "soak",
                    "modeladaptations",
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "ModelAdaptation",
                        "metadata": {"name": f"ma{i:03d}"},
                        "spec": spec,
                    },
                )
            for i in range(args.resources - half):
                custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    "soak",
                    "pruneretrains",
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "PruneRetrain",
                        "metadata": {"name": f"pr{i:03d}"},
                        "spec": {
                            "model": {"uri": "pvc://m/base"},
                            "output": {"uri": f"pvc://o/p{i}"},
                        },
                    },
                )
            env = {
                **os.environ,
                "KUBECONFIG": str(cp.kubeconfig),
                "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT / 'jobs'}",
                "MODELOPS_NAMESPACES": "soak",
                "MODELOPS_METRICS_PORT": "0",
                "MODELOPS_HEALTH_PORT": "0",
                "MODELOPS_RESYNC_SECONDS": "30",
            }
            log = open(workdir / "operator.log", "wb")  # noqa: SIM115
            op = subprocess.Popen(
                [sys.executable, "-m", "modelops_operator"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            samples: list[tuple[float, float]] = []
            t0 = time.monotonic()
            for minute in range(args.minutes + 1):
                target = t0 + 60 * minute
                time.sleep(max(0.0, target - time.monotonic()))
                if op.poll() is not None:
                    raise RuntimeError("the operator exited during the soak")
                samples.append((minute, round(rss_mb(op.pid), 1)))
                print(f"minute {minute}: RSS {samples[-1][1]} MB", flush=True)
            evaluated = sum(
                1
                for i in custom.list_namespaced_custom_object(
                    GROUP, VERSION, "soak", "modeladaptations"
                )["items"]
                if i.get("status", {}).get("drift", {}).get("lastEvaluationTime")
            )
            op.terminate()
            op.wait(30)
    finally:
        prom.terminate()
        prom.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    warm = [r for m, r in samples if m >= min(10, args.minutes // 2)]
    growth = (warm[-1] - warm[0]) / warm[0] if warm and warm[0] else float("nan")
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "minutes": args.minutes,
        "resources": args.resources,
        "rss_mb_by_minute": samples,
        "rss_growth_after_warmup": round(growth, 4),
        "drift_resources_evaluated": evaluated,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "operator_soak.json").write_text(json.dumps(result, indent=2) + "\n")
    every = max(1, len(samples) // 12)
    rows = "\n".join(f"| {m} | {r} |" for m, r in samples[::every])
    (
        OUT / "operator_soak.md"
    ).write_text(f"""## Operator soak: {args.resources} resources for {args.minutes} minutes

Machine: {result["machine"]}. Command: `PYTHONPATH=operator:jobs python benchmarks/operator_soak.py --minutes {args.minutes}`.
{args.resources // 2} ModelAdaptations with drift triggers queried every 5 s from a real Prometheus, and
{args.resources - args.resources // 2} PruneRetrains; every resource re-reconciled every 30 s.

| minute | operator RSS (MB) |
|---|---|
{rows}

RSS change from minute {min(10, args.minutes // 2)} to the end: **{growth * 100:+.1f}%** (goal: flat within 10%).
Drift resources evaluated: {evaluated} of {args.resources // 2}.
""")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
