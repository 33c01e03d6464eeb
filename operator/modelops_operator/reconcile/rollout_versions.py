"""What a rollout writes about versions beyond its own status: serving records, the
MLflow registry, and whether a deletion is effective in serving.

- Serving records (`ModelVersion.status.serving`): one opens when a version's canary
  step is first reported (role canary) and when it becomes the default (role
  default); it closes (`until`) when the version leaves that role.
- Registry (spec.registry set and the installation configured): each candidate taken
  and the serving version are registered (`RegisterVersion`, re-emitted until the
  version's status records the entry); the aliases follow: champion = the serving
  version, challenger = the version holding canary traffic (None otherwise), set once
  every version they name is registered.
- Deletion: for each UnlearnRequest version this rollout considers, the deletion is
  effective once the serving version is it or descends from it (parents). Condition
  DeletionEffective: True/DeletionEffective (since when), False/DeletionPending until
  spec.unlearning.maxDelay after the version was created, then False/DeletionOverdue
  (a Warning Event once). The reasons are those of the UnlearnRequest's own condition
  (reconcile/deletion_effect.py), whose gauge the alert watches.
"""

from datetime import datetime, timedelta

from modelops_api.durations import parse_duration
from modelops_api.model_rollout import registered_model_name
from modelops_api.model_version import ServingRecord
from modelops_api.rollout_status import RegistryAliases
from modelops_operator.reconcile.actions import Action, RegisterVersion, SetRegistryAliases
from modelops_operator.reconcile.deletion_effect import ancestors
from modelops_operator.reconcile.rollout_state import Draft, Version
from modelops_operator.registry.lineage import version_tags

CONDITION = "DeletionEffective"
PENDING, OVERDUE, EFFECTIVE = "DeletionPending", "DeletionOverdue", "DeletionEffective"
MAX_RECORDS = 32


def open_record(d: Draft, name: str, role: str) -> None:
    status = d.version_status(name)
    if status is None:
        return
    record = ServingRecord(
        inference_service=d.spec.inference_service.name,
        rollout=d.name,
        since=d.now,
        role=role,  # type: ignore[arg-type]
    )
    d.change_version(name, serving=[*status.serving, record][-MAX_RECORDS:])


def close_records(d: Draft, name: str) -> None:
    """Close this rollout's open serving records of the version."""
    status = d.version_status(name)
    if status is None:
        return
    records = [
        r.model_copy(update={"until": d.now}) if r.until is None and r.rollout == d.name else r
        for r in status.serving
    ]
    if records != list(status.serving):
        d.change_version(name, serving=records)


def registry_actions(d: Draft) -> list[Action]:
    """RegisterVersion for unregistered versions in play; SetRegistryAliases when the
    recorded aliases differ from champion/challenger."""
    reg = d.spec.registry
    if reg is None or not d.obs.registry_configured:
        return []
    model = registered_model_name(d.obs.resource.namespace, reg.model_name)
    cur = d.st.current
    challenger = cur.version if cur is not None and cur.step >= 0 and cur_in_canary(d) else None
    wanted = [n for n in (d.st.serving_version, cur.version if cur else None) if n]
    actions: list[Action] = []
    for name in wanted:
        v = d.versions.get(name)
        if v is None or v.status.registry is not None:
            continue
        description = f"{v.spec.source.kind}/{v.spec.source.name} -> {v.spec.uri}"
        tags = version_tags(d.obs.resource.namespace, v.spec, v.status.evaluation)
        actions.append(RegisterVersion(model, name, v.spec.uri, tags, description))
    named = [n for n in (d.st.serving_version, challenger) if n]
    registered = all(n in d.versions and d.versions[n].status.registry for n in named)
    desired = RegistryAliases(champion=d.st.serving_version, challenger=challenger)
    if registered and (d.st.registry_aliases or RegistryAliases()) != desired:
        actions.append(SetRegistryAliases(model, desired.champion, desired.challenger))
    return actions


def cur_in_canary(d: Draft) -> bool:
    """The current candidate holds canary traffic (not promoted, not rolled back)."""
    cur, applied = d.st.current, d.st.applied
    return (
        cur is not None
        and applied is not None
        and applied.storage_uri == cur.uri
        and applied.canary_traffic_percent is not None
    )


def serving_lineage(d: Draft) -> set[str]:
    """The serving version and every version it was made from, through the versions'
    parents (the one lineage walk, deletion_effect.ancestors); empty when none serves."""
    if not d.st.serving_version:
        return set()
    parents = {n: [p.version for p in v.spec.parents if p.version] for n, v in d.versions.items()}
    return ancestors(d.st.serving_version, parents)


def deletion_step(d: Draft, considered: list[Version]) -> None:
    """The DeletionEffective condition over the UnlearnRequest versions considered."""
    pending: list[tuple[datetime, Version]] = []
    effective: list[Version] = []
    delay = timedelta(seconds=parse_duration(d.spec.unlearning.max_delay))
    lineage = serving_lineage(d)  # walked once, not once per considered version
    for v in considered:
        if v.name in lineage:
            effective.append(v)
        else:
            pending.append((v.spec.created_time + delay, v))
    if pending:
        deadline, v = min(pending, key=lambda p: p[0])
        request = v.spec.deletion.request if v.spec.deletion else v.spec.source.name
        if d.now >= deadline:
            message = (
                f"the deletion by UnlearnRequest {request} is not in serving: {v.name} does"
                f" not serve {maxdelay_text(d)} after it was recorded"
            )
            before = next((c for c in d.conds if c.get("type") == CONDITION), {})
            if before.get("reason") != OVERDUE:
                d.event("Warning", OVERDUE, message)
            d.condition(CONDITION, "False", OVERDUE, message)
        else:
            message = f"{v.name} (UnlearnRequest {request}) must serve by {deadline.isoformat()}"
            d.condition(CONDITION, "False", PENDING, message)
            d.after((deadline - d.now).total_seconds())
        return
    if effective:
        v = max(effective, key=lambda v: v.order())
        since = next(
            (
                r.since
                for r in (d.version_status(v.name) or v.status).serving
                if r.role == "default"
            ),
            d.st.serving_since,
        )
        when = since.isoformat() if since else "now"
        message = f"deletion by {v.name} effective in serving since {when}"
        d.condition(CONDITION, "True", EFFECTIVE, message)


def maxdelay_text(d: Draft) -> str:
    return f"maxDelay {d.spec.unlearning.max_delay}"
