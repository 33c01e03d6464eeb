"""S3T samples and batches, and the loader that serves an S3T model version.

Why this module exists: it is the one place that knows what S3T data *is* — a sample
(hashed ID, tokens, label), a right-padded batch, the per-sample loss and accuracy — and
what a served S3T version is: per shard its longest live order, logits averaged over the
live shards (`load`, used by inference code and by UnlearnRequest). SSD and the unlearning
evaluation reuse the sample primitives.

The model's shape lives in s3t_model.py, cumulative training in s3t_train.py, the store's
layout on disk and its versions in s3t_store.py.
Simplification: causal-LM inference averages next-token logits over live shards (the
paper leaves LLM aggregation open).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from modelops_jobs.algorithms import s3t_store
from modelops_jobs.algorithms.s3t_model import S3TModel, StepState, build_model
from modelops_jobs.storage import StorageResolver


class OutOfService(RuntimeError):
    """No shard of the served version has a live order: the model cannot answer."""


@dataclass(frozen=True)
class Sample:
    """One training example as S3T sees it: its hashed ID, tokens and label (-1: none)."""

    hashed_id: str
    input_ids: tuple[int, ...]
    label: int = -1


def collate(
    samples: Sequence[Sample], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels of a batch."""
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        ids[row, : len(sample.input_ids)] = torch.tensor(sample.input_ids)
        mask[row, : len(sample.input_ids)] = 1
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def sample_scores(
    logits: torch.Tensor, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, accuracy) per sample: of the label for class logits (batch, labels); mean
    next-token loss and token accuracy over non-padding tokens for LM logits."""
    if logits.dim() == 2:
        loss = nn.functional.cross_entropy(logits.float(), batch["labels"], reduction="none")
        return loss, (logits.argmax(dim=-1) == batch["labels"]).float()
    targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
    token_loss = nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, reduction="none", ignore_index=-100
    )
    counted = targets != -100
    counts = counted.sum(dim=1).clamp(min=1)
    hits = ((logits[:, :-1].argmax(dim=-1) == targets) & counted).sum(dim=1)
    return token_loss.sum(dim=1) / counts, hits.float() / counts


# -- serving ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedShard:
    """What one shard serves: its longest live order, cut to `live` steps."""

    shard: int
    order: tuple[int, ...]
    live: int
    keys: tuple[str, ...]


class S3TEnsemble:
    """An S3T model version ready for inference: logits averaged over live shards."""

    def __init__(
        self,
        model: S3TModel,
        config: dict[str, Any],
        manifest: dict[str, Any],
        store: Path,
        tokenizer: Any,
        device: torch.device,
    ) -> None:
        self.model, self.config, self.tokenizer, self.device = model, config, tokenizer, device
        self.version: str = manifest["version"]
        self.digest = s3t_store.model_digest(manifest)
        self.served: list[ServedShard] = []
        self.out_of_service: list[int] = []
        self._states: dict[int, list[StepState]] = {}
        for entry in manifest["shards"]:
            order = s3t_store.served_order(entry)
            if order is None:
                self.out_of_service.append(entry["shard"])
                continue
            keys = tuple(s["key"] for s in order["steps"][: order["live"]])
            self.served.append(
                ServedShard(entry["shard"], tuple(order["order"]), order["live"], keys)
            )
            steps = store / "shards" / str(entry["shard"]) / "steps"
            self._states[entry["shard"]] = [
                load_file(steps / f"{k}.safetensors", device=str(device)) for k in keys
            ]

    @property
    def task(self) -> str:
        return str(self.config["task"])

    def shard_states(self, shard: int) -> list[StepState]:
        """The exact tensors a shard serves (one state per live step)."""
        return self._states[shard]

    @torch.no_grad()
    def shard_logits(
        self, shard: int, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        self.model.load_prefix(self._states[shard])
        return self.model(input_ids.to(self.device), attention_mask.to(self.device)).float()

    def logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean logits over the live shards; OutOfService when none is live."""
        if not self.served:
            raise OutOfService(
                f"version {self.version}: every shard is out of service {self.out_of_service}"
            )
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        total = sum(self.shard_logits(s.shard, input_ids, mask) for s in self.served)
        return total / len(self.served)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded token IDs and mask, truncated as in training."""
        samples = [
            Sample("", tuple(tokenize(self.tokenizer, t, self.config["sequence_length"])))
            for t in texts
        ]
        batch = collate(samples, self.config["pad_id"], self.device)
        return batch["input_ids"], batch["attention_mask"]

    def predict(self, texts: Sequence[str]) -> list[int]:
        """Class predictions (classification stores)."""
        return self.logits(*self.encode(texts)).argmax(dim=-1).tolist()


def tokenize(tokenizer: Any, text: str, max_length: int) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
    return ids or [tokenizer.eos_token_id or 0]


def load(
    store_path: str | Path,
    version: str | None = None,
    base_path: str | Path | None = None,
    device: str | torch.device | None = None,
) -> S3TEnsemble:
    """Load a store's version (default: CURRENT) for inference.

    `base_path` overrides the base model location recorded in the store (its URI is
    resolved with the usual storage resolver otherwise). The result reports
    `out_of_service` shards; its `logits` raises OutOfService when no shard is live.
    """
    from modelops_jobs.modelio import load_tokenizer

    store = Path(store_path)
    config = s3t_store.read_config(store)
    manifest = s3t_store.read_version(store, version)
    base = Path(base_path) if base_path else StorageResolver().local_path(config["base_uri"])
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model = build_model(config, base, dev)
    model.eval()
    return S3TEnsemble(model, config, manifest, store, load_tokenizer(base), dev)
