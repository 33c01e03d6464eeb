"""Trans-LoRA's pieces (arXiv:2405.17258): seeds, synthetic prompts, the discriminator
that filters them, teacher labelling, token-level distillation and the MMD diagnostic.

`translora_job` puts them together for a LoRATransfer. Training the discriminator and
writing the transfer kit (what `lora_finetune` does when a ModelAdaptation run is
`transferReady`) live in translora_discriminator.py; the scorer (`Discriminator`) is here,
beside the synthesis it filters.

- Generator prompt (fixed across transfers): with a chat template, a fixed instruction
  followed by the seed prompts; without one (tiny models, base LMs), the seed prompts
  joined by blank lines and a trailing blank line, so the model continues the list.
  Either way the reply up to the next blank line is one candidate, sampled with
  `model.generate` (temperature, top-p). A tiny base model cannot read instructions:
  its candidates are continuations of a seed-formatted prefix.
- Candidates equal to a seed (after whitespace/case normalisation), or to one already
  kept, are dropped. A candidate is kept when the discriminator gives P(yes) > P(no).
- Discriminator: the base + a small LoRA, trained on "<sample>\\nIs the above question
  from NAME dataset?" -> " yes" (real prompt) / " no" (prompt the base generated from
  the seeds), on a balanced set; accuracy is measured on a held-out fifth. The paper
  trains it on a separate LLM; here it shares the source base (and is stored as a
  second adapter in `discriminator/`).
- Synthesis fails with AcceptanceTooLow when, after 200 tries, the acceptance rate is
  below `minAcceptanceRate` or too low for the budget to be reachable.
"""

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelops_jobs import distributed
from modelops_jobs.algorithms.lora_training import (
    LossFn,
    RunState,
)
from modelops_jobs.context import RunContext
from modelops_jobs.data import read_records
from modelops_jobs.errors import PermanentError, Preempted

SEPARATOR = "\n\n"
GENERATOR_INSTRUCTION = (
    "Here are example questions from one task, separated by blank lines. Write one new "
    "question of the same kind. Reply with the question only."
)
DISCRIMINATOR_TEMPLATE = "{sample}\nIs the above question from {name} dataset?"
ANSWERS = (" yes", " no")
DISCRIMINATOR_ADAPTER = "discriminator"
DISCRIMINATOR_META = "translora.json"
SEEDS_FILE = "seeds.jsonl"
MIN_TRIES_FOR_RATE = 200
GENERATION_BATCH = 64
SCORE_BATCH = 64


@dataclass(frozen=True)
class Seed:
    prompt: str
    completion: str = ""


def pick_seeds(prompts: list[str], completions: list[str], count: int, seed: int) -> list[Seed]:
    chosen = random.Random(seed).sample(range(len(prompts)), min(count, len(prompts)))
    return [Seed(prompts[i], completions[i]) for i in sorted(chosen)]


def read_seeds(path: Path) -> list[Seed]:
    if not path.exists():
        return []
    return [Seed(str(r["prompt"]), str(r.get("completion", ""))) for r in read_records(path)]


def texts_digest(items: list[Any]) -> str:
    body = json.dumps(items, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def seeds_digest(seeds: list[Seed]) -> str:
    return texts_digest([asdict(s) for s in seeds])


def dataset_name(uri: str) -> str:
    """NAME in the discriminator template: the data file's (or folder's) stem."""
    last = uri.rstrip("/").rsplit("/", 1)[-1]
    return last.removesuffix(".jsonl") or "task"


def normalise(text: str) -> str:
    return " ".join(text.split()).lower()


# -- generation ----------------------------------------------------------------------
def generator_prefix(tokenizer: Any, seeds: list[Seed]) -> str:
    """The fixed few-shot prompt for the generator (see the module docstring)."""
    examples = SEPARATOR.join(s.prompt for s in seeds)
    if getattr(tokenizer, "chat_template", None):
        message = {"role": "user", "content": f"{GENERATOR_INSTRUCTION}{SEPARATOR}{examples}"}
        return tokenizer.apply_chat_template([message], tokenize=False, add_generation_prompt=True)
    return examples + SEPARATOR


def parse_candidate(text: str) -> str | None:
    candidate = text.split(SEPARATOR, 1)[0].strip()
    return candidate or None


class _StopAtSeparator:
    """Generation stopping criterion: a row is done once its new text holds SEPARATOR."""

    def __init__(self, tokenizer: Any, prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :])
        return torch.tensor([SEPARATOR in t for t in texts], device=input_ids.device)


@torch.no_grad()
def _generate(model: Any, tokenizer: Any, prefixes: list[str], **kwargs: Any) -> list[str]:
    from transformers import StoppingCriteriaList

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prefixes, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    width = batch["input_ids"].shape[1]
    stop = kwargs.pop("stop_at_separator", False)
    criteria = StoppingCriteriaList([_StopAtSeparator(tokenizer, width)]) if stop else None
    out = model.generate(
        **batch,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        stopping_criteria=criteria,
        **kwargs,
    )
    return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)


def sample_candidates(model: Any, tokenizer: Any, prefixes: list[str], synthesis: Any) -> list[str]:
    """One sampled continuation per prefix, cut at the first blank line ('' if empty)."""
    texts = _generate(
        model,
        tokenizer,
        prefixes,
        do_sample=True,
        temperature=synthesis.temperature,
        top_p=synthesis.top_p,
        max_new_tokens=synthesis.max_new_tokens,
        stop_at_separator=True,
    )
    return [parse_candidate(t) or "" for t in texts]


def greedy_completions(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy completion of each prompt up to EOS (teacher labels, evaluation)."""
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        out += _generate(model, tokenizer, chunk, do_sample=False, max_new_tokens=max_new_tokens)
    return out


def exact_match(completions: list[str], references: list[str]) -> float:
    hits = sum(c.strip() == r.strip() for c, r in zip(completions, references, strict=True))
    return hits / max(1, len(references))


# -- synthesis -----------------------------------------------------------------------
@dataclass
class SynthesisOutcome:
    kept: list[str] = field(default_factory=list)
    attempts: int = 0
    candidates: list[str] = field(default_factory=list)
    """Distinct candidates before filtering (for the unfiltered MMD diagnostic)."""

    @property
    def acceptance_rate(self) -> float:
        return len(self.kept) / max(1, self.attempts)


def synthesize(
    generator: Any,
    tokenizer: Any,
    seeds: list[Seed],
    synthesis: Any,
    ctx: RunContext,
    state: RunState,
    *,
    accept: Callable[[list[str]], list[bool]] | None,
    exclude: set[str],
    key: str,
    seed: int,
) -> SynthesisOutcome:
    """Sample candidates from the seed-prompted generator until `synthesis.samples` are
    kept or `maxAttempts` are spent; resumable through `state[key]`."""
    progress: SynthesisOutcome = state.get(key) or SynthesisOutcome()
    seen = exclude | {normalise(t) for t in progress.candidates}
    shown = min(synthesis.seeds_per_prompt, len(seeds))
    while len(progress.kept) < synthesis.samples and progress.attempts < synthesis.max_attempts:
        if distributed.any_rank(ctx.checkpointer.should_stop(), ctx.world):
            state.put(key, progress)
            raise Preempted(f"synthesis stopped after {progress.attempts} attempts; saved")
        size = min(GENERATION_BATCH, synthesis.max_attempts - progress.attempts)
        batch_seed = seed * 7919 + progress.attempts  # a resumed run samples the same
        rng = random.Random(batch_seed)
        prefixes = [generator_prefix(tokenizer, rng.sample(seeds, shown)) for _ in range(size)]
        torch.manual_seed(batch_seed)
        texts = sample_candidates(generator, tokenizer, prefixes, synthesis)
        fresh = []
        for text in texts:
            if text and normalise(text) not in seen:
                seen.add(normalise(text))
                fresh.append(text)
        verdicts = accept(fresh) if accept and fresh else [True] * len(fresh)
        accepted = {t for t, ok in zip(fresh, verdicts, strict=True) if ok}
        progress.candidates += fresh
        for text in texts:
            progress.attempts += 1
            if text in accepted:
                accepted.discard(text)  # a duplicate later in the same batch is not kept
                progress.kept.append(text)
                if len(progress.kept) >= synthesis.samples:
                    break
        state.put(key, progress)
        ctx.reporter.step(len(progress.kept), synthesis.samples, attempts=progress.attempts)
        check_acceptance(progress, synthesis)
    if not progress.kept:
        raise PermanentError(
            f"no synthetic prompt kept after {progress.attempts} attempts", "AcceptanceTooLow"
        )
    return progress


def check_acceptance(progress: SynthesisOutcome, synthesis: Any) -> None:
    """AcceptanceTooLow once 200 tries show a rate under the minimum or one that cannot
    reach the budget within maxAttempts."""
    if progress.attempts < MIN_TRIES_FOR_RATE or len(progress.kept) >= synthesis.samples:
        return
    rate = progress.acceptance_rate
    reachable = len(progress.kept) + rate * (synthesis.max_attempts - progress.attempts)
    if rate < synthesis.min_acceptance_rate or reachable < synthesis.samples:
        raise PermanentError(
            f"acceptance rate {rate:.3f} after {progress.attempts} attempts "
            f"({len(progress.kept)} kept): minimum {synthesis.min_acceptance_rate}, "
            f"about {reachable:.0f} of the {synthesis.samples} samples reachable within "
            f"maxAttempts {synthesis.max_attempts}; add seeds or raise maxAttempts",
            "AcceptanceTooLow",
        )


# -- discriminator -------------------------------------------------------------------
def answer_ids(tokenizer: Any) -> tuple[int, int]:
    """First token of " yes" and of " no" (they must differ)."""
    yes, no = (tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in ANSWERS)
    if yes == no:
        raise PermanentError("the tokenizer cannot tell ' yes' from ' no'", "UnsupportedTokenizer")
    return yes, no


@dataclass
class Discriminator:
    """The base + the discriminator adapter; reads P(yes) vs P(no) after the template."""

    model: Any
    tokenizer: Any
    name: str

    @torch.no_grad()
    def margins(self, samples: list[str]) -> torch.Tensor:
        """logit(yes) - logit(no) per sample: positive means P(yes) > P(no)."""
        yes, no = answer_ids(self.tokenizer)
        active = self.model.active_adapter
        self.model.set_adapter(DISCRIMINATOR_ADAPTER)
        self.model.eval()
        device = next(self.model.parameters()).device
        out = []
        try:
            for start in range(0, len(samples), SCORE_BATCH):
                texts = [
                    DISCRIMINATOR_TEMPLATE.format(sample=s, name=self.name)
                    for s in samples[start : start + SCORE_BATCH]
                ]
                enc = self.tokenizer(texts, return_tensors="pt", padding=True)
                enc = {k: v.to(device) for k, v in enc.items()}
                if self.tokenizer.padding_side == "left":
                    last = torch.full_like(
                        enc["attention_mask"][:, 0], enc["input_ids"].shape[1] - 1
                    )
                else:
                    last = enc["attention_mask"].sum(dim=1) - 1
                logits = self.model(**enc).logits
                rows = logits[torch.arange(len(texts), device=device), last].float()
                out.append((rows[:, yes] - rows[:, no]).cpu())
        finally:
            self.model.set_adapter(active)
        return torch.cat(out) if out else torch.zeros(0)

    def accepts(self, samples: list[str]) -> list[bool]:
        return (self.margins(samples) > 0).tolist()


# -- distillation --------------------------------------------------------------------
def check_same_tokenizer(source: Any, target: Any, probes: list[str]) -> None:
    """PermanentError(TokenizerMismatch) unless both tokenizers share vocab and splits."""
    same = source.get_vocab() == target.get_vocab() and all(
        source(p)["input_ids"] == target(p)["input_ids"] for p in probes
    )
    if not same:
        raise PermanentError(
            "distillation.mode token needs the same tokenizer on source and target; "
            "use mode sequence",
            "TokenizerMismatch",
        )


def token_kl_loss(teacher: Any, vocab_size: int) -> LossFn:
    """KL(teacher || student) over the completion positions, on the teacher's logits
    (the teacher runs with its adapter enabled)."""

    def loss(student: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits[:, :-1, :vocab_size].float()
        student_logits = student(**inputs).logits[:, :-1, :vocab_size].float()
        mask = batch["labels"][:, 1:] != -100
        return torch.nn.functional.kl_div(
            torch.log_softmax(student_logits[mask], dim=-1),
            torch.log_softmax(teacher_logits[mask], dim=-1),
            log_target=True,
            reduction="batchmean",
        )

    return loss


# -- diagnostic ----------------------------------------------------------------------
@torch.no_grad()
def prompt_embeddings(model: Any, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Mean-pooled last hidden states (the paper uses a sentence-embedding model)."""
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(texts), SCORE_BATCH):
        enc = tokenizer(texts[start : start + SCORE_BATCH], return_tensors="pt", padding=True)
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        rows.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu())
    return torch.cat(rows)


def mmd_rbf(x: torch.Tensor, y: torch.Tensor) -> float:
    """Squared MMD (biased) with an RBF kernel, bandwidth by the median heuristic."""
    both = torch.cat([x, y])
    distances = torch.cdist(both, both).pow(2)
    bandwidth = distances[distances > 0].median().clamp_min(1e-12)
    kernel = torch.exp(-distances / bandwidth)
    n = len(x)
    return float(kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean())
