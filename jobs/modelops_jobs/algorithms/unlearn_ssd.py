"""UnlearnRequest method ssd: approximate forgetting by Selective Synaptic Dampening.

Why this module exists: it is an ssd request's whole life in the Job pod — read and check
the IDs (deletion.py), find the forget set's texts, dampen (ssd.py), write the model and
the receipt, measure forgetting (unlearn_eval.py). Input: a plain causal-LM directory,
its stored full-data importance, and the forget set's texts (matched by ID in
spec.ssd.forgetData, else the data recorded with the importance); the dampened model is
written to spec.output. Results are flagged approximate (receipt exact = false).
"""

import hashlib
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelops_api.unlearn_request import DeletionReceipt, UnlearnRequestSpec, UnlearnResults
from modelops_jobs import unlearn_eval
from modelops_jobs.algorithms import s3t, s3t_orders, s3t_store, ssd
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.data import iter_jsonl
from modelops_jobs.deletion import ids_digest, requested_ids
from modelops_jobs.errors import PermanentError
from modelops_jobs.modelio import load_causal_lm, load_tokenizer
from modelops_jobs.storage import file_digest


def locate_inputs(spec: UnlearnRequestSpec, ctx: RunContext) -> tuple[Path, Path]:
    """(model, stored importance) paths; refuses a missing output, an S3T store, no importance."""
    if spec.output is None:
        raise PermanentError("method ssd writes a new model: set spec.output", "OutputRequired")
    model_path = ctx.resolve(str(spec.model.uri))
    if s3t_store.is_store(model_path):
        raise PermanentError(
            "this is an S3T store: use method s3t for exact deletion", "UnsupportedModel"
        )
    importance_path = (
        ctx.resolve(str(spec.ssd.importance_uri), must_exist=False)
        if spec.ssd.importance_uri
        else model_path / ssd.IMPORTANCE_FILE
    )
    if not importance_path.is_file():
        raise PermanentError(
            f"no stored full-data importance at {importance_path}", "ImportanceMissing"
        )
    return model_path, importance_path


def forget_texts(
    spec: UnlearnRequestSpec, ctx: RunContext, importance: ssd.ImportanceFile, ids: list[str]
) -> dict[str, str]:
    """The requested IDs' texts, from spec.ssd.forgetData or the importance's data."""
    ref = spec.ssd.forget_data
    data_uri = str(ref.uri) if ref else importance.metadata.get("data_uri")
    if not data_uri:
        raise PermanentError(
            "set spec.ssd.forgetData (the training data holding the IDs)", "ForgetDataRequired"
        )
    id_field = ref.id_field if ref else importance.metadata.get("id_field", "id")
    text_field = ref.text_field if ref else importance.metadata.get("text_field", "text")
    wanted = set(ids)
    return {
        str(r[id_field]): str(r.get(text_field, ""))
        for r in iter_jsonl(ctx.resolve(data_uri))
        if str(r.get(id_field)) in wanted
    }


def dampen(
    spec: UnlearnRequestSpec,
    model: Any,
    importance: ssd.ImportanceFile,
    batches: Any,
) -> ssd.DampenReport:
    """SSD over the forget set's batches; a tensor the importance lacks is permanent."""
    try:
        return ssd.selective_synaptic_dampening(
            model,
            batches,
            importance,
            ssd.causal_lm_loss,
            spec.ssd.alpha,
            spec.ssd.lambda_,
            patterns=spec.ssd.layers,
            stream=bool(spec.ssd.layers),
        )
    except KeyError as exc:
        raise PermanentError(str(exc), "ImportanceMismatch") from exc


def write_output(ctx: RunContext, model: Any, tokenizer: Any, importance_path: Path) -> None:
    """The dampened model, its tokenizer and (unchanged) the full-data importance."""
    model.save_pretrained(ctx.output_dir)
    tokenizer.save_pretrained(ctx.output_dir)
    shutil.copyfile(importance_path, ctx.output_dir / ssd.IMPORTANCE_FILE)


def make_receipt(ctx: RunContext, model_path: Path, hashed: list[str]) -> DeletionReceipt:
    return DeletionReceipt(
        method="ssd",
        exact=False,
        samples=len(hashed),
        hashed_ids_digest=ids_digest(hashed),
        digest_before=_weights_digest(model_path),
        digest_after=_weights_digest(ctx.output_dir),
        time=datetime.now(UTC),
    )


def measure_forgetting(
    spec: UnlearnRequestSpec,
    ctx: RunContext,
    model: Any,
    tokenizer: Any,
    forget_set: list[str],
    hashed: list[str],
    max_length: int,
) -> dict[str, Any]:
    """Forgetting figures of the dampened model on the forget set and the eval sets."""
    pad_id = int(tokenizer.pad_token_id or 0)
    forget = [
        s3t.Sample(h, tuple(s3t.tokenize(tokenizer, text, max_length)))
        for h, text in zip(hashed, forget_set, strict=True)
    ]
    eval_config = {
        "task": "causal_lm",
        "label_field": "label",
        "sequence_length": max_length,
        "num_labels": 0,
    }
    ctx.reporter.phase("evaluate")
    model.eval()
    return unlearn_eval.measure(
        lambda ids_, mask: model(input_ids=ids_, attention_mask=mask).logits,
        forget,
        unlearn_eval.eval_sets(spec, ctx, eval_config, tokenizer),
        pad_id,
        ctx.device,
    )


def run(spec: UnlearnRequestSpec, ctx: RunContext) -> AlgorithmResult:
    started = time.monotonic()
    model_path, importance_path = locate_inputs(spec, ctx)
    importance = ssd.ImportanceFile(importance_path)
    ids = requested_ids(spec, ctx)
    texts = forget_texts(spec, ctx, importance, ids)
    found = [i for i in ids if i in texts]
    model = load_causal_lm(model_path, spec.model.dtype, spec.model.quantization, ctx.device)
    tokenizer = load_tokenizer(model_path)
    batch_size = int(importance.metadata.get("batch_size", 8))
    max_length = int(importance.metadata.get("max_length", 256))
    ctx.reporter.phase("ssd")
    report = ssd.DampenReport()
    if found:
        batches = ssd.lm_batches(tokenizer, [texts[i] for i in found], batch_size, max_length)
        report = dampen(spec, model, importance, batches)
    seconds = time.monotonic() - started
    write_output(ctx, model, tokenizer, importance_path)
    hashed = [s3t_orders.hash_id(i) for i in found]
    receipt = make_receipt(ctx, model_path, hashed)
    forget_set = [texts[i] for i in found]
    figures = measure_forgetting(spec, ctx, model, tokenizer, forget_set, hashed, max_length)
    results = {
        "deleted_samples": len(found),
        "unknown_ids": len(ids) - len(found),
        "dampened_parameters": report.dampened,
        "seconds": round(seconds, 4),
        **figures,
    }
    lineage = {
        "receipt": receipt.to_wire(),
        "approximate": True,
        "alpha": spec.ssd.alpha,
        "lambda": spec.ssd.lambda_,
        "passes": report.passes,
        "hashedIds": hashed,
    }
    results = UnlearnResults.model_validate(results).model_dump(exclude_none=True)
    return AlgorithmResult(
        results=results,
        lineage=lineage,
        metrics={"dampenedPerTensor": report.per_tensor, "approximate": True},
    )


def _weights_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        if path.name != ssd.IMPORTANCE_FILE:
            h.update(file_digest(path).encode())
    return "sha256:" + h.hexdigest()
