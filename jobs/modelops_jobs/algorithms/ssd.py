"""SSD: selective synaptic dampening, retrain-free approximate unlearning (arXiv:2308.07707).

Why this module exists: it holds the method itself, free of any file format or spec, so
the UnlearnRequest job, the benchmarks and training jobs that store the full-data
importance all use the same arithmetic.

- Importance of a dataset X (a diagonal Fisher approximation, as in the official code):
  I_X = mean over mini-batches of the squared mini-batch gradient, model in eval() mode.
  Mini-batch, not per-sample, gradients: I_D and I_Df must use the same batch size to
  be comparable, so the batch size is stored with I_D.
- Selection: parameters with I_Df > alpha * I_D.
- Dampening: theta <- beta * theta with beta = min(lambda * I_D / I_Df, 1): never
  amplified; a selected parameter with I_D = 0 is zeroed (beta = 0). I_Df > 0 wherever
  something is selected, and the denominator is clamped anyway.
- Memory: I_D is read one tensor at a time from a safetensors file. With `stream=True`
  the forget-set importance is computed one layer (block) at a time — one pass over the
  forget set per layer — and only the selected entries and their beta are kept until
  every layer is done, so dampening layer k never changes the gradients seen by layer
  k+1 (importance stays that of the original model, as in the paper).
- `patterns` restricts SSD to parameter names (dotted-glob, e.g. `layers.3*` or `fc1`).
- Label-free variant (LFSSD): `label_free=True` accumulates |grad| instead of grad^2;
  pair it with `output_norm_loss` (mean squared L2 norm of the outputs).
"""

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

IMPORTANCE_FILE = "ssd_importance.safetensors"
LossFn = Callable[[nn.Module, Any], torch.Tensor]
_TINY = 1e-30


def fisher_importance(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    names: Sequence[str] | None = None,
    label_free: bool = False,
) -> dict[str, torch.Tensor]:
    """Mean over mini-batches of grad^2 (|grad| if label_free) for the named parameters."""
    params = dict(model.named_parameters())
    wanted = list(names) if names is not None else list(params)
    saved = {n: p.requires_grad for n, p in params.items()}
    was_training = model.training
    for n, p in params.items():
        p.requires_grad_(n in set(wanted))
    model.eval()
    sums = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in wanted}
    count = 0
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            for n in wanted:
                grad = params[n].grad
                if grad is not None:
                    sums[n] += (
                        grad.detach().float().abs() if label_free else grad.detach().float().pow(2)
                    )
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.requires_grad_(saved[n])
        model.train(was_training)
    return {n: s / max(count, 1) for n, s in sums.items()}


def dampening_factors(
    forget: torch.Tensor, full: torch.Tensor, alpha: float, lambda_: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices selected, their beta): I_f > alpha*I_D, beta = min(lambda*I_D/I_f, 1)."""
    forget, full = forget.flatten().float(), full.flatten().float().to(forget.device)
    selected = (forget > alpha * full).nonzero().squeeze(1)
    beta = (lambda_ * full[selected] / forget[selected].clamp_min(_TINY)).clamp(max=1.0)
    return selected, beta


def matches(name: str, patterns: Sequence[str]) -> bool:
    """A parameter name matches a dotted glob at component boundaries (empty: everything)."""
    if not patterns:
        return True
    for pattern in patterns:
        body = (
            fnmatch.translate(pattern)
            .removeprefix("(?s:")
            .removesuffix(")\\Z")
            .removesuffix(")\\z")
        )
        if re.search(rf"(^|\.)(?:{body})(\.|$)", name):
            return True
    return False


def layer_of(name: str) -> str:
    """The streaming unit of a parameter: its block (up to the first numeric component),
    or its module for parameters outside the blocks."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or name


def parameter_groups(names: Sequence[str], stream: bool) -> list[list[str]]:
    if not stream:
        return [list(names)]
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(layer_of(n), []).append(n)
    return list(groups.values())


@dataclass
class DampenReport:
    """What SSD did: parameters (scalars) selected and dampened, per tensor and in total."""

    dampened: int = 0
    eligible: int = 0
    passes: int = 0
    per_tensor: dict[str, int] = field(default_factory=dict)


def selective_synaptic_dampening(
    model: nn.Module,
    forget_batches: Sequence[Any],
    full_importance: Callable[[str], torch.Tensor],
    loss_fn: LossFn,
    alpha: float = 10.0,
    lambda_: float = 1.0,
    patterns: Sequence[str] = (),
    stream: bool = False,
    label_free: bool = False,
) -> DampenReport:
    """Dampen, in place, the parameters the forget set depends on far more than D does.

    `full_importance(name)` returns I_D for one parameter (KeyError when absent).
    """
    params = dict(model.named_parameters())
    names = [n for n in params if matches(n, patterns)]
    report = DampenReport(eligible=sum(params[n].numel() for n in names))
    plan: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for group in parameter_groups(names, stream):
        forget = fisher_importance(model, forget_batches, loss_fn, group, label_free)
        report.passes += 1
        for n in group:
            selected, beta = dampening_factors(forget[n], full_importance(n), alpha, lambda_)
            plan.append((n, selected, beta))
        del forget
    with torch.no_grad():
        for n, selected, beta in plan:
            flat = params[n].data.view(-1)
            flat[selected] = flat[selected] * beta.to(flat.dtype)
            report.per_tensor[n] = int(selected.numel())
            report.dampened += int(selected.numel())
    return report


# -- stored importance --------------------------------------------------------------------


def save_importance(
    importance: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    """Write I_D (one float32 tensor per parameter name) with how it was computed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.detach().float().cpu().contiguous() for n, t in importance.items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in metadata.items()})


class ImportanceFile:
    """Lazy reader of a stored I_D: one tensor at a time, never the whole file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with safe_open(str(path), framework="pt") as fh:
            self.metadata: dict[str, str] = dict(fh.metadata() or {})
            self.names = set(fh.keys())

    def __call__(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise KeyError(f"{self.path} holds no importance for parameter {name!r}")
        with safe_open(str(self.path), framework="pt") as fh:
            return fh.get_tensor(name)


# -- causal language models ---------------------------------------------------------------


def lm_batches(
    tokenizer: Any, texts: Sequence[str], batch_size: int, max_length: int
) -> list[dict[str, torch.Tensor]]:
    """Right-padded, truncated mini-batches of texts in their given order."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the non-padding tokens."""
    device = next(model.parameters()).device
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    labels = ids.masked_fill(mask == 0, -100)
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def output_norm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """LFSSD's label-free loss: the mean squared L2 norm of the model's outputs."""
    device = next(model.parameters()).device
    out = model(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
    )
    return out.logits.float().pow(2).sum(dim=-1).mean()


def store_lm_importance(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    path: Path,
    batch_size: int = 8,
    max_length: int = 256,
    metadata: dict[str, str] | None = None,
) -> None:
    """Compute I_D of a causal LM over its full training texts and store it (training time)."""
    batches = lm_batches(tokenizer, texts, batch_size, max_length)
    importance = fisher_importance(model, batches, causal_lm_loss)
    meta = {
        "batch_size": str(batch_size),
        "max_length": str(max_length),
        "samples": str(len(texts)),
    }
    save_importance(importance, path, {**meta, **(metadata or {})})
