"""The informer cache: what the watches already delivered, kept in memory and read by
every reconcile instead of a GET and a list call per reconcile (as controller-runtime's
cache does).

Three stores, all fed by kopf's watch events and written through by the operator's own
writes (so a reconcile right after a write never sees the state from before it):

- `resources`: each custom resource's latest body, by (kind, namespace, name);
- `jobs`: the managed Jobs, by their owner (kind, namespace, name), then by Job name;
- `jobsets`: the managed JobSets (resources.nodes > 1), the same way, when the
  operator watches JobSets (MODELOPS_JOBSETS; `handlers/jobs.py`);
- `versions`: the ModelVersions, by namespace then name (`handlers/releases.py`);
- `isvcs`: KServe InferenceServices, by (namespace, name), while KServe's CRD is
  served (`k8s/inferenceservices.py` reads one with a GET until a watch event came).

Each object is kept only if it is not older than the copy already held (its
resourceVersion, an etcd revision, compared as a number): a watch event queued before
the operator's own write never replaces the written state. kopf's index pre-population
(`handlers/jobs.py` registers the Jobs as a kopf index) holds every handler until the
initial Job listing is in the cache, so a restarted operator never mistakes a Job not
yet seen for a deleted one. (kopf indexes only resources the API server serves: with
no JobSet CRD there is no JobSet watch and nothing is held back.)

Pods are not cached (every pod of the cluster would be held): their termination
messages are read with one label-selected list once a Job has finished, and kept per
Job resourceVersion, so a finished resource costs no list on later resyncs.
"""

from typing import Any

from modelops_api.meta import API_VERSION, LABEL_KIND

Key = tuple[str, str, str]
"""kind, namespace, name."""


def _version(obj: dict[str, Any]) -> int:
    value = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else 0


def newer_or_same(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Whether `new` may replace `old`: no copy yet, or not older (unknown versions win)."""
    if old is None:
        return True
    new_v, old_v = _version(new), _version(old)
    return new_v == 0 or old_v == 0 or new_v >= old_v


def job_owner(job: dict[str, Any]) -> Key | None:
    """(kind, namespace, name) of the resource that controls a Job, from its controller
    reference: the name label may be a hash (names over 63 characters fit no label)."""
    meta = job.get("metadata") or {}
    kind = (meta.get("labels") or {}).get(LABEL_KIND)
    for ref in meta.get("ownerReferences") or []:
        ours = ref.get("controller") and ref.get("apiVersion") == API_VERSION
        if ours and (kind is None or ref.get("kind") == kind):
            return ref["kind"], meta.get("namespace", "default"), ref["name"]
    return None


def _slim_job(job: dict[str, Any]) -> dict[str, Any]:
    """What `observe.job_view` reads of a Job: the pod template is most of a Job's size."""
    meta = job.get("metadata") or {}
    return {
        "metadata": {
            k: meta[k]
            for k in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "annotations",
                "ownerReferences",
                "labels",
            )
            if k in meta
        },
        "spec": {"suspend": (job.get("spec") or {}).get("suspend")},
        "status": dict(job.get("status") or {}),
    }


def _slim_jobset(jobset: dict[str, Any]) -> dict[str, Any]:
    """What `reconcile.jobset_outcome.jobset_view` reads of a JobSet: its creation time,
    suspension, the replicated Jobs' replica counts and the status, not the templates."""
    slim = _slim_job(jobset)
    meta = jobset.get("metadata") or {}
    if "creationTimestamp" in meta:
        slim["metadata"]["creationTimestamp"] = meta["creationTimestamp"]
    spec = jobset.get("spec") or {}
    slim["spec"]["replicatedJobs"] = [
        {"name": r.get("name"), "replicas": r.get("replicas")}
        for r in spec.get("replicatedJobs") or []
    ]
    return slim


def _put_owned(
    store: dict[Key, dict[str, dict[str, Any]]], obj: dict[str, Any], slim: dict[str, Any]
) -> None:
    owner = job_owner(obj)
    if owner is None:
        return
    held = store.setdefault(owner, {})
    if newer_or_same(obj, held.get(obj["metadata"]["name"])):
        held[obj["metadata"]["name"]] = slim


class InformerCache:
    """The resources and Jobs as last seen (see the module docstring)."""

    def __init__(self) -> None:
        self.resources: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, dict[str, Any]]] = {}
        self.jobsets: dict[Key, dict[str, dict[str, Any]]] = {}
        self.jobsets_watched = False
        """Whether a JobSet watch event has arrived: until then (no JobSet CRD when kopf
        scanned, or no JobSet yet) the JobSets held are only the operator's own creates,
        which no event would update, and `k8s/jobsets.py` lists instead."""
        self._pods: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        """Job uid -> (the Job's resourceVersion, its pods as then listed)."""
        self.versions: dict[str, dict[str, dict[str, Any]]] = {}
        self.isvcs: dict[tuple[str, str], dict[str, Any]] = {}
        self.isvcs_watched = False
        """Whether an InferenceService watch event has arrived (until then: GET)."""

    # -- resources ----------------------------------------------------------------
    def put_resource(self, key: Key, body: dict[str, Any]) -> dict[str, Any]:
        """Keep `body` unless a newer copy is held; return the copy that is kept."""
        old = self.resources.get(key)
        if newer_or_same(body, old):
            self.resources[key] = body
            return body
        assert old is not None
        return old

    def resource(self, key: Key) -> dict[str, Any] | None:
        return self.resources.get(key)

    def drop_resource(self, key: Key) -> None:
        self.resources.pop(key, None)

    # -- jobs ---------------------------------------------------------------------
    def put_job(self, job: dict[str, Any]) -> None:
        _put_owned(self.jobs, job, _slim_job(job))

    def drop_job(self, job: dict[str, Any]) -> None:
        self._drop_owned(self.jobs, job)

    def jobs_of(self, key: Key) -> list[dict[str, Any]]:
        return list(self.jobs.get(key, {}).values())

    # -- jobsets ------------------------------------------------------------------
    def put_jobset(self, jobset: dict[str, Any]) -> None:
        _put_owned(self.jobsets, jobset, _slim_jobset(jobset))

    def watched_jobset(self, jobset: dict[str, Any]) -> None:
        """A JobSet from the watch (kopf's index handler): the watch is live."""
        self.jobsets_watched = True
        self.put_jobset(jobset)

    def drop_jobset(self, jobset: dict[str, Any]) -> None:
        self._drop_owned(self.jobsets, jobset)

    def jobsets_of(self, key: Key) -> list[dict[str, Any]]:
        return list(self.jobsets.get(key, {}).values())

    def _drop_owned(self, store: dict[Key, dict[str, dict[str, Any]]], obj: dict[str, Any]) -> None:
        owner = job_owner(obj)
        if owner is None:
            return
        held = store.get(owner, {})
        old = held.pop(obj["metadata"]["name"], None)
        if old is not None:
            self._pods.pop(str(old["metadata"].get("uid", "")), None)
        if not held:
            store.pop(owner, None)

    # -- ModelVersions and InferenceServices ---------------------------------------
    def put_version(self, version: dict[str, Any]) -> dict[str, Any]:
        """Keep a ModelVersion unless a newer copy is held; return the copy kept."""
        meta = version["metadata"]
        held = self.versions.setdefault(meta.get("namespace", "default"), {})
        old = held.get(meta["name"])
        if newer_or_same(version, old):
            held[meta["name"]] = version
            return version
        assert old is not None
        return old

    def drop_version(self, version: dict[str, Any]) -> None:
        meta = version["metadata"]
        self.versions.get(meta.get("namespace", "default"), {}).pop(meta["name"], None)

    def versions_in(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.versions.get(namespace, {}).values())

    def put_isvc(self, isvc: dict[str, Any], watched: bool = False) -> None:
        meta = isvc["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        self.isvcs_watched = self.isvcs_watched or watched
        if newer_or_same(isvc, self.isvcs.get(key)):
            self.isvcs[key] = isvc

    def drop_isvc(self, isvc: dict[str, Any]) -> None:
        meta = isvc["metadata"]
        self.isvcs.pop((meta.get("namespace", "default"), meta["name"]), None)

    def isvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.isvcs.get((namespace, name))

    # -- pods of finished Jobs ----------------------------------------------------
    def pods_for(self, job: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The pods listed for this very version of the Job, or None (list them)."""
        held = self._pods.get(str(job["metadata"].get("uid", "")))
        return held[1] if held is not None and held[0] == _version(job) else None

    def keep_pods(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        self._pods[str(job["metadata"].get("uid", ""))] = (_version(job), pods)

    def size(self) -> tuple[int, int]:
        """(resources, Jobs and JobSets) held: for the tests and the benchmark."""
        owned = sum(len(j) for j in self.jobs.values())
        return len(self.resources), owned + sum(len(j) for j in self.jobsets.values())
