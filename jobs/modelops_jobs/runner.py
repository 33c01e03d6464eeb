"""The contract every algorithm meets, run the same way in a pod and in `modelops run`.

In: a spec document (the resource's apiVersion, kind, metadata and spec, plus `run`
for ModelAdaptation), parsed with the same pydantic model the API server's schema was
generated from. Out: the output directory published atomically with its manifest
(lineage, spec digest, metrics, file digests), a short JSON result in the termination
message, and an exit code: 0 done, EXIT_PERMANENT for input that retrying cannot fix,
EXIT_RETRYABLE for anything else (including SIGTERM after a checkpoint).
"""

import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from modelops_api import kind_info
from modelops_api.meta import EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE, TERMINATION_MESSAGE_PATH
from modelops_api.status import Artifact, JobResult
from modelops_api.unlearn_request import DeletionReceipt
from modelops_jobs import distributed, registry, storage
from modelops_jobs.checkpoint import Checkpointer, seed_everything
from modelops_jobs.context import RunContext, default_device
from modelops_jobs.errors import JobError, PermanentError, Preempted
from modelops_jobs.reporting import NullReporter, Reporter

TERMINATION_LIMIT = 4096


@dataclass
class RunOutcome:
    result: JobResult
    exit_code: int
    rank: int = 0
    """The global rank that ran it: only rank 0's result is the pod's."""


def spec_digest(document: dict[str, Any]) -> str:
    body = json.dumps(document.get("spec", {}), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def validation_message(exc: ValidationError) -> str:
    """'spec.a.b: message' for each error: the field is always named."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"spec.{loc}: {err['msg']}" if loc else f"spec: {err['msg']}")
    return "; ".join(parts)


def parse_document(document: dict[str, Any]) -> tuple[Any, Any]:
    """(KindInfo, validated spec) or PermanentError(InvalidSpec) naming the field."""
    kind = document.get("kind")
    try:
        info = kind_info(str(kind))
    except KeyError as exc:
        raise PermanentError(str(exc), "InvalidSpec") from exc
    try:
        spec = info.spec.model_validate(document.get("spec", {}))
    except ValidationError as exc:
        raise PermanentError(validation_message(exc), "InvalidSpec") from exc
    return info, spec


def output_location(info: Any, spec: Any, document: dict[str, Any]) -> str | None:
    """The URI this run publishes to (ModelAdaptation runs get their own version dir)."""
    output = getattr(spec, "output", None)
    if output is None:
        return None
    if info.kind == "ModelAdaptation":
        number = int(document.get("run", {}).get("number", 1))
        return f"{output.uri.rstrip('/')}/run-{number:04d}"
    return str(output.uri)


def execute(
    document: dict[str, Any],
    reporter: Reporter | None = None,
    checkpoint_dir: Path | None = None,
    install_signals: bool = False,
) -> RunOutcome:
    """Parse, run and publish one spec document; never raises for algorithm failures."""
    reporter = reporter or NullReporter()
    started = time.time()
    staging: Path | None = None
    world = distributed.World(device=default_device())
    try:
        world = distributed.init_from_env()
        info, spec = parse_document(document)
        seed_everything(spec.seed)
        torch.set_num_threads(thread_count())
        module = registry.get(info.algorithm)
        ctx = RunContext(
            output_dir=Path("."), reporter=reporter, seed=spec.seed, device=world.device
        )
        ctx.world = world
        uri = output_location(info, spec, document)
        output: storage.Output | None = None
        ckpt_every = getattr(getattr(spec, "optimization", None), "checkpoint_every", 100)
        if uri is not None:
            output = storage.prepare_output(ctx.resolver, uri, checkpoint_dir, world.is_main)
            ctx.output_dir = staging = output.staging
            ctx.checkpointer = _checkpointer(
                world, lambda: output.checkpointer(ckpt_every, world.rank)
            )
        else:
            ctx.checkpointer = Checkpointer(checkpoint_dir, every=ckpt_every, rank=world.rank)
        if install_signals:
            ctx.checkpointer.install_signal_handlers()
        ctx.run = document.get("run", {})  # type: ignore[attr-defined]
        outcome = module.run(spec, ctx)
        results = dict(outcome.results)
        if info.results is not None:
            results = info.results.model_validate(results).to_wire()
        else:  # ModelAdaptation runs: free-form numbers, camelCase like every status
            results = {to_camel(k): v for k, v in results.items()}
        ranks = distributed.gather_objects(world.describe(), world)
        if not world.is_main:  # rank 0 alone publishes, writes the manifest and the result
            _discard(staging)
            return RunOutcome(JobResult(ok=True, reason="Succeeded"), EXIT_OK, world.rank)
        artifact = None
        if output is not None and outcome.publish:
            manifest = {
                "apiVersion": document.get("apiVersion"),
                "kind": info.kind,
                "name": document.get("metadata", {}).get("name"),
                "namespace": document.get("metadata", {}).get("namespace"),
                "uid": document.get("metadata", {}).get("uid"),
                "run": document.get("run"),
                "specDigest": spec_digest(document),
                "algorithm": info.algorithm,
                "results": results,
                "lineage": outcome.lineage,
                "metrics": outcome.metrics,
                "createdAt": datetime.now(UTC).isoformat(),
                "wallSeconds": round(time.time() - started, 3),
                "distributed": {"worldSize": world.world_size, "ranks": ranks},
            }
            digest = storage.write_manifest(ctx.output_dir, manifest)
            output.publish(reporter)
            artifact = Artifact(uri=uri or "", manifest_digest=digest, version=outcome.version)
        elif outcome.version is not None or uri is not None:
            artifact = Artifact(uri=uri or "", version=outcome.version)
        ctx.checkpointer.discard()  # the run is done: nothing left to resume
        extra: dict[str, Any] = {}
        if "receipt" in outcome.lineage:
            extra["receipt"] = DeletionReceipt.model_validate(outcome.lineage["receipt"]).to_wire()
        result = JobResult(
            ok=True, reason="Succeeded", results=results, artifact=artifact, status=extra
        )
        return RunOutcome(result, EXIT_OK)
    except Preempted as exc:
        return RunOutcome(
            JobResult(ok=False, reason=exc.reason, message=exc.message), EXIT_RETRYABLE, world.rank
        )
    except PermanentError as exc:
        _discard(staging)
        return RunOutcome(
            JobResult(ok=False, reason=exc.reason, message=exc.message[:1024]),
            EXIT_PERMANENT,
            world.rank,
        )
    except JobError as exc:
        _discard(staging)
        return RunOutcome(
            JobResult(ok=False, reason=exc.reason, message=exc.message[:1024]),
            EXIT_RETRYABLE,
            world.rank,
        )
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _discard(staging)
        message = f"{type(exc).__name__}: {exc}"[:1024]
        return RunOutcome(
            JobResult(ok=False, reason="InternalError", message=message), EXIT_RETRYABLE, world.rank
        )
    finally:
        distributed.shutdown(world)


def thread_count() -> int:
    """MODELOPS_THREADS, else the CPUs shared by this pod's processes."""
    if os.environ.get("MODELOPS_THREADS"):
        return max(1, int(os.environ["MODELOPS_THREADS"]))
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    return max(1, (os.cpu_count() or 1) // local)


def _checkpointer(world: distributed.World, make: Any) -> Checkpointer:
    """Build the checkpointer on each node's local rank 0 first: a SyncedCheckpointer
    pulls the previous pod's files, and one writer per node directory is enough."""
    made: Checkpointer | None = None
    for turn in (True, False):
        if (world.local_rank == 0) == turn:
            made = make()
        distributed.barrier(world)
    assert made is not None
    return made


def _discard(staging: Path | None) -> None:
    """Remove a failed run's staging directory (its checkpoint directory stays)."""
    if staging is not None and staging.exists():
        shutil.rmtree(staging, ignore_errors=True)


def termination_message(result: JobResult) -> str:
    """The result as JSON, trimmed to the kubelet's 4096-byte limit."""
    text = json.dumps(result.to_wire(), separators=(",", ":"))
    if len(text.encode()) <= TERMINATION_LIMIT:
        return text
    slim = result.model_copy(update={"message": result.message[:200]})
    text = json.dumps(slim.to_wire(), separators=(",", ":"))
    if len(text.encode()) <= TERMINATION_LIMIT:
        return text
    return json.dumps(
        JobResult(
            ok=result.ok, reason=result.reason, message="result too large", artifact=result.artifact
        ).to_wire()
    )


def write_termination_message(result: JobResult, path: str | None = None) -> None:
    path = path or os.environ.get("MODELOPS_TERMINATION_LOG", TERMINATION_MESSAGE_PATH)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(termination_message(result))
    except OSError as exc:
        print(f"modelops: cannot write termination message to {path}: {exc}", file=sys.stderr)
