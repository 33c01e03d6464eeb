"""S3T: cumulative top-down training of PEFT layer groups, and the loader that serves them.

Why this module exists: it is the one place that knows what an S3T model *is* — a frozen
base, LoRA layers split into L groups (group 0 = the top blocks), per shard a set of
slice orders, and one checkpoint per trained prefix — both for training (ModelAdaptation
strategy s3t) and for serving (`load`, used by inference code and by UnlearnRequest).

Training one step of order pi at position i: groups of pi[0..i-1] are loaded from their
own checkpoints and frozen, group i starts fresh (seeded A, B = 0), groups after i are
inactive (A = B = 0: exactly the identity), and group i plus the task head train on the
union of slices pi[0..i]. The step's checkpoint holds group i and the head; nothing is
shared across shards or orders (a fresh optimizer each step, seeds derived from
(seed, shard, prefix) only, the batch order drawn from the step's own generator, no early
stopping).

Checkpoints are content-addressed: a step's key hashes its parent's key, its slice and
the hashed IDs it trained on. Orders sharing a prefix share its checkpoints (the full
budget trains 64 steps for L = 4, not 96), a preempted shard resumes where it stopped,
and retraining after a deletion reuses every step whose data did not change.

The store's layout on disk and its versions live in s3t_store.py.
Simplifications: causal-LM inference averages next-token logits over live shards (the
paper leaves LLM aggregation open); DoRA is not supported (its magnitude vector is not a
B = 0 identity).
"""

import gc
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from modelops_jobs import distributed
from modelops_jobs.algorithms import s3t_store
from modelops_jobs.storage import StorageResolver, file_digest

StepState = dict[str, torch.Tensor]


class OutOfService(RuntimeError):
    """No shard of the served version has a live order: the model cannot answer."""


@dataclass(frozen=True)
class Sample:
    """One training example as S3T sees it: its hashed ID, tokens and label (-1: none)."""

    hashed_id: str
    input_ids: tuple[int, ...]
    label: int = -1


@dataclass(frozen=True)
class TrainSettings:
    """The inner training loop of one cumulative step."""

    epochs: int
    learning_rate: float
    batch_size: int
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.0
    gradient_accumulation: int = 1


# -- the model: frozen base + grouped LoRA + per-step head ------------------------------


def find_blocks(lm: nn.Module) -> tuple[str, int]:
    """(qualified name, length) of the transformer's list of blocks."""
    layers = int(lm.config.num_hidden_layers)
    for name, module in lm.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == layers:
            return name, layers
    raise ValueError("cannot find the transformer blocks (no ModuleList of num_hidden_layers)")


def layer_groups(blocks: int, slices: int) -> list[list[int]]:
    """L contiguous groups of block indices, top group first."""
    if blocks < slices:
        raise ValueError(f"{slices} slices need at least {slices} blocks; the model has {blocks}")
    return [sorted(int(b) for b in g) for g in np.array_split(np.arange(blocks)[::-1], slices)]


class S3TModel(nn.Module):
    """A frozen causal LM with LoRA on every block, handled as L groups, plus a task head."""

    def __init__(self, lm: nn.Module, lora: dict[str, Any], slices: int, num_labels: int) -> None:
        from peft import LoraConfig, get_peft_model

        super().__init__()
        blocks_name, blocks = find_blocks(lm)
        self.groups = layer_groups(blocks, slices)
        targets = set(lora.get("target_modules") or [])
        names = [
            n
            for n, m in lm.named_modules()
            if isinstance(m, nn.Linear)
            and n.startswith(blocks_name + ".")
            and (not targets or n.rsplit(".", 1)[-1] in targets)
        ]
        if not names:
            raise ValueError(f"no linear layers match targetModules {sorted(targets)}")
        config = LoraConfig(
            r=lora["rank"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            use_rslora=lora["use_rslora"],
            target_modules=names,
        )
        self.peft = get_peft_model(lm, config)
        for p in self.peft.parameters():
            p.requires_grad_(False)
        self.group_params: list[dict[str, nn.Parameter]] = [{} for _ in self.groups]
        block_group = {b: g for g, members in enumerate(self.groups) for b in members}
        marker = f"{blocks_name}."
        for name, param in self.peft.named_parameters():
            if "lora_" in name:
                block = int(name.split(marker, 1)[1].split(".", 1)[0])
                self.group_params[block_group[block]][name] = param
        causal = self.peft.base_model.model
        self.backbone = getattr(causal, causal.base_model_prefix)
        hidden = int(lm.config.hidden_size)
        self.head = nn.Linear(hidden, num_labels) if num_labels > 0 else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits (batch, labels) with a head; next-token logits otherwise."""
        if self.head is None:
            return self.peft(input_ids=input_ids, attention_mask=attention_mask).logits
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)[0]
        last = attention_mask.long().sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0]), last]
        return self.head(pooled.to(self.head.weight.dtype))  # a bf16 base, a float32 head

    def load_prefix(self, states: Sequence[StepState]) -> None:
        """Serve / continue from a prefix: group j from states[j], the head from the last."""
        with torch.no_grad():
            for g, params in enumerate(self.group_params):
                for name, param in params.items():
                    source = states[g][name] if g < len(states) else None
                    param.copy_(source if source is not None else torch.zeros_like(param))
            if self.head is not None and states:
                self.head.weight.copy_(states[-1]["head.weight"])
                self.head.bias.copy_(states[-1]["head.bias"])

    def step_state(self, group: int) -> StepState:
        """The tensors a step checkpoint holds: its group's LoRA weights and the head."""
        state = {n: p.detach().clone().contiguous() for n, p in self.group_params[group].items()}
        if self.head is not None:
            state["head.weight"] = self.head.weight.detach().clone().contiguous()
            state["head.bias"] = self.head.bias.detach().clone().contiguous()
        return state


# -- one cumulative step ----------------------------------------------------------------


def step_seed(seed: int, shard: int, prefix: Sequence[int]) -> int:
    """The seed of a step: a function of (seed, shard, prefix) only, never of the data."""
    text = f"s3t-step|{seed}|{shard}|{'-'.join(map(str, prefix))}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:6], "big")


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


def train_step(
    model: S3TModel,
    frozen: Sequence[StepState],
    samples: Sequence[Sample],
    settings: TrainSettings,
    seed: int,
    pad_id: int,
    device: torch.device,
    world: distributed.World | None = None,
) -> tuple[StepState, float]:
    """Train group len(frozen) and the head on `samples`; return its checkpoint and last loss.

    On several processes (`world`) DDP averages the trainables' gradients: every rank
    draws the same batches from the step's own generator and trains on its contiguous
    rows of each (`_rank_rows`), with the loss scaled so that the averaged gradient is the
    one process's; the returned state is the same on every rank.
    """
    world = world or distributed.World()
    group = len(frozen)
    torch.manual_seed(seed)
    model.load_prefix(frozen)
    trainable = _start_group(model, group)
    ordered = sorted(samples, key=lambda s: s.hashed_id)
    batches_per_epoch = math.ceil(len(ordered) / settings.batch_size)
    total = max(1, settings.epochs * batches_per_epoch // settings.gradient_accumulation)
    warmup = int(settings.warmup_ratio * total)
    optimizer = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / (total - warmup))
        ),
    )
    order_gen = torch.Generator().manual_seed(seed)
    wrapped = distributed.wrap(model, "ddp", world) if world.distributed else model
    model.train()
    loss_value, micro, accumulation = float("nan"), 0, settings.gradient_accumulation
    for _ in range(settings.epochs):
        for idx in torch.randperm(len(ordered), generator=order_gen).split(settings.batch_size):
            rows = _rank_rows(len(idx), world)
            mine = idx[rows] if rows.stop > rows.start else idx[:1]  # an idle rank: weight 0
            scale = distributed.loss_scale(rows.stop - rows.start, len(idx), world)
            batch = collate([ordered[int(i)] for i in mine], pad_id, device)
            micro += 1
            with distributed.gradient_sync(wrapped, micro % accumulation == 0):
                logits = wrapped(batch["input_ids"], batch["attention_mask"])
                loss = sample_scores(logits, batch)[0].mean()
                (loss * scale / accumulation).backward()
            if micro % accumulation == 0:
                nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach()) * scale / world.world_size
    if world.distributed:
        loss_value = distributed.sum_over_ranks([loss_value], world)[0]
    del wrapped  # its gradient hooks must not outlive this step's trainables
    gc.collect()
    for p in trainable:
        p.requires_grad_(False)
        p.grad = None
    model.eval()
    return model.step_state(group), loss_value


def _start_group(model: S3TModel, group: int) -> list[nn.Parameter]:
    """Group `group` fresh (seeded A, B = 0), the head reset at group 0; its trainables."""
    trainable = list(model.group_params[group].values())
    with torch.no_grad():
        for name, param in model.group_params[group].items():
            if ".lora_A." in name:
                nn.init.kaiming_uniform_(param, a=math.sqrt(5))
            else:
                param.zero_()
        if model.head is not None:
            if group == 0:
                model.head.reset_parameters()
            trainable += list(model.head.parameters())
    for p in trainable:
        p.requires_grad_(True)
    return trainable


def _rank_rows(rows: int, world: distributed.World) -> slice:
    """This rank's contiguous rows of a batch of `rows`; empty for a rank beyond them."""
    if rows >= world.world_size:
        return distributed.shard_slice(rows, world)
    return slice(min(world.rank, rows), min(world.rank + 1, rows))


# -- a shard: every prefix of every order -----------------------------------------------


def step_key(parent_key: str, slice_index: int, samples: Sequence[Sample]) -> str:
    """Content address of a step: parent step, slice, and the hashed IDs trained on."""
    h = hashlib.sha256(f"{parent_key}|{slice_index}|".encode())
    for hashed in sorted(s.hashed_id for s in samples):
        h.update(hashed.encode())
    return h.hexdigest()[:24]


def root_key(config_digest: str, shard: int) -> str:
    return hashlib.sha256(f"{config_digest}|shard{shard}".encode()).hexdigest()[:24]


def train_orders(
    model: S3TModel,
    store: Path,
    shard: int,
    orders: Sequence[Sequence[int]],
    slice_samples: Sequence[Sequence[Sample]],
    settings: TrainSettings,
    seed: int,
    config_digest: str,
    pad_id: int,
    device: torch.device,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    world: distributed.World | None = None,
) -> list[dict[str, Any]]:
    """Make sure every step of every order exists on disk; return the orders' step lists.

    Steps already on disk (same key) are reused, never retrained. `should_stop` is
    checked before each new step; the caller raises Preempted when it returns True.
    On several processes every rank trains every step together (data parallel) and
    rank 0 alone writes the step files (the others' records carry no digest).
    """
    world = world or distributed.World()
    steps_dir = store / "shards" / str(shard) / "steps"
    steps_dir.mkdir(parents=True, exist_ok=True)
    prefixes = sorted(
        {tuple(o[: i + 1]) for o in orders for i in range(len(o))}, key=lambda p: (len(p), p)
    )
    keys: dict[tuple[int, ...], str] = {(): root_key(config_digest, shard)}
    states: dict[tuple[int, ...], StepState] = {}
    records: dict[tuple[int, ...], dict[str, Any]] = {}
    for done, prefix in enumerate(prefixes, start=1):
        union = [s for k in prefix for s in slice_samples[k]]
        key = step_key(keys[prefix[:-1]], prefix[-1], slice_samples[prefix[-1]])
        path = steps_dir / f"{key}.safetensors"
        loss = float("nan")
        if path.exists():
            states[prefix] = load_file(path, device=str(device))
        else:
            if should_stop is not None and should_stop():
                raise InterruptedError(f"stop requested before step {prefix} of shard {shard}")
            frozen = [states[prefix[: j + 1]] for j in range(len(prefix) - 1)]
            seed_here = step_seed(seed, shard, prefix)
            states[prefix], loss = train_step(
                model, frozen, union, settings, seed_here, pad_id, device, world
            )
            # one metadata key: safetensors writes several keys in hash order (digests would vary)
            step_info = {"prefix": list(prefix), "shard": shard, "samples": len(union)}
            meta = {"s3t": json.dumps(step_info, sort_keys=True)}
            if world.is_main:
                tmp = path.with_suffix(".tmp")
                save_file({k: v.cpu() for k, v in states[prefix].items()}, str(tmp), metadata=meta)
                os.replace(tmp, path)
        keys[prefix] = key
        digest = file_digest(path) if world.is_main else None
        records[prefix] = {"key": key, "digest": digest, "samples": len(union)}
        if progress is not None:
            progress(done, len(prefixes), loss)
    return [
        {"order": list(o), "steps": [records[tuple(o[: i + 1])] for i in range(len(o))]}
        for o in orders
    ]


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


def build_model(config: dict[str, Any], base_path: Path, device: torch.device) -> S3TModel:
    """The S3T model of a store's config on a freshly loaded base."""
    from modelops_jobs.modelio import load_causal_lm

    lm = load_causal_lm(base_path, config["base_dtype"], config["base_quantization"], device)
    num_labels = config["num_labels"] if config["task"] == "classification" else 0
    torch.manual_seed(0)  # the head's init is overwritten by every step; keep it reproducible
    return S3TModel(lm, config["lora"], config["slices"], num_labels).to(device)


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
