"""Continual pre-training (ModelAdaptation strategy cpt) and the job's metrics endpoint.

A tiny OPT model is pre-trained once per module on grammar variant 0 (D0), then adapted
to a weak shift (grammar variant 1) or a strong one (the same grammar through a letter
substitution). The tests measure the schedules' shapes, replay's exactness, adaptation
and forgetting, bit-identical resume after SIGTERM, continuation from the pre-anneal
checkpoint through the runner, and the Prometheus gauges served over HTTP.
"""

import itertools
import json
import math
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from safetensors.torch import load_file

from modelops_api.model_adaptation import ModelAdaptationSpec
from modelops_jobs import runner
from modelops_jobs.algorithms import cpt_job
from modelops_jobs.algorithms.lr_schedules import (
    ScheduleSettings,
    multiplier_function,
    pre_anneal_point,
)
from modelops_jobs.algorithms.replay import ReplayMixer, replay_count
from modelops_jobs.checkpoint import Checkpointer
from modelops_jobs.context import RunContext
from modelops_jobs.data import write_jsonl
from modelops_jobs.errors import PermanentError, Preempted
from modelops_jobs.reporting import ProgressEvent, Reporter
from modelops_jobs.testing import tiny
from modelops_jobs.training_metrics import serve_training_metrics

SEQ = 32
BATCH = 8

# -- LR schedules --------------------------------------------------------------------

REWARM = ScheduleSettings("rewarm_cosine", warmup_ratio=0.1, min_lr_ratio=0.1)
INFINITE = ScheduleSettings(
    "infinite",
    warmup_ratio=0.1,
    min_lr_ratio=0.1,
    cooldown_ratio=0.3,
    constant_lr_ratio=0.5,
    anneal_ratio=0.2,
)
CONSTANT = ScheduleSettings("constant", min_lr_ratio=0.1)

SCHEDULE_POINTS = [
    # (settings, continued, step of 100, expected multiplier)
    (REWARM, False, 1, 0.1),  # the re-warm starts near 0, never at 0
    (REWARM, False, 5, 0.5),
    (REWARM, False, 10, 1.0),  # warmup end: eta_max
    (REWARM, False, 55, 0.55),  # cosine midpoint: (eta_max + eta_min) / 2
    (REWARM, False, 100, 0.1),  # eta_min at the last update
    (CONSTANT, False, 1, 0.1),
    (CONSTANT, False, 100, 0.1),
    (INFINITE, False, 10, 1.0),  # warmup end
    (INFINITE, False, 25, 0.75),  # cooldown midpoint
    (INFINITE, False, 40, 0.5),  # cooldown end: eta_const
    (INFINITE, False, 60, 0.5),  # constant
    (INFINITE, False, 80, 0.5),  # pre-anneal point
    (INFINITE, False, 90, 0.3),  # half-way through the linear anneal
    (INFINITE, False, 100, 0.1),  # eta_min
    (INFINITE, True, 1, 0.5),  # continued from pre-anneal: no re-warm
    (INFINITE, True, 80, 0.5),
    (INFINITE, True, 100, 0.1),
]


@pytest.mark.parametrize(
    ("settings", "continued", "step", "expected"),
    SCHEDULE_POINTS,
    ids=[f"{s.kind}{'-continued' if c else ''}-step{t}" for s, c, t, _ in SCHEDULE_POINTS],
)
def test_schedule_value(
    settings: ScheduleSettings, continued: bool, step: int, expected: float
) -> None:
    assert multiplier_function(settings, 100, continued)(step) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("settings", "continued", "pre_anneal"),
    [(REWARM, False, None), (CONSTANT, False, None), (INFINITE, False, 80), (INFINITE, True, 80)],
    ids=["rewarm", "constant", "infinite", "infinite-continued"],
)
def test_pre_anneal_point(settings: ScheduleSettings, continued: bool, pre_anneal: int) -> None:
    assert pre_anneal_point(settings, 100, continued) == pre_anneal


def test_rewarm_cosine_rises_then_falls() -> None:
    lrs = [multiplier_function(REWARM, 200)(t) for t in range(1, 201)]
    peak = lrs.index(max(lrs))
    assert peak == 19  # update 20 = 10% of 200
    assert all(a < b for a, b in itertools.pairwise(lrs[: peak + 1]))
    assert all(a > b for a, b in itertools.pairwise(lrs[peak:]))


def test_infinite_shares_beyond_the_run_are_rejected() -> None:
    too_long = ScheduleSettings("infinite", warmup_ratio=0.5, cooldown_ratio=0.5, anneal_ratio=0.2)
    with pytest.raises(ValueError, match="exceed the run"):
        multiplier_function(too_long, 100)


# -- replay ----------------------------------------------------------------------------

REPLAY_CASES = [(8, 0.25), (8, 0.05), (10, 0.5), (6, 0.0)]


@pytest.mark.parametrize(
    ("batch_size", "ratio"), REPLAY_CASES, ids=[f"b{b}-r{r}" for b, r in REPLAY_CASES]
)
def test_replay_is_compute_equivalent_and_in_order(batch_size: int, ratio: float) -> None:
    old = torch.arange(1000, 1000 + 7 * 4).view(7, 4)  # row i starts with 1000 + 4i
    new = torch.arange(0, 50 * 4).view(50, 4)
    mixer = ReplayMixer(new, old, ratio, batch_size, seed=3)
    batches = [mixer.next_batch() for _ in range(40)]
    for index, batch in enumerate(batches):
        assert batch.input_ids.shape == (batch_size, 4)  # equal tokens to a no-replay batch
        share = ratio * batch_size
        assert batch.old_rows in {math.floor(share), math.ceil(share)}
        assert batch.old_rows == replay_count(index, batch_size, ratio)
        assert (batch.input_ids[: batch.old_rows] >= 1000).all()
        assert (batch.input_ids[batch.old_rows :] < 1000).all()
    replayed = sum(b.old_rows for b in batches)
    assert replayed == round(40 * ratio * batch_size)  # the running share is exact
    old_rows_read = [int(r[0] - 1000) // 4 for b in batches for r in b.input_ids[: b.old_rows]]
    assert old_rows_read == [i % 7 for i in range(replayed)]  # D0 in its original order
    new_rows_read = [int(r[0]) // 4 for b in batches for r in b.input_ids[b.old_rows :]]
    first_pass = new_rows_read[:50]
    assert sorted(first_pass) == list(range(50))  # every D1 window once per pass


def test_replay_resumes_where_it_stopped() -> None:
    old, new = torch.arange(40).view(10, 4), torch.arange(100, 260).view(40, 4)
    straight = ReplayMixer(new, old, 0.25, 8, seed=1)
    expected = [straight.next_batch().input_ids for _ in range(12)]
    first = ReplayMixer(new, old, 0.25, 8, seed=1)
    got = [first.next_batch().input_ids for _ in range(5)]
    second = ReplayMixer(new, old, 0.25, 8, seed=1)
    second.load_state_dict(first.state_dict())
    got += [second.next_batch().input_ids for _ in range(7)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


# -- fixtures: a tiny model pre-trained on D0 ------------------------------------------


def spec_for(root: Path, model: Path, data: str, **overrides: Any) -> ModelAdaptationSpec:
    """A cpt spec over the module's files; overrides go into cpt / optimization."""
    cpt: dict[str, Any] = {
        "replayData": {"uri": f"file://{root / 'd0.jsonl'}"},
        "validationOld": {"uri": f"file://{root / 'd0_val.jsonl'}"},
        "validationNew": {"uri": f"file://{root / (data + '_val.jsonl')}"},
        "replayRatio": overrides.pop("replay_ratio", 0.0),
        "schedule": overrides.pop("schedule", {"kind": "rewarm_cosine", "warmupRatio": 0.05}),
    }
    optimization = {
        "steps": 60,
        "learningRate": 3e-3,
        "batchSize": BATCH,
        "sequenceLength": SEQ,
        "checkpointEvery": 1000,
        **overrides,
    }
    return ModelAdaptationSpec.model_validate(
        {
            "model": {"uri": f"file://{model}"},
            "data": {"uri": f"file://{root / (data + '.jsonl')}"},
            "optimization": optimization,
            "cpt": cpt,
            "output": {"uri": f"file://{root / 'versions'}"},
        }
    )


def write_texts(path: Path, texts: list[str]) -> None:
    write_jsonl(path, [{"text": t} for t in texts])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """D0 / weak / strong data, and a tiny model pre-trained on D0 (warmup, cosine to 0.1)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cpt")
    d0 = tiny.grammar_corpus(3000, seed=0, variant=0)
    weak = tiny.grammar_corpus(3000, seed=1, variant=1)
    strong = tiny.substitute(tiny.grammar_corpus(3000, seed=2, variant=0), seed=5)
    for name, texts in (("d0", d0), ("weak", weak), ("strong", strong)):
        write_texts(root / f"{name}.jsonl", texts[:2700])
        write_texts(root / f"{name}_val.jsonl", texts[2700:])
    tokenizer = tiny.train_tokenizer(d0, vocab_size=256)  # unchanged across the shift
    init = tiny.tiny_causal_lm(len(tokenizer), hidden=32, layers=2, heads=2, ffn=64, seed=0)
    tiny.save_model_dir(init, tokenizer, root / "init")
    pretrain = spec_for(
        root,
        root / "init",
        "d0",
        steps=200,
        schedule={"kind": "rewarm_cosine", "warmupRatio": 0.01, "minLrRatio": 0.1},
    )
    base = root / "base"
    base.mkdir()
    cpt_job.run(pretrain, RunContext(output_dir=base))
    return {"root": root, "base": base}


def adapt(world: dict[str, Any], name: str, data: str, **overrides: Any) -> dict[str, Any]:
    out = world["root"] / "out" / name
    out.mkdir(parents=True)
    spec = spec_for(world["root"], world["base"], data, **overrides)
    return cpt_job.run(spec, RunContext(output_dir=out)).results


@pytest.fixture(scope="module")
def strong_runs(world: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Adaptations to the strong shift: constant eta_min, re-warm with 0% and 50% replay."""
    return {
        "constant": adapt(world, "constant", "strong", schedule={"kind": "constant"}),
        "replay0": adapt(world, "replay0", "strong", replay_ratio=0.0),
        "replay50": adapt(world, "replay50", "strong", replay_ratio=0.5),
    }


# -- training --------------------------------------------------------------------------


@pytest.mark.parametrize("shift", ["weak", "strong"])
def test_cpt_lowers_new_data_loss(world: dict[str, Any], shift: str) -> None:
    results = adapt(world, f"lowers-{shift}", shift, replay_ratio=0.05)
    assert results["new_loss"] < results["new_loss_before"] - 0.2
    assert results["avg_loss"] == pytest.approx((results["old_loss"] + results["new_loss"]) / 2)
    assert results["tokens"] == 60 * BATCH * SEQ
    assert results["replay_tokens"] == round(60 * BATCH * 0.05) * SEQ


def test_replay_reduces_forgetting(strong_runs: dict[str, dict[str, Any]]) -> None:
    no_replay, replay = strong_runs["replay0"], strong_runs["replay50"]
    assert no_replay["forgetting"] > 0.5  # the strong shift forgets D0 without replay
    assert replay["forgetting"] < no_replay["forgetting"] / 2
    assert replay["tokens"] == no_replay["tokens"]  # compared at equal compute
    assert replay["new_loss"] > no_replay["new_loss"]  # ... and adapts a little less


def test_constant_min_lr_forgets_least_and_adapts_worst(
    strong_runs: dict[str, dict[str, Any]],
) -> None:
    constant, rewarm = strong_runs["constant"], strong_runs["replay0"]
    assert constant["forgetting"] < rewarm["forgetting"]
    assert constant["new_loss"] > rewarm["new_loss"]


def test_replay_without_old_data_is_a_permanent_error(world: dict[str, Any]) -> None:
    spec = spec_for(world["root"], world["base"], "weak", replay_ratio=0.25)
    cpt = spec.cpt.model_copy(update={"replay_data": None})
    spec = spec.model_copy(update={"cpt": cpt})
    with pytest.raises(PermanentError) as info:
        cpt_job.run(spec, RunContext(output_dir=world["root"] / "nowhere"))
    assert info.value.reason == "ReplayDataMissing"


# -- preemption ------------------------------------------------------------------------


def stop_at(checkpointer: Checkpointer, step: int) -> Reporter:
    """A reporter that asks for a stop (what SIGTERM does) once `step` is reported."""

    def sink(event: ProgressEvent) -> None:
        if event.step == step and event.phase == "train":
            checkpointer.request_stop()

    return Reporter(sink)


def test_sigterm_and_resume_is_bit_identical(world: dict[str, Any]) -> None:
    root = world["root"] / "resume"
    schedule = {"kind": "infinite", "cooldownRatio": 0.3, "annealRatio": 0.2}
    spec = spec_for(
        world["root"],
        world["base"],
        "weak",
        steps=30,
        checkpointEvery=10,
        replay_ratio=0.25,
        schedule=schedule,
    )
    (root / "straight").mkdir(parents=True)
    straight = RunContext(
        output_dir=root / "straight", checkpointer=Checkpointer(root / "ckpt-a", every=10)
    )
    expected = cpt_job.run(spec, straight)

    checkpointer = Checkpointer(root / "ckpt-b", every=10)
    (root / "first").mkdir()
    first = RunContext(
        output_dir=root / "first", checkpointer=checkpointer, reporter=stop_at(checkpointer, 26)
    )
    with pytest.raises(Preempted):
        cpt_job.run(spec, first)  # stopped after the pre-anneal checkpoint (step 24)
    assert torch.load(checkpointer.path, weights_only=False)["train"]["step"] == 26
    (root / "retry").mkdir()
    retry = RunContext(output_dir=root / "retry", checkpointer=Checkpointer(root / "ckpt-b"))
    resumed = cpt_job.run(spec, retry)

    for sub in ("", "pre_anneal"):
        a = load_file(root / "straight" / sub / "model.safetensors")
        b = load_file(root / "retry" / sub / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    for key in ("old_loss", "new_loss", "tokens", "replay_tokens"):
        assert resumed.results[key] == expected.results[key]
    assert resumed.metrics["curve"] == expected.metrics["curve"]


# -- through the runner: versions, parents and the pre-anneal checkpoint ---------------


def document(spec: ModelAdaptationSpec, number: int, parent: str | None) -> dict[str, Any]:
    run: dict[str, Any] = {"number": number}
    if parent:
        run["parent"] = parent
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelAdaptation",
        "metadata": {"name": "keep-current", "namespace": "ml"},
        "spec": spec.to_wire(),
        "run": run,
    }


def test_runner_chains_versions_through_the_pre_anneal_checkpoint(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELOPS_THREADS", "1")
    root = world["root"]
    versions = root / "versions"
    schedule = {"kind": "infinite", "cooldownRatio": 0.3, "annealRatio": 0.2}
    first = spec_for(root, world["base"], "weak", steps=20, replay_ratio=0.25, schedule=schedule)
    outcome = runner.execute(document(first, 1, None))
    assert outcome.exit_code == 0, outcome.result
    assert (versions / "run-0001" / "pre_anneal" / "optimizer.pt").is_file()

    second = spec_for(root, world["base"], "strong", steps=20, replay_ratio=0.25, schedule=schedule)
    parent = f"file://{versions / 'run-0001'}"
    outcome = runner.execute(document(second, 2, parent))
    assert outcome.exit_code == 0, outcome.result
    manifest = json.loads((versions / "run-0002" / "manifest.json").read_text())
    lineage = manifest["lineage"]
    assert lineage["parent"] == parent
    assert lineage["continuedFromPreAnneal"] is True
    assert lineage["data"].endswith("strong.jsonl")
    assert lineage["replayData"].endswith("d0.jsonl")
    curve = manifest["metrics"]["curve"]
    assert curve[1]["step"] == 1
    assert curve[1]["lr"] == pytest.approx(3e-3 * 0.55)  # no re-warm: at eta_const at once
    assert manifest["results"]["newLoss"] < manifest["results"]["newLossBefore"]


# -- the metrics endpoint --------------------------------------------------------------

GAUGES = [
    ("modelops_job_step", 30.0),
    ("modelops_job_total_steps", 120.0),
    ("modelops_job_loss", 1.25),
    ("modelops_job_tokens_per_second", 4096.0),
    ("modelops_job_progress_ratio", 0.25),
    ("modelops_job_eta_seconds", 90.0),
]


@pytest.fixture(scope="module")
def scraped() -> dict[str, tuple[dict[str, str], float]]:
    doc = {"kind": "ModelAdaptation", "metadata": {"name": "keep-current", "namespace": "ml"}}
    sink = serve_training_metrics(0, doc, addr="127.0.0.1")
    try:
        sink(
            ProgressEvent(
                phase="train",
                step=30,
                total=120,
                loss=1.25,
                tokens_per_second=4096.0,
                eta_seconds=90.0,
            )
        )
        url = f"http://127.0.0.1:{sink.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        sink.close()
    return {
        sample.name: (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize(("name", "value"), GAUGES, ids=[g for g, _ in GAUGES])
def test_metrics_endpoint_serves_gauge(
    scraped: dict[str, tuple[dict[str, str], float]], name: str, value: float
) -> None:
    labels, got = scraped[name]
    assert labels == {"namespace": "ml", "name": "keep-current", "kind": "ModelAdaptation"}
    assert got == pytest.approx(value)
