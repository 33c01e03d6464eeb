"""CPT's data: D1 and D0 read into token windows, validation held out before replay is
built, and the validation loss the paper's measures are made of.

Separate from `cpt_job` (the run and its training loop) so the inputs and the evaluation
read on their own; nothing here depends on the run's state.
"""

from dataclasses import dataclass
from typing import Any

import torch

from modelops_jobs.algorithms.lr_schedules import ScheduleSettings
from modelops_jobs.context import RunContext
from modelops_jobs.data import field_values, lm_windows, read_records, token_stream
from modelops_jobs.errors import PermanentError

HOLDOUT_SHARE = 0.05


@dataclass
class CPTData:
    """Token windows: D1 and D0 for training, and their validation sets."""

    train_new: torch.Tensor
    train_old: torch.Tensor | None
    val_new: torch.Tensor
    val_old: torch.Tensor | None


# -- inputs ----------------------------------------------------------------------
def schedule_settings(schedule: Any) -> ScheduleSettings:
    """The spec's LRSchedule as plain values."""
    return ScheduleSettings(
        kind=schedule.kind,
        warmup_ratio=schedule.warmup_ratio,
        min_lr_ratio=schedule.min_lr_ratio,
        cooldown_ratio=schedule.cooldown_ratio,
        constant_lr_ratio=schedule.constant_lr_ratio,
        anneal_ratio=schedule.anneal_ratio,
    )


def dataset_windows(ctx: RunContext, ref: Any, tokenizer: Any, length: int) -> torch.Tensor:
    """A DatasetRef's texts, tokenized, joined with EOS and cut into windows."""
    records = read_records(ctx.resolve(str(ref.uri)), ref.max_samples)
    texts = field_values(records, ref.text_field, str(ref.uri))
    return lm_windows(token_stream(tokenizer, [str(t) for t in texts]), length)


def split_holdout(windows: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation): the last 5% of the windows (at least one) are held out."""
    held = max(1, round(HOLDOUT_SHARE * len(windows)))
    if len(windows) - held < 1:
        raise PermanentError(
            f"{what} has {len(windows)} window(s): too few to hold out validation data; "
            "give a validation dataset or more data",
            "DataTooShort",
        )
    return windows[:-held], windows[-held:]


def prepare_data(spec: Any, ctx: RunContext, tokenizer: Any) -> CPTData:
    """Read D1, D0 and the validation sets; hold out validation data where none is given."""
    length = spec.optimization.sequence_length
    cpt = spec.cpt
    train_new = dataset_windows(ctx, spec.data, tokenizer, length)
    if cpt.validation_new is not None:
        val_new = dataset_windows(ctx, cpt.validation_new, tokenizer, length)
    else:
        train_new, val_new = split_holdout(train_new, "spec.data")
    train_old = val_old = None
    if cpt.replay_data is not None:
        train_old = dataset_windows(ctx, cpt.replay_data, tokenizer, length)
        if cpt.validation_old is None:
            train_old, val_old = split_holdout(train_old, "spec.cpt.replayData")
    if cpt.validation_old is not None:
        val_old = dataset_windows(ctx, cpt.validation_old, tokenizer, length)
    if cpt.replay_ratio > 0 and train_old is None:
        raise PermanentError(
            f"spec.cpt.replayRatio is {cpt.replay_ratio} but spec.cpt.replayData is not set",
            "ReplayDataMissing",
        )
    return CPTData(train_new, train_old, val_new, val_old)


# -- evaluation ------------------------------------------------------------------
@torch.no_grad()
def evaluate_loss(
    model: Any, windows: torch.Tensor, batch_size: int, device: torch.device
) -> float:
    """Mean next-token loss over the windows (all of one length, so rows weigh equally)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size].to(device)
        total += float(model(input_ids=batch, labels=batch).loss) * len(batch)
    model.train(was_training)
    return total / len(windows)


def evaluate_both(
    model: Any, data: CPTData, batch_size: int, device: torch.device, limit: int | None = None
) -> dict[str, float]:
    """old_loss, new_loss and (when both exist) avg_loss."""
    out = {"new_loss": evaluate_loss(model, data.val_new[:limit], batch_size, device)}
    if data.val_old is not None:
        out["old_loss"] = evaluate_loss(model, data.val_old[:limit], batch_size, device)
        out["avg_loss"] = (out["old_loss"] + out["new_loss"]) / 2
    return out
