"""`make demo`: the whole system on one machine, on the CPU, in a few minutes.

Starts the local control plane, installs the CRDs, runs the operator in-process and a
stand-in kubelet that executes the Job pods as local processes (the same runner, spec
file and termination message as in a cluster), creates the tiny models and data on
first run, applies one example of each kind (in dependency order), waits for each to
finish with progress, and prints a summary table. Exits non-zero, with the failing
resource's reason and log, if anything does not succeed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from modelops_api.times import parse_time

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
FIXTURES = Path("/tmp/modelops")
NAMESPACE = "demo"
STAGES = (
    (
        "prune-retrain.yaml",
        "model-adaptation-cpt.yaml",
        "model-adaptation-s3t.yaml",
        "model-adaptation-lora.yaml",
    ),
    ("unlearn-request.yaml", "lora-transfer.yaml"),
)
KEY_RESULTS = {
    "PruneRetrain": (
        "sparsity",
        "maskPreserved",
        "densePerplexity",
        "prunedPerplexity",
        "retrainedPerplexity",
        "gapRecovered",
        "betterThanDense",
    ),
    "UnlearnRequest": (
        "deletedSamples",
        "unknownIds",
        "shardsInService",
        "testAccuracy",
        "membershipInference",
    ),
    "LoRATransfer": ("acceptanceRate", "sourceScore", "targetBaseScore", "transferredScore"),
    "ModelAdaptation": (
        "oldLoss",
        "newLoss",
        "avgLoss",
        "trainLoss",
        "discriminatorAccuracy",
        "samples",
        "orders",
        "version",
    ),
}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def key_metrics(obj: dict[str, Any]) -> str:
    status = obj.get("status", {})
    results = status.get("results") or {}
    if obj["kind"] == "ModelAdaptation" and status.get("runs"):
        results = status["runs"][-1].get("results") or {}
    keys = KEY_RESULTS[obj["kind"]]
    shown = [f"{k}={_fmt(results[k])}" for k in keys if k in results]
    return ", ".join(shown) or "-"


def run_examples(
    api: Any,
    kubeconfig: str,
    namespace: str,
    workdir: Path,
    out_root: Path | None = None,
    stages: tuple[tuple[str, ...], ...] = STAGES,
    finale: Callable[[], None] | None = None,
) -> tuple[list[tuple[str, str, str, str, str]], list[str]]:
    """Apply the examples stage by stage with the operator and the stand-in kubelet
    running, wait for each to finish; returns (summary rows, failure explanations).
    `out_root` replaces /tmp/modelops/out in the examples' URIs. `finale` runs last,
    the operator and the stand-in kubelet still running (the release loop)."""
    from modelops_api.kinds import kind_info
    from modelops_api.meta import GROUP, VERSION
    from modelops_devcluster.pod_runner import LocalPodRunner
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    custom: Any = client.CustomObjectsApi(api)
    cfg = OperatorConfig(
        namespaces=(namespace,), resync_seconds=10.0, jobs_image="modelops-jobs:local"
    )
    failures: list[str] = []
    rows: list[tuple[str, str, str, str, str]] = []
    with (
        run_in_thread(cfg, kubeconfig, tick=0.5),
        LocalPodRunner(api, workdir, namespace, parallel=2),
    ):
        for stage in stages:
            applied = []
            for file in stage:
                text = (EXAMPLES / file).read_text()
                if out_root is not None:
                    text = text.replace("file:///tmp/modelops/out", f"file://{out_root}")
                doc = yaml.safe_load(text)
                plural = kind_info(doc["kind"]).plural
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, doc)
                applied.append((doc["kind"], plural, doc["metadata"]["name"], time.monotonic()))
                say(f"applied {file} ({doc['kind']} {doc['metadata']['name']})")
            for kind, plural, name, t0 in _wait_all(custom, namespace, applied):
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
                phase = obj.get("status", {}).get("phase", "?")
                rows.append((kind, name, phase, key_metrics(obj), took(obj, time.monotonic() - t0)))
                if phase != "Succeeded":
                    failures.append(_explain(obj, workdir, namespace))
        if finale is not None and not failures:
            finale()
    return rows, failures


def quiet() -> None:
    """No library warnings, progress bars or operator log lines on the demo's terminal:
    the summary table is the output (pod logs stay in their files)."""
    import logging
    import os
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.ERROR)
    for name in ("kopf", "modelops", "urllib3", "transformers", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.disable_progress_bar()  # "Writing model shards" while fixtures are saved
    hf_logging.set_verbosity_error()


def main() -> int:
    started = time.monotonic()
    quiet()
    from modelops_devcluster import ControlPlane
    from modelops_devcluster.demo_release import ReleaseRun, release_summary, run_release
    from modelops_devcluster.kserve import install_inferenceservice_crd
    from modelops_devcluster.persistent import install_crds
    from modelops_jobs.testing.fixtures import build_example_fixtures

    say("creating tiny models and data under /tmp/modelops (first run only)")
    build_example_fixtures(FIXTURES)
    shutil.rmtree(FIXTURES / "out", ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix="modelops-demo-"))
    say("starting the local control plane (kube-apiserver, etcd, kube-controller-manager)")
    with ControlPlane() as cp:
        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        install_crds(cp.kubeconfig)
        install_inferenceservice_crd(cp.kubeconfig)
        core: Any = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        say(
            f"control plane up in {cp.startup_seconds or 0:.1f}s; CRDs installed (modelops,"
            " KServe's InferenceService); starting the operator"
        )
        release = ReleaseRun(error="not reached: an example failed")

        def finale() -> None:
            nonlocal release
            say("the release loop: a version gated, canaried and promoted")
            release = run_release(api, NAMESPACE, say)

        rows, failures = run_examples(api, str(cp.kubeconfig), NAMESPACE, workdir, finale=finale)
    _table(rows)
    print("\n".join(release_summary(release)) + "\n")
    total = time.monotonic() - started
    if release.error and not failures:
        failures.append(f"release loop: {release.error}")
    if failures:
        for text in failures:
            print(text, file=sys.stderr)
        say(f"demo FAILED after {total:.0f}s")
        return 1
    say(f"demo finished: {len(rows)} resources succeeded and one version promoted in {total:.0f}s")
    return 0


def _wait_all(
    custom: Any,
    namespace: str,
    applied: list[tuple[str, str, str, float]],
    timeout: float = 900,
) -> list[tuple[str, str, str, float]]:
    from modelops_api.meta import GROUP, VERSION

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        phases = {}
        for _kind, plural, name, _ in applied:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            phases[name] = obj.get("status", {}).get("phase", "New")
        line = ", ".join(f"{n}: {p}" for n, p in phases.items())
        if line != last:
            say(line)
            last = line
        if all(p in ("Succeeded", "Failed") for p in phases.values()):
            return applied
        time.sleep(1.0)
    say("timed out waiting")
    return applied


def _explain(obj: dict[str, Any], workdir: Path, namespace: str) -> str:
    status = obj.get("status", {})
    name = obj["metadata"]["name"]
    cond: dict[str, Any] = next(
        (c for c in status.get("conditions", []) if c["type"] == "Failed"), {}
    )
    text = f"\n{obj['kind']} {name}: {status.get('phase')} — {cond.get('reason', '')}: {status.get('message', '')}"
    for log in sorted((workdir / namespace).glob(f"{name}-*/log.txt")):
        text += f"\n--- {log.parent.name} (last lines) ---\n" + "\n".join(
            log.read_text().splitlines()[-15:]
        )
    return text


def took(obj: dict[str, Any], waited: float) -> str:
    """From creation to the Succeeded or Failed condition, as the resource's own status
    says; the time the demo waited only when no such condition is there."""
    created = parse_time(obj["metadata"].get("creationTimestamp"))
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") in ("Succeeded", "Failed") and cond.get("status") == "True":
            ended = parse_time(cond.get("lastTransitionTime"))
            if created is not None and ended is not None:
                return f"{(ended - created).total_seconds():.0f}s"
    return f"{waited:.0f}s"


def _table(rows: list[tuple[str, str, str, str, str]]) -> None:
    header = ("KIND", "NAME", "PHASE", "KEY RESULTS", "TOOK")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    print()
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print()


if __name__ == "__main__":
    sys.exit(main())
