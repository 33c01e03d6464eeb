"""Load a published version the way its kind published it, for the gate's evaluation.

Why a module of its own: each kind leaves a different thing at `output.uri`, and the
evaluation must score what would serve, not an approximation of it:

  layout    kinds (method)                                   loaded as
  full      PruneRetrain (perp), ModelAdaptation cpt,         the causal LM at the URI
            UnlearnRequest ssd
  adapter   ModelAdaptation lora, LoRATransfer (translora)    the PEFT adapter at the URI on
                                                              its base: `baseUri`, else the
                                                              manifest's lineage (lora:
                                                              `parent`; translora:
                                                              `targetModel`)
  store     ModelAdaptation s3t, UnlearnRequest s3t           the S3T ensemble: logits
                                                              averaged over the live shards
                                                              of the version (`s3t.load`,
                                                              the store's own serving code)

A store version is named by the URI: the store itself (its CURRENT version), a
`<store>/versions/<vNNNN>` directory (that version), or a published directory whose
manifest's lineage names the `store` (an UnlearnRequest s3t output: the receipt's
`versionAfter`). Every failure to find or load the model is a PermanentError whose
message starts with the field (`candidate.uri`, `baseline.baseUri`, ...).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from modelops_api.model_rollout import EvaluatedModel
from modelops_jobs.algorithms import s3t, s3t_store
from modelops_jobs.algorithms.translora_job import load_adapter
from modelops_jobs.context import RunContext
from modelops_jobs.errors import PermanentError
from modelops_jobs.modelio import load_causal_lm, load_tokenizer
from modelops_jobs.storage import MANIFEST

LAYOUTS: dict[tuple[str, str | None], str] = {
    ("PruneRetrain", "perp"): "full",
    ("ModelAdaptation", "cpt"): "full",
    ("UnlearnRequest", "ssd"): "full",
    ("ModelAdaptation", "lora"): "adapter",
    ("LoRATransfer", "translora"): "adapter",
    ("ModelAdaptation", "s3t"): "store",
    ("UnlearnRequest", "s3t"): "store",
}
"""How each (kind, method) publishes; a kind with one method may leave `method` unset."""

ADAPTER_BASE = {"ModelAdaptation": "parent", "LoRATransfer": "targetModel"}
"""The lineage key of the manifest that names an adapter's base, per kind."""


@dataclass
class Loaded:
    """A version ready to score: a causal LM (HF call convention) and its tokenizer."""

    model: nn.Module
    tokenizer: Any
    layout: str
    generates: bool
    """Whether greedy generation is available (not for an S3T ensemble)."""
    language_model: bool = True
    """False for an S3T classification store (class logits, no next-token perplexity)."""
    note: str = ""


class EnsembleLM(nn.Module):
    """An S3T ensemble behind the causal-LM call convention perplexity uses."""

    def __init__(self, ensemble: s3t.S3TEnsemble) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.inner = ensemble.model

    def get_input_embeddings(self) -> nn.Module:
        embeddings: nn.Module = self.inner.peft.get_input_embeddings()
        return embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool = False,
    ) -> SimpleNamespace:
        return SimpleNamespace(logits=self.ensemble.logits(input_ids, attention_mask))


def layout_of(model: EvaluatedModel, field: str) -> str:
    """full, adapter or store for the model's kind and method; PermanentError otherwise."""
    methods = {m for k, m in LAYOUTS if k == model.kind}
    method = model.method
    if method is None and len(methods) == 1:
        method = next(iter(methods))
    if (model.kind, method) not in LAYOUTS:
        raise PermanentError(
            f"{field}.method: {method!r} is not a method of {model.kind};"
            f" expected one of {sorted(str(m) for m in methods)}",
            "InvalidSpec",
        )
    return LAYOUTS[(model.kind, method)]


def load(model: EvaluatedModel, field: str, ctx: RunContext) -> Loaded:
    """The version `model` names, loaded on ctx.device; `field` names it in errors."""
    layout = layout_of(model, field)
    path = _resolve(model.uri, f"{field}.uri", ctx)
    manifest = _manifest(path)
    try:
        if layout == "full":
            lm = load_causal_lm(path, device=ctx.device)
            return Loaded(lm, load_tokenizer(path), layout, generates=True)
        if layout == "adapter":
            return _adapter(model, path, manifest, field, ctx)
        return _store(path, manifest, field, ctx)
    except PermanentError as exc:
        if exc.message.startswith(field):
            raise
        raise PermanentError(f"{field}.uri: {exc.message}"[:1000], exc.reason) from exc


def _resolve(uri: str, field: str, ctx: RunContext) -> Path:
    try:
        return ctx.resolve(uri)
    except PermanentError as exc:
        raise PermanentError(f"{field}: {exc.message}"[:1000], exc.reason) from exc


def _manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        return {}
    try:
        body = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _adapter(
    model: EvaluatedModel, path: Path, manifest: dict[str, Any], field: str, ctx: RunContext
) -> Loaded:
    base_uri = model.base_uri or (manifest.get("lineage") or {}).get(ADAPTER_BASE[model.kind])
    if not base_uri:
        raise PermanentError(
            f"{field}.baseUri: the {model.kind} adapter at {model.uri} needs its base model"
            " (not set, and the manifest's lineage names none)",
            "InvalidSpec",
        )
    base_path = _resolve(str(base_uri), f"{field}.baseUri", ctx)
    try:
        base = load_causal_lm(base_path, device=ctx.device)
    except PermanentError as exc:
        raise PermanentError(f"{field}.baseUri: {exc.message}"[:1000], exc.reason) from exc
    tokenizer_dir = path if (path / "tokenizer_config.json").exists() else base_path
    lm = load_adapter(base, path).to(ctx.device)
    return Loaded(lm, load_tokenizer(tokenizer_dir), "adapter", generates=True)


def _store(path: Path, manifest: dict[str, Any], field: str, ctx: RunContext) -> Loaded:
    store, version = store_version(path, manifest, field, ctx)
    try:
        ensemble = s3t.load(store, version=version, device=ctx.device)
    except (OSError, ValueError, KeyError) as exc:
        raise PermanentError(
            f"{field}.uri: cannot load S3T store {store} version {version or 'CURRENT'}: {exc}",
            "ModelLoadFailed",
        ) from exc
    live = len(ensemble.served)
    note = f"S3T {ensemble.version}: {live} live shards of {live + len(ensemble.out_of_service)}"
    return Loaded(
        EnsembleLM(ensemble),
        ensemble.tokenizer,
        "store",
        generates=False,
        language_model=ensemble.task != "classification",
        note=note,
    )


def store_version(
    path: Path, manifest: dict[str, Any], field: str, ctx: RunContext
) -> tuple[Path, str | None]:
    """(store directory, version or None for CURRENT) a URI's directory names."""
    if s3t_store.is_store(path):
        return path, None
    if path.parent.name == "versions" and s3t_store.is_store(path.parent.parent):
        return path.parent.parent, path.name
    lineage = manifest.get("lineage") or {}
    if lineage.get("store"):
        store = _resolve(str(lineage["store"]), f"{field}.uri", ctx)
        receipt = lineage.get("receipt") or {}
        version = lineage.get("retrainedVersion") or receipt.get("versionAfter")
        if s3t_store.is_store(store):
            return store, version
    raise PermanentError(
        f"{field}.uri: no S3T store at {path} (no store.json, not a versions/<v> directory"
        " of one, no manifest naming one)",
        "ModelNotFound",
    )
