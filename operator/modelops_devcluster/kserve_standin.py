"""A stand-in for the KServe controller: it writes the status KServe would write.

No KServe controller runs here (it needs Knative Serving, or Deployments and a
kubelet), so tests that roll a model out to an InferenceService play it, the way the
stand-in kubelet (modelops_devcluster/pod_runner.py) plays the kubelet for pods. The
InferenceService itself is real: KServe's own CRD (`make kserve`) in the real API
server, so every spec the operator patches passes KServe's schema.

What it writes, for an InferenceService whose `metadata.generation` it has not
acted on yet (`status.observedGeneration` behind), in KServe's serverless terms:
- a new predictor revision `<name>-predictor-<00001>` whenever
  `spec.predictor.model.storageUri` differs from the latest revision's (a change of
  `canaryTrafficPercent` alone makes none, as in Knative);
- `components.predictor.traffic`: with `canaryTrafficPercent` p set (0..99) and a
  previously rolled-out revision, `latest` gets p% (tag `latest`, latestRevision
  true) and the previous rolled-out revision 100-p% (tag `prev`); otherwise the
  latest revision gets 100% and becomes `latestRolledoutRevision`, and the revision it
  replaced becomes `previousRolledoutRevision`;
- `latestCreatedRevision`, `latestReadyRevision`, `conditions` Ready /
  PredictorReady / IngressReady True, `observedGeneration`, `url`.
A revision whose storageUri is in `failing_uris` never becomes ready: Ready False
(reason RevisionFailed), traffic and latestReadyRevision stay where they were.

It remembers each revision's storageUri in memory (KServe keeps it in Knative's
Revisions), so one stand-in should play KServe for a test's whole life.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self, cast

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def inference_service(name: str, uri: str) -> dict[str, Any]:
    """An InferenceService serving a Hugging Face model at `uri` (the demo's and the
    tests'): the predictor's model, the only part a ModelRollout reads and writes."""
    model = {"modelFormat": {"name": "huggingface"}, "storageUri": uri}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": model}},
    }


@dataclass
class Revisions:
    """One InferenceService's predictor revisions, oldest first: (name, storageUri)."""

    items: list[tuple[str, str | None]] = field(default_factory=list)

    def latest_for(self, isvc: str, uri: str | None) -> str:
        """The latest revision, created first when `uri` differs from its storageUri."""
        if not self.items or self.items[-1][1] != uri:
            self.items.append((f"{isvc}-predictor-{len(self.items) + 1:05d}", uri))
        return self.items[-1][0]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(ready: bool, reason: str = "", message: str = "") -> list[dict[str, Any]]:
    out = []
    for type_ in ("IngressReady", "PredictorReady", "Ready"):
        cond: dict[str, Any] = {
            "type": type_,
            "status": "True" if ready or type_ == "IngressReady" else "False",
            "lastTransitionTime": _now(),
        }
        if not ready and type_ != "IngressReady":
            cond.update(reason=reason, message=message)
        out.append(cond)
    return out


def _traffic(latest: str, prev: str | None, canary: int | None) -> list[dict[str, Any]]:
    if prev is None or prev == latest or canary is None or canary >= 100:
        return [{"revisionName": latest, "percent": 100, "latestRevision": True, "tag": "latest"}]
    return [
        {"revisionName": latest, "percent": canary, "latestRevision": True, "tag": "latest"},
        {"revisionName": prev, "percent": 100 - canary, "latestRevision": False, "tag": "prev"},
    ]


def kserve_status(
    isvc: dict[str, Any], revisions: Revisions, failing_uris: Iterable[str] = ()
) -> dict[str, Any]:
    """The status KServe would write for `isvc` now (pure, but for `revisions`, which
    gains the revision a new storageUri makes)."""
    meta, spec = isvc["metadata"], isvc.get("spec", {})
    name, namespace = meta["name"], meta["namespace"]
    predictor = spec.get("predictor", {})
    uri = predictor.get("model", {}).get("storageUri")
    canary = predictor.get("canaryTrafficPercent")
    old = isvc.get("status", {}).get("components", {}).get("predictor", {})
    latest = revisions.latest_for(name, uri)
    url = f"http://{name}.{namespace}.example.com"
    status: dict[str, Any] = {"observedGeneration": meta["generation"], "url": url}
    if uri in set(failing_uris):
        status["conditions"] = _conditions(
            False, "RevisionFailed", f"Revision {latest!r} failed: the model did not load"
        )
        status["components"] = {"predictor": {**old, "latestCreatedRevision": latest}}
        return status
    rolled = old.get("latestRolledoutRevision")
    traffic = _traffic(latest, rolled, canary)
    component: dict[str, Any] = {
        "latestCreatedRevision": latest,
        "latestReadyRevision": latest,
        "traffic": traffic,
        "url": f"http://{name}-predictor.{namespace}.example.com",
    }
    if len(traffic) == 2:  # a canary: the rolled-out revision keeps the rest
        component["latestRolledoutRevision"] = rolled
        component["previousRolledoutRevision"] = rolled
    else:
        component["latestRolledoutRevision"] = latest
        previous = rolled if rolled not in (None, latest) else old.get("previousRolledoutRevision")
        if previous is not None:
            component["previousRolledoutRevision"] = previous
    status["conditions"] = _conditions(True)
    status["components"] = {"predictor": component}
    return status


class KServeStandIn:
    """Plays the KServe controller for the InferenceServices of one namespace: a thread
    that settles each one whose generation it has not acted on (every `interval` s),
    or `settle(name)` from the test's own thread."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        failing_uris: Iterable[str] = (),
        interval: float = 0.1,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.failing_uris = set(failing_uris)
        self.interval = interval
        self.revisions: dict[str, Revisions] = {}
        self.writes = 0
        self.history: list[tuple[str, int, str | None, int | None]] = []
        """Every spec it acted on: (name, generation, storageUri, canaryTrafficPercent)."""
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def settle(self, name: str) -> dict[str, Any]:
        """Write the status KServe would write for the InferenceService now; returns it."""
        isvc = cast(
            dict[str, Any],
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name),
        )
        return self._write(isvc)

    def _write(self, isvc: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            name = isvc["metadata"]["name"]
            status = kserve_status(
                isvc, self.revisions.setdefault(name, Revisions()), self.failing_uris
            )
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, name, {"status": status}
            )
            predictor = isvc.get("spec", {}).get("predictor", {})
            self.history.append(
                (
                    name,
                    isvc["metadata"]["generation"],
                    predictor.get("model", {}).get("storageUri"),
                    predictor.get("canaryTrafficPercent"),
                )
            )
            self.writes += 1
            return status

    def states(self, name: str) -> list[tuple[str | None, int | None]]:
        """The (storageUri, canaryTrafficPercent) states of one InferenceService, in the
        order it acted on them, each generation once."""
        seen: dict[int, tuple[str | None, int | None]] = {}
        for isvc, generation, uri, canary in self.history:
            if isvc == name:
                seen.setdefault(generation, (uri, canary))
        return [seen[g] for g in sorted(seen)]

    def _pending(self) -> list[dict[str, Any]]:
        listed = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL),
        )
        return [
            item
            for item in listed.get("items", [])
            if item.get("status", {}).get("observedGeneration") != item["metadata"]["generation"]
        ]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for isvc in self._pending():
                    self._write(isvc)
            except ApiException as exc:
                # Deleted or changed meanwhile, or the API server restarting: next round.
                if exc.status not in (404, 409, 429, 500, 503):
                    self.error = exc
                    return
            except (OSError, urllib3.exceptions.HTTPError):
                continue  # the API server is down (a fault test): KServe retries too
            except BaseException as exc:  # surfaced by stop(): a dead stand-in fails the test
                self.error = exc
                return

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._loop, name="kserve-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self.error is not None:
            raise RuntimeError("the KServe stand-in failed") from self.error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
