"""Which version the rollout considers next, and when a newer one supersedes it.

Candidates: versions made by one of spec.candidates (source kind and name) that are
newer than the serving version (creation time, then name) and not yet decided (no
history entry, not current, not serving, and not in a final version phase: a version
that was rolled back, failed its gate, was rejected or superseded is never taken
again, even after its history entry aged out), and not at the URI already served (a
canary of it would make no new KServe revision, so no step could ever be reported). The
newest wins.

UnlearnRequest versions whose parent is the serving version (by version name, or by URI
when the serving version is unknown) are taken even when their source is not in
spec.candidates, and before any other: a deletion is effective in serving only once
they serve. A newer candidate supersedes a current one that has not taken traffic
(Evaluating, AwaitingApproval), except that an ordinary candidate never supersedes an
unlearning one; a candidate already in canary is never superseded (the newer waits).
"""

from modelops_api.model_version import VersionPhase
from modelops_api.rollout_status import CurrentRollout, HistoryEntry
from modelops_operator.build.evaluation import evaluation_job_name
from modelops_operator.reconcile.actions import DeleteJob
from modelops_operator.reconcile.rollout_state import Draft, Version

FINAL = {
    VersionPhase.GATE_FAILED.value,
    VersionPhase.REJECTED.value,
    VersionPhase.ROLLED_BACK.value,
    VersionPhase.SUPERSEDED.value,
    VersionPhase.RETIRED.value,
}
HISTORY_MAX = 20


def is_unlearning(d: Draft, v: Version) -> bool:
    """An UnlearnRequest version made from the version in service."""
    if v.spec.source.kind != "UnlearnRequest":
        return False
    st = d.st
    for p in v.spec.parents:
        if st.serving_version is not None and p.version == st.serving_version:
            return True
        if st.serving_version is None and st.serving_uri is not None and p.uri == st.serving_uri:
            return True
    return False


def decided(d: Draft) -> set[str]:
    st = d.st
    names = {h.version for h in st.history}
    names |= {n for n in (st.serving_version, st.previous_version) if n}
    if st.current is not None:
        names.add(st.current.version)
    return names


def candidates(d: Draft) -> list[Version]:
    """Eligible versions, best first (unlearning first, then newest)."""
    wanted = {(c.kind, c.name) for c in d.spec.candidates}
    serving = d.versions.get(d.st.serving_version or "")
    done = decided(d)
    out = []
    for v in d.versions.values():
        if v.name in done or v.status.phase in FINAL:
            continue
        if serving is not None and v.order() <= serving.order():
            continue
        if v.spec.uri == d.st.serving_uri:
            continue  # already what the ISVC serves: KServe would make no new revision
        if (v.spec.source.kind, v.spec.source.name) in wanted or is_unlearning(d, v):
            out.append(v)
    return sorted(out, key=lambda v: (is_unlearning(d, v), v.order()), reverse=True)


def add_history(d: Draft, version: str, outcome: str, message: str) -> None:
    """Append an outcome (newest last), keeping the last HISTORY_MAX."""
    entry = HistoryEntry(version=version, outcome=outcome, time=d.now, message=message[:512])  # type: ignore[arg-type]
    d.set(history=[*d.st.history, entry][-HISTORY_MAX:])


def take(d: Draft, v: Version) -> None:
    """Make `v` the current candidate (no traffic yet)."""
    unlearning = is_unlearning(d, v)
    d.set(
        current=CurrentRollout(
            version=v.name,
            uri=v.spec.uri,
            unlearning=unlearning,
            step=-1,
            approved=not d.spec.require_approval,
            start_time=d.now,
        )
    )
    d.change_version(v.name, phase=VersionPhase.EVALUATING.value, rollout_message=None)
    what = "unlearning version (rollout required)" if unlearning else "candidate"
    d.event("Normal", "CandidateTaken", f"{what} {v.name} ({v.spec.uri})")


def supersede(d: Draft, newer: Version) -> None:
    """The current pending candidate gives way to `newer`."""
    cur = d.st.current
    assert cur is not None
    message = f"superseded by the newer version {newer.name} before it took traffic"
    add_history(d, cur.version, "Superseded", message)
    d.change_version(cur.version, phase=VersionPhase.SUPERSEDED.value, rollout_message=message)
    if cur.evaluation_job:
        d.jobs.append(DeleteJob(cur.evaluation_job, d.obs.resource.namespace))
    d.event("Normal", "Superseded", f"{cur.version}: {message}")
    d.set(current=None)


def select_step(d: Draft) -> None:
    """Take the best candidate when none is current; supersede a pending one."""
    best = next(iter(candidates(d)), None)
    if best is None:
        return
    cur = d.st.current
    if cur is not None:
        if cur.step >= 0 or best.name == cur.version:
            return  # in canary (or beyond): never superseded; the newer waits
        current = d.versions.get(cur.version)
        newer = current is None or best.order() > current.order()
        best_unlearning = is_unlearning(d, best)
        if cur.unlearning and not best_unlearning:
            return
        if not (newer or best_unlearning):
            return
        supersede(d, best)
    take(d, best)


def evaluation_job(d: Draft, v: Version) -> str:
    return evaluation_job_name(d.name, v.spec.manifest_digest)
