"""The operator under a burst: 500 (and 2,000) resources at once against the local
control plane.

Measures, in one run on one machine:
- the operator: time from each resource's create to its Job existing (p50/p95/p99),
  time until all Jobs exist, the operator process's peak RSS and CPU seconds, and the
  API requests it made by verb and resource (from the API server's
  apiserver_request_total, less the benchmark client's own creates): writes per
  resource, list and get calls; with --profile, a py-spy profile of the burst;
- with --baseline-src, the same for an older operator (a source tree, e.g. from
  `git archive`), in the same control plane just before, for old-beside-new figures;
- the floor: the plain Python Kubernetes client creating the same number of
  ConfigMaps + Jobs directly, with the same client concurrency;
- a fault run: SIGKILL the operator mid-burst, restart it, and check exactly one Job
  per resource and that every status converges.

Writes docs/benchmarks/operator_scale.{json,md}.

    PYTHONPATH=operator:jobs python benchmarks/operator_scale.py [--count 500 --count 2000]
        [--baseline-src DIR] [--profile] [--no-fault]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from modelops_api.crdgen import crd_for
from modelops_api.kinds import KINDS, kind_info
from modelops_api.meta import GROUP, VERSION
from modelops_devcluster import ControlPlane
from modelops_operator.build.jobs import ResourceIdentity, build_configmap, build_job, spec_document
from modelops_operator.config import OperatorConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_probes import Profiler, request_summary, requests_by_verb

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks"
MODEL = {"uri": "pvc://models/tiny"}
SPECS: dict[str, dict[str, Any]] = {
    "PruneRetrain": {"model": MODEL, "output": {"uri": "pvc://models/out"}},
    "UnlearnRequest": {"model": MODEL, "sampleIds": ["a1"]},
    "LoRATransfer": {
        "sourceModel": MODEL,
        "sourceAdapter": {"uri": "pvc://a/b"},
        "targetModel": MODEL,
        "output": {"uri": "pvc://o/t"},
    },
    "ModelAdaptation": {
        "model": MODEL,
        "data": {"uri": "pvc://d/new"},
        "output": {"uri": "pvc://o/v"},
    },
}
KIND_ORDER = list(SPECS)
CLIENT_THREADS = 16


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def request_counts(cp: ControlPlane) -> Any:
    _status, body = cp.api_get("/metrics", timeout=10)
    return requests_by_verb(str(body))


def wait_quiet(cp: ControlPlane, quiet: float = 3.0, limit: float = 120.0) -> None:
    """Until the API server has seen no write for `quiet` seconds: the operator's later
    status writes (a Job's start time) are counted too."""
    deadline, last, since = time.monotonic() + limit, None, time.monotonic()
    while time.monotonic() < deadline:
        counts = request_counts(cp)
        writes = sum(
            n
            for (verb, res), n in counts.items()
            if verb in ("POST", "PUT", "PATCH") and res != "leases"  # leader-election renewals
        )
        if writes != last:
            last, since = writes, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.5)


def operator_events(api: client.ApiClient, namespace: str) -> int:
    """Events the operator (not kube-controller-manager) posted in the namespace."""
    core: Any = client.CoreV1Api(api)
    items = core.list_namespaced_event(namespace, _preload_content=False)
    return sum(
        1
        for e in json.loads(items.data)["items"]
        if e.get("reportingComponent") == "modelops-operator"
        or (e.get("source") or {}).get("component") == "modelops-operator"
    )


def client_creates(count: int) -> dict[tuple[str, str], int]:
    """The benchmark's own creates of custom resources (the kinds in turn)."""
    out: dict[tuple[str, str], int] = {}
    for i in range(count):
        key = ("POST", kind_info(KIND_ORDER[i % 4]).plural)
        out[key] = out.get(key, 0) + 1
    return out


def proc_stats(pid: int) -> tuple[int, float]:
    """(peak RSS bytes, CPU seconds) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def start_operator(
    kubeconfig: Path, namespace: str, log_path: Path, src: Path = ROOT
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PYTHONPATH": f"{src / 'operator'}:{src / 'jobs'}",
        "MODELOPS_NAMESPACES": namespace,
        "MODELOPS_METRICS_PORT": "0",
        "MODELOPS_HEALTH_PORT": "0",
        "MODELOPS_RESYNC_SECONDS": "600",
    }
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [sys.executable, "-m", "modelops_operator"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


class JobWatcher:
    """Records when each Job first appears in a namespace (a watch, not polling)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self._batch = client.BatchV1Api(api)
        self._ns = namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> JobWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        w = watch.Watch()
        while not self._stop.is_set():
            for event in w.stream(self._batch.list_namespaced_job, self._ns, timeout_seconds=5):
                name = event["object"].metadata.name
                self.seen.setdefault(name, time.monotonic())
                if self._stop.is_set():
                    break

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.seen) >= count:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()


def make_namespace(api: client.ApiClient, name: str) -> str:
    core: Any = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    return name


def burst(api: client.ApiClient, namespace: str, count: int) -> dict[str, float]:
    """Create `count` resources (the four kinds in turn); name -> create-returned time."""
    custom: Any = client.CustomObjectsApi(api)
    created: dict[str, float] = {}

    def one(i: int) -> None:
        kind = KIND_ORDER[i % 4]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": f"r{i:04d}"},
            "spec": SPECS[kind],
        }
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, kind_info(kind).plural, body
        )
        created[f"r{i:04d}"] = time.monotonic()

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(one, range(count)))
    return created


def job_of(name: str, i: int) -> str:
    suffix = {
        "PruneRetrain": "prune",
        "UnlearnRequest": "unlearn",
        "LoRATransfer": "transfer",
        "ModelAdaptation": "adapt-1",
    }
    return f"{name}-{suffix[KIND_ORDER[i % 4]]}"


def operator_run(
    cp: ControlPlane,
    api: client.ApiClient,
    count: int,
    workdir: Path,
    name: str = "operator",
    src: Path = ROOT,
    profile: bool = False,
) -> dict[str, Any]:
    ns = make_namespace(api, f"scale-{name}-{count}")
    watcher = JobWatcher(api, ns).start()
    proc = start_operator(cp.kubeconfig, ns, workdir / f"{name}-{count}.log", src)
    time.sleep(3)  # let the operator finish its initial listing before the burst starts
    requests_before = request_counts(cp)
    profiler = Profiler(proc.pid, workdir / f"{name}-{count}.pyspy") if profile else None
    t0 = time.monotonic()
    created = burst(api, ns, count)
    ok = watcher.wait_for(count, timeout=600)
    t_all = max(watcher.seen.values()) - t0 if ok else float("nan")
    profiled = profiler.stop() if profiler else None
    latencies = [
        watcher.seen[job_of(n, int(n[1:]))] - t
        for n, t in created.items()
        if job_of(n, int(n[1:])) in watcher.seen
    ]
    # Let status writes finish before reading the request count.
    deadline = time.monotonic() + 120
    custom: Any = client.CustomObjectsApi(api)
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        pending = sum(
            1
            for info in KINDS
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, ns, info.plural)[
                "items"
            ]
            if not item.get("status", {}).get("phase")
        )
        if pending == 0:
            break
        time.sleep(0.5)
    wait_quiet(cp)
    rss, cpu = proc_stats(proc.pid)
    ours = client_creates(count)  # and the polling lists just above
    ours.update({("LIST", info.plural): polls for info in KINDS})
    requests = request_summary(
        requests_before, request_counts(cp), count, ours, operator_events(api, ns)
    )
    proc.terminate()
    proc.wait(30)
    watcher.stop()
    return {
        "source": str(src),
        "resources": count,
        "all_jobs_seconds": round(t_all, 3),
        "latency_p50_s": round(pct(latencies, 50), 3),
        "latency_p95_s": round(pct(latencies, 95), 3),
        "latency_p99_s": round(pct(latencies, 99), 3),
        "latency_max_s": round(max(latencies), 3),
        "operator_peak_rss_mb": round(rss / 2**20, 1),
        "operator_cpu_seconds": round(cpu, 2),
        "api_requests": requests,
        "profile": profiled,
    }


def floor_run(api: client.ApiClient, count: int, namespace: str) -> dict[str, Any]:
    ns = make_namespace(api, namespace)
    core: Any = client.CoreV1Api(api)
    batch: Any = client.BatchV1Api(api)
    cfg = OperatorConfig()
    from modelops_api import PruneRetrainSpec

    spec = PruneRetrainSpec.model_validate(SPECS["PruneRetrain"])
    latencies: list[float] = []

    def one(i: int) -> None:
        res = ResourceIdentity("PruneRetrain", f"r{i:04d}", ns, f"uid-{i}", 1)
        doc = spec_document(res, spec)
        cm, job = build_configmap(res, doc), build_job(res, spec, cfg, doc)
        for manifest in (cm, job):
            manifest["metadata"].pop("ownerReferences")
        start = time.monotonic()
        core.create_namespaced_config_map(ns, cm)
        batch.create_namespaced_job(ns, job)
        latencies.append(time.monotonic() - start)

    t0 = time.monotonic()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(one, range(count)))
    total = time.monotonic() - t0
    return {
        "objects": 2 * count,
        "all_jobs_seconds": round(total, 3),
        "latency_p50_s": round(pct(latencies, 50), 3),
        "latency_p99_s": round(pct(latencies, 99), 3),
    }


def fault_run(cp: ControlPlane, api: client.ApiClient, count: int, workdir: Path) -> dict[str, Any]:
    ns = make_namespace(api, f"scale-fault-{count}")
    watcher = JobWatcher(api, ns).start()
    proc = start_operator(cp.kubeconfig, ns, workdir / "fault-1.log")
    time.sleep(3)
    creator = threading.Thread(target=burst, args=(api, ns, count))
    creator.start()
    watcher.wait_for(count // 5, timeout=300)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    killed_at = len(watcher.seen)
    creator.join()
    proc = start_operator(cp.kubeconfig, ns, workdir / "fault-2.log")
    t0 = time.monotonic()
    converged = False
    custom: Any = client.CustomObjectsApi(api)
    while time.monotonic() - t0 < 600:
        phases = [
            i.get("status", {}).get("phase")
            for info in KINDS
            for i in custom.list_namespaced_custom_object(GROUP, VERSION, ns, info.plural)["items"]
        ]
        if len(phases) == count and all(phases):
            converged = True
            break
        time.sleep(1)
    jobs = [j.metadata.name for j in client.BatchV1Api(api).list_namespaced_job(ns).items]
    proc.terminate()
    proc.wait(30)
    watcher.stop()
    return {
        "resources": count,
        "jobs_when_killed": killed_at,
        "jobs_after_restart": len(jobs),
        "duplicate_jobs": len(jobs) - len(set(jobs)),
        "exactly_one_job_per_resource": sorted(jobs)
        == sorted(job_of(f"r{i:04d}", i) for i in range(count)),
        "statuses_converged": converged,
        "convergence_seconds_after_restart": round(time.monotonic() - t0, 1),
    }


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def _writes(op: dict[str, Any]) -> str:
    req = op["api_requests"]
    return (
        f"{req['writes_per_resource']} ({req['writes_per_resource_without_events']} without Events)"
    )


def _lists(op: dict[str, Any]) -> str:
    req = op["api_requests"]
    return f"{sum(req['lists'].values())} lists, {req['gets']} gets"


def _row(label: str, old: dict[str, Any] | None, new: dict[str, Any], fmt: Any, goal: str) -> str:
    before = fmt(old) if old else ""
    return f"| {label} | {before} | {fmt(new)} | {goal} |"


def section(run: dict[str, Any]) -> str:
    op, old, fl = run["operator"], run.get("baseline"), run["floor"]
    floor_s = fl["all_jobs_seconds"]
    rows = [
        _row("time until all Jobs exist", old, op, lambda o: f"{o['all_jobs_seconds']} s", ""),
        _row(
            "ratio to the floor",
            old,
            op,
            lambda o: f"**{_ratio(o['all_jobs_seconds'], floor_s)}**",
            "<= 1.5x",
        ),
        _row("create -> Job p50", old, op, lambda o: f"{o['latency_p50_s']} s", ""),
        _row("create -> Job p95", old, op, lambda o: f"{o['latency_p95_s']} s", ""),
        _row("create -> Job p99", old, op, lambda o: f"**{o['latency_p99_s']} s**", "< 1 s"),
        _row("operator peak RSS", old, op, lambda o: f"{o['operator_peak_rss_mb']} MB", "< 150 MB"),
        _row("operator CPU", old, op, lambda o: f"{o['operator_cpu_seconds']} s", ""),
        _row("API writes per resource", old, op, _writes, "<= 3"),
        _row("list / get calls (operator)", old, op, _lists, "no list per reconcile"),
    ]
    head = f"""### {op["resources"]} resources

Floor (the raw client creating the same ConfigMaps + Jobs, {CLIENT_THREADS} threads):
{floor_s} s for {fl["objects"]} objects, create-call p50 {fl["latency_p50_s"]} s, p99 {fl["latency_p99_s"]} s.

| measure | before (issue 16) | now | goal |
|---|---|---|---|
"""
    text = head + "\n".join(rows) + "\n"
    for label, o in (("before", old), ("now", op)):
        if o:
            writes = ", ".join(f"{k}: {v}" for k, v in o["api_requests"]["writes"].items())
            lists = ", ".join(f"{k}: {v}" for k, v in o["api_requests"]["lists"].items())
            text += f"\nWrites {label}: {writes}. Lists {label}: {lists or 'none'}."
    text += "\n"
    for label, o in (("before", old), ("now", op)):
        prof = (o or {}).get("profile")
        if prof:
            shares = ", ".join(f"{k} {v}%" for k, v in prof["by_package_percent"].items())
            top = "; ".join(f"`{f}` {v}%" for f, v in prof["top_functions_percent"][:6])
            within = ", ".join(f"{k} {v}%" for k, v in prof.get("inclusive_percent", {}).items())
            text += (
                f"\nProfile {label} (py-spy --gil, {prof['samples']} samples at 100 Hz during"
                f" the burst). By package of the innermost frame: {shares}. Inclusive: {within}."
                f" Top functions: {top}.\n"
            )
    fa = run.get("fault")
    if fa:
        text += f"""
Fault run: SIGKILL of the operator after {fa["jobs_when_killed"]} of {fa["resources"]} Jobs existed,
then a restart: {fa["jobs_after_restart"]} Jobs, {fa["duplicate_jobs"]} duplicates, exactly one Job per
resource: **{fa["exactly_one_job_per_resource"]}**; every status converged: **{fa["statuses_converged"]}**
({fa["convergence_seconds_after_restart"]} s after the restart).
"""
    return text


def write(results: dict[str, Any], command: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "operator_scale.json").write_text(json.dumps(results, indent=2) + "\n")
    counts = " and ".join(f"{r['operator']['resources']:,}" for r in results["runs"])
    md = f"""## Operator at scale: {counts} resources at once

Machine: {results["machine"]}. Command: `{command}`. Local control plane (kube-apiserver,
etcd, kube-controller-manager v1.35.4) on the same cores as the operator and the client.
"Before" is the operator as issue 16 found it ({results.get("baseline_label") or "not run"};
DIR is its source tree, e.g. `git archive` unpacked),
run in the same control plane just before "now"; the floor is measured in the same run.

"""
    md += "\n".join(section(r) for r in results["runs"])
    if results.get("notes"):
        md += "\n" + results["notes"] + "\n"
    (OUT / "operator_scale.md").write_text(md)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, action="append", help="resources (repeatable)")
    parser.add_argument("--baseline-src", type=Path, help="source tree of the older operator")
    parser.add_argument("--baseline-label", default="", help="what the baseline is (a commit)")
    parser.add_argument("--profile", action="store_true", help="py-spy the operators' bursts")
    parser.add_argument("--no-fault", action="store_true", help="skip the SIGKILL run")
    parser.add_argument("--notes", default="", help="text appended to the Markdown section")
    args = parser.parse_args()
    counts = args.count or [500]
    workdir = Path("/tmp/modelops-scale")
    workdir.mkdir(exist_ok=True)
    runs = []
    with ControlPlane() as cp:
        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        api.configuration.connection_pool_maxsize = CLIENT_THREADS * 2
        ext: Any = client.ApiextensionsV1Api(api)
        for info in KINDS:
            ext.create_custom_resource_definition(crd_for(info))
        time.sleep(2)
        for i, count in enumerate(counts):
            run: dict[str, Any] = {"floor": floor_run(api, count, f"scale-floor-{count}")}
            if args.baseline_src:
                run["baseline"] = operator_run(
                    cp, api, count, workdir, "baseline", args.baseline_src, args.profile
                )
            run["operator"] = operator_run(cp, api, count, workdir, profile=args.profile)
            if i == 0 and not args.no_fault:
                run["fault"] = fault_run(cp, api, count, workdir)
            runs.append(run)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "baseline_label": args.baseline_label,
        "runs": runs,
        "notes": args.notes,
    }
    print(json.dumps(results, indent=2))
    extra = "".join(f" --count {c}" for c in counts)
    if args.baseline_src:
        extra += " --baseline-src DIR"
    if args.profile:
        extra += " --profile"
    if args.no_fault:
        extra += " --no-fault"
    write(results, f"PYTHONPATH=operator:jobs python benchmarks/operator_scale.py{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
