"""S3T: slice orders, sharded sliced training, exact deletion with receipts, the loader.

A tiny OPT (3 blocks, hidden 32) learns "label = majority letter of a random sequence"
with 2 shards x 3 slices x 3 cyclic orders, on CPU with fixed seeds and deterministic
kernels. Exactness is checked the strong way: after a deletion, every served prefix is
bit-for-bit the prefix trained from scratch on the data without the deleted sample.
"""

import hashlib
import json
import math
import random
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from modelops_api.unlearn_request import DeletionReceipt, UnlearnRequestSpec, UnlearnResults
from modelops_jobs import deletion, runner
from modelops_jobs.algorithms import s3t, s3t_job, s3t_orders, s3t_store, unlearn_s3t
from modelops_jobs.context import RunContext
from modelops_jobs.data import write_jsonl
from modelops_jobs.errors import PermanentError
from modelops_jobs.testing import tiny

LETTERS = "abc"
SHARDS, SLICES, ORDERS = 2, 3, 3


def majority_records(n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        tokens = [rng.choice(LETTERS) for _ in range(7)]
        counts = [tokens.count(c) for c in LETTERS]
        if sorted(counts)[-1] == sorted(counts)[-2]:
            continue
        out.append(
            {
                "id": f"{prefix}-{len(out):04d}",
                "text": " ".join(tokens),
                "label": counts.index(max(counts)),
            }
        )
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    """Base model, data and a trained store, built once; tests copy the store to mutate it."""
    root = tmp_path_factory.mktemp("s3t")
    tok = tiny.train_tokenizer(tiny.grammar_corpus(200, seed=1) + [" ".join(LETTERS)] * 10, 260)
    base = tiny.tiny_causal_lm(
        len(tok), hidden=32, layers=3, heads=4, ffn=64, max_positions=32, seed=0
    )
    tiny.save_model_dir(base, tok, root / "base")
    records = majority_records(72, 0, "train")
    write_jsonl(root / "data.jsonl", records)
    write_jsonl(root / "retain.jsonl", records[:24])
    write_jsonl(root / "test.jsonl", majority_records(24, 9, "test"))
    outcome = runner.execute(adaptation_doc(root, root / "data.jsonl", root / "out"))
    assert outcome.exit_code == 0, outcome.result
    return {"root": root, "records": records, "store": root / "out" / "run-0001"}


def adaptation_doc(
    root: Path, data: Path, out: Path, task: str = "classification"
) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelAdaptation",
        "metadata": {"name": "s3t-test"},
        "run": {"number": 1},
        "spec": {
            "strategy": "s3t",
            "seed": 7,
            "model": {"uri": f"file://{root}/base"},
            "data": {"uri": f"file://{data}"},
            "output": {"uri": f"file://{out}"},
            "optimization": {
                "learningRate": 0.01,
                "batchSize": 8,
                "sequenceLength": 16,
                "warmupRatio": 0.0,
            },
            "s3t": {
                "shards": SHARDS,
                "slices": SLICES,
                "orders": ORDERS,
                "task": task,
                "numLabels": len(LETTERS),
                "lora": {"rank": 4, "alpha": 8},
            },
        },
    }


@pytest.fixture
def store(world: dict[str, Any], tmp_path: Path) -> Path:
    """A private copy of the trained store."""
    return Path(shutil.copytree(world["store"], tmp_path / "store"))


def unlearn(store: Path, ids: list[str], **extra: Any) -> tuple[dict[str, Any], DeletionReceipt]:
    spec = UnlearnRequestSpec.model_validate(
        {"method": "s3t", "model": {"uri": f"file://{store}"}, "sampleIds": ids, **extra}
    )
    outcome = unlearn_s3t.run(spec, RunContext(output_dir=Path(".")))
    UnlearnResults.model_validate(outcome.results)
    return outcome.results, DeletionReceipt.model_validate(outcome.lineage["receipt"])


def located(world: dict[str, Any], shard: int, slice_index: int) -> list[str]:
    """Training IDs assigned to (shard, slice) in the test store."""
    return [
        r["id"]
        for r in world["records"]
        if s3t_orders.assign(r["id"], SHARDS, SLICES, 7) == (shard, slice_index)
    ]


# -- orders and the deletion simulation ---------------------------------------------------


@pytest.mark.parametrize(
    "slices,budget", [(4, 1), (4, 3), (4, 4), (5, 5), (4, 13), (4, 24)], ids=str
)
def test_cyclic_orders_rotate_and_stay_distinct(slices: int, budget: int) -> None:
    orders = s3t_orders.cyclic_orders(slices, budget)
    assert len(orders) == budget == len(set(orders))
    assert all(sorted(o) == list(range(slices)) for o in orders)
    first = [o[0] for o in orders]
    assert len(set(first)) == min(budget, slices)  # every slice leads some order once B >= L
    for k, order in enumerate(orders[:slices]):
        assert order == s3t_orders.rotations(range(slices))[k]


@pytest.mark.parametrize(
    "probabilities,budget,risky",
    [
        ([0.7, 0.1, 0.1, 0.1], 3, {0}),
        ([0.05, 0.05, 0.6, 0.3], 2, {2, 3}),
        ([0.1, 0.1, 0.1, 0.1, 0.6], 4, {4}),
    ],
    ids=["one-risky-B3", "two-risky-B2", "one-risky-of-5-B4"],
)
def test_bms_puts_risky_slices_last(
    probabilities: list[float], budget: int, risky: set[int]
) -> None:
    orders = s3t_orders.bms_orders(probabilities, budget)
    assert len(orders) == budget and all(
        sorted(o) == list(range(len(probabilities))) for o in orders
    )
    assert all(set(o[-len(risky) :]) == risky for o in orders)
    assert len({o[0] for o in orders}) == budget  # distinct first slices (B <= L)


def test_bms_full_width_is_a_latin_square() -> None:
    orders = s3t_orders.bms_orders([0.4, 0.3, 0.2, 0.1])
    for position in range(4):
        assert sorted(o[position] for o in orders) == [0, 1, 2, 3]


@pytest.mark.parametrize("slices", [2, 3, 4, 5], ids=str)
def test_full_budget_is_every_permutation(slices: int) -> None:
    orders = s3t_orders.full_orders(slices)
    assert len(set(orders)) == math.factorial(slices)


@pytest.mark.parametrize(
    "name,orders,expected",
    [
        ("sisa-B1", [(0, 1, 2, 3)], 22.0),
        ("cyclic-B4", s3t_orders.cyclic_orders(4, 4), 37.2),
        ("full-B24", s3t_orders.full_orders(4), 37.2),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_deletions_until_failure_match_section_7(
    name: str, orders: list[tuple[int, ...]], expected: float
) -> None:
    counts = s3t_orders.deletions_until_failure(3, orders, trials=3000, seed=1)
    mean = sum(counts) / len(counts)
    assert mean == pytest.approx(expected, rel=0.06)
    assert s3t_orders.expected_deletions_until_failure(3, 4, orders) == pytest.approx(
        expected, rel=0.01
    )


def test_assignment_is_per_sample_and_seeded() -> None:
    ids = [f"x{i}" for i in range(3000)]
    cells = [s3t_orders.assign(i, 3, 4, seed=5) for i in ids]
    assert cells == [s3t_orders.assign(i, 3, 4, seed=5) for i in reversed(ids)][::-1]
    assert cells != [s3t_orders.assign(i, 3, 4, seed=6) for i in ids]
    sizes = [cells.count((s, k)) for s in range(3) for k in range(4)]
    assert min(sizes) > 200 and max(sizes) < 300  # 250 expected per cell


# -- training and the store ---------------------------------------------------------------


def test_store_layout_index_has_no_text(world: dict[str, Any]) -> None:
    store = world["store"]
    assert s3t_store.current_version(store) == "v0001"
    index_text = (store / "index.json").read_text()
    entries = json.loads(index_text)["entries"]
    assert len(entries) == len(world["records"])
    for record in world["records"]:
        assert record["id"] not in index_text and record["text"] not in index_text
        assert entries[hashlib.sha256(record["id"].encode()).hexdigest()] == list(
            s3t_orders.assign(record["id"], SHARDS, SLICES, 7)
        )
    manifest = s3t_store.read_version(store)
    assert [len(e["orders"]) for e in manifest["shards"]] == [ORDERS] * SHARDS
    assert all(
        o["live"] == SLICES and len(o["steps"]) == SLICES
        for e in manifest["shards"]
        for o in e["orders"]
    )
    assert not (store.parent / ".run-0001.partial").exists()


def test_served_model_learns_and_averages_live_shards(world: dict[str, Any]) -> None:
    ensemble = s3t.load(world["store"])
    test = majority_records(60, 9, "test")
    accuracy = sum(
        p == r["label"]
        for p, r in zip(ensemble.predict([r["text"] for r in test]), test, strict=True)
    ) / len(test)
    assert accuracy > 0.5  # 3 classes: chance is 1/3
    ids, mask = ensemble.encode([r["text"] for r in test[:5]])
    per_shard = [ensemble.shard_logits(s.shard, ids, mask) for s in ensemble.served]
    assert torch.allclose(ensemble.logits(ids, mask), sum(per_shard) / len(per_shard))


def test_indexed_job_pods_assemble_the_same_store(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = world["root"]
    doc = adaptation_doc(root, root / "data.jsonl", tmp_path)
    store = tmp_path / "run-0001"
    for shard, sealed in ((1, False), (0, True)):
        monkeypatch.setenv(s3t_job.SHARD_ENV, str(shard))
        outcome = runner.execute(doc)
        assert outcome.exit_code == 0 and outcome.result.results["sealed"] is sealed
        assert (s3t_store.current_version(store) is not None) is sealed
    assert (
        s3t_store.read_version(store)["shards"] == s3t_store.read_version(world["store"])["shards"]
    )


# -- exact deletion -----------------------------------------------------------------------


def test_deletion_is_exact_and_retraining_restores_capacity(
    world: dict[str, Any], store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served prefixes after a deletion (and the retrained orders) are bitwise what
    training from scratch without the sample gives."""
    torch.use_deterministic_algorithms(True)
    try:
        victim = located(world, 1, 1)[0]
        results, receipt = unlearn(store, [victim], retrainAffected=True)
        root = world["root"]
        write_jsonl(tmp_path / "without.jsonl", [r for r in world["records"] if r["id"] != victim])
        monkeypatch.setenv(s3t_job.SHARD_ENV, "1")
        assert (
            runner.execute(
                adaptation_doc(root, tmp_path / "without.jsonl", tmp_path / "scratch")
            ).exit_code
            == 0
        )
    finally:
        torch.use_deterministic_algorithms(False)
    scratch = s3t_store.read_json(
        tmp_path / "scratch" / "run-0001" / "shards" / "1" / "shard.json"
    )["orders"]
    scratch_steps = {
        tuple(o["order"][: i + 1]): step for o in scratch for i, step in enumerate(o["steps"])
    }
    deleted = s3t_store.read_version(store, receipt.version_after)
    served = [o for o in deleted["shards"][1]["orders"]]
    assert sorted(o["live"] for o in served) == sorted(
        o.index(1) for o in s3t_orders.cyclic_orders(SLICES, ORDERS)
    )
    for order in served:
        for i, step in enumerate(order["steps"]):
            twin = scratch_steps[tuple(order["order"][: i + 1])]
            assert step["key"] == twin["key"] and step["digest"] == twin["digest"]
            mine = load_file(store / "shards/1/steps" / f"{step['key']}.safetensors")
            theirs = load_file(
                tmp_path / "scratch/run-0001/shards/1/steps" / f"{twin['key']}.safetensors"
            )
            assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert (
        deleted["shards"][0] == s3t_store.read_version(world["store"])["shards"][0]
    )  # shard 0 untouched
    retrained = s3t_store.read_version(store)
    assert retrained["version"] == "v0003" and retrained["reason"] == "retrain"
    for order in retrained["shards"][1]["orders"]:
        assert order["live"] == SLICES
        assert [s["digest"] for s in order["steps"]] == [
            scratch_steps[tuple(order["order"][: i + 1])]["digest"] for i in range(SLICES)
        ]
    assert results["deleted_samples"] == 1 and receipt.version_after == "v0002"


def test_receipt_and_results(world: dict[str, Any], store: Path) -> None:
    root = world["root"]
    before = (store / "versions/v0001/active.json").read_bytes()
    victim = located(world, 0, 2)[0]
    evaluation = {
        "retainData": {"uri": f"file://{root}/retain.jsonl"},
        "testData": {"uri": f"file://{root}/test.jsonl"},
    }
    results, receipt = unlearn(store, [victim], evaluation=evaluation)
    hashed = hashlib.sha256(victim.encode()).hexdigest()
    assert receipt.method == "s3t" and receipt.exact and receipt.samples == 1
    assert receipt.hashed_ids_digest == "sha256:" + hashlib.sha256(hashed.encode()).hexdigest()
    assert [(d.shard, d.slice, d.orders_truncated) for d in receipt.deactivated] == [(0, 2, ORDERS)]
    assert (receipt.version_before, receipt.version_after) == ("v0001", "v0002")
    assert receipt.digest_before != receipt.digest_after
    stored = json.loads((store / "receipts/v0002.json").read_text())
    assert stored["hashed_ids"] == [hashed] and victim not in json.dumps(stored)
    assert (store / "versions/v0001/active.json").read_bytes() == before  # old version intact
    assert s3t_store.current_version(store) == "v0002"
    for key in ("forget_accuracy", "retain_accuracy", "test_accuracy", "forget_loss"):
        assert key in results
    assert 0.0 <= results["membership_inference"] <= 1.0
    assert results["shards_out_of_service"] == []
    assert results["shards_in_service"] == SHARDS and receipt.serving is True


@pytest.mark.parametrize("unknown", [["nope-1", "nope-2"], []], ids=["some-unknown", "all-known"])
def test_unknown_ids_are_reported(world: dict[str, Any], store: Path, unknown: list[str]) -> None:
    known = located(world, 1, 0)[:2]
    results, _ = unlearn(store, known + unknown)
    assert (results["deleted_samples"], results["unknown_ids"]) == (2, len(unknown))
    stored = json.loads((store / "receipts/v0002.json").read_text())
    assert stored["unknown_hashed_ids"] == sorted(s3t_orders.hash_id(u) for u in unknown)


def test_only_unknown_ids_succeed_with_nothing_deleted(store: Path) -> None:
    results, receipt = unlearn(store, ["ghost-1"])
    assert (results["deleted_samples"], results["unknown_ids"]) == (0, 1)
    assert receipt.version_after == receipt.version_before == "v0001"


def test_repeated_request_changes_nothing(world: dict[str, Any], store: Path) -> None:
    ids = located(world, 0, 0)[:1] + located(world, 1, 2)[:1]
    unlearn(store, ids)
    snapshot = (
        sorted(p.name for p in (store / "versions").iterdir()),
        (store / "CURRENT").read_text(),
    )
    results, receipt = unlearn(store, ids)
    assert results["deleted_samples"] == 0 and receipt.samples == 0 and receipt.deactivated == []
    assert receipt.version_before == receipt.version_after == "v0002"
    assert receipt.digest_before == receipt.digest_after
    assert (
        sorted(p.name for p in (store / "versions").iterdir()),
        (store / "CURRENT").read_text(),
    ) == snapshot


def test_concurrent_deletions_lose_none(world: dict[str, Any], store: Path) -> None:
    ids = [r["id"] for r in random.Random(3).sample(world["records"], 12)]
    errors: list[BaseException] = []

    def worker(sample_id: str) -> None:
        try:
            unlearn(store, [sample_id])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = s3t_store.read_version(store)
    assert final["deleted"] == sorted(s3t_orders.hash_id(i) for i in ids)
    assert final["version"] == f"v{1 + len(ids):04d}"
    index = s3t_store.read_json(store / "index.json")["entries"]
    expected, _ = s3t_store.truncate_shards(
        s3t_store.read_version(store, "v0001"), s3t_store.hits_of(final["deleted"], index)
    )
    assert final["shards"] == expected  # the same as applying all deletions at once


def test_out_of_service_shard_is_reported_and_served_around(
    world: dict[str, Any], store: Path
) -> None:
    first_slices = {o[0] for o in s3t_orders.cyclic_orders(SLICES, ORDERS)}
    results, _ = unlearn(store, [located(world, 0, k)[0] for k in sorted(first_slices)])
    assert results["shards_out_of_service"] == [0]
    ensemble = s3t.load(store)
    assert ensemble.out_of_service == [0] and [s.shard for s in ensemble.served] == [1]
    ids, mask = ensemble.encode(["a b a c a b a"])
    assert torch.equal(ensemble.logits(ids, mask), ensemble.shard_logits(1, ids, mask))
    assert (results["shards"], results["shards_in_service"]) == (SHARDS, SHARDS - 1)
    results, receipt = unlearn(store, [located(world, 1, k)[0] for k in sorted(first_slices)])
    with pytest.raises(s3t.OutOfService, match="out of service"):
        s3t.load(store).logits(ids, mask)
    # Issue 12: the request still succeeds, but its results and receipt say the model no
    # longer serves (it used to look like any other deletion).
    assert results["shards_out_of_service"] == [0, 1] and results["shards_in_service"] == 0
    assert receipt.serving is False


def test_causal_lm_store_serves_averaged_next_token_logits(
    world: dict[str, Any], tmp_path: Path
) -> None:
    root = world["root"]
    doc = adaptation_doc(root, root / "data.jsonl", tmp_path, task="causal_lm")
    doc["spec"]["s3t"].update(shards=2, slices=2, orders=2)
    doc["spec"]["data"]["maxSamples"] = 24
    assert runner.execute(doc).exit_code == 0
    ensemble = s3t.load(tmp_path / "run-0001")
    ids, mask = ensemble.encode(["a b c a", "b b"])
    logits = ensemble.logits(ids, mask)
    assert logits.shape == (2, ids.shape[1], len(ensemble.tokenizer))
    assert torch.allclose(
        logits, (ensemble.shard_logits(0, ids, mask) + ensemble.shard_logits(1, ids, mask)) / 2
    )


# -- bad input: a Failed condition with a reason, the model untouched --------------------


def _request_doc(model: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "UnlearnRequest",
        "metadata": {"name": "u"},
        "spec": {"method": "s3t", "model": {"uri": model}, **spec},
    }


@pytest.mark.parametrize(
    "case,reason",
    [
        ("not-s3t", "NotAnS3TModel"),
        ("bad-inline-id", "InvalidSpec"),
        ("bad-id-in-file", "InvalidSampleID"),
        ("too-many-in-file", "TooManySamples"),
        ("empty-file", "NoSampleIDs"),
    ],
    ids=lambda x: x,
)
def test_bad_input_fails_with_reason_and_leaves_the_model(
    world: dict[str, Any], store: Path, tmp_path: Path, case: str, reason: str
) -> None:
    ids_file = tmp_path / "ids.txt"
    uri = f"file://{store}"
    spec: dict[str, Any] = {"samplesUri": f"file://{ids_file}"}
    if case == "not-s3t":
        uri, spec = f"file://{world['root']}/base", {"sampleIds": ["train-0001"]}
    elif case == "bad-inline-id":
        spec = {"sampleIds": ["../etc/passwd"]}
    elif case == "bad-id-in-file":
        ids_file.write_text('train-0001\n{"id": "has space"}\n')
    elif case == "too-many-in-file":
        ids_file.write_text("".join(f'{{"id": "{r["id"]}"}}\n' for r in world["records"][:5]))
        spec["maxSamples"] = 3
    else:
        ids_file.write_text("\n\n")
    before = sorted(str(p.relative_to(store)) for p in store.rglob("*"))
    outcome = runner.execute(_request_doc(uri, **spec))
    assert not outcome.result.ok and outcome.result.reason == reason
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*")) == before
    assert s3t_store.current_version(store) == "v0001"


def test_samples_uri_accepts_lines_and_jsonl(
    world: dict[str, Any], store: Path, tmp_path: Path
) -> None:
    a, b = located(world, 0, 1)[:2]
    (tmp_path / "ids.jsonl").write_text(f'{{"id": "{a}"}}\n{b}\n\n{a}\n')
    spec = UnlearnRequestSpec.model_validate(
        {"model": {"uri": f"file://{store}"}, "samplesUri": f"file://{tmp_path}/ids.jsonl"}
    )
    assert deletion.requested_ids(spec, RunContext(output_dir=Path("."))) == [a, b]
    with pytest.raises(PermanentError):
        deletion._check_id("x", "white space")
