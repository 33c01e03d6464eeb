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

from modelops_api.unlearn_request import DeletionReceipt, UnlearnRequestSpec, UnlearnResults
from modelops_jobs import unlearn_eval
from modelops_jobs.algorithms import s3t, s3t_orders, s3t_store, ssd
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.data import iter_jsonl
from modelops_jobs.deletion import ids_digest, requested_ids
from modelops_jobs.errors import PermanentError
from modelops_jobs.modelio import load_causal_lm, load_tokenizer
from modelops_jobs.storage import file_digest


def run(spec: UnlearnRequestSpec, ctx: RunContext) -> AlgorithmResult:
    started = time.monotonic()
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
    importance = ssd.ImportanceFile(importance_path)
    ids = requested_ids(spec, ctx)
    ref = spec.ssd.forget_data
    data_uri = str(ref.uri) if ref else importance.metadata.get("data_uri")
    if not data_uri:
        raise PermanentError(
            "set spec.ssd.forgetData (the training data holding the IDs)", "ForgetDataRequired"
        )
    id_field = ref.id_field if ref else importance.metadata.get("id_field", "id")
    text_field = ref.text_field if ref else importance.metadata.get("text_field", "text")
    wanted = set(ids)
    texts = {
        str(r[id_field]): str(r.get(text_field, ""))
        for r in iter_jsonl(ctx.resolve(data_uri))
        if str(r.get(id_field)) in wanted
    }
    found = [i for i in ids if i in texts]
    model = load_causal_lm(model_path, spec.model.dtype, spec.model.quantization, ctx.device)
    tokenizer = load_tokenizer(model_path)
    batch_size = int(importance.metadata.get("batch_size", 8))
    max_length = int(importance.metadata.get("max_length", 256))
    ctx.reporter.phase("ssd")
    report = ssd.DampenReport()
    if found:
        batches = ssd.lm_batches(tokenizer, [texts[i] for i in found], batch_size, max_length)
        try:
            report = ssd.selective_synaptic_dampening(
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
    seconds = time.monotonic() - started
    model.save_pretrained(ctx.output_dir)
    tokenizer.save_pretrained(ctx.output_dir)
    shutil.copyfile(importance_path, ctx.output_dir / ssd.IMPORTANCE_FILE)
    hashed = [s3t_orders.hash_id(i) for i in found]
    receipt = DeletionReceipt(
        method="ssd",
        exact=False,
        samples=len(found),
        hashed_ids_digest=ids_digest(hashed),
        digest_before=_weights_digest(model_path),
        digest_after=_weights_digest(ctx.output_dir),
        time=datetime.now(UTC),
    )
    pad_id = int(tokenizer.pad_token_id or 0)
    forget = [
        s3t.Sample(h, tuple(s3t.tokenize(tokenizer, texts[i], max_length)))
        for h, i in zip(hashed, found, strict=True)
    ]
    eval_config = {
        "task": "causal_lm",
        "label_field": "label",
        "sequence_length": max_length,
        "num_labels": 0,
    }
    ctx.reporter.phase("evaluate")
    model.eval()
    figures = unlearn_eval.measure(
        lambda ids_, mask: model(input_ids=ids_, attention_mask=mask).logits,
        forget,
        unlearn_eval.eval_sets(spec, ctx, eval_config, tokenizer),
        pad_id,
        ctx.device,
    )
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
