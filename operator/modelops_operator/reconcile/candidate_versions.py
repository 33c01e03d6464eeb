"""Which ModelVersions a ModelRollout's plan sees (pure).

The informer cache holds every version of the namespace; the rollout's state machine
needs those its spec's candidates made, the UnlearnRequest versions made from the
version in service (a deletion must reach serving even when UnlearnRequests are not
among the candidates), the versions its status names (serving, previous, current) and
any whose URI the InferenceService serves now (adopting what already serves).
Oldest first (spec.createdTime, then name), as `RolloutObserved.versions` says.
"""

from datetime import UTC, datetime
from typing import Any

from modelops_api.times import parse_time
from modelops_operator.reconcile.observed import VersionView

_EARLIEST = datetime.min.replace(tzinfo=UTC)


def version_view(body: dict[str, Any]) -> VersionView:
    meta = body.get("metadata") or {}
    return VersionView(
        name=meta["name"],
        spec=dict(body.get("spec") or {}),
        status=dict(body.get("status") or {}),
        creation_time=parse_time(meta.get("creationTimestamp")),
    )


def _made_from(view: VersionView, version: str | None, uri: str | None) -> bool:
    for parent in view.spec.get("parents") or []:
        if parent.get("role") != "base":
            continue
        if (version and parent.get("version") == version) or (uri and parent.get("uri") == uri):
            return True
    return False


def rollout_versions(
    spec: dict[str, Any],
    status: dict[str, Any],
    versions: list[VersionView],
    isvc_uri: str | None,
) -> tuple[VersionView, ...]:
    """The versions the rollout's plan decides from (see the module docstring)."""
    sources = {
        (c.get("kind"), c.get("name")) for c in spec.get("candidates") or [] if isinstance(c, dict)
    }
    current = status.get("current") or {}
    named = {status.get("servingVersion"), status.get("previousVersion"), current.get("version")}
    serving = status.get("servingVersion")
    serving_uri = status.get("servingUri") or isvc_uri
    picked = []
    for view in versions:
        source = view.spec.get("source") or {}
        if (
            (source.get("kind"), source.get("name")) in sources
            or view.name in named
            or (isvc_uri and view.spec.get("uri") == isvc_uri)
            or (source.get("kind") == "UnlearnRequest" and _made_from(view, serving, serving_uri))
        ):
            picked.append(view)
    picked.sort(key=lambda v: (parse_time(v.spec.get("createdTime")) or _EARLIEST, v.name))
    return tuple(picked)
