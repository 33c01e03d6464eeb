"""The release loop in `make demo` (issue 15): one version gated, canaried, promoted.

After the examples, the pruned model (PruneRetrain `tiny-opt-wanda-50`) serves from an
InferenceService `tiny-opt` (KServe's own CRD; no KServe controller runs here, so a
stand-in writes the status KServe would write, as the stand-in kubelet does for pods),
and a ModelRollout takes the version of a new CPT run (the CPT example again, made after
the rollout, so its version is the newest whatever order the examples finished in): the
gate's evaluation Job scores it and the serving version on the same held-out data, then
10% -> 50% -> 100% of the traffic, each step held 1s once the InferenceService reports
it. The summary says in
words what happened; `release_summary` is pure, so the words are tested without a
cluster (tests/unit/test_demo_summary.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelops_api.meta import GROUP, VERSION
from modelops_api.times import parse_time
from modelops_devcluster.kserve_standin import inference_service

ISVC = "tiny-opt"
SERVING_SOURCE = "tiny-opt-wanda-50"
CANDIDATE_SOURCE = "tiny-opt-cpt-next"
CPT_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "model-adaptation-cpt.yaml"
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
HELD_OUT = "file:///tmp/modelops/data/grammar-new-eval.jsonl"
OUTCOMES = ("Promoted", "RolledBack", "GateFailed", "Rejected", "Superseded")


def model_rollout() -> dict[str, Any]:
    """The demo's release channel: versions of the pruning and the CPT examples, no
    more than 5% worse in held-out perplexity than the version in service, steps
    10/50/100 held 1s. The pruned model's version is adopted as the one in service (the
    InferenceService's storageUri is its URI), so the CPT version is compared with it."""
    rule = {"metric": "perplexity", "comparison": "LessOrEqual", "baseline": "Serving"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": ISVC},
        "spec": {
            "inferenceService": {"name": ISVC},
            "candidates": [
                {"kind": "PruneRetrain", "name": SERVING_SOURCE},
                {"kind": "ModelAdaptation", "name": CANDIDATE_SOURCE},
            ],
            "gate": {
                "rules": [{**rule, "tolerance": 0.05}],
                "evaluation": {"data": {"uri": HELD_OUT}, "maxSamples": 32, "seqLen": 64},
            },
            "canary": {"steps": [10, 50, 100], "interval": "1s"},
        },
    }


def next_adaptation() -> dict[str, Any]:
    """The CPT example again, as a new resource made after the ModelRollout (30 steps),
    so its version is newer than the one in service whatever order the examples
    finished in: the rollout takes it, and only it."""
    doc: dict[str, Any] = yaml.safe_load(CPT_EXAMPLE.read_text())
    doc["metadata"] = {"name": CANDIDATE_SOURCE}
    doc["spec"]["optimization"]["steps"] = 30
    doc["spec"]["output"] = {"uri": f"file:///tmp/modelops/out/{CANDIDATE_SOURCE}"}
    return doc


@dataclass
class ReleaseRun:
    """What the demo saw: the rollout and the candidate version as they ended, and
    every (storageUri, canaryTrafficPercent) the InferenceService's spec took."""

    rollout: dict[str, Any] = field(default_factory=dict)
    version: dict[str, Any] = field(default_factory=dict)
    states: list[tuple[str | None, int | None]] = field(default_factory=list)
    error: str | None = None


def _predictor(isvc: dict[str, Any]) -> tuple[str | None, int | None]:
    pred = isvc.get("spec", {}).get("predictor", {})
    return pred.get("model", {}).get("storageUri"), pred.get("canaryTrafficPercent")


def _source_version(custom: Any, namespace: str, plural: str, name: str) -> str | None:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    status = obj.get("status", {})
    if plural == "modeladaptations":
        runs = status.get("runs") or [{}]
        return runs[-1].get("modelVersion")
    return status.get("modelVersion")


def run_release(api: Any, namespace: str, say: Any, timeout: float = 300) -> ReleaseRun:
    """Create the InferenceService and the ModelRollout (the operator and the stand-in
    kubelet running), play KServe, and wait for the candidate's outcome."""
    from kubernetes import client

    from modelops_devcluster import kserve_standin as standin

    custom: Any = client.CustomObjectsApi(api)
    run = ReleaseRun()
    prune = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "pruneretrains", SERVING_SOURCE
    )
    serving_uri = prune["status"]["artifact"]["uri"]
    with standin.KServeStandIn(api, namespace):
        custom.create_namespaced_custom_object(
            *KSERVE[:2], namespace, KSERVE[2], inference_service(ISVC, serving_uri)
        )
        if not _served(custom, namespace, timeout=60):
            run.error = f"the KServe stand-in never reported InferenceService {ISVC}"
            return run
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelrollouts", model_rollout()
        )
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeladaptations", next_adaptation()
        )
        say(
            f"InferenceService {ISVC} serves {SERVING_SOURCE}; ModelRollout {ISVC} created;"
            f" ModelAdaptation {CANDIDATE_SOURCE} makes the next version"
        )
        candidate = _wait_version(custom, namespace, timeout)
        if candidate is None:
            run.error = f"no ModelVersion recorded for ModelAdaptation {CANDIDATE_SOURCE}"
            return run
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            isvc = custom.get_namespaced_custom_object(*KSERVE[:2], namespace, KSERVE[2], ISVC)
            state = _predictor(isvc)
            if not run.states or run.states[-1] != state:
                run.states.append(state)
            run.rollout = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelrollouts", ISVC
            )
            status = run.rollout.get("status", {})
            line = f"rollout {status.get('phase', 'New')}, traffic {state[1] or 100}% on {state[0]}"
            if line != last:
                say(line)
                last = line
            if outcome_of(status, candidate):
                break
            time.sleep(0.2)
        else:
            run.error = f"the rollout of {candidate} did not finish in {timeout:.0f}s"
        run.version = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelversions", candidate
        )
    return run


def _served(custom: Any, namespace: str, timeout: float) -> bool:
    """Whether KServe (the stand-in) reported the InferenceService's current generation:
    it serves before the rollout looks at it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        isvc = custom.get_namespaced_custom_object(*KSERVE[:2], namespace, KSERVE[2], ISVC)
        if isvc.get("status", {}).get("observedGeneration") == isvc["metadata"]["generation"]:
            return True
        time.sleep(0.2)
    return False


def _wait_version(custom: Any, namespace: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = _source_version(custom, namespace, "modeladaptations", CANDIDATE_SOURCE)
        if name:
            return name
        time.sleep(0.5)
    return None


def outcome_of(status: dict[str, Any], version: str) -> dict[str, Any] | None:
    """The history entry that ended `version`'s rollout, if any."""
    entries = [h for h in status.get("history", []) if h.get("version") == version]
    return entries[-1] if entries and entries[-1].get("outcome") in OUTCOMES else None


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "?"


def gate_words(evaluation: dict[str, Any] | None) -> str:
    """The gate's verdict with its numbers: each rule's candidate value, the limit, and
    the serving version's value it came from."""
    if not evaluation:
        return "no evaluation recorded"
    parts = []
    for check in evaluation.get("checks", []):
        sign = "<=" if check.get("comparison") == "LessOrEqual" else ">="
        text = f"{check.get('metric')} {_num(check.get('candidate'))}"
        if check.get("limit") is not None:
            text += f" {sign} limit {_num(check['limit'])}"
        if check.get("baseline") is not None:
            text += f" (serving version: {_num(check['baseline'])})"
        elif check.get("message"):
            text += f" ({check['message']})"
        parts.append(text + ("" if check.get("passed") else " FAILED"))
    verdict = "passed" if evaluation.get("passed") else "FAILED"
    against = evaluation.get("baselineVersion")
    where = f" against {against}" if against else ""
    return f"{verdict}{where}: " + ("; ".join(parts) or "no rules")


def steps_words(states: list[tuple[str | None, int | None]], uri: str | None) -> str:
    """The traffic the candidate got, in the order the InferenceService showed it."""
    shown: list[str] = []
    for state_uri, percent in states:
        if state_uri != uri:
            continue
        label = f"{percent}%" if percent is not None else "100% (the default)"
        if not shown or shown[-1] != label:
            shown.append(label)
    return " -> ".join(shown) if shown else "no traffic"


def release_summary(run: ReleaseRun) -> list[str]:
    """The release loop in words a newcomer understands (pure: what the demo saw in)."""
    if run.error:
        return [f"Release loop FAILED: {run.error}"]
    status = run.rollout.get("status", {})
    spec = run.version.get("spec", {})
    name = run.version.get("metadata", {}).get("name", "?")
    source = spec.get("source", {})
    made_by = f"{source.get('kind')} {source.get('name')}"
    if source.get("run"):
        made_by += f" run {source['run']}"
    outcome = outcome_of(status, name) or {}
    lines = [
        f"Release loop: ModelRollout {ISVC} -> InferenceService {ISVC}"
        " (KServe played by a stand-in: no KServe controller runs here)",
        f"  version  {name}, made by {made_by}, at {spec.get('uri')}",
        f"  gate     {gate_words(run.version.get('status', {}).get('evaluation'))}",
        f"  canary   {steps_words(run.states, spec.get('uri'))}",
    ]
    took = _took(run.rollout, outcome)
    result = f"  result   {outcome.get('outcome', '?')}"
    if outcome.get("outcome") == "Promoted":
        result += f": {ISVC} now serves {name}"
        if status.get("previousVersion"):
            result += f" (before: {status['previousVersion']})"
    elif outcome.get("message"):
        result += f": {outcome['message']}"
    lines.append(result + (f", {took} after the ModelRollout was created" if took else ""))
    return lines


def _took(rollout: dict[str, Any], outcome: dict[str, Any]) -> str | None:
    """From the ModelRollout's creation (the version was waiting already) to the outcome."""
    created = parse_time(rollout.get("metadata", {}).get("creationTimestamp"))
    ended = parse_time(outcome.get("time"))
    if created is None or ended is None:
        return None
    return f"{(ended - created).total_seconds():.0f}s"
