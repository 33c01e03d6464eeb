"""The gate's evaluation: score a candidate and the version in service on the same data.

A ModelRollout's gate compares a new version with the one in service "on the same
held-out data". This Job reads the `ModelEvaluation` document (`EvaluationJobSpec`),
takes the first `maxSamples` records of the data once, in file order, and scores each
model on exactly those records with the same seed, one model at a time (the candidate,
then the baseline; one process, on the runner's device):

- perplexity: exp of the token-weighted mean next-token NLL over non-overlapping
  windows of `seqLen` tokens of the records' text joined with EOS; the definition PERP
  uses (`perp_eval.perplexity`, `data.token_stream`, `data.lm_windows`);
- taskScore: exact match of greedy completions of the records' prompts against their
  completions (Trans-LoRA's task metric, `translora.exact_match`).

Each model is tokenised by its own tokenizer (the same one when both share a base; the
message says when the token streams differ). A metric that cannot be computed for a
model (no text or prompt field, data shorter than one window, an S3T store for
taskScore, a loss that is not finite) is left out of that model's results, listed in
`results.unavailable`, and explained in the message: the result never holds NaN or Inf.
Metrics that need the run's own data (forgetAccuracy, retainAccuracy, membershipAuc,
transferredScore, ...) are the run's results (ModelVersion.spec.metrics) and are not
recomputed here. Nothing is published: the result is the termination message only.
"""

import gc
import math
from typing import Any

import torch

from modelops_api.model_rollout import EvaluatedModel, EvaluationJobSpec
from modelops_jobs import data
from modelops_jobs.algorithms import evaluate_models, translora
from modelops_jobs.algorithms.perp_eval import perplexity
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.errors import PermanentError

BATCH_SIZE = 8
RUN_METRICS = (
    "forgetAccuracy",
    "retainAccuracy",
    "testAccuracy",
    "membershipAuc",
    "transferredScore",
    "sourceScore",
)
"""Gate metrics that come from the run's own results, never recomputed here."""


class Unavailable(Exception):
    """A metric cannot be computed for this model; the message says why."""


def read_samples(spec: EvaluationJobSpec, ctx: RunContext) -> list[dict[str, Any]]:
    """The first maxSamples records (the data's own maxSamples too); PermanentError if none."""
    try:
        path = ctx.resolve(str(spec.data.uri))
    except PermanentError as exc:
        raise PermanentError(f"data.uri: {exc.message}"[:1000], exc.reason) from exc
    limit = min(spec.max_samples, spec.data.max_samples or spec.max_samples)
    try:
        records = data.read_records(path, limit)
    except PermanentError as exc:
        raise PermanentError(f"data.uri: {exc.message}"[:1000], exc.reason) from exc
    if not records:
        raise PermanentError(f"data.uri: no records in {spec.data.uri}", "DataEmpty")
    return records


def texts_of(records: list[dict[str, Any]], field: str) -> list[str]:
    """The field of every record; Unavailable when a record lacks it."""
    missing = [i for i, r in enumerate(records) if field not in r]
    if missing:
        raise Unavailable(f"record {missing[0]} of the data has no field {field!r}")
    return [str(r[field]) for r in records]


def score_perplexity(
    loaded: evaluate_models.Loaded, records: list[dict[str, Any]], spec: EvaluationJobSpec
) -> tuple[float, torch.Tensor]:
    """(perplexity, the token stream it was measured on)."""
    if not loaded.language_model:
        raise Unavailable("an S3T classification store has no next-token perplexity")
    positions = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions < spec.seq_len:
        raise Unavailable(f"seqLen {spec.seq_len} exceeds the model's {positions} positions")
    stream = data.token_stream(loaded.tokenizer, texts_of(records, spec.data.text_field))
    try:
        windows = data.lm_windows(stream, spec.seq_len)
    except PermanentError as exc:
        raise Unavailable(f"seqLen {spec.seq_len}: {exc.message}") from exc
    try:
        value = perplexity(loaded.model, windows, BATCH_SIZE)
    except OverflowError as exc:
        raise Unavailable("the mean loss is too large: perplexity overflows") from exc
    if not math.isfinite(value):
        raise Unavailable(f"the loss is not finite (perplexity {value})")
    return value, stream


def score_task(
    loaded: evaluate_models.Loaded, records: list[dict[str, Any]], spec: EvaluationJobSpec
) -> float:
    """Exact match of greedy completions against the records' completions."""
    if not loaded.generates:
        raise Unavailable("greedy generation from an S3T ensemble is not supported")
    prompts = texts_of(records, spec.data.prompt_field)
    refs = texts_of(records, spec.data.completion_field)
    tok = loaded.tokenizer
    longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for r in refs)
    new_tokens = max(1, min(spec.seq_len, longest + 1))
    completions = translora.greedy_completions(loaded.model, tok, prompts, new_tokens, BATCH_SIZE)
    return translora.exact_match(completions, refs)


def score(
    loaded: evaluate_models.Loaded, records: list[dict[str, Any]], spec: EvaluationJobSpec
) -> tuple[dict[str, float], dict[str, str], torch.Tensor | None]:
    """(metric values, unavailable metric -> reason, perplexity's token stream)."""
    values: dict[str, float] = {}
    missing: dict[str, str] = {}
    stream = None
    for metric in spec.metrics:
        try:
            if metric == "perplexity":
                values[metric], stream = score_perplexity(loaded, records, spec)
            elif metric == "taskScore":
                values[metric] = score_task(loaded, records, spec)
            elif metric in RUN_METRICS:
                missing[metric] = "a result of the run itself (ModelVersion.spec.metrics)"
            else:
                missing[metric] = "not a metric the evaluation computes"
        except Unavailable as exc:
            missing[metric] = str(exc)
        except torch.cuda.OutOfMemoryError:
            raise  # the pod's device, not the data: retryable, never "unavailable"
        except (RuntimeError, IndexError, ValueError) as exc:  # the model cannot take the data
            missing[metric] = f"{type(exc).__name__}: {exc}"[:300]
    for metric, value in list(values.items()):
        if not math.isfinite(value):
            missing[metric] = f"not finite ({value})"
            del values[metric]
    return values, missing, stream


def run(spec: EvaluationJobSpec, ctx: RunContext) -> AlgorithmResult:
    """Score the candidate, then the baseline (when one serves), on the same records."""
    records = read_samples(spec, ctx)
    models: list[tuple[str, EvaluatedModel]] = [("candidate", spec.candidate)]
    if spec.baseline is not None:
        models.append(("baseline", spec.baseline))
    results: dict[str, Any] = {}
    unavailable: dict[str, list[str]] = {}
    notes: list[str] = [f"scored {len(records)} samples from {spec.data.uri}"]
    streams: dict[str, torch.Tensor] = {}
    for role, model in models:
        ctx.reporter.phase(f"evaluate-{role}")
        torch.manual_seed(spec.seed)  # the same seed for each model
        loaded = evaluate_models.load(model, role, ctx)
        values, missing, stream = score(loaded, records, spec)
        if loaded.note:
            notes.append(f"{role}: {loaded.note}")
        del loaded
        _free(ctx.device)
        results[role] = values
        for name, value in values.items():
            ctx.reporter.metric(f"{role}_{name}", value)
        if missing:
            unavailable[role] = sorted(missing)
            notes += [f"{role} {m}: {why}" for m, why in sorted(missing.items())]
        if stream is not None:
            streams[role] = stream
    if len(streams) == 2 and not torch.equal(streams["candidate"], streams["baseline"]):
        notes.append("the two tokenizers differ: perplexities are per each model's own tokens")
    if unavailable:
        results["unavailable"] = unavailable
    return AlgorithmResult(results=results, publish=False, message="; ".join(notes)[:1024])


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
