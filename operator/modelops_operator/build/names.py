"""Deterministic names for the objects the operator creates.

The same resource (and run) always gives the same Job and ConfigMap name, so an
operator restarted mid-reconcile finds what it created instead of creating it twice.
"""

import hashlib
import re

MAX_NAME = 63
MAX_LABEL_VALUE = 63
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SUFFIX = {
    "PruneRetrain": "prune",
    "UnlearnRequest": "unlearn",
    "LoRATransfer": "transfer",
    "ModelAdaptation": "adapt",
}


# A JobSet's pods are named `<jobset>-<replicated job>-<job index>-<pod index>-<5 random>`
# and must fit 63 characters: with the replicated job "node", one Job and up to 64 pods
# (resources.nodes <= 64), 16 characters go to the suffix.
MAX_JOBSET_NAME = MAX_NAME - len("-node-0-63-abcde")


def job_name(kind: str, name: str, run: int | None = None, max_len: int = MAX_NAME) -> str:
    """`<name>-<kind suffix>[-<run>]`, shortened with a hash when over `max_len`."""
    suffix = _SUFFIX[kind] + (f"-{run}" if run is not None else "")
    full = f"{name}-{suffix}"
    if len(full) <= max_len:
        return full
    digest = hashlib.sha256(f"{kind}/{name}/{run}".encode()).hexdigest()[:8]
    keep = max_len - len(suffix) - len(digest) - 2
    return f"{name[:keep].rstrip('-')}-{digest}-{suffix}"


def jobset_name(kind: str, name: str, run: int | None = None) -> str:
    """The JobSet's name: the Job's name when it leaves room for the pod names, else
    shortened the same way (the observer files it under the Job's name)."""
    return job_name(kind, name, run, MAX_JOBSET_NAME)


def configmap_name(kind: str, name: str, run: int | None = None) -> str:
    """The ConfigMap holding the validated spec has the Job's name."""
    return job_name(kind, name, run)


def label_value(name: str) -> str:
    """A resource name as a label value: itself when it is a valid one (at most 63
    characters), else a prefix and a hash of the whole name. Resource names may have 253
    characters; a longer label value made every create and list call fail with a 400."""
    if len(name) <= MAX_LABEL_VALUE and _LABEL_VALUE.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    keep = MAX_LABEL_VALUE - len(digest) - 1
    prefix = re.sub(r"[^A-Za-z0-9]+$", "", name[:keep])
    return f"{prefix}-{digest}" if prefix else digest


VERSION_SOURCE_MAX = 52
VERSION_DIGEST_HEX = 10
_HEX = re.compile(r"[0-9a-f]+")


def version_name(source_name: str, manifest_digest: str) -> str:
    """The ModelVersion of an output: `<source name, cut to 52, trailing '-' and '.'
    removed>-<first 10 hex of the manifest digest>` (at most 63 characters, a DNS label
    when the source name's first 52 characters are one). Deterministic: the same output
    always gets the same name, so a restarted operator records nothing twice. A digest
    with fewer than 10 hex digits after its `sha256:` prefix is hashed instead."""
    hexpart = manifest_digest.lower().removeprefix("sha256:")
    if not (len(hexpart) >= VERSION_DIGEST_HEX and _HEX.fullmatch(hexpart[:VERSION_DIGEST_HEX])):
        hexpart = hashlib.sha256(manifest_digest.encode()).hexdigest()
    prefix = source_name[:VERSION_SOURCE_MAX].rstrip("-.")
    return f"{prefix}-{hexpart[:VERSION_DIGEST_HEX]}"
