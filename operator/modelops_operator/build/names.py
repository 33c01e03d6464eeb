"""Deterministic names for the objects the operator creates.

The same resource (and run) always gives the same Job and ConfigMap name, so an
operator restarted mid-reconcile finds what it created instead of creating it twice.
"""

import hashlib

MAX_NAME = 63
_SUFFIX = {
    "PruneRetrain": "prune",
    "UnlearnRequest": "unlearn",
    "LoRATransfer": "transfer",
    "ModelAdaptation": "adapt",
}


def job_name(kind: str, name: str, run: int | None = None) -> str:
    """`<name>-<kind suffix>[-<run>]`, shortened with a hash when over 63 characters."""
    suffix = _SUFFIX[kind] + (f"-{run}" if run is not None else "")
    full = f"{name}-{suffix}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(f"{kind}/{name}/{run}".encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{name[:keep].rstrip('-')}-{digest}-{suffix}"


def configmap_name(kind: str, name: str, run: int | None = None) -> str:
    """The ConfigMap holding the validated spec has the Job's name."""
    return job_name(kind, name, run)
