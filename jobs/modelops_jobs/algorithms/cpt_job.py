"""Continual pre-training (ModelAdaptation strategy `cpt`), after arXiv:2403.08763.

One run takes the parent model (the previous run's version, else `spec.model`) and
trains it on the new data D1 with a fresh AdamW, a re-warm + re-decay (or constant, or
infinite) LR schedule from `lr_schedules`, and compute-equivalent replay of the old
data D0 from `replay`. It reports the validation loss on D0 and D1 separately and
their average (the paper's "matches re-training" measure), before and after, and
writes the new model version with its lineage.

The paper's pitfalls, handled here:
- the optimizer state is never reused: each run starts a fresh AdamW, so the decayed
  state and LR of the parent play no part. The one exception is continuing an infinite
  schedule from the parent's `pre_anneal/` checkpoint, which is at eta_const and not
  decayed: its AdamW state is restored with it, so the run goes on where that run's
  constant phase stopped, without re-warming;
- D0 validation windows are held out before the replay buffer is built (the last 5% of
  D0 when no `validationOld` is given; likewise for D1);
- replay rates are compared at equal total tokens (replay replaces D1 sequences).

Preemption: a checkpoint (model, optimizer, replay cursors, counters, RNG) is saved
every `checkpointEvery` steps and on SIGTERM; the retried pod resumes from it and ends
bit-identical to an uninterrupted run on CPU. The pre-anneal checkpoint is written
beside that checkpoint (it survives a retry) and moved into the output at the end.

Simplified against the paper: one model size and batch per run as given by the spec;
no LM-eval benchmarks, only validation loss.
"""

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelops_api.model_adaptation import ModelAdaptationSpec
from modelops_jobs import dist_checkpoint, distributed
from modelops_jobs.algorithms.cpt_checkpoint import (
    OPTIMIZER_FILE,
    PRE_ANNEAL_DIR,
    TrainState,
    pre_anneal_staging,
    save_checkpoint,
    save_pre_anneal,
)
from modelops_jobs.algorithms.cpt_data import (
    CPTData,
    evaluate_both,
    prepare_data,
    schedule_settings,
)
from modelops_jobs.algorithms.lr_schedules import (
    multiplier_function,
    pre_anneal_point,
)
from modelops_jobs.algorithms.replay import ReplayMixer
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.errors import PermanentError, Preempted
from modelops_jobs.modelio import count_parameters, load_causal_lm, load_tokenizer

CURVE_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Where the loss curve is evaluated: dense at the start, to show a re-warming spike."""
CURVE_WINDOWS = 64
ADAM_BETAS = (0.9, 0.95)  # the paper's GPT-NeoX setting


def parent_model(spec: Any, ctx: RunContext) -> tuple[str, Path]:
    """(URI, local path) of the model this run starts from: the previous version, if any."""
    run_info = ctx.run
    uri = run_info.get("parent") or str(spec.model.uri)
    return uri, ctx.resolve(uri)


def build_optimizer(model: Any, spec: Any) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.parameters(),
        lr=spec.optimization.learning_rate,
        betas=ADAM_BETAS,
        eps=1e-8,
        weight_decay=spec.optimization.weight_decay,
    )


def spec_strategy(spec: Any) -> str:
    distribution = getattr(spec, "distribution", None)
    return str(getattr(distribution, "strategy", "auto"))


# -- the run, step by step ---------------------------------------------------------
@dataclass
class Start:
    """Where the run starts (the parent, or its pre-anneal point) and its LR schedule."""

    parent_uri: str
    parent_path: Path
    continued: bool
    lr_multiplier: Callable[[int], float]
    pre_anneal: int | None

    @property
    def path(self) -> Path:
        return self.parent_path / PRE_ANNEAL_DIR if self.continued else self.parent_path


@dataclass
class Session:
    """The live objects of one run: model (and its wrapper), data, replay, optimizer."""

    model: Any
    tokenizer: Any
    data: CPTData
    mixer: ReplayMixer
    rows: Any
    strategy: str
    wrapped: Any
    optimizer: torch.optim.AdamW


@dataclass
class Progress:
    """What this session of the training loop measured (not checkpointed)."""

    tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0
    state_bytes: int | None = None


def plan_start(spec: ModelAdaptationSpec, ctx: RunContext) -> Start:
    """Refuse quantized models; pick the parent and whether to continue its pre-anneal."""
    if spec.model.quantization != "none":
        raise PermanentError(
            "continual pre-training updates every weight; spec.model.quantization must be none",
            "UnsupportedQuantization",
        )
    parent_uri, parent_path = parent_model(spec, ctx)
    schedule = spec.cpt.schedule
    settings = schedule_settings(schedule)
    continued = bool(
        settings.kind == "infinite"
        and schedule.resume_from_pre_anneal
        and (parent_path / PRE_ANNEAL_DIR / "config.json").exists()
    )
    steps = spec.optimization.steps
    try:
        lr_multiplier = multiplier_function(settings, steps, continued)
        pre_anneal = pre_anneal_point(settings, steps, continued)
    except ValueError as exc:
        raise PermanentError(f"spec.cpt.schedule: {exc}", "InvalidSchedule") from exc
    return Start(parent_uri, parent_path, continued, lr_multiplier, pre_anneal)


def load_model(spec: ModelAdaptationSpec, ctx: RunContext, path: Path) -> tuple[Any, Any]:
    """The model and tokenizer to train; the sequence length must fit the model."""
    ctx.reporter.phase("load")
    model = load_causal_lm(path, spec.model.dtype, "none", ctx.device)
    tokenizer = load_tokenizer(path)
    length = spec.optimization.sequence_length
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions and length > max_positions:
        raise PermanentError(
            f"spec.optimization.sequenceLength {length} exceeds the model's "
            f"{max_positions} positions",
            "SequenceTooLong",
        )
    return model, tokenizer


def build_mixer(spec: ModelAdaptationSpec, data: CPTData) -> ReplayMixer:
    try:
        return ReplayMixer(
            data.train_new,
            data.train_old,
            spec.cpt.replay_ratio,
            spec.optimization.batch_size,
            spec.seed,
        )
    except ValueError as exc:
        raise PermanentError(str(exc), "InvalidData") from exc


def restore_pre_anneal_moments(
    spec: ModelAdaptationSpec, ctx: RunContext, start: Start, model: Any, optimizer: Any
) -> None:
    """Continuing an infinite schedule: the parent's AdamW moments, this run's settings."""
    moments_file = start.path / OPTIMIZER_FILE
    if not (start.continued and moments_file.exists()):
        return
    moments = torch.load(moments_file, map_location=ctx.device)
    distributed.load_full_optimizer_state(model, optimizer, moments)
    for group in optimizer.param_groups:
        group["weight_decay"] = spec.optimization.weight_decay


def open_session(spec: ModelAdaptationSpec, ctx: RunContext, start: Start) -> Session:
    """Load the model and data, build the replay mixer, wrap the model, build AdamW."""
    model, tokenizer = load_model(spec, ctx, start.path)
    data = prepare_data(spec, ctx, tokenizer)
    mixer = build_mixer(spec, data)
    world = ctx.world
    rows = distributed.batch_rows(spec.optimization.batch_size, world)
    strategy = distributed.resolve_strategy(spec_strategy(spec), model, world)
    wrapped = distributed.wrap(model, strategy, world)
    optimizer = build_optimizer(model, spec)
    restore_pre_anneal_moments(spec, ctx, start, model, optimizer)
    return Session(model, tokenizer, data, mixer, rows, strategy, wrapped, optimizer)


def resume_or_evaluate(spec: ModelAdaptationSpec, ctx: RunContext, s: Session) -> TrainState:
    """The checkpointed state of a retried pod, else a fresh one with the "before" losses."""
    saved = dist_checkpoint.load(ctx.checkpointer, ctx.world, s.wrapped, s.optimizer)
    if saved is not None:
        s.mixer.load_state_dict(saved["mixer"])
        return TrainState(**saved["train"])
    state = TrainState()
    batch_size = spec.optimization.batch_size
    ctx.reporter.phase("evaluate")
    state.before = evaluate_both(s.model, s.data, batch_size, ctx.device)
    first = evaluate_both(s.model, s.data, batch_size, ctx.device, CURVE_WINDOWS)
    state.curve.append({"step": 0, **first})
    return state


def accumulate_gradients(
    spec: ModelAdaptationSpec, ctx: RunContext, s: Session, state: TrainState, progress: Progress
) -> float:
    """Forward and backward over the micro-batches of one step; the step's mean loss."""
    accumulation = spec.optimization.gradient_accumulation
    world = ctx.world
    step_loss = 0.0
    for micro in range(accumulation):
        batch = s.mixer.next_batch()  # every rank draws the global batch, keeps its rows
        ids = batch.input_ids[s.rows].to(ctx.device)
        scale = distributed.loss_scale(len(ids), len(batch.input_ids), world)
        with distributed.gradient_sync(s.wrapped, micro == accumulation - 1):
            loss = s.wrapped(input_ids=ids, labels=ids).loss
            if scale != 1.0:
                loss = loss * scale
            loss = loss / accumulation
            loss.backward()
        step_loss += float(loss.detach())
        state.tokens += batch.tokens
        state.replay_tokens += batch.old_tokens
        progress.tokens += batch.tokens
    if world.distributed:
        step_loss = distributed.sum_over_ranks([step_loss], world)[0] / world.world_size
    return step_loss


def optimizer_step(spec: ModelAdaptationSpec, s: Session, progress: Progress) -> None:
    """Clip, step, and measure the peak state (gradients and optimizer state both held)."""
    torch.nn.utils.clip_grad_norm_(s.model.parameters(), spec.optimization.max_grad_norm)
    s.optimizer.step()
    if progress.state_bytes is None:
        progress.state_bytes = distributed.local_state_bytes(s.model, s.optimizer)
    s.optimizer.zero_grad(set_to_none=True)


def record_step(
    spec: ModelAdaptationSpec,
    ctx: RunContext,
    s: Session,
    start: Start,
    state: TrainState,
    step_loss: float,
    lr: float,
) -> None:
    """After a step: refuse divergence; log loss and curve; write the pre-anneal point."""
    steps = spec.optimization.steps
    step = state.step
    if not math.isfinite(step_loss):
        raise PermanentError(
            f"training loss is {step_loss} at step {step}; lower spec.optimization.learningRate",
            "TrainingDiverged",
        )
    if step % max(1, steps // 200) == 0 or step == steps:
        state.train_loss.append([step, step_loss])
    if step in {max(1, round(f * steps)) for f in CURVE_FRACTIONS}:
        point = evaluate_both(
            s.model, s.data, spec.optimization.batch_size, ctx.device, CURVE_WINDOWS
        )
        state.curve.append({"step": step, "lr": lr, **point})
    if step == start.pre_anneal:
        save_pre_anneal(s.model, s.tokenizer, s.optimizer, pre_anneal_staging(ctx), ctx.world)


def checkpoint_or_stop(ctx: RunContext, s: Session, state: TrainState, steps: int) -> None:
    """Save when due or asked to stop (any rank's SIGTERM stops all); then stop."""
    step = state.step
    stop = distributed.any_rank(ctx.checkpointer.should_stop(), ctx.world) and step < steps
    if ctx.checkpointer.due(step) or stop:
        save_checkpoint(ctx, s.wrapped, s.optimizer, s.mixer, state)
    if stop:
        raise Preempted(f"stopped after step {step} of {steps}; checkpoint saved")


def train(
    spec: ModelAdaptationSpec, ctx: RunContext, s: Session, start: Start, state: TrainState
) -> Progress:
    """The training loop, from the step after the checkpointed one to the last."""
    opt = spec.optimization
    ctx.reporter.phase("train")
    s.model.train()
    progress = Progress()
    for step in range(state.step + 1, opt.steps + 1):
        lr = opt.learning_rate * start.lr_multiplier(step)
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        step_loss = accumulate_gradients(spec, ctx, s, state, progress)
        optimizer_step(spec, s, progress)
        state.step = step
        record_step(spec, ctx, s, start, state, step_loss, lr)
        ctx.reporter.step(step, opt.steps, loss=step_loss, tokens=progress.tokens, lr=lr)
        checkpoint_or_stop(ctx, s, state, opt.steps)
    progress.elapsed = time.monotonic() - progress.started
    return progress


def save_output(ctx: RunContext, s: Session, start: Start) -> None:
    """The new version (gathered under FSDP2, written by rank 0) and its pre-anneal point."""
    world = ctx.world
    weights = distributed.full_model_state(s.model, world) if world.distributed else None
    if not world.is_main:
        return
    s.model.save_pretrained(ctx.output_dir, state_dict=weights)
    s.tokenizer.save_pretrained(ctx.output_dir)
    staged = pre_anneal_staging(ctx)
    if start.pre_anneal is not None and staged != ctx.output_dir / PRE_ANNEAL_DIR:
        shutil.move(str(staged), str(ctx.output_dir / PRE_ANNEAL_DIR))


def summarize(
    spec: ModelAdaptationSpec,
    s: Session,
    start: Start,
    state: TrainState,
    progress: Progress,
    after: dict[str, float],
) -> dict[str, Any]:
    """The run's results: losses after and before, forgetting, tokens, throughput."""
    opt = spec.optimization
    results: dict[str, Any] = {**after, "steps": opt.steps, "tokens": state.tokens}
    results |= {f"{k}_before": v for k, v in state.before.items()}
    if "old_loss" in after:
        results["forgetting"] = after["old_loss"] - state.before["old_loss"]
    elapsed = progress.elapsed
    return results | {
        "replay_ratio": spec.cpt.replay_ratio,
        "replay_tokens": state.replay_tokens,
        "tokens_per_second": progress.tokens / elapsed if elapsed > 0 else 0.0,
        "final_lr": opt.learning_rate * start.lr_multiplier(opt.steps),
        "parameters": count_parameters(s.model)[1],
    }


def lineage_of(spec: ModelAdaptationSpec, ctx: RunContext, start: Start) -> dict[str, Any]:
    """Where the new version came from: parent, start point, data and schedule."""
    cpt = spec.cpt
    parent_uri = start.parent_uri
    started_from = f"{parent_uri.rstrip('/')}/{PRE_ANNEAL_DIR}" if start.continued else parent_uri
    return {
        "parent": parent_uri,
        "startedFrom": started_from,
        "data": str(spec.data.uri) if spec.data else None,
        "replayData": str(cpt.replay_data.uri) if cpt.replay_data else None,
        "validationOld": str(cpt.validation_old.uri) if cpt.validation_old else None,
        "validationNew": str(cpt.validation_new.uri) if cpt.validation_new else None,
        "schedule": cpt.schedule.to_wire(),
        "continuedFromPreAnneal": start.continued,
        "preAnneal": PRE_ANNEAL_DIR if start.pre_anneal is not None else None,
        "run": ctx.run.get("number"),
    }


def run(spec: ModelAdaptationSpec, ctx: RunContext) -> AlgorithmResult:
    """One continual pre-training run: parent model + D1 (+ replayed D0) -> new version."""
    start = plan_start(spec, ctx)
    session = open_session(spec, ctx, start)
    state = resume_or_evaluate(spec, ctx, session)
    progress = train(spec, ctx, session, start, state)
    ctx.reporter.phase("evaluate")
    batch_size = spec.optimization.batch_size
    after = evaluate_both(session.model, session.data, batch_size, ctx.device)
    ctx.reporter.phase("save")
    save_output(ctx, session, start)
    results = summarize(spec, session, start, state, progress, after)
    for name, value in results.items():
        ctx.reporter.metric(name, value)
    metrics = {
        "curve": state.curve,
        "trainLoss": state.train_loss,
        "preAnnealStep": start.pre_anneal,
        "strategy": session.strategy,
        "rankStateBytes": distributed.gather_objects(progress.state_bytes, ctx.world),
    }
    return AlgorithmResult(results=results, lineage=lineage_of(spec, ctx, start), metrics=metrics)
