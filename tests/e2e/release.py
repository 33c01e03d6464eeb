"""What the release-loop e2e tests share (issue 15): the InferenceService they serve to,
an exporter of the metrics Prometheus scrapes (a drift score and the canary's error
ratio), a recorder of every spec the InferenceService takes, the ModelRollout they
create, and readers of the release kinds and of a real MLflow server's aliases.

No KServe controller runs here: `operator/modelops_devcluster/kserve_standin.py` plays it, writing the
InferenceService status KServe would write (Ready, observedGeneration, the traffic
split); the InferenceService itself is real, under KServe's own CRD.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tests.e2e.conftest import free_port

from modelops_api.meta import GROUP, VERSION
from modelops_devcluster.kserve_standin import inference_service

KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
PLURALS = {"ModelVersion": "modelversions", "ModelRollout": "modelrollouts"}
DRIFT_QUERY = 'max(model_input_drift_score{model="support-bot"})'
ERROR_QUERY = 'max(support_bot_canary_error_ratio{model="support-bot"})'


class Exporter:
    """The two gauges a serving stack would export, on a loopback port Prometheus scrapes."""

    def __init__(self) -> None:
        registry = CollectorRegistry()
        drift = Gauge("model_input_drift_score", "Input drift.", ["model"], registry=registry)
        errors = Gauge(
            "support_bot_canary_error_ratio", "Canary errors.", ["model"], registry=registry
        )
        self.drift, self.errors = drift.labels("support-bot"), errors.labels("support-bot")
        self.drift.set(0.1)
        self.errors.set(0.0)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, "127.0.0.1", registry=registry)
        self.target = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def scraped(prom: Any, query: str, value: float) -> bool | None:
    """True once Prometheus returns `value` for `query` (a gauge just set)."""
    result = prom.query(query)["data"]["result"]
    return True if result and float(result[0]["value"][1]) == value else None


FIXTURES = "/tmp/modelops"
"""The example fixtures (`build_example_fixtures`): tiny models and data."""
BASE_URI = f"file://{FIXTURES}/models/tiny-opt"
HELD_OUT = f"file://{FIXTURES}/data/grammar-new-eval.jsonl"
TRAIN = f"file://{FIXTURES}/data/grammar-new.jsonl"


def cpt_spec(out: str, trigger: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """A ModelAdaptation spec: a dozen CPT steps on the tiny OPT (seconds on a CPU),
    publishing run-NNNN under `out`."""
    return {
        "strategy": "cpt",
        "model": {"uri": BASE_URI},
        "data": {"uri": TRAIN},
        "cpt": {
            "replayData": {"uri": f"file://{FIXTURES}/data/docstrings-train.jsonl"},
            "replayRatio": 0.05,
        },
        "optimization": {
            "steps": 12,
            "learningRate": 0.001,
            "batchSize": 8,
            "sequenceLength": 64,
        },
        "trigger": trigger,
        "output": {"uri": out},
        "resources": {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"},
        "seed": seed,
    }


def run_version(api: client.ApiClient, ns: str, name: str, number: int) -> str | None:
    """The ModelVersion recorded for run `number` of a ModelAdaptation, once its
    status names it."""
    obj = custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "modeladaptations", name)
    runs = obj.get("status", {}).get("runs", [])
    run = next((r for r in runs if r.get("run") == number), None)
    return run.get("modelVersion") if run else None


# -- the InferenceService ------------------------------------------------------------


def create_isvc(api: client.ApiClient, ns: str, name: str, uri: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        *KSERVE[:2], ns, KSERVE[2], inference_service(name, uri)
    )


def get_isvc(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        *KSERVE[:2], ns, KSERVE[2], name
    )


def predictor(isvc: dict[str, Any]) -> tuple[str | None, int | None]:
    """(storageUri, canaryTrafficPercent) of an InferenceService's spec."""
    pred = isvc.get("spec", {}).get("predictor", {})
    return pred.get("model", {}).get("storageUri"), pred.get("canaryTrafficPercent")


def isvc_at(
    api: client.ApiClient, ns: str, name: str, state: tuple[str | None, int | None]
) -> dict[str, Any] | None:
    """The InferenceService once its spec is `state` (storageUri, canaryTrafficPercent):
    the rollout records a decision in its status first, then patches the InferenceService
    (write-ahead), so a test waits for both."""
    isvc = get_isvc(api, ns, name)
    return isvc if predictor(isvc) == state else None


def isvc_reported(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    """The InferenceService once KServe (the stand-in) reported its current generation."""
    isvc = get_isvc(api, ns, name)
    observed = isvc.get("status", {}).get("observedGeneration")
    return isvc if observed == isvc["metadata"]["generation"] else None


def edit_isvc_by_hand(api: client.ApiClient, ns: str, name: str, uri: str) -> None:
    """What a person with kubectl edit would do: point the predictor elsewhere."""
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        *KSERVE[:2], ns, KSERVE[2], name, {"spec": {"predictor": {"model": {"storageUri": uri}}}}
    )


class SpecRecorder:
    """Every distinct (storageUri, canaryTrafficPercent) the InferenceService's spec
    takes, in order, from a watch (so no state is missed between two polls)."""

    def __init__(self, api: client.ApiClient, ns: str, name: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.ns, self.name = ns, name
        self.states: list[tuple[str | None, int | None]] = []
        self.generations: list[int] = []
        self._watch = watch.Watch()
        self._stopping = threading.Event()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="isvc-recorder")

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as exc:  # surfaced by __exit__ unless the test stopped the watch
            if not self._stopping.is_set():
                self.error = exc

    def _follow(self) -> None:
        stream = self._watch.stream(
            self.custom.list_namespaced_custom_object,
            *KSERVE[:2],
            self.ns,
            KSERVE[2],
            field_selector=f"metadata.name={self.name}",
            timeout_seconds=3600,
        )
        for event in stream:
            obj = event["object"]
            generation = obj["metadata"].get("generation", 0)
            if self.generations and generation == self.generations[-1]:
                continue  # a status write
            self.generations.append(generation)
            state = predictor(obj)
            if not self.states or self.states[-1] != state:
                self.states.append(state)
        if not self._stopping.is_set():
            raise RuntimeError("the API server ended the watch: states may be missing")

    def __enter__(self) -> SpecRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._watch.stop()
        self._thread.join(5)
        if self.error is not None:
            raise RuntimeError("the InferenceService watch failed") from self.error


# -- the release kinds ------------------------------------------------------------------


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create_release(api: client.ApiClient, ns: str, kind: str, name: str, spec: dict) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}}
    custom(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURALS[kind], {**body, "spec": spec}, field_validation="Strict"
    )


def get_release(api: client.ApiClient, ns: str, kind: str, name: str) -> dict[str, Any]:
    return custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], name)


def patch_release(api: client.ApiClient, ns: str, kind: str, name: str, patch: dict) -> None:
    custom(api).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], name, patch)


def versions(api: client.ApiClient, ns: str) -> dict[str, dict[str, Any]]:
    items = custom(api).list_namespaced_custom_object(GROUP, VERSION, ns, "modelversions")
    return {v["metadata"]["name"]: v for v in items["items"]}


def rollout_status(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return get_release(api, ns, "ModelRollout", name).get("status") or {}


def history_has(api: client.ApiClient, ns: str, name: str, version: str, outcome: str) -> Any:
    """The rollout's status once its history says `version` ended with `outcome`."""
    status = rollout_status(api, ns, name)
    done = [h for h in status.get("history", []) if h["version"] == version]
    return status if done and done[-1]["outcome"] == outcome else None


def rollout(
    isvc: str,
    candidates: list[dict[str, str]],
    prom_url: str | None,
    *,
    rules: list[dict[str, Any]] | None = None,
    evaluation: dict[str, Any] | None = None,
    registry: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ModelRollout spec: steps 10 -> 50 -> 100 held 1s each while (with a
    Prometheus) the canary's error ratio stays at most 0.05, queried every second."""
    canary: dict[str, Any] = {"steps": [10, 50, 100], "interval": "1s"}
    if prom_url is not None:
        canary["analysis"] = {
            "prometheusUrl": prom_url,
            "query": ERROR_QUERY,
            "max": 0.05,
            "interval": "1s",
            "timeout": "1s",
        }
    spec: dict[str, Any] = {
        "inferenceService": {"name": isvc},
        "candidates": candidates,
        "canary": canary,
        **extra,
    }
    gate: dict[str, Any] = {}
    if rules:
        gate["rules"] = rules
    if evaluation:
        gate["evaluation"] = evaluation
    if gate:
        spec["gate"] = gate
    if registry:
        spec["registry"] = {"modelName": registry}
    return spec


def events_of(api: client.ApiClient, ns: str, name: str, kind: str = "ModelRollout") -> list[Any]:
    items = client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name},involvedObject.kind={kind}"
    )
    return sorted(items.items, key=lambda e: e.metadata.creation_timestamp)


def event_reasons(api: client.ApiClient, ns: str, name: str) -> list[str]:
    return [e.reason for e in events_of(api, ns, name)]


# -- a real MLflow server, read through its documented REST API ------------------------


def _mlflow_get(url: str, path: str, **params: str) -> dict[str, Any]:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/2.0/mlflow/{path}?{query}", timeout=5) as r:
        return json.loads(r.read())


def mlflow_alias(url: str, model: str, alias: str) -> dict[str, Any] | None:
    """The model version an alias points at (its tags as a dict), None when unset. Read
    from the registered model's alias list: MLflow answers a lookup of an absent alias
    with a generic 400 INVALID_PARAMETER_VALUE."""
    try:
        registered = _mlflow_get(url, "registered-models/get", name=model)["registered_model"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    numbers = {a["alias"]: a["version"] for a in registered.get("aliases", [])}
    if alias not in numbers:
        return None
    body = _mlflow_get(url, "model-versions/get", name=model, version=numbers[alias])
    version = body["model_version"]
    version["tags"] = {t["key"]: t["value"] for t in version.get("tags", [])}
    return version


@contextmanager
def exporter() -> Iterator[Exporter]:
    exp = Exporter()
    try:
        yield exp
    finally:
        exp.stop()


def deleted(fn: Any, *args: Any) -> bool | None:
    """True once fn(*args) raises 404."""
    try:
        fn(*args)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return None
