"""Which samples go where, and in which orders the slices are trained (S3T, arXiv:2406.16257).

Everything here is pure and instant: no model, no torch.

- Assignment. A sample goes to (shard, slice) by a keyed hash of its own ID and the seed.
  That is data-independent (a seeded shuffle in effect) and, unlike shuffling the whole
  list, *stable under deletion*: removing one sample changes nobody else's slice, so
  retraining without it sees exactly the same slices otherwise. Shards and slices are
  balanced in expectation only (multinomial sizes), a simplification of the paper's
  equal-size split.
- Slice orders per shard (all shards use the same list): the first B cyclic rotations
  (recursive suffix rotations for B > L, as in the official code's `get_cyclic`);
  bipartite-matching selection (BMS) from per-slice deletion probabilities, which
  grows all orders one position per round with `scipy.optimize.linear_sum_assignment`
  on the score sum_n n*(1 - cumulative deletion probability of the first n slices)^t,
  t = 100; or the full budget of all L! permutations.
- Deletion simulation under uniform deletions: truncate every order of the hit shard
  before the hit slice; the system fails when no shard has a live order. The expected
  count is a coupon-collector number, mL*H_{m*B'} with B' the distinct first slices.
"""

import hashlib
import itertools
import math
import random
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

Order = tuple[int, ...]
BMS_EXPONENT = 100
MAX_ORDERS = 720
_FORBIDDEN = -1e18


def hash_id(sample_id: str) -> str:
    """The hashed form of a sample ID kept in the index and receipts (sha256 hex)."""
    return hashlib.sha256(str(sample_id).encode()).hexdigest()


def assign(sample_id: str, shards: int, slices: int, seed: int) -> tuple[int, int]:
    """(shard, slice) of a sample: a keyed hash of its ID, independent of every other sample."""
    digest = hashlib.sha256(f"s3t-assign|{seed}|{sample_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % (shards * slices)
    return bucket // slices, bucket % slices


def rotations(items: Sequence[int]) -> list[Order]:
    """All right rotations of a sequence, starting with the sequence itself."""
    n = len(items)
    return [tuple(items[(j - k) % n] for j in range(n)) for k in range(n)]


def cyclic_orders(slices: int, budget: int) -> list[Order]:
    """The first `budget` cyclic orders: rotations of (0..L-1), then rotations of suffixes.

    Level n keeps each order's first n slices and rotates the rest; children are taken
    round-robin across parents, so the level's own orders come first. Every order is
    distinct; `budget` may be anything up to L!.
    """
    check_budget(slices, budget)
    orders = rotations(range(slices))[:budget]
    level = 1
    while len(orders) < budget and level < slices - 1:
        children = [[o[:level] + r for r in rotations(o[level:])] for o in orders]
        grown: list[Order] = []
        for k in range(slices - level):
            grown.extend(c[k] for c in children if len(grown) < budget)
        orders = grown
        level += 1
    return orders[:budget]


def full_orders(slices: int) -> list[Order]:
    """All L! permutations (the full budget)."""
    check_budget(slices, math.factorial(slices))
    return list(itertools.permutations(range(slices)))


def bms_score(probabilities: Sequence[float], exponent: int = BMS_EXPONENT) -> float:
    """sum_n n*(1 - cumulative probability of the first n slices)^t: long safe prefixes win."""
    cumulative, score = 0.0, 0.0
    for n, p in enumerate(probabilities, start=1):
        cumulative += p
        score += n * max(0.0, 1.0 - cumulative) ** exponent
    return score


def bms_orders(probabilities: Sequence[float], budget: int | None = None) -> list[Order]:
    """Bipartite-matching selection: grow `budget` orders (default L) one position a round.

    Each round is a maximum-weight assignment of next slices to orders, the weight being
    the BMS score of the order extended by that slice; a slice serves at most
    ceil(B/L) orders per round, so for B <= L the first slices are all distinct.
    """
    slices = len(probabilities)
    budget = budget or slices
    check_budget(slices, budget)
    copies = math.ceil(budget / slices)
    orders: list[list[int]] = [[] for _ in range(budget)]
    for _ in range(slices):
        weights = np.full((budget, slices * copies), _FORBIDDEN)
        for row, order in enumerate(orders):
            for col in range(slices * copies):
                candidate = col % slices
                if candidate not in order:
                    extended = [probabilities[s] for s in [*order, candidate]]
                    weights[row, col] = bms_score(extended)
        rows, cols = linear_sum_assignment(weights, maximize=True)
        for row, col in zip(rows, cols, strict=True):
            choice = int(col) % slices
            if choice in orders[row]:  # forced into a forbidden pair: best free slice instead
                free = [s for s in range(slices) if s not in orders[row]]
                choice = max(
                    free, key=lambda s: bms_score([probabilities[x] for x in [*orders[row], s]])
                )
            orders[row].append(choice)
    return [tuple(o) for o in orders]


def select_orders(
    selection: str, slices: int, budget: int, probabilities: Sequence[float] | None = None
) -> list[Order]:
    """The orders for a spec's orderSelection: cyclic, bipartite or full."""
    if selection == "full":
        return full_orders(slices)
    if selection == "bipartite":
        if probabilities is None:
            raise ValueError("bipartite order selection needs deletionProbabilities")
        return bms_orders(probabilities, budget)
    return cyclic_orders(slices, budget)


def check_budget(slices: int, budget: int) -> None:
    """ValueError when B is not in 1..min(L!, MAX_ORDERS)."""
    limit = min(math.factorial(slices), MAX_ORDERS)
    if not 1 <= budget <= limit:
        raise ValueError(f"{budget} orders requested; {slices} slices allow 1 to {limit}")


# -- deletion simulation ---------------------------------------------------------------


def truncate(live: Sequence[int], orders: Sequence[Order], hit_slice: int) -> list[int]:
    """Live prefix lengths after a deletion in `hit_slice`: each order stops before it."""
    return [min(n, order.index(hit_slice)) for n, order in zip(live, orders, strict=True)]


def served_lengths(live_by_shard: Sequence[Sequence[int]]) -> list[int]:
    """Per shard, the longest live prefix (0: out of service)."""
    return [max(live, default=0) for live in live_by_shard]


def deletion_trace(
    shards: int, orders: Sequence[Order], deletions: int, rng: random.Random
) -> list[list[int]]:
    """Served prefix length per shard after each of `deletions` uniform random deletions."""
    slices = len(orders[0])
    live = [[slices] * len(orders) for _ in range(shards)]
    trace = []
    for _ in range(deletions):
        bucket = rng.randrange(shards * slices)
        shard, hit = divmod(bucket, slices)
        live[shard] = truncate(live[shard], orders, hit)
        trace.append(served_lengths(live))
    return trace


def deletions_until_failure(
    shards: int, orders: Sequence[Order], trials: int, seed: int = 0
) -> list[int]:
    """Uniform random deletions served until no shard is left, once per trial."""
    rng = random.Random(seed)
    slices = len(orders[0])
    counts = []
    for _ in range(trials):
        live = [[slices] * len(orders) for _ in range(shards)]
        count = 0
        while any(max(shard_live) > 0 for shard_live in live):
            shard, hit = divmod(rng.randrange(shards * slices), slices)
            live[shard] = truncate(live[shard], orders, hit)
            count += 1
        counts.append(count)
    return counts


def expected_deletions_until_failure(shards: int, slices: int, orders: Sequence[Order]) -> float:
    """Coupon collector: mL*H_{m*B'}, B' the distinct first slices (mL*H_m for SISA)."""
    coupons = shards * len({order[0] for order in orders})
    return shards * slices * sum(1.0 / k for k in range(1, coupons + 1))
