"""How well an UnlearnRequest forgot: forget / retain / test figures and a membership score.

Why a module of its own: S3T ensembles, SSD-dampened models and the benchmark are all
measured the same way, through a logits function (input_ids, attention_mask) -> logits.
Accuracy is class accuracy for classifiers and next-token accuracy for causal LMs. The
membership score is the AUC of a loss-threshold attack that tells forget-set samples
from test samples: P(forget loss < test loss), ties counted half; 0.5 means the forget
set looks like data the model never saw, values near 1 mean it still looks memorised
(values well below 0.5 flag over-forgetting, itself a membership signal).
"""

from typing import Any

import numpy as np
import torch

from modelops_jobs.algorithms import s3t
from modelops_jobs.context import RunContext
from modelops_jobs.data import read_records

EVAL_LIMIT = 2000


def eval_sets(
    spec: Any, ctx: RunContext, config: dict[str, Any], tokenizer: Any
) -> dict[str, list[s3t.Sample]]:
    out = {}
    for name, ref in (("retain", spec.evaluation.retain_data), ("test", spec.evaluation.test_data)):
        if ref is None:
            continue
        samples = []
        for record in read_records(
            ctx.resolve(str(ref.uri)), min(ref.max_samples or EVAL_LIMIT, EVAL_LIMIT)
        ):
            label = (
                int(record.get(config["label_field"], -1))
                if config["task"] == "classification"
                else -1
            )
            ids = s3t.tokenize(
                tokenizer, str(record.get(ref.text_field, "")), config["sequence_length"]
            )
            samples.append(s3t.Sample("", tuple(ids), label))
        out[name] = samples
    return out


@torch.no_grad()
def scores(
    logit_fn: Any, samples: list[s3t.Sample], pad_id: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss and accuracy under a logits function (ids, mask) -> logits."""
    losses, accs = [], []
    for start in range(0, len(samples), 32):
        batch = s3t.collate(samples[start : start + 32], pad_id, device)
        loss, acc = s3t.sample_scores(logit_fn(batch["input_ids"], batch["attention_mask"]), batch)
        losses.append(loss.cpu())
        accs.append(acc.cpu())
    if not losses:
        return np.zeros(0), np.zeros(0)
    return torch.cat(losses).numpy(), torch.cat(accs).numpy()


def membership_auc(forget_losses: np.ndarray, test_losses: np.ndarray) -> float:
    """AUC of the loss-threshold attack: P(forget loss < test loss), ties counted half."""
    if forget_losses.size == 0 or test_losses.size == 0:
        raise ValueError("membership needs forget-set and test-set losses")
    below = (forget_losses[:, None] < test_losses[None, :]).mean()
    ties = (forget_losses[:, None] == test_losses[None, :]).mean()
    return float(below + 0.5 * ties)


def measure(
    logit_fn: Any,
    forget: list[s3t.Sample],
    sets: dict[str, list[s3t.Sample]],
    pad_id: int,
    device: torch.device,
) -> dict[str, float]:
    """forget/retain/test accuracy, forget loss and the membership score (when measurable)."""
    out: dict[str, float] = {}
    losses: dict[str, np.ndarray] = {}
    for name, samples in {"forget": forget, **sets}.items():
        if samples:
            losses[name], accs = scores(logit_fn, samples, pad_id, device)
            out[f"{name}_accuracy"] = round(float(accs.mean()), 4)
    if "forget" in losses:
        out["forget_loss"] = round(float(losses["forget"].mean()), 4)
        if "test" in losses:
            out["membership_inference"] = round(membership_auc(losses["forget"], losses["test"]), 4)
    return out
