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

from modelops_api.meta import EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE, TERMINATION_MESSAGE_PATH
from modelops_api.status import Artifact, JobResult
from modelops_api.unlearn_request import DeletionReceipt
from modelops_api.validation import spec_error_message
from modelops_jobs import dataset_lineage, distributed, registry, storage
from modelops_jobs.checkpoint import Checkpointer, seed_everything
from modelops_jobs.context import RunContext, RunInfo, default_device
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


def parse_document(document: dict[str, Any]) -> tuple[Any, Any]:
    """(KindInfo, validated spec) or PermanentError(InvalidSpec) naming the field."""
    kind = document.get("kind")
    try:
        info = registry.document_info(str(kind))
    except KeyError as exc:
        raise PermanentError(str(exc), "InvalidSpec") from exc
    try:
        spec = info.spec.model_validate(document.get("spec", {}))
    except ValidationError as exc:
        raise PermanentError(spec_error_message(exc), "InvalidSpec") from exc
    return info, spec


def run_info(document: dict[str, Any]) -> RunInfo:
    """The document's `run` (ModelAdaptation), checked; PermanentError naming the field."""
    raw = document.get("run")
    if raw is None:
        return RunInfo()
    if not isinstance(raw, dict):
        raise PermanentError("run: expected an object", "InvalidSpec")
    info = RunInfo()
    if "number" in raw:
        number = raw["number"]
        if type(number) is not int or number < 1:
            raise PermanentError(
                f"run.number: {number!r} is not a whole number >= 1", "InvalidSpec"
            )
        info["number"] = number
    if "trigger" in raw:
        info["trigger"] = _text(raw, "trigger")
    if "parent" in raw:
        info["parent"] = _text(raw, "parent")
    return info


def _text(raw: dict[str, Any], key: str) -> str:
    if not isinstance(raw[key], str):
        raise PermanentError(f"run.{key}: {raw[key]!r} is not a string", "InvalidSpec")
    return str(raw[key])


@dataclass
class Attempt:
    """What a failure must know: the world (shut down at the end) and the staging
    directory (discarded on failure) as soon as it exists."""

    world: distributed.World
    staging: Path | None = None


@dataclass
class Launch:
    """A parsed document ready to run: its kind, spec, method, algorithm and context."""

    info: Any
    spec: Any
    method: Any
    algorithm: Any
    ctx: RunContext
    uri: str | None = None
    output: storage.Output | None = None


def execute(
    document: dict[str, Any],
    reporter: Reporter | None = None,
    checkpoint_dir: Path | None = None,
    install_signals: bool = False,
) -> RunOutcome:
    """Parse, run and publish one spec document; never raises for algorithm failures."""
    reporter = reporter or NullReporter()
    started = time.time()
    attempt = Attempt(distributed.World(device=default_device()))
    try:
        attempt.world = distributed.init_from_env()
        launch = launch_document(document, reporter, checkpoint_dir, attempt)
        if install_signals:
            launch.ctx.checkpointer.install_signal_handlers()
        outcome = launch.algorithm.run(launch.spec, launch.ctx)
        return finish(document, launch, outcome, attempt, started)
    except Exception as exc:
        return failed(exc, attempt)
    finally:
        distributed.shutdown(attempt.world)


def launch_document(
    document: dict[str, Any], reporter: Reporter, checkpoint_dir: Path | None, attempt: Attempt
) -> Launch:
    """Parse and seed; build the context, its staging output and its checkpointer."""
    world = attempt.world
    info, spec = parse_document(document)
    seed_everything(spec.seed)
    torch.set_num_threads(thread_count())
    method = registry.method_of(info, spec)
    algorithm = registry.get(method)
    ctx = RunContext(
        output_dir=Path("."),
        reporter=reporter,
        seed=spec.seed,
        device=world.device,
        run=run_info(document),
        world=world,
    )
    launch = Launch(info, spec, method, algorithm, ctx)
    launch.uri = storage.output_location(info, spec, document)
    ckpt_every = getattr(getattr(spec, "optimization", None), "checkpoint_every", 100)
    if launch.uri is not None:
        output = storage.prepare_output(ctx.resolver, launch.uri, checkpoint_dir, world.is_main)
        launch.output = output
        ctx.output_dir = attempt.staging = output.staging
        ctx.checkpointer = _checkpointer(world, lambda: output.checkpointer(ckpt_every, world.rank))
    else:
        ctx.checkpointer = Checkpointer(checkpoint_dir, every=ckpt_every, rank=world.rank)
    return launch


def wire_results(info: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """The kind's results model on the wire; ModelAdaptation's free-form numbers camelCased."""
    results = dict(raw)
    if info.results is not None:
        return info.results.model_validate(results).to_wire()
    return {to_camel(k): v for k, v in results.items()}


def finish(
    document: dict[str, Any], launch: Launch, outcome: Any, attempt: Attempt, started: float
) -> RunOutcome:
    """After the algorithm: rank 0 publishes with the manifest and reports the result."""
    world = attempt.world
    results = wire_results(launch.info, outcome.results)
    ranks = distributed.gather_objects(world.describe(), world)
    if not world.is_main:  # rank 0 alone publishes, writes the manifest and the result
        _discard(attempt.staging)
        return RunOutcome(JobResult(ok=True, reason="Succeeded"), EXIT_OK, world.rank)
    artifact = publish(document, launch, outcome, results, ranks, started)
    launch.ctx.checkpointer.discard()  # the run is done: nothing left to resume
    extra: dict[str, Any] = {}
    if "receipt" in outcome.lineage:
        extra["receipt"] = DeletionReceipt.model_validate(outcome.lineage["receipt"]).to_wire()
    result = JobResult(
        ok=True,
        reason="Succeeded",
        message=outcome.message[:1024],
        results=results,
        artifact=artifact,
        status=extra,
    )
    return RunOutcome(result, EXIT_OK)


def publish(
    document: dict[str, Any],
    launch: Launch,
    outcome: Any,
    results: dict[str, Any],
    ranks: list[Any],
    started: float,
) -> Artifact | None:
    """Write the manifest and publish the output (when there is one); the artifact."""
    output, uri, ctx = launch.output, launch.uri, launch.ctx
    if uri is None and outcome.version is None:
        return None
    datasets = dataset_lineage.datasets(launch.spec, ctx)
    if output is not None and outcome.publish:
        manifest = {
            "apiVersion": document.get("apiVersion"),
            "kind": launch.info.kind,
            "name": document.get("metadata", {}).get("name"),
            "namespace": document.get("metadata", {}).get("namespace"),
            "uid": document.get("metadata", {}).get("uid"),
            "run": document.get("run"),
            "specDigest": spec_digest(document),
            "algorithm": launch.info.algorithm,
            "method": launch.method.method,
            "results": results,
            "lineage": outcome.lineage,
            "datasets": [d.to_wire() for d in datasets],
            "metrics": outcome.metrics,
            "createdAt": datetime.now(UTC).isoformat(),
            "wallSeconds": round(time.time() - started, 3),
            "distributed": {"worldSize": ctx.world.world_size, "ranks": ranks},
        }
        digest = storage.write_manifest(ctx.output_dir, manifest)
        output.publish(ctx.reporter)
        return Artifact(
            uri=uri or "", manifest_digest=digest, version=outcome.version, datasets=datasets
        )
    return Artifact(uri=uri or "", version=outcome.version, datasets=datasets)


def failed(exc: Exception, attempt: Attempt) -> RunOutcome:
    """The outcome of a failed run: preempted (staging kept), permanent, or retryable."""
    rank = attempt.world.rank
    if isinstance(exc, Preempted):
        return RunOutcome(
            JobResult(ok=False, reason=exc.reason, message=exc.message), EXIT_RETRYABLE, rank
        )
    if not isinstance(exc, JobError):
        traceback.print_exc(file=sys.stderr)
    _discard(attempt.staging)
    if isinstance(exc, JobError):
        code = EXIT_PERMANENT if isinstance(exc, PermanentError) else EXIT_RETRYABLE
        result = JobResult(ok=False, reason=exc.reason, message=exc.message[:1024])
        return RunOutcome(result, code, rank)
    message = f"{type(exc).__name__}: {exc}"[:1024]
    return RunOutcome(
        JobResult(ok=False, reason="InternalError", message=message), EXIT_RETRYABLE, rank
    )


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
    """The result as JSON, trimmed to the kubelet's 4096-byte limit: first the message,
    then the artifact's dataset lineage (from the end), then the results."""
    slim = result.model_copy(update={"message": result.message[:200]})
    for candidate in (result, *_fewer_datasets(slim)):
        text = json.dumps(candidate.to_wire(), separators=(",", ":"))
        if len(text.encode()) <= TERMINATION_LIMIT:
            return text
    bare = JobResult(ok=result.ok, reason=result.reason, message="result too large")
    for candidate in _fewer_datasets(bare.model_copy(update={"artifact": result.artifact})):
        text = json.dumps(candidate.to_wire(), separators=(",", ":"))
        if len(text.encode()) <= TERMINATION_LIMIT:
            return text
    return json.dumps(bare.to_wire(), separators=(",", ":"))


def _fewer_datasets(result: JobResult) -> list[JobResult]:
    """The result with its artifact's datasets cut to n entries, n from all down to none."""
    artifact = result.artifact
    if artifact is None:
        return [result]
    return [
        result.model_copy(
            update={"artifact": artifact.model_copy(update={"datasets": artifact.datasets[:n]})}
        )
        for n in range(len(artifact.datasets), -1, -1)
    ]


def write_termination_message(result: JobResult, path: str | None = None) -> None:
    path = path or os.environ.get("MODELOPS_TERMINATION_LOG", TERMINATION_MESSAGE_PATH)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(termination_message(result))
    except OSError as exc:
        print(f"modelops: cannot write termination message to {path}: {exc}", file=sys.stderr)
